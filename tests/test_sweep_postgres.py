"""Sweeps on a real PostgreSQL server, as on several machines: one database, workers started at once.

The server is the ``pgserver`` wheel (PostgreSQL 16 started in a temporary folder, reached through
its Unix socket there), started once for this module, then stopped and removed; each test gets a
fresh database. Without pgserver or psycopg (``pip install -e ".[test]"``), or where the server does not
start, the tests are skipped. Folders stand for machines: each sweep command runs in its own.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState
from test_sweep import QUICK, TINY_SET, env, sweep_command

from mobilenet_lab.tools import report
from mobilenet_lab.tools.sweep import storage as sweep_storage

pytest.importorskip("psycopg", reason="the PostgreSQL driver is not installed: pip install -e '.[postgres]'")
pgserver = pytest.importorskip(
    "pgserver", reason="pgserver (a PostgreSQL in a folder) is not installed: pip install -e '.[test]'"
)


@pytest.fixture(scope="module")
def server():
    # A folder of its own under /tmp, not pytest's: as root, pgserver runs PostgreSQL as a user of its own,
    # and another pytest session starting makes pytest's base folder unreadable to that user.
    folder = tempfile.mkdtemp(prefix="mobilenet_lab_pg_")
    try:
        srv = pgserver.get_server(folder, cleanup_mode="delete")  # stopped and removed by cleanup()
    except Exception as err:  # noqa: BLE001 - any reason the server cannot start here
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {type(err).__name__}: {err}")
    yield srv
    srv.cleanup()


@pytest.fixture
def database(server) -> str:
    """The URL of a new, empty database (``postgresql://postgres:@/<name>?host=<socket folder>``)."""
    name = f"sweep_{uuid.uuid4().hex[:10]}"
    server.psql(f"CREATE DATABASE {name};")
    return server.get_uri(name)


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=sweep_storage.open_storage(url, heartbeat=False))


# Each process: wait until all are ready (a file each), open the fresh database, then run a grid sweep and
# a search sweep with two workers each, every fit replaced by a stand-in that reports one value.
WORKER = """
import sys, time
from pathlib import Path
from mobilenet_lab.compat import study_id
from mobilenet_lab.tools.sweep import runner, spec, storage

url, barrier, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
key = "model.init_args.dropout"
grid = spec.SweepSpec(name="grid", base=["b.yaml"], set={}, grid={key: [0.0, 0.1, 0.2, 0.3, 0.4]}, search=None,
                      metric="val/acc", direction="maximize", n_trials=None, sampler=None, pruner=None, test=False,
                      keys=[key])
search = spec.SweepSpec(**{**vars(grid), "name": "search", "grid": None, "n_trials": 7,
                           "search": {key: {"low": 0.0, "high": 0.5, "log": False, "step": None, "integer": False}}})


class StandIn(runner.Runner):
    def _run(self, command, output, device):
        number = int(next(a for a in command if "init_args.version=trial_" in a).rsplit("_", 1)[1])
        trial = self.storage.get_trial_id_from_study_id_trial_number(study_id(self.study), number)
        self.storage.set_trial_intermediate_value(trial, 0, 0.5)
        time.sleep(0.3)
        return 0


(barrier / str(time.time())).touch()
while len(list(barrier.iterdir())) < count:
    time.sleep(0.001)
for sweep in (grid, search):
    store = storage.open_storage(url)
    study, created = storage.open_study(sweep, store, url, Path("lightning_logs"))
    print(sweep.name, "created" if created else "joined", flush=True)
    StandIn(sweep, study, store, url, [], Path("lightning_logs"), Path("checkpoints")).run(2)
"""


def test_sweeps_started_at_once_on_a_fresh_database_run_each_point_once_and_n_trials_exactly(database, tmp_path):
    # Without the sweep's lock, two of three processes creating Optuna's tables at once failed with
    # UniqueViolation on pg_type_typname_nsp_index; and workers that look at the study and then ask
    # could run a grid point twice or a search past n_trials.
    barrier = tmp_path / "ready"
    barrier.mkdir()
    procs = []
    for i in range(3):
        folder = tmp_path / f"machine_{i}"
        folder.mkdir()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, database, str(barrier), "3"],
                cwd=folder,
                env=env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(o[-3000:] for o in outputs)
    text = "".join(outputs)
    assert text.count("grid created") == 1 and text.count("grid joined") == 2, text
    assert text.count("search created") == 1 and text.count("search joined") == 2, text
    grid = load(database, "grid").get_trials()
    assert sorted(t.params["model.init_args.dropout"] for t in grid) == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert all(t.state == TrialState.COMPLETE for t in grid)
    search = load(database, "search").get_trials()
    assert len(search) == 7 and all(t.state == TrialState.COMPLETE for t in search)


@pytest.mark.slow
def test_three_machines_on_one_database_a_killed_one_s_trial_resumes_elsewhere(
    database, tiny_cifar, tmp_path, monkeypatch
):
    # Three sweep commands (three folders, one shared --root) start together on a fresh database. One
    # "machine" dies mid-trial (its sweep and its fit SIGKILLed): Optuna's heartbeat tells another
    # worker, which runs the point again from the last.ckpt the dead one left on the shared root.
    shared = tmp_path / "shared"
    sweep_file = tmp_path / "pg.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "base": [QUICK],
                "grid": {"model.init_args.dropout": [0.0, 0.1, 0.2]},
                "set": {**TINY_SET, "trainer.limit_train_batches": 8, "trainer.max_epochs": 2},
            }
        )
    )
    folders = [tmp_path / f"machine_{i}" for i in range(3)]
    procs = []
    for folder in folders:
        folder.mkdir()
        command = sweep_command(
            sweep_file,
            tiny_cifar,
            "--storage",
            database,
            "--root",
            str(shared),
            fit_args=("--checkpoint.last_every_n_steps=1",),
        )
        procs.append(
            subprocess.Popen(
                command,
                cwd=folder,
                env=env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
    pids = {p.pid: p for p in procs}
    deadline = time.monotonic() + 900
    victim = None
    try:
        while victim is None:  # a trial that has saved a step on the shared root
            assert all(p.poll() is None for p in procs), [p.stdout.read()[-3000:] for p in procs if p.poll()]
            assert time.monotonic() < deadline, "no trial saved a checkpoint"
            time.sleep(0.5)
            if not any(shared.glob("checkpoints/pg/trial_*/last.ckpt")):  # (the study is set up by then)
                continue
            for t in load(database, "pg").get_trials(states=(TrialState.RUNNING,)):
                last = shared / f"checkpoints/pg/trial_{t.number:03d}/last.ckpt"
                if t.user_attrs.get("fit_pid") and t.user_attrs["worker"]["pid"] in pids and last.is_file():
                    victim = t
                    break
        dead = pids[victim.user_attrs["worker"]["pid"]]
        dead.send_signal(signal.SIGKILL)  # the machine dies: its sweep and its fit at once
        subprocess.run(["kill", "-KILL", str(victim.user_attrs["fit_pid"])], check=False)
        dead.wait()
        alive = [p for p in procs if p is not dead]
        outputs = [p.communicate(timeout=900)[0] for p in alive]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in alive] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert f"trial {victim.number}: no heartbeat from its worker for 10 s" in "".join(outputs)

    trials = load(database, "pg").get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["model.init_args.dropout"] for t in complete) == [0.0, 0.1, 0.2]  # each point once
    assert [t.number for t in trials if t.state != TrialState.COMPLETE] == [victim.number]  # the dead one: failed
    retry = next(t for t in complete if t.params == victim.params)
    assert sweep_storage.retry_history(retry) == [victim.number]
    assert retry.user_attrs["worker"]["pid"] != dead.pid
    left = shared / f"checkpoints/pg/trial_{victim.number:03d}/last.ckpt"
    assert retry.user_attrs["resumed_from"] == str(left)
    assert 0 < torch.load(left, weights_only=True)["global_step"] < 16  # written whole, mid-fit
    run = shared / f"lightning_logs/pg/trial_{retry.number:03d}"
    assert yaml.safe_load((run / "config.yaml").read_text())["ckpt_path"] == str(left)
    assert "Restored all states from the checkpoint" in (run / "fit.log").read_text()
    final = torch.load(shared / f"checkpoints/pg/trial_{retry.number:03d}/last.ckpt", weights_only=True)
    assert final["global_step"] == 16 and final["epoch"] == 1  # 2 epochs of 8 steps in all
    assert not any((f / "checkpoints").exists() or (f / "lightning_logs").exists() for f in folders)

    # The report from any folder: the same rows, model facts included, from the database alone.
    shared.rename(tmp_path / "unmounted")
    tables = []
    for folder in folders:
        monkeypatch.chdir(folder)
        tables.append(report.main(["--sweep", "pg", "--storage", database, "--quiet", "--out", str(folder / "out")]))
    assert tables[0] == tables[1] == tables[2]
    rows = {r["trial"]: r for r in tables[0]}
    assert rows[victim.number]["state"] == f"interrupted (rerun as trial {retry.number})"
    for t in complete:
        row = rows[t.number]
        assert (row["state"], row["model"], row["width"], row["epochs"]) == ("complete", "mobilenet_v3_small", 0.25, 2)
        assert row["params"] > 0 and row["MACs"] > 0, row
    assert json.loads(json.dumps(tables[0]))  # plain data

"""Sweeps: grid and search over fit configs with Optuna, several workers, resume after a kill, pruning, report.

The end-to-end tests run real sweeps of tiny fits (V3-Small 0.25, a few batches of the tiny
archive) as the user would: ``python -m mobilenet_lab sweep`` in a temporary folder. Each trial
is a fit process (about 20 s on the busy 2-core machine, most of it imports), so they are slow;
the fast tests check the sweep file, the storage and the table in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
import torch
import yaml
from optuna.trial import TrialState

from mobilenet_lab.__main__ import main as cli
from mobilenet_lab.compat import trial_id
from mobilenet_lab.confusion import most_confused, worst_classes
from mobilenet_lab.errors import UserError
from mobilenet_lab.tools import report
from mobilenet_lab.tools.sweep import commands as sweep_commands
from mobilenet_lab.tools.sweep import results
from mobilenet_lab.tools.sweep import spec as sweep_spec
from mobilenet_lab.tools.sweep import storage as sweep_storage

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs/quickstart.yaml")
# Every trial: V3-Small 0.25, 2 training batches of 32, 1 epoch, 100 validation images.
TINY_SET = {
    "model.init_args.width_mult": 0.25,
    "data.batch_size": 32,
    "data.val_size": 100,
    "trainer.max_epochs": 1,
    "trainer.limit_train_batches": 2,
    "trainer.enable_progress_bar": False,
    "trainer.enable_model_summary": False,
}
GRID_2X2 = {"model.init_args.dropout": [0.0, 0.1], "model.init_args.label_smoothing": [0.0, 0.1]}


def env() -> dict[str, str]:
    # A heartbeat every 2 s, stale after 10 s without one (the defaults are 10 s and 60 s).
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "MOBILENET_LAB_SWEEP_POLL_S": "1",
        "MOBILENET_LAB_SWEEP_HEARTBEAT_S": "2",
        "MOBILENET_LAB_SWEEP_GRACE_S": "10",
        "MALLOC_MMAP_THRESHOLD_": "4294967296",
        "MALLOC_TRIM_THRESHOLD_": "17179869184",
        "MALLOC_TOP_PAD_": "1073741824",
    }


def write_sweep(folder: Path, name: str, **fields) -> Path:
    swept = fields.get("grid") or fields.get("search") or {}
    content = {"base": [QUICK], "set": {k: v for k, v in TINY_SET.items() if k not in swept}, **fields}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def sweep_command(path: Path, data_dir: Path, *options: str, fit_args: tuple[str, ...] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mobilenet_lab",
        "sweep",
        "--config",
        str(path),
        *options,
        "--",
        f"--data.data_dir={data_dir}",
        *fit_args,
    ]


def run_sweep(
    cwd: Path, path: Path, data_dir: Path, *options: str, fit_args: tuple[str, ...] = (), timeout: float = 900
):
    result = subprocess.run(
        sweep_command(path, data_dir, *options, fit_args=fit_args),
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def load(cwd: Path, name: str) -> optuna.Study:
    # Through the sweep's own opener: it holds the setup lock, so polling a sweep that is still creating the
    # database's tables waits instead of racing it (optuna's bare RDBStorage: UNIQUE constraint failed).
    url = f"sqlite:///{cwd / 'sweeps' / (name + '.db')}"
    return optuna.load_study(study_name=name, storage=sweep_storage.open_storage(url, heartbeat=False))


def points(trials: list, state: TrialState = TrialState.COMPLETE) -> list[str]:
    return sorted(json.dumps(t.params, sort_keys=True) for t in trials if t.state == state)


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_grid_2x2_runs_four_trials_and_reports_them(tiny_cifar: Path, tmp_path: Path, monkeypatch):
    path = write_sweep(tmp_path, "grid", grid=GRID_2X2)
    result = run_sweep(tmp_path, path, tiny_cifar, "--workers", "2")
    assert "| trial |" in result.stdout  # the table at the end
    trials = load(tmp_path, "grid").get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    expected = sorted(
        json.dumps({"model.init_args.dropout": d, "model.init_args.label_smoothing": s}, sort_keys=True)
        for d in (0.0, 0.1)
        for s in (0.0, 0.1)
    )
    assert points(trials) == expected
    for t in trials:  # each trial is an ordinary run: logs, config, checkpoints in its own folders
        run = tmp_path / f"lightning_logs/grid/trial_{t.number:03d}"
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["model"]["init_args"]["dropout"] == t.params["model.init_args.dropout"]
        assert (tmp_path / f"checkpoints/grid/trial_{t.number:03d}/last.ckpt").is_file()
        assert t.value == max(t.intermediate_values.values())
    # HParams: the swept values are in the run's hparams summary, with the metric names.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(tmp_path / "lightning_logs/grid/trial_000"))
    acc.Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    ).session_start_info
    assert {"model.init_args.dropout", "model.init_args.label_smoothing", "sweep", "trial"} <= set(start.hparams)

    monkeypatch.chdir(tmp_path)
    rows = report.main(["--sweep", "grid", "--quiet"])
    assert len(rows) == 4 and {r["state"] for r in rows} == {"complete"}
    assert {(r["dropout"], r["label_smoothing"]) for r in rows} == {(d, s) for d in (0.0, 0.1) for s in (0.0, 0.1)}
    assert all(r["params"] and r["MACs"] and r["model"] == "mobilenet_v3_small" for r in rows)
    assert len((tmp_path / "sweeps/grid/report.csv").read_text().strip().splitlines()) == 5
    assert (tmp_path / "sweeps/grid/report.png").stat().st_size > 0


@pytest.mark.slow
def test_two_worker_processes_share_one_study_without_duplicates(tiny_cifar: Path, tmp_path: Path):
    # Two sweep commands at once on one SQLite study, as two machines would: 6 points, each run once.
    path = write_sweep(
        tmp_path,
        "shared",
        grid={"model.init_args.dropout": [0.0, 0.1, 0.2], "model.init_args.label_smoothing": [0.0, 0.1]},
    )
    procs = [
        subprocess.Popen(
            sweep_command(path, tiny_cifar),
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=1200)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    trials = load(tmp_path, "shared").get_trials()
    assert len(trials) == 6 and len(set(points(trials))) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    started = [o.count("started") for o in outputs]
    assert sum(started) == 6 and min(started) >= 1, started  # both took part
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2


@pytest.mark.slow
def test_sigkill_mid_trial_then_same_command_finishes_every_point_once(tiny_cifar: Path, tmp_path: Path, monkeypatch):
    grid = {"model.init_args.dropout": [0.0, 0.1], "model.init_args.label_smoothing": [0.0, 0.1]}
    # Long enough to be killed inside the first trial's training.
    path = write_sweep(
        tmp_path, "killed", grid=grid, set={**TINY_SET, "trainer.limit_train_batches": 8, "trainer.max_epochs": 3}
    )
    proc = subprocess.Popen(
        sweep_command(path, tiny_cifar),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    events = tmp_path / "lightning_logs/killed/trial_000"
    deadline = time.monotonic() + 600
    try:
        fit_pid = None
        while fit_pid is None or not any(events.glob("events.out.tfevents.*")):  # trial 0 is training
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the first trial never started training"
            time.sleep(0.5)
            if not (tmp_path / "sweeps/killed.db").is_file():  # (loading would create it)
                continue
            try:
                fit_pid = load(tmp_path, "killed").get_trials()[0].user_attrs.get("fit_pid")
            except (KeyError, IndexError, sqlalchemy.exc.OperationalError):  # study or first trial not there yet
                continue
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    study = load(tmp_path, "killed")
    assert [t.state for t in study.get_trials()][0] == TrialState.RUNNING  # cut off, nobody told the study
    assert study.get_trials()[0].user_attrs["worker"]["pid"] == proc.pid
    deadline = time.monotonic() + 120
    while Path(f"/proc/{fit_pid}").exists() and "zombie" not in Path(f"/proc/{fit_pid}/status").read_text().lower():
        assert time.monotonic() < deadline, "the trial's fit outlived its sweep"
        time.sleep(0.5)

    result = run_sweep(tmp_path, path, tiny_cifar)  # Optuna's heartbeat finds trial 0 cut off
    assert "trial 0: no heartbeat from its worker for 10 s; marked failed and queued again" in result.stdout
    trials = load(tmp_path, "killed").get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and len(set(points(complete))) == 4  # every grid point finished exactly once
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [0]
    retry = next(t for t in complete if t.params == failed[0].params)
    assert sweep_storage.retry_history(retry) == [0]
    monkeypatch.chdir(tmp_path)  # the report reads the trials' logs where the sweep wrote them
    rows = report.main(
        [
            "--sweep",
            "killed",
            "--storage",
            f"sqlite:///{tmp_path / 'sweeps/killed.db'}",
            "--quiet",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rows[0]["state"] == f"interrupted (rerun as trial {retry.number})"
    assert all(r["model"] == "mobilenet_v3_small" and r["epochs"] == 3 for r in rows if r["state"] == "complete"), rows


@pytest.mark.slow
def test_ctrl_c_then_same_command_resumes_the_interrupted_trial(tiny_cifar: Path, tmp_path: Path):
    path = write_sweep(
        tmp_path,
        "ctrlc",
        grid={"model.init_args.dropout": [0.0]},
        set={**TINY_SET, "trainer.limit_train_batches": 8, "trainer.max_epochs": 3},
    )
    every_step = ("--checkpoint.last_every_n_steps=1",)
    proc = subprocess.Popen(
        sweep_command(path, tiny_cifar, fit_args=every_step),
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    last = tmp_path / "checkpoints/ctrlc/trial_000/last.ckpt"
    deadline = time.monotonic() + 600
    try:
        while not last.is_file():  # training (and its graceful stop) has begun
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the trial never saved a checkpoint"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=300)[0]
    finally:
        proc.kill()
    assert proc.returncode == 130, output[-3000:]
    assert "stopped: SIGINT received" in (tmp_path / "lightning_logs/ctrlc/trial_000/fit.log").read_text()
    step = torch.load(last, weights_only=True)["global_step"]
    assert 0 < step < 24

    result = run_sweep(tmp_path, path, tiny_cifar, fit_args=every_step)  # the same command
    assert f"resuming {last.relative_to(tmp_path)}" in result.stdout
    trials = load(tmp_path, "ctrlc").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["resumed_from"] == str(last.relative_to(tmp_path))
    final = torch.load(tmp_path / "checkpoints/ctrlc/trial_001/last.ckpt", weights_only=True)
    assert final["global_step"] == 24 and final["epoch"] == 2  # 3 epochs of 8 steps in all, not 3 more


@pytest.mark.slow
def test_pruned_trial_is_reported_as_pruned_and_finished_one_is_tested(tiny_cifar: Path, tmp_path: Path, monkeypatch):
    # ThresholdPruner prunes any trial whose val/acc is below 0.99 once past its warm-up epoch:
    # the 1-epoch trial never gets there (completes, then is tested), the 2-epoch one is pruned
    # after its second validation.
    path = write_sweep(
        tmp_path,
        "pruned",
        grid={"trainer.max_epochs": [1, 2]},
        test=True,
        pruner={"class_path": "optuna.pruners.ThresholdPruner", "init_args": {"lower": 0.99, "n_warmup_steps": 1}},
    )
    result = run_sweep(tmp_path, path, tiny_cifar)
    trials = {t.params["trainer.max_epochs"]: t for t in load(tmp_path, "pruned").get_trials()}
    assert trials[1].state == TrialState.COMPLETE and trials[2].state == TrialState.PRUNED
    assert trials[2].user_attrs["pruned_at_epoch"] == 1
    assert "pruned at epoch 1" in result.stdout
    monkeypatch.chdir(tmp_path)
    rows = {r["max_epochs"]: r for r in report.main(["--sweep", "pruned", "--quiet"])}
    assert rows[2]["state"] == "pruned (epoch 1)"
    assert rows[1]["state"] == "complete" and rows[1]["test/acc"] is not None and rows[2]["test/acc"] is None
    # The test run wrote the confusion matrix; the report names the confused classes.
    text = (tmp_path / "sweeps/pruned/report.md").read_text()
    assert "10 most-confused pairs" in text and "class_" in text
    test_run = tmp_path / f"lightning_logs/pruned/trial_{trials[1].number:03d}_test"
    assert (test_run / "confusion_matrix.csv").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(test_run))
    acc.Reload()
    assert {"test/most_confused/text_summary", "test/worst_classes/text_summary"} <= set(acc.Tags()["tensors"])


@pytest.mark.slow
def test_search_samples_n_trials_within_its_space(tiny_cifar: Path, tmp_path: Path):
    path = write_sweep(
        tmp_path,
        "search",
        n_trials=3,
        search={
            "model.init_args.optimizer.init_args.lr": {"low": 0.01, "high": 0.5, "log": True},
            "model.init_args.dropout": [0.0, 0.2],
            "data.batch_size": {"low": 16, "high": 32, "step": 16, "integer": True},
        },
        sampler={"class_path": "optuna.samplers.RandomSampler", "init_args": {"seed": 1}},
    )
    run_sweep(tmp_path, path, tiny_cifar, "--workers", "2")
    trials = load(tmp_path, "search").get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        assert 0.01 <= t.params["model.init_args.optimizer.init_args.lr"] <= 0.5
        assert t.params["model.init_args.dropout"] in (0.0, 0.2) and t.params["data.batch_size"] in (16, 32)
        config = yaml.safe_load((tmp_path / f"lightning_logs/search/trial_{t.number:03d}/config.yaml").read_text())
        assert config["data"]["batch_size"] == t.params["data.batch_size"]
        assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == pytest.approx(
            t.params["model.init_args.optimizer.init_args.lr"]
        )


# ---------------------------------------------------------------------------- sweep files
@pytest.mark.parametrize("path", sorted((ROOT / "configs/sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweep_files_parse_and_every_point_is_a_valid_fit(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # their base configs are relative to the repository
    spec, _ = sweep_spec.parse(["--config", str(path.relative_to(ROOT))])
    assert spec.name == path.stem and spec.is_grid and spec.test
    config = sweep_commands.check_points(spec, [])
    assert config.trainer.logger.class_path.endswith("TensorBoardLogger")


def bad(capsys, tmp_path: Path, *argv: str, command: str = "sweep") -> str:
    """Runs ``sweep`` (or ``command``) in-process; returns its one-line error (it must exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        cli([command, *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"gird": {"model.init_args.width_mult": [0.5]}}, "'gird"),
        ({"grid": {}}, "the grid is empty"),
        ({"grid": {"model.init_args.width_mult": []}}, "model.init_args.width_mult has no values"),
        ({"grid": GRID_2X2, "search": {"model.init_args.dropout": [0.0]}}, "not both"),
        ({}, "neither was given"),
        ({"search": {"model.init_args.dropout": {"low": 0.0, "high": 0.5}}}, "needs n_trials"),
        (
            {
                "search": {"model.init_args.optimizer.init_args.lr": {"low": 0.0, "high": 0.5, "log": True}},
                "n_trials": 2,
            },
            "log-scaled and needs low > 0",
        ),
        ({"grid": GRID_2X2, "n_trials": 3}, "n_trials is for a search"),
    ],
)
def test_bad_sweep_file_is_one_line(fields, message, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"base": [QUICK], **fields}))
    assert message in bad(capsys, tmp_path, "--config", str(path))


def test_a_sweep_option_on_the_command_line_is_named_as_such(tmp_path, capsys):
    message = bad(capsys, tmp_path, "--base", QUICK, "--name", "s")
    assert message.startswith("error: sweep option --base: Expected a <class 'list'>")
    assert "--base+ configs/a.yaml" in message and "sweep file" not in message


def test_unknown_fit_key_or_bad_value_in_the_grid_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, "typo", grid={"model.init_args.widht_mult": [0.25, 0.5]})
    line = bad(capsys, tmp_path, "--config", str(path))
    assert "widht_mult" in line and "not accepted" in line, line
    path = write_sweep(tmp_path, "negative", grid={"model.init_args.width_mult": [0.25, -1.0]})
    assert "width_mult=-1.0" in (line := bad(capsys, tmp_path, "--config", str(path))) and "> 0" in line, line
    path = write_sweep(tmp_path, "nobase", grid=GRID_2X2, base=["configs/none.yaml"])
    assert "base config configs/none.yaml does not exist" in bad(capsys, tmp_path, "--config", str(path))
    assert not (tmp_path / "sweeps").exists()  # nothing was created


@pytest.mark.parametrize(
    "url, message",
    [
        ("nodb://x/y", "a sweep keeps its study in SQLite (one machine"),
        ("mysql://u@host/db", "relies on; not mysql"),
        ("not a url", "not a database URL"),
        ("sqlite:///:memory:", "in-memory database"),
        ("sqlite:////proc/no/such/dir/x.db", "cannot create /proc/no/such/dir"),
    ],
)
def test_bad_storage_url_is_one_line(url, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, "store", grid=GRID_2X2)
    line = bad(capsys, tmp_path, "--config", str(path), "--storage", url)
    assert message in line, line


def test_storage_password_is_not_shown(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, "secret", grid=GRID_2X2)
    line = bad(capsys, tmp_path, "--config", str(path), "--storage", "nodb://user:hunter2@host/db")
    assert "hunter2" not in line and "***" in line, line


def test_spec_orders_class_choice_first_and_writes_values_as_yaml(tmp_path):
    path = write_sweep(
        tmp_path,
        "order",
        grid={"model.init_args.width_mult": [0.5, 1.0], "model.class_path": ["mobilenet_lab.MobileNetV3Large"]},
    )
    spec, cfg = sweep_spec.parse(["--config", str(path), "--workers", "3"])
    assert spec.name == "order" and cfg.workers == 3 and cfg.storage is None
    assert spec.keys == ["model.class_path", "model.init_args.width_mult"]
    assert spec.grid_points()[1] == {
        "model.class_path": "mobilenet_lab.MobileNetV3Large",
        "model.init_args.width_mult": 1.0,
    }
    args = sweep_commands.trial_arguments(spec, spec.grid_points()[0], ["--data.data_dir=d"])
    assert args[0] == f"--config={QUICK}" and args[-3:] == [
        "--data.data_dir=d",
        "--model.class_path=mobilenet_lab.MobileNetV3Large",
        "--model.init_args.width_mult=0.5",
    ]
    assert [sweep_commands.cli_value(v) for v in (1e-05, 0.1, True, None, 3, "x", [1, 2])] == [
        "1.0e-05",
        "0.1",
        "true",
        "null",
        "3",
        "x",
        "[1, 2]",
    ]
    assert yaml.safe_load(sweep_commands.cli_value(1e-05)) == 1e-05
    # A study keeps its sweep: a grid may grow, anything else must stay.
    stored = spec.stored()
    grown, _ = sweep_spec.parse(
        [
            "--config",
            str(path),
            "--grid",
            json.dumps(
                {"model.init_args.width_mult": [0.5, 1.0, 0.75], "model.class_path": ["mobilenet_lab.MobileNetV3Large"]}
            ),
        ]
    )
    assert grown.differences(stored) == []
    changed, _ = sweep_spec.parse(["--config", str(path), "--metric", "val/loss", "--direction", "minimize"])
    assert set(changed.differences(stored)) == {"direction", "metric"}


# -------------------------------------------------------------------------------- storage
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_trial_without_heartbeat_is_failed_and_queued_again(tmp_path, monkeypatch, capsys):
    # Optuna's heartbeat, as the sweep configures it: a running trial whose worker (any machine) stopped
    # beating is failed by whoever looks next and queued again with its point and its metric so far.
    monkeypatch.setattr(sweep_storage, "HEARTBEAT_S", 1)
    monkeypatch.setattr(sweep_storage, "GRACE_S", 1)
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = sweep_storage.open_storage(url)
    study = optuna.create_study(study_name="s", storage=store)
    study.enqueue_trial({"x": 1.0}, user_attrs={"grid_params": {"x": 1.0}})
    trial = study.ask()
    trial.suggest_categorical("x", [1.0, 2.0])
    trial.report(0.25, 0)
    store.record_heartbeat(trial_id(trial))  # its worker beat once, then died
    alive = study.ask()  # never beat: Optuna leaves it alone
    sweep_storage.fail_stale_trials(study)
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING, TrialState.RUNNING]
    time.sleep(2.1)
    sweep_storage.fail_stale_trials(study)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert "trial 0: no heartbeat from its worker for 1 s; marked failed and queued again" in capsys.readouterr().out
    retry = study.get_trials()[-1]
    assert retry.params == {"x": 1.0} and retry.user_attrs["grid_params"] == {"x": 1.0}
    assert retry.intermediate_values == {0: 0.25} and sweep_storage.retry_history(retry) == [0]
    assert alive.number == 1
    # A re-run queues grid points whose trials all failed (the retry above holds this one).
    spec, _ = sweep_spec.parse(["--config", str(write_sweep(tmp_path, "s", grid={"x": [1.0, 2.0]}))])
    assert sweep_storage.queue_grid(study, spec) == 1  # x=2.0: never queued
    assert sweep_storage.queue_grid(study, spec) == 0
    study.tell(study.ask(), state=TrialState.FAIL)  # the retry of x=1.0 fails too
    assert sweep_storage.queue_grid(study, spec) == 1 and study.get_trials()[-1].user_attrs["grid_params"] == {"x": 1.0}


def test_missing_postgresql_driver_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    with pytest.raises(UserError, match=r'driver is missing: pip install -e "\.\[postgres\]" \(psycopg\[binary\]\)'):
        sweep_storage.open_storage("postgresql://user@/db?host=/nonexistent")


POP = """
import sys, optuna
from mobilenet_lab.tools.sweep.storage import open_storage
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name="q", storage=open_storage(sys.argv[1], heartbeat=False))
taken = []
while True:
    trial = study.ask()
    if "grid_params" not in trial.user_attrs:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        break
    taken.append(trial.suggest_int("i", 0, 100))
    study.tell(trial, 0.0)
print(taken)
"""


def test_two_processes_never_take_the_same_queued_trial(tmp_path):
    # Optuna marks a queued trial running with a read then a write; on SQLite (no SELECT ... FOR
    # UPDATE) only BEGIN IMMEDIATE transactions keep two processes from both taking it.
    url = f"sqlite:///{tmp_path / 'q.db'}"
    study = optuna.create_study(study_name="q", storage=sweep_storage.open_storage(url, heartbeat=False))
    for i in range(40):
        study.enqueue_trial({"i": i}, user_attrs={"grid_params": {"i": i}})
    procs = [
        subprocess.Popen([sys.executable, "-c", POP, url], env=env(), stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    taken = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert sorted(taken[0] + taken[1]) == list(range(40)), taken


# -------------------------------------------------------------------------------- results
def test_sweep_rows_name_states_and_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    study = optuna.create_study(study_name="r", storage=sweep_storage.open_storage(url, heartbeat=False))
    grid = {"model.class_path": ["mobilenet_lab.MobileNetV3Small"], "model.init_args.width_mult": [0.5, 1.0, 2.0]}
    study.set_user_attr(
        "sweep",
        {"keys": list(grid), "metric": "val/acc", "direction": "maximize", "grid": grid, "base": ["b.yaml"], "set": {}},
    )
    dist = {k: optuna.distributions.CategoricalDistribution(v) for k, v in grid.items()}

    def add(width, state, values, **attrs):
        params = {"model.class_path": "mobilenet_lab.MobileNetV3Small", "model.init_args.width_mult": width}
        study.add_trial(
            optuna.create_trial(
                state=state,
                params=params,
                distributions=dist,
                user_attrs=attrs,
                intermediate_values=dict(enumerate(values)),
                value=max(values) if state == TrialState.COMPLETE else None,
            )
        )

    # The facts the worker stored with the trial are the table's (no run folder is read).
    facts = {
        "model": "mobilenet_v3_small",
        "width": 0.5,
        "params": 1234,
        "MACs": 5678,
        "epochs": 3,
        "last_test_acc": 0.25,
        "errors": "\n## r/trial_000: test errors (x)\n",
    }
    add(0.5, TrialState.COMPLETE, [0.1, 0.3, 0.2], facts=facts)
    add(1.0, TrialState.PRUNED, [0.05], pruned_at_epoch=0)
    add(2.0, TrialState.FAIL, [], error="error: model: bad")
    rows, columns = results.sweep_rows(study)
    assert columns[:4] == ["trial", "state", "model", "width_mult"] and "note" in columns
    assert [r["state"] for r in rows] == ["complete", "pruned (epoch 0)", "failed"]
    assert rows[0]["model"] == "MobileNetV3Small" and rows[0]["best val/acc"] == 0.3 and rows[1]["best val/acc"] == 0.05
    assert (rows[0]["width_mult"], rows[0]["params"], rows[0]["MACs"], rows[0]["epochs"], rows[0]["test/acc"]) == (
        0.5,
        1234,
        5678,
        3,
        0.25,
    )
    assert rows[1]["params"] is None and rows[1]["epochs"] == 1  # no facts: epochs from the reported metric
    assert rows[2]["note"] == "error: model: bad"
    results.write_sweep_report(study, url, tmp_path / "out", quiet=True)
    assert "## r/trial_000: test errors (x)" in (tmp_path / "out/report.md").read_text()
    # A re-run queued the failed point again: the old trial no longer fails the sweep.
    add(2.0, TrialState.FAIL, [], error="error: again")
    add(2.0, TrialState.COMPLETE, [0.4])
    states = [r["state"] for r in results.sweep_rows(study)[0]]
    assert states[2:] == ["failed (rerun as trial 3)", "failed (rerun as trial 4)", "complete"]
    assert results.plot_sweep(rows, study, tmp_path / "p.png") == "width_mult"
    assert results.column_names(["a.init_args.lr", "b.init_args.lr"]) == {
        "a.init_args.lr": "a.lr",
        "b.init_args.lr": "b.lr",
    }


def test_sweep_with_a_failed_trial_exits_non_zero_and_pruned_counts_as_success(tmp_path, monkeypatch, capsys):
    # The whole sweep command in-process, each fit replaced by a stand-in that completes, is pruned or fails.
    from mobilenet_lab.tools.sweep.runner import Runner

    outcome = {0.0: "complete", 0.1: "pruned", 0.2: "fail"}

    def fit(self, command, output, device):
        trial = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))[0]
        self.storage.set_trial_intermediate_value(trial_id(trial), 0, 0.5)
        result = outcome[trial.params["model.init_args.dropout"]]
        if result == "pruned":
            self.storage.set_trial_user_attr(trial_id(trial), "pruned_at_epoch", 0)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("error: data: out of cheese\n" if result == "fail" else "done\n")
        return 1 if result == "fail" else 0

    monkeypatch.setattr(Runner, "_run", fit)
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, "fails", grid={"model.init_args.dropout": list(outcome)})
    with pytest.raises(SystemExit) as exit_info:
        cli(["sweep", "--config", str(path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "failed: sweep fails: 1 of 3 trials failed (trial 2: error: data: out of cheese)" in err, err
    outcome[0.2] = "complete"  # fixed: the same command runs the failed point again and succeeds
    cli(["sweep", "--config", str(path)])  # returns: no failed trial left
    rows = report.main(["--sweep", "fails", "--quiet"])
    assert [r["state"] for r in rows] == ["complete", "pruned (epoch 0)", "failed (rerun as trial 3)", "complete"]


def test_report_of_a_missing_sweep_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert "no sweep database sweeps/none.db" in bad(capsys, tmp_path, "--sweep", "none", command="report")
    (tmp_path / "sweeps").mkdir()
    optuna.create_study(study_name="x", storage=f"sqlite:///{tmp_path / 'sweeps/other.db'}")
    with pytest.raises(UserError, match="no sweep named 'other'.*it holds: x"):
        report.main(["--sweep", "other", "--quiet"])


# -------------------------------------------------------------------------- test panels
def test_most_confused_pairs_and_worst_classes_by_name():
    confusion = torch.tensor([[8, 2, 0], [5, 1, 4], [0, 0, 10]])
    names = ["apple", "bee", "cat"]
    assert most_confused(confusion, names, k=2) == [("bee", "apple", 5, 0.5), ("bee", "cat", 4, 0.4)]
    assert worst_classes(confusion, names, k=2) == [("bee", 0.1, 10), ("apple", 0.8, 10)]
    assert most_confused(torch.eye(3, dtype=torch.long), names) == []


def test_report_lists_the_confusions_of_a_tested_run(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from mobilenet_lab.confusion import write_confusion_csv

    logdir = tmp_path / "lightning_logs"
    model = {"class_path": "mobilenet_lab.versions.MobileNetV3Small", "init_args": {"width_mult": 0.5}}
    for version, scalars, ckpt in (
        (0, {"val/acc": 0.4, "train/loss": 1.0}, None),
        (1, {"test/acc": 0.5}, "checkpoints/m/version_0/last.ckpt"),
    ):
        run = logdir / "m" / f"version_{version}"
        writer = SummaryWriter(str(run))
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, 0)
        writer.close()
        (run / "config.yaml").write_text(yaml.safe_dump({"model": model, "ckpt_path": ckpt}))
    write_confusion_csv(
        torch.tensor([[3, 1, 0], [2, 0, 2], [0, 0, 4]]),
        ["apple", "bee", "cat"],
        logdir / "m/version_1/confusion_matrix.csv",
    )
    rows = report.main(["--logdir", str(logdir), "--out", str(tmp_path / "out"), "--quiet"])
    assert [r["test_run"] for r in rows] == ["m/version_1"]
    text = (tmp_path / "out/report.md").read_text()
    assert "## m/version_0: test errors" in text
    assert "| bee | apple | 2 | 50.0% |" in text and "| bee | 0.0% | 4 |" in text


def test_cpu_trials_share_the_cores_unless_threads_are_set(monkeypatch):
    from mobilenet_lab.tools.sweep.devices import cpu_threads_env

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert cpu_threads_env(4, {}) == {"OMP_NUM_THREADS": "4"}
    assert cpu_threads_env(3, {}) == {"OMP_NUM_THREADS": "5"}
    assert cpu_threads_env(32, {}) == {"OMP_NUM_THREADS": "1"}
    assert cpu_threads_env(1, {}) == {}  # one trial keeps torch's default
    assert cpu_threads_env(4, {"OMP_NUM_THREADS": "2"}) == {}  # the user's choice stands

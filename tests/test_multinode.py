"""Two nodes on one machine (CPU, gloo, localhost): two torchrun launchers joined by a c10d rendezvous,
and two processes with the environment ``srun`` gives. Each rank trains on its own shard and one
checkpoint set is written; a SIGTERM to one node's launcher stops every rank at one step; a node
killed mid-fit resumes to the uninterrupted run's weights; Lightning detects SLURM.

Where a fit writes is checked with each torchrun launcher in its own working folder (``node0/``,
``node1/``), as nodes with local disks: everything is written by rank 0 into its node's folder, the other
stays empty. The data is an absolute path every node reads. The resume runs both launchers in one folder
(``shared/``), a shared filesystem mounted at the same path on every node: every rank reads the
checkpoint, and each node decides from its working folder that the run continues in place, so the
nodes must start from the same folder path. The SLURM test also runs both tasks in one folder, as
``sbatch`` does from the submit folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from test_resume import DDP_STEPS, RUN, children_of, env, fit_command, load, max_difference, signal_at, wait_for_step

ROOT = Path(__file__).resolve().parents[1]
TWO_NODES = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.num_nodes=2", "--trainer.strategy=ddp"]
TRAIN_SIZE = 300  # the tiny archive's 400 images less val_size=100
PER_RANK = DDP_STEPS * 16  # each rank's 150 samples in full batches of 16
MARKER = "MOBILENET_LAB_TEST_NODES"  # in the environment of every process a test starts (and their workers)
TIMEOUT = 240  # seconds for a two-node fit of 2 x 9 steps (about 35 s on a busy 2-core machine)


class RankRecord(L.Callback):
    """Writes ``<folder>/rank<global rank>.json`` at the end of fit (or its interruption): the cluster
    environment Lightning chose, the ranks, the working folder, the final global step, the exception that
    ended the fit (None) and the sample keys (``epoch * len(dataset) + index``) of every training batch
    this rank received."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.keys: dict[int, list[int]] = {}
        self.stopped_by: str | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from mobilenet_lab.data.datasets import TrainBatch

        datamodule = trainer.datamodule
        finish = datamodule.on_after_batch_transfer  # the data module's own hook, so Lightning calls it

        def record(batch: Any, dataloader_idx: int = 0) -> Any:
            if isinstance(batch, TrainBatch):
                self.keys.setdefault(trainer.current_epoch, []).extend(batch.aug[:, 0].tolist())
            return finish(batch, dataloader_idx)

        datamodule.on_after_batch_transfer = record

    def _write(self, trainer: L.Trainer) -> None:
        record = {
            "environment": type(trainer.strategy.cluster_environment).__name__,
            "world_size": trainer.world_size,
            "global_rank": trainer.global_rank,
            "node_rank": trainer.node_rank,
            "cwd": os.getcwd(),
            "global_step": trainer.global_step,
            "keys": self.keys,
            "stopped_by": self.stopped_by,
        }
        Path(self.folder, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.stopped_by = type(exception).__name__
        self._write(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)


def recorded(folder: Path) -> list[str]:
    return ["--trainer.callbacks+=test_multinode.RankRecord", f"--trainer.callbacks.init_args.folder={folder}"]


def records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def torchrun(command: list[str], port: int) -> list[str]:
    """``command`` (``python -m mobilenet_lab ...``) under a torchrun launcher standing for one of two nodes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=localhost:{port}",
        "--max_restarts=0",
        *command[1:],
    ]


def environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def marked(marker: str) -> list[int]:
    """Every process whose environment carries this test's marker (launchers, workers, orphans)."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != os.getpid()]
    return [pid for pid in pids if environ_of(pid).get(MARKER) == marker]


@contextlib.contextmanager
def started(commands: list[tuple[list[str], Path, dict[str, str]]], logs: Path) -> Iterator[list[subprocess.Popen]]:
    """Starts each (command, working folder, environment), output in ``logs/node<i>.log``; on leaving,
    SIGKILLs every process carrying the marker: launchers, their workers (torchrun gives each worker its
    own session, so a process group kill misses them) and anything orphaned."""
    logs.mkdir(parents=True, exist_ok=True)
    marker = str(logs)
    procs: list[subprocess.Popen] = []
    try:
        for i, (command, cwd, environment) in enumerate(commands):
            cwd.mkdir(parents=True, exist_ok=True)
            with open(logs / f"node{i}.log", "w") as out:
                procs.append(
                    subprocess.Popen(
                        command,
                        cwd=cwd,
                        env={**environment, MARKER: marker},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        yield procs
    finally:
        for pid in marked(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in procs:
            proc.kill()
            proc.wait(timeout=60)


def wait_all(procs: list[subprocess.Popen], logs: Path, timeout: float = TIMEOUT) -> list[int]:
    """Exit statuses of every process, or fail naming the ones still running after ``timeout`` (a hang)."""
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            running = [i for i, p in enumerate(procs) if p.poll() is None]
            pytest.fail(f"nodes {running} still running after {timeout} s\n{tails(logs)}")
    return [proc.returncode for proc in procs]


def tails(logs: Path, size: int = 3000) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-size:]}" for p in sorted(logs.glob("node*.log")))


def worker_of(launcher: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[int, int]:
    """(pid, global rank) of the worker a torchrun launcher started, once the rendezvous has ranked it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert launcher.poll() is None, "the launcher ended before its worker started"
        for pid in children_of(launcher.pid):
            rank = environ_of(pid).get("RANK")
            if rank is not None:
                return pid, int(rank)
        time.sleep(0.1)
    raise TimeoutError("no worker started")


def two_nodes(command: list[str], work: Path, shared: bool = False) -> list[tuple[list[str], Path, dict[str, str]]]:
    """The two launchers' (command, working folder, environment): ``work/node0``, ``work/node1``, or
    ``work/shared`` for both (a shared filesystem mounted at the same path on every node)."""
    port = free_port()
    return [(torchrun(command, port), work / ("shared" if shared else f"node{i}"), env()) for i in (0, 1)]


def checkpoints(work: Path) -> list[Path]:
    return sorted(p.relative_to(work) for p in work.rglob("*.ckpt"))


def node_of_rank0(work: Path) -> Path:
    """The working folder of the node whose worker got global rank 0 (the rendezvous decides)."""
    folder = Path(records(work / "records")[0]["cwd"])
    assert folder.parent == work
    return folder


@pytest.fixture(scope="module")
def two_node_fit(tiny_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted two-node fit: 2 epochs of 9 steps, each rank's keys recorded."""
    work = tmp_path_factory.mktemp("two_nodes")
    (work / "records").mkdir()
    command = fit_command(tiny_cifar, *TWO_NODES, *recorded(work / "records"))
    with started(two_nodes(command, work), work / "logs") as procs:
        codes = wait_all(procs, work / "logs")
    assert codes == [0, 0], tails(work / "logs")
    return work


def test_two_torchrun_nodes_train_on_their_own_shards_and_write_one_checkpoint_set(two_node_fit):
    work = two_node_fit
    ranks = records(work / "records")
    assert [(r["environment"], r["world_size"], r["global_rank"]) for r in ranks] == [
        ("TorchElasticEnvironment", 2, 0),
        ("TorchElasticEnvironment", 2, 1),
    ]
    assert sorted(r["node_rank"] for r in ranks) == [0, 1]
    assert {r["cwd"] for r in ranks} == {str(work / "node0"), str(work / "node1")}
    # Each rank got its own shard of every epoch, by global rank (by local rank, 0 on both nodes,
    # the two would train on the same samples): disjoint halves of one (seed, epoch) order.
    from mobilenet_lab.data.sampler import EpochKeySampler

    for rank, record in enumerate(ranks):
        sampler = EpochKeySampler(range(TRAIN_SIZE), num_replicas=2, rank=rank, seed=0)
        assert (record["global_step"], record["stopped_by"]) == (2 * DDP_STEPS, None)
        for epoch in (0, 1):
            expected = [epoch * TRAIN_SIZE + i for i in sampler.epoch_indices(epoch)[:PER_RANK]]
            assert record["keys"][str(epoch)] == expected, (rank, epoch)
    for epoch in ("0", "1"):
        assert not set(ranks[0]["keys"][epoch]) & set(ranks[1]["keys"][epoch])
    # One checkpoint set (the best and last.ckpt), written by rank 0 into its node's folder; the other
    # node's folder stays empty (no logs, no config, no checkpoints).
    node0 = node_of_rank0(work)
    best = next((node0 / RUN).glob("epoch*.ckpt"))
    assert checkpoints(work) == sorted([best.relative_to(work), (node0 / RUN / "last.ckpt").relative_to(work)])
    other = work / ("node1" if node0.name == "node0" else "node0")
    assert list(other.iterdir()) == []
    assert load(node0 / RUN / "last.ckpt")["global_step"] == 2 * DDP_STEPS


@pytest.mark.slow
@pytest.mark.parametrize("signalled_rank", [1, 0], ids=["rank1_node", "rank0_node"])
def test_sigterm_to_one_torchrun_launcher_stops_every_rank_at_one_step(signalled_rank, tiny_cifar, tmp_path):
    """The launcher (torchrun's agent) forwards SIGTERM to its worker: GracefulStop's joint decision
    stops both ranks after the same batch, rank 0 saves last.ckpt, both launchers exit."""
    (tmp_path / "records").mkdir()
    command = fit_command(tiny_cifar, *TWO_NODES, "--checkpoint.last_every_n_steps=3", *recorded(tmp_path / "records"))
    logs = tmp_path / "logs"
    with started(two_nodes(command, tmp_path), logs) as launchers:
        ranks = {worker_of(launcher)[1]: i for i, launcher in enumerate(launchers)}
        assert sorted(ranks) == [0, 1]
        rank0_folder = tmp_path / f"node{ranks[0]}"
        wait_for_step(rank0_folder / RUN / "last.ckpt", launchers[ranks[0]], minimum=3, timeout=TIMEOUT)
        signalled = launchers[ranks[signalled_rank]]
        signalled.send_signal(signal.SIGTERM)  # the agent only, as a scheduler or `kill <pid>` would
        sent = time.monotonic()
        codes = wait_all(launchers, logs)
        took = time.monotonic() - sent
        leftovers = marked(str(logs))
    output = tails(logs, size=10**6)
    assert not leftovers, output
    assert took < 60, output  # no hang: both launchers are gone well within a minute
    # torchrun exits 1 on both nodes: the signalled agent re-raises the signal as SignalException after
    # its worker has exited (within its 30 s shutdown timeout: no SIGKILL), the other reports its
    # worker's exit status, 143 (128 + SIGTERM).
    assert codes == [1, 1], (codes, output)
    signalled_log, other_log = (
        (logs / f"node{ranks[r]}.log").read_text() for r in (signalled_rank, 1 - signalled_rank)
    )
    assert "Received 15 death signal" in signalled_log and "forcefully exiting" not in signalled_log, output
    assert "exitcode  : 143" in other_log, output
    assert f'File "{ROOT / "mobilenet_lab"}' not in output  # no worker traceback
    stopped = [line for line in output.splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 1 and "--ckpt_path" in stopped[0], output
    last = rank0_folder / RUN / "last.ckpt"
    assert [p for p in checkpoints(tmp_path) if p.name == "last.ckpt"] == [last.relative_to(tmp_path)]
    step = load(last)["global_step"]
    assert 3 <= step < 2 * DDP_STEPS
    ranks = records(tmp_path / "records")
    assert [(r["global_step"], r["stopped_by"]) for r in ranks] == [(step, "TrainingInterrupted")] * 2


@pytest.mark.slow
def test_sigkill_of_one_node_then_resume_matches_uninterrupted(tiny_cifar, tmp_path, two_node_fit):
    """Rank 1's node dies (launcher and worker SIGKILLed) after step 13, last.ckpt is at step 12;
    the same two commands with --ckpt_path end with the uninterrupted run's weights."""
    every = "--checkpoint.last_every_n_steps=3"
    # Rank 1 stops itself (SIGSTOP) after batch 3 of epoch 1, so the kill lands at a known step.
    command = fit_command(tiny_cifar, *TWO_NODES, every, *signal_at("train_batch", 1, 3, rank=1, signal_name="SIGSTOP"))
    logs = tmp_path / "logs"
    with started(two_nodes(command, tmp_path, shared=True), logs) as launchers:
        workers = [worker_of(launcher) for launcher in launchers]
        victim = next(i for i, (_, rank) in enumerate(workers) if rank == 1)
        survivor = 1 - victim
        deadline = time.monotonic() + TIMEOUT
        while Path(f"/proc/{workers[victim][0]}/stat").read_text().split(") ")[1][0] != "T":
            assert time.monotonic() < deadline and all(p.poll() is None for p in launchers), tails(logs)
            time.sleep(0.1)
        os.kill(launchers[victim].pid, signal.SIGKILL)
        os.kill(workers[victim][0], signal.SIGKILL)
        launchers[victim].wait(timeout=60)
        # The survivor's next collective fails (gloo: the peer closed the connection): it must not hang.
        survivor_code = wait_all([launchers[survivor]], logs, timeout=120)[0]
        leftovers = marked(str(logs))
    output = tails(logs, size=10**6)
    assert not leftovers, output
    assert launchers[victim].returncode == -signal.SIGKILL
    assert survivor_code == 1 and "by peer" in output, output  # torchrun: its worker failed
    last = tmp_path / "shared" / RUN / "last.ckpt"
    assert load(last)["global_step"] == DDP_STEPS + 3
    resume = fit_command(tiny_cifar, *TWO_NODES, every, f"--ckpt_path={RUN / 'last.ckpt'}")
    with started(two_nodes(resume, tmp_path, shared=True), tmp_path / "resume_logs") as launchers:
        codes = wait_all(launchers, tmp_path / "resume_logs")
    assert codes == [0, 0], tails(tmp_path / "resume_logs")
    final = load(last)
    expected = load(node_of_rank0(two_node_fit) / RUN / "last.ckpt")
    assert final["global_step"] == expected["global_step"] == 2 * DDP_STEPS
    assert max_difference(final["state_dict"], expected["state_dict"]) <= 1e-6
    assert [p.name for p in checkpoints(tmp_path) if p.name == "last.ckpt"] == ["last.ckpt"]


def srun_environment(rank: int, port: int) -> dict[str, str]:
    """What ``srun`` (sbatch --nodes 2 --ntasks-per-node 1) puts in task ``rank``'s environment."""
    return {
        **env(),
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "mobilenet",
        "SLURM_NNODES": "2",
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NODELIST": "localhost",
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": str(rank),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


@pytest.mark.slow
def test_slurm_environment_is_detected_and_the_readme_line_fits(tiny_cifar, tmp_path):
    """README's SLURM line (configs/trainer/ddp.yaml, --trainer.num_nodes 2) made CPU-sized, as two srun tasks."""
    (tmp_path / "records").mkdir()
    command = fit_command(
        tiny_cifar,
        "--config",
        ROOT / "configs/trainer/ddp.yaml",
        *TWO_NODES,
        "--trainer.precision=32-true",
        "--trainer.sync_batchnorm=false",
        "--data.num_workers=0",
        "--data.pin_memory=false",
        *recorded(tmp_path / "records"),
    )
    port = free_port()
    work = tmp_path / "job"  # one submit folder for both tasks
    with started([(command, work, srun_environment(rank, port)) for rank in (0, 1)], tmp_path / "logs") as procs:
        codes = wait_all(procs, tmp_path / "logs")
    assert codes == [0, 0], tails(tmp_path / "logs")
    ranks = records(tmp_path / "records")
    assert [(r["environment"], r["global_rank"], r["node_rank"]) for r in ranks] == [
        ("SLURMEnvironment", 0, 0),
        ("SLURMEnvironment", 1, 1),
    ]
    assert [(r["global_step"], r["stopped_by"]) for r in ranks] == [(2 * DDP_STEPS, None)] * 2
    assert not set(ranks[0]["keys"]["0"]) & set(ranks[1]["keys"]["0"])
    best = next((work / RUN).glob("epoch*.ckpt"))
    assert checkpoints(tmp_path) == sorted(
        [best.relative_to(tmp_path), (work / RUN / "last.ckpt").relative_to(tmp_path)]
    )

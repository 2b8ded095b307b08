"""Nothing lost: last.ckpt is the latest state; a kill at any moment then resume gives the uninterrupted run's
weights and one continuous set of curves; graceful stop (one process or DDP); atomic saves."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import cli_command, cli_env, run_command
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs/quickstart.yaml")
RUN = Path("checkpoints/quickstart/version_0")
LOGS = Path("lightning_logs/quickstart/version_0")
STEPS_PER_EPOCH = 18  # 300 training images in batches of 16


def fit_command(data_dir: Path, *extra: str) -> list[str]:
    # V3-Small 0.25, 300 training images in batches of 16: 18 steps per epoch, 2 epochs,
    # deterministic algorithms (CPU), every step logged.
    return cli_command(
        "fit",
        "--config",
        QUICK,
        f"--data.data_dir={data_dir}",
        "--model.init_args.width_mult=0.25",
        "--data.batch_size=16",
        "--data.val_size=100",
        "--trainer.max_epochs=2",
        "--trainer.deterministic=true",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
        # lr 0.2 as given, not scaled down to batch 16: the weights move enough between epochs that the
        # best and the last checkpoint differ measurably
        "--model.init_args.lr_reference_batch_size=null",
        "--model.init_args.optimizer.init_args.lr=0.2",
        *extra,
    )


def signal_at(moment: str, epoch: int, batch: int = 0, rank: int = -1, signal_name: str = "SIGKILL") -> list[str]:
    """Options adding tests/kill_points.SignalAt: the fit signals itself at that exact moment."""
    return [
        "--trainer.callbacks+=kill_points.SignalAt",
        f"--trainer.callbacks.init_args.moment={moment}",
        f"--trainer.callbacks.init_args.epoch={epoch}",
        f"--trainer.callbacks.init_args.batch={batch}",
        f"--trainer.callbacks.init_args.rank={rank}",
        f"--trainer.callbacks.init_args.signal_name={signal_name}",
    ]


def env() -> dict[str, str]:
    return cli_env(CUBLAS_WORKSPACE_CONFIG=":4096:8")


def run(command: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return run_command(command, cwd, timeout=timeout, env=env())


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel())


def scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar over all event files of a run folder, as TensorBoard shows them."""
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def assert_same_run(work: Path, reference: Path) -> None:
    """Same final weights as the reference run, in one version folder, with the same curves."""
    final, expected = load(work / RUN / "last.ckpt"), load(reference / RUN / "last.ckpt")
    assert final["global_step"] == expected["global_step"] == 2 * STEPS_PER_EPOCH
    assert max_difference(final["state_dict"], expected["state_dict"]) <= 1e-6
    assert sorted(p.name for p in (work / "checkpoints/quickstart").iterdir()) == ["version_0"]
    assert sorted(p.name for p in (work / "lightning_logs/quickstart").iterdir()) == ["version_0"]
    for tag in ("val/acc", "val/loss", "train/loss", "lr-SGD"):
        got, want = scalars(work / LOGS, tag), scalars(reference / LOGS, tag)
        assert [s for s, _ in got] == [s for s, _ in want], tag  # no gap, no duplicated step
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-5), tag


@pytest.fixture(scope="module")
def uninterrupted(plateau_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: 2 epochs on shuffled labels (val/acc does not improve after epoch 0)."""
    work = tmp_path_factory.mktemp("uninterrupted")
    result = run(fit_command(plateau_cifar), work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "`weights_only` was not set" not in result.stderr + result.stdout
    return work


def test_last_checkpoint_is_the_final_state_on_a_plateau(uninterrupted, plateau_cifar, monkeypatch):
    import torch.nn.functional as F

    from mobilenet_lab import load_model
    from mobilenet_lab.cli import MobileNetCLI
    from mobilenet_lab.data import load_split

    last = uninterrupted / RUN / "last.ckpt"
    best = next((uninterrupted / RUN).glob("epoch*.ckpt"))
    assert load(best)["global_step"] == STEPS_PER_EPOCH  # val/acc did not improve: best stays at epoch 0
    assert load(last)["global_step"] == 2 * STEPS_PER_EPOCH  # last.ckpt moved on anyway
    # `test --ckpt_path last.ckpt` evaluates the final weights: its loss is theirs, not the best's.
    test = load_split(plateau_cifar, "test")
    smoothing = load(last)["hyper_parameters"]["label_smoothing"]

    def loss_of(path: Path) -> float:
        with torch.no_grad():
            logits = load_model(path)(test.images.float() / 255)
        return F.cross_entropy(logits, test.labels, label_smoothing=smoothing).item()

    monkeypatch.chdir(uninterrupted)
    cli = MobileNetCLI(
        args=[
            "test",
            f"--ckpt_path={last}",
            f"--data.data_dir={plateau_cifar}",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
        ]
    )
    reported = float(cli.trainer.callback_metrics["test/loss"])
    final_loss, best_loss = loss_of(last), loss_of(best)
    assert reported == pytest.approx(final_loss, abs=1e-5)
    assert abs(reported - best_loss) > 10 * abs(reported - final_loss) and abs(reported - best_loss) > 1e-4


@pytest.mark.parametrize(
    ("moment", "epoch", "batch", "every_n", "resumes_at"),
    [
        # during the 2nd epoch's validation, last.ckpt refreshed every 5 steps: mid-epoch checkpoint
        ("validation_batch", 1, 2, 5, 35),
        # right after the 1st epoch's end checkpoint
        pytest.param("epoch_start", 1, 0, 0, 18, marks=pytest.mark.slow),
        # mid-epoch without last_every_n_steps: back to the epoch end
        pytest.param("train_batch", 1, 7, 0, 18, marks=pytest.mark.slow),
        # mid-epoch with last_every_n_steps: the kill lands after step 26, last.ckpt is at 24
        pytest.param("train_batch", 1, 7, 3, 24, marks=pytest.mark.slow),
        # during the 1st epoch's validation with a step interval dividing the epoch: no last.ckpt is
        # written at the epoch's last batch (before validation), the resume repeats the validation
        pytest.param("validation_batch", 0, 2, 9, 9, marks=pytest.mark.slow),
    ],
)
def test_sigkill_then_resume_matches_uninterrupted(
    moment, epoch, batch, every_n, resumes_at, plateau_cifar, tmp_path, uninterrupted
):
    options = [f"--checkpoint.last_every_n_steps={every_n}"]
    killed = run(fit_command(plateau_cifar, *options, *signal_at(moment, epoch, batch)), tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = tmp_path / RUN / "last.ckpt"
    assert load(last)["global_step"] == resumes_at
    resumed = run(fit_command(plateau_cifar, *options, f"--ckpt_path={RUN / 'last.ckpt'}"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr
    assert_same_run(tmp_path, uninterrupted)


def test_resume_into_a_new_version_when_asked(plateau_cifar, tmp_path, uninterrupted):
    """--trainer.logger.init_args.version starts new folders; the weights are the same."""
    killed = run(fit_command(plateau_cifar, *signal_at("epoch_start", 1)), tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = run(
        fit_command(plateau_cifar, f"--ckpt_path={RUN / 'last.ckpt'}", "--trainer.logger.init_args.version=resumed"),
        tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    new = load(tmp_path / "checkpoints/quickstart/resumed/last.ckpt")
    assert new["global_step"] == 2 * STEPS_PER_EPOCH
    assert max_difference(new["state_dict"], load(uninterrupted / RUN / "last.ckpt")["state_dict"]) <= 1e-6
    assert load(tmp_path / RUN / "last.ckpt")["global_step"] == STEPS_PER_EPOCH  # the old run is left alone
    assert scalars(tmp_path / "lightning_logs/quickstart/resumed", "val/acc")


@pytest.mark.slow
def test_resume_from_a_best_checkpoint_matches_uninterrupted(plateau_cifar, tmp_path, uninterrupted):
    """The best checkpoint (end of epoch 0) of a finished run: the resumed run redoes epoch 1 in place."""
    import shutil

    for folder in ("checkpoints", "lightning_logs"):
        shutil.copytree(uninterrupted / folder, tmp_path / folder)
    best = next((tmp_path / RUN).glob("epoch*.ckpt"))
    assert load(best)["global_step"] == STEPS_PER_EPOCH
    resumed = run(fit_command(plateau_cifar, f"--ckpt_path={best.relative_to(tmp_path)}"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(tmp_path, uninterrupted)


def wait_for_step(path: Path, proc: subprocess.Popen, minimum: int, timeout: float = 600) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "fit ended before it could be interrupted"
        if path.is_file():
            step = load(path)["global_step"]
            if step >= minimum:
                return step
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint at step >= {minimum}")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_graceful_stop_writes_checkpoint_and_resumes_exactly(sig, code, plateau_cifar, tmp_path, uninterrupted):
    last = tmp_path / RUN / "last.ckpt"
    command = fit_command(plateau_cifar, "--checkpoint.last_every_n_steps=3")
    proc = subprocess.Popen(command, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_step(last, proc, minimum=6)
        proc.send_signal(sig)  # from outside, at whatever point the fit is
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr
    message = [line for line in stderr.splitlines() if line.startswith("stopped:")]
    assert len(message) == 1 and "--ckpt_path" in message[0] and "last.ckpt" in message[0]
    assert "`weights_only` was not set" not in stderr
    stopped_at = load(last)["global_step"]
    assert 6 <= stopped_at < 2 * STEPS_PER_EPOCH
    resumed = run(command + [f"--ckpt_path={RUN / 'last.ckpt'}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(tmp_path, uninterrupted)


# ------------------------------------------------------------------------------------------------
# DDP: 2 CPU processes (gloo)
# ------------------------------------------------------------------------------------------------

DDP = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
DDP_STEPS = 9  # 300 images / 2 ranks / 16 per batch


@pytest.fixture(scope="module")
def uninterrupted_ddp(plateau_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("uninterrupted_ddp")
    result = run(fit_command(plateau_cifar, *DDP), work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def children_of(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").is_file() else ""
        children += [int(c) for c in text.split()]
    return children


@pytest.mark.slow
@pytest.mark.parametrize("rank", [1, -1], ids=["rank1", "all_ranks"])
def test_ddp_sigterm_stops_every_rank_at_one_step_and_resumes_exactly(rank, plateau_cifar, tmp_path, uninterrupted_ddp):
    # SIGTERM reaches rank 1 only (or every rank) after batch 3 of epoch 1.
    command = fit_command(plateau_cifar, *DDP, *signal_at("train_batch", 1, 3, rank=rank, signal_name="SIGTERM"))
    proc = subprocess.Popen(command, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=600)  # a hang fails here
    finally:
        leftovers = children_of(proc.pid) if proc.poll() is None else []
        proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    assert not leftovers
    assert len([line for line in stderr.splitlines() if line.startswith("stopped:")]) == 1
    assert "Traceback" not in stderr
    assert [p.name for p in tmp_path.rglob("*.ckpt") if "epoch" not in p.name] == ["last.ckpt"]
    stopped = load(tmp_path / RUN / "last.ckpt")
    assert stopped["global_step"] == DDP_STEPS + 4  # both ranks stopped after the same step
    assert len(stopped["rng"]["torch"]) == 2  # one RNG state per rank
    resumed = run(fit_command(plateau_cifar, *DDP, f"--ckpt_path={RUN / 'last.ckpt'}"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final, expected = load(tmp_path / RUN / "last.ckpt"), load(uninterrupted_ddp / RUN / "last.ckpt")
    assert final["global_step"] == expected["global_step"] == 2 * DDP_STEPS
    assert max_difference(final["state_dict"], expected["state_dict"]) <= 1e-6


SAVER = """
import sys, torch
from mobilenet_lab.run_layout import AtomicCheckpointIO
io = AtomicCheckpointIO()
path = sys.argv[1]
i = 0
while True:
    i += 1
    io.save_checkpoint({"state_dict": {"w": torch.full((2_000_000,), float(i))}, "i": i}, path)
    print(i, flush=True)
"""


def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    from mobilenet_lab.run_layout import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    for delay in (0.02, 0.05, 0.11, 0.17, 0.23, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], env=env(), stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # one save done: a previous good file exists
        time.sleep(delay)  # now kill at some point inside a later save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        printed = [int(first), *map(int, proc.stdout.read().split())]  # saves that had completed
        checkpoint = AtomicCheckpointIO().load_checkpoint(path)
        i = checkpoint["i"]
        assert torch.equal(checkpoint["state_dict"]["w"], torch.full((2_000_000,), float(i)))
        # The newest completed save: the last one reported, or one more that finished before its print.
        assert i in (printed[-1], printed[-1] + 1), (i, printed)

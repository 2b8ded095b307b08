"""Nothing lost: SIGKILL mid-epoch and resume gives the uninterrupted run's weights; graceful stop; atomic saves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs/quickstart.yaml")


def fit_command(data_dir: Path, *extra: str) -> list[str]:
    # V3-Small 0.25, 300 training images in batches of 16: 18 steps per epoch, 2 epochs,
    # last.ckpt every 3 steps, deterministic algorithms (CPU).
    return [sys.executable, "-m", "mobilenet_lab", "fit", "--config", QUICK, f"--data.data_dir={data_dir}",
            "--model.init_args.width_mult=0.25", "--data.batch_size=16", "--data.val_size=100",
            "--trainer.max_epochs=2", "--trainer.deterministic=true", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--checkpoint.last_every_n_steps=3", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def final_weights(work: Path, version: int) -> dict[str, torch.Tensor]:
    last = work / f"checkpoints/quickstart/version_{version}/last.ckpt"
    return torch.load(last, weights_only=True)["state_dict"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].numel())


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


@pytest.fixture(scope="module")
def uninterrupted(tiny_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    work = tmp_path_factory.mktemp("uninterrupted")
    result = subprocess.run(fit_command(tiny_cifar), cwd=work, env=env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return final_weights(work, 0)


def wait_for_step(path: Path, proc: subprocess.Popen, minimum: int, timeout: float = 600) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "fit ended before it could be interrupted"
        if path.is_file():
            step = step_of(path)
            if step >= minimum:
                return step
        time.sleep(0.05)
    raise TimeoutError(f"no checkpoint at step >= {minimum}")


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tiny_cifar, tmp_path, uninterrupted):
    last = tmp_path / "checkpoints/quickstart/version_0/last.ckpt"
    proc = subprocess.Popen(fit_command(tiny_cifar), cwd=tmp_path, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        step = wait_for_step(last, proc, minimum=21)  # inside the second epoch (18 steps per epoch)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert step % 18 != 0, "the test wants a mid-epoch checkpoint"
    assert step_of(last) < 36
    resumed = subprocess.run(fit_command(tiny_cifar, f"--ckpt_path={last}"), cwd=tmp_path, env=env(),
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    weights = final_weights(tmp_path, 1)  # the resumed run writes its own version
    assert max_difference(weights, uninterrupted) <= 1e-6


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_graceful_stop_writes_checkpoint_and_resumes_exactly(sig, code, tiny_cifar, tmp_path, uninterrupted):
    last = tmp_path / "checkpoints/quickstart/version_0/last.ckpt"
    proc = subprocess.Popen(fit_command(tiny_cifar), cwd=tmp_path, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_step(last, proc, minimum=6)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr
    message = [line for line in stderr.splitlines() if line.startswith("stopped:")]
    assert len(message) == 1 and "--ckpt_path" in message[0] and "last.ckpt" in message[0]
    stopped_at = step_of(last)
    assert 6 <= stopped_at < 36
    resumed = subprocess.run(fit_command(tiny_cifar, f"--ckpt_path={last}"), cwd=tmp_path, env=env(),
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert max_difference(final_weights(tmp_path, 1), uninterrupted) <= 1e-6


SAVER = """
import sys, torch
from mobilenet_lab.callbacks import AtomicCheckpointIO
io = AtomicCheckpointIO()
path = sys.argv[1]
i = 0
while True:
    i += 1
    io.save_checkpoint({"state_dict": {"w": torch.full((2_000_000,), float(i))}, "i": i}, path)
    print(i, flush=True)
"""


def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    from mobilenet_lab.callbacks import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    seen = []
    for delay in (0.02, 0.05, 0.11, 0.17, 0.23, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], env=env(),
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline()  # one save done: a previous good file exists
        time.sleep(delay)  # now kill at some point inside a later save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        checkpoint = AtomicCheckpointIO().load_checkpoint(path)
        i = checkpoint["i"]
        assert torch.equal(checkpoint["state_dict"]["w"], torch.full((2_000_000,), float(i)))
        seen.append(i)
    assert all(i >= 1 for i in seen)

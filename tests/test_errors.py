"""Bad input: one clear line, non-zero exit, no traceback, nothing lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mobilenet_lab.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "configs/quickstart.yaml")


@pytest.fixture(autouse=True)
def _log_to_captured_stderr():
    # Lightning's log handlers keep the stderr of the test that imported it; point them at this
    # test's captured stream so a closed one does not print "--- Logging error ---".
    import logging

    handlers = [
        h
        for name in ("lightning.pytorch", "lightning.fabric", "lightning")
        for h in logging.getLogger(name).handlers
        if isinstance(h, logging.StreamHandler)
    ]
    for handler in handlers:
        handler.stream = sys.stderr  # (setStream would flush the closed one first)
    yield


def fails_with(args: list[str], capsys, *needles: str) -> str:
    """Runs the command in-process; it must exit 2 with one `error:` line containing the needles."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-2000:]
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err[-2000:]
    return err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def work(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("--model.init_args.width_mult=0", ["width_mult must be > 0"]),
        ("--model.init_args.width_mult=-0.5", ["width_mult must be > 0"]),
        ("--model.init_args.downsamples_removed=7", ["downsamples_removed must be in 0..5"]),
        ("--data.batch_size=0", ["batch_size", "--data.batch_size"]),
        ("--trainer.accelerator=gpu", ["no CUDA GPU", "--trainer.accelerator cpu"]),
        ("--trainer.devices=64", ["64", "cores"]),
        ("--model.init_args.bn_momentum=7", ["bn_momentum must be in (0, 1]"]),
        ("--trainer.sync_batchnorm=true", ["sync_batchnorm works on GPUs only", "--trainer.sync_batchnorm false"]),
    ],
)
def test_bad_values_fail_fast(override, needles, work, capsys, tiny_cifar):
    if "gpu" in override and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    err = fails_with(["fit", "--config", QUICK, f"--data.data_dir={tiny_cifar}", override], capsys, *needles)
    error_line(err)
    assert not (work / "checkpoints").exists()  # failed before training started


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("--model=MobileNetV9", "MobileNetV9"),
        ("--model.init_args.optimizer=torch.optim.Sgdd", "Sgdd"),
        ("--model.init_args.lr_scheduler=mobilenet_lab.schedules.Cosinus", "Cosinus"),
        ("--data.bogus_key=1", "bogus_key"),
        ("--model.init_args.stem=tiny", "tiny"),
    ],
)
def test_unknown_names_and_keys_are_jsonargparse_errors(override, needle, work, capsys):
    err = fails_with(["fit", "--config", QUICK, override], capsys, needle)
    assert "error:" in err


def test_missing_dataset_offline(work, capsys):
    err = fails_with(["fit", "--config", QUICK, "--data.data_dir=nowhere"], capsys, "cifar-100-python", "download")
    error_line(err)


def test_truncated_dataset(work, capsys, tiny_cifar):
    broken = work / "broken"
    (broken / "cifar-100-python").mkdir(parents=True)
    for name in ("train", "test", "meta"):
        data = (tiny_cifar / "cifar-100-python" / name).read_bytes()
        (broken / "cifar-100-python" / name).write_bytes(data[: len(data) // 2] if name == "train" else data)
    err = fails_with(["fit", "--config", QUICK, f"--data.data_dir={broken}"], capsys, "train")
    error_line(err)


def test_unwritable_log_dir(work, capsys, tiny_cifar):
    if os.geteuid() == 0:
        # root ignores permission bits: use a path below a regular file instead
        (work / "file").write_text("x")
        target = work / "file" / "logs"
    else:
        (work / "ro").mkdir(mode=0o500)
        target = work / "ro" / "logs"
    err = fails_with(
        ["fit", "--config", QUICK, f"--data.data_dir={tiny_cifar}", f"--trainer.logger.init_args.save_dir={target}"],
        capsys,
        "cannot write",
    )
    error_line(err)


def test_config_of_another_run_is_not_overwritten(work, capsys, tiny_cifar):
    taken = work / "lightning_logs/quickstart/version_3/config.yaml"
    taken.parent.mkdir(parents=True)
    taken.write_text("another run's config")
    err = fails_with(
        [
            "fit",
            "--config",
            QUICK,
            f"--data.data_dir={tiny_cifar}",
            "--trainer.logger.init_args.version=3",
            "--data.val_size=100",
            "--trainer.enable_progress_bar=false",
        ],
        capsys,
        "already exists",
    )
    assert str(taken.relative_to(work)) in error_line(err)
    assert taken.read_text() == "another run's config"


def test_unknown_command(capsys):
    err = fails_with(["fitt"], capsys, "unknown command 'fitt'", "fit, validate, test, predict, summary")
    error_line(err)


@pytest.fixture(scope="module")
def checkpoint(tiny_cifar, tmp_path_factory) -> Path:
    """A real checkpoint from two steps of V3-Small 0.25 on the tiny archive."""
    work = tmp_path_factory.mktemp("ckpt")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        from mobilenet_lab.cli import MobileNetCLI

        cli = MobileNetCLI(
            args=[
                "fit",
                "--config",
                QUICK,
                f"--data.data_dir={tiny_cifar}",
                "--model.init_args.width_mult=0.25",
                "--trainer.max_steps=2",
                "--trainer.max_epochs=1",
                "--data.batch_size=16",
                "--data.val_size=100",
                "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false",
            ]
        )
        del cli
    finally:
        os.chdir(cwd)
    return next((work / "checkpoints").rglob("last.ckpt"))


@pytest.mark.parametrize("command", ["test", "validate", "predict"])
def test_missing_checkpoint(command, work, capsys, tiny_cifar):
    err = fails_with(
        [command, "--config", QUICK, f"--data.data_dir={tiny_cifar}", "--ckpt_path=nope.ckpt"],
        capsys,
        "nope.ckpt",
        "does not exist",
    )
    error_line(err)


def test_truncated_checkpoint(checkpoint, work, capsys, tiny_cifar):
    cut = work / "cut.ckpt"
    data = checkpoint.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    err = fails_with(["test", f"--data.data_dir={tiny_cifar}", f"--ckpt_path={cut}"], capsys, "cut.ckpt", "truncated")
    error_line(err)


@pytest.mark.parametrize("text", ["hello", "model:\n  class_path: x\n", "# notes\n", "123\n", ""])
def test_not_a_checkpoint(text, work, capsys, tiny_cifar):
    junk = work / "notes.ckpt"
    junk.write_text(text)
    err = fails_with(
        ["test", f"--data.data_dir={tiny_cifar}", f"--ckpt_path={junk}"],
        capsys,
        "notes.ckpt",
        "not a readable checkpoint",
    )
    assert "could run code" not in error_line(err)
    torch.save({"weights": torch.zeros(2)}, work / "plain.ckpt")
    err = fails_with(
        ["test", f"--data.data_dir={tiny_cifar}", f"--ckpt_path={work / 'plain.ckpt'}"],
        capsys,
        "not a Lightning checkpoint",
    )


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_code_is_refused_and_does_not_run(checkpoint, work, capsys, tiny_cifar):
    marker = work / "pwned"
    evil = torch.load(checkpoint, weights_only=True)
    evil["payload"] = _Payload(marker)
    path = work / "evil.ckpt"
    torch.save(evil, path)
    err = fails_with(["test", f"--data.data_dir={tiny_cifar}", f"--ckpt_path={path}"], capsys, "refusing to load")
    assert "could run code" in error_line(err) and "system" in error_line(err)
    assert not marker.exists()
    from mobilenet_lab import load_model
    from mobilenet_lab.errors import CheckpointError

    with pytest.raises(CheckpointError, match="refusing"):
        load_model(path)
    assert not marker.exists()
    # The file really runs code when loaded unsafely, so the refusals above are what kept it from running.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_architecture_mismatch(checkpoint, work, capsys, tiny_cifar):
    # The checkpoint is V3-Small 0.25; the config says 0.5.
    err = fails_with(
        [
            "test",
            "--config",
            QUICK,
            f"--data.data_dir={tiny_cifar}",
            f"--ckpt_path={checkpoint}",
            "--model.init_args.width_mult=0.5",
        ],
        capsys,
        "does not match",
        "width_mult",
    )
    error_line(err)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(work, capsys, tiny_cifar):
    err = fails_with(
        [
            "fit",
            "--config",
            QUICK,
            f"--data.data_dir={tiny_cifar}",
            "--model.init_args.width_mult=0.25",
            "--data.batch_size=16",
            "--data.val_size=100",
            "--trainer.max_epochs=3",
            "--trainer.enable_progress_bar=false",
            "--checkpoint.last_every_n_steps=1",
            # lr 1e30 makes the weights explode within a few steps
            "--model.init_args.optimizer.init_args.lr=1e30",
            "--model.init_args.lr_scheduler=null",
        ],
        capsys,
        "loss is",
        "step",
    )
    line = error_line(err)
    assert "last good checkpoint" in line
    last = next(work.glob("checkpoints/*/version_0/last.ckpt"))
    state = torch.load(last, weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_debug_flag_shows_traceback(tmp_path, tiny_cifar):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "mobilenet_lab", "fit", "--config", QUICK, "--data.data_dir=nowhere"]
    plain = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and "error: " in plain.stderr
    debug = subprocess.run(cmd + ["--debug"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stderr

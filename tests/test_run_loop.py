"""The loop a user runs after the first fit: test, predict, resume and extend a run with nothing retyped.

A checkpoint holds its run's config, name and version, so ``test``/``predict --ckpt_path C`` need no
``--data.data_dir`` and write beside the run; ``fit --ckpt_path C`` alone resumes; the saved
config.yaml resumes any number of times; a failed command leaves nothing; usage errors are short.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, python_m

QUICK = str(ROOT / "configs/quickstart.yaml")
TINY = [
    "--model.init_args.width_mult=0.25",
    "--data.batch_size=16",
    "--data.val_size=100",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.logger.init_args.name=loop",
]
RUN = Path("checkpoints/loop/version_0")
LOGS = Path("lightning_logs/loop/version_0")


def fit(cwd: Path, *args: object) -> None:
    result = python_m(["fit", *args], cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def run(tiny_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch run named ``loop`` (18 steps an epoch)."""
    work = tmp_path_factory.mktemp("loop")
    fit(work, "--config", QUICK, f"--data.data_dir={tiny_cifar}", "--trainer.max_epochs=2", *TINY)
    return work


def test_test_and_predict_land_beside_their_run_without_the_data_folder(run: Path, tmp_path: Path):
    from PIL import Image

    elsewhere = tmp_path / "elsewhere"  # another working folder: nothing relative to the run's
    elsewhere.mkdir()
    result = python_m(["test", f"--ckpt_path={run / RUN / 'last.ckpt'}"], cwd=elsewhere)
    assert result.returncode == 0, result.stderr[-3000:]
    out = run / "lightning_logs/loop/version_0_test"
    assert f"writing to {out}" in result.stdout + result.stderr
    assert (out / "config.yaml").is_file() and (out / "confusion_matrix.csv").is_file()
    assert "dirpath has changed" not in result.stdout + result.stderr
    assert not (elsewhere / "lightning_logs").exists() and not (elsewhere / "checkpoints").exists()
    again = python_m(["test", f"--ckpt_path={run / RUN / 'last.ckpt'}"], cwd=elsewhere)
    assert again.returncode == 0 and (run / "lightning_logs/loop/version_0_test_2/confusion_matrix.csv").is_file()

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(images / "red.png")
    result = python_m(
        ["predict", f"--ckpt_path={run / RUN / 'last.ckpt'}", f"--data.predict_dir={images}"], cwd=elsewhere
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((run / "lightning_logs/loop/version_0_predict/predictions.csv").open()))
    assert [r["file"] for r in rows] == ["red.png"]


def test_a_failed_command_writes_nothing(run: Path, tmp_path: Path):
    before = sorted(p.name for p in (run / "lightning_logs/loop").iterdir())
    result = python_m(
        ["predict", f"--ckpt_path={run / RUN / 'last.ckpt'}", f"--data.predict_dir={tmp_path / 'no'}"], cwd=run
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: predict_dir")
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (run / "lightning_logs/loop").iterdir()) == before


def test_the_saved_config_resumes_a_run_twice_in_a_row(tiny_cifar: Path, tmp_path: Path):
    # Stopped by SIGTERM at step 6 of 36: last.ckpt written, exit 143.
    stop = [
        "--trainer.callbacks+=kill_points.SignalAt",
        "--trainer.callbacks.init_args.moment=train_batch",
        "--trainer.callbacks.init_args.epoch=0",
        "--trainer.callbacks.init_args.batch=5",
        "--trainer.callbacks.init_args.signal_name=SIGTERM",
    ]
    result = python_m(
        ["fit", "--config", QUICK, f"--data.data_dir={tiny_cifar}", "--trainer.max_epochs=2", *TINY, *stop],
        cwd=tmp_path,
    )
    assert result.returncode == 143, result.stderr[-3000:]
    assert torch.load(tmp_path / RUN / "last.ckpt", weights_only=True)["global_step"] == 6
    resume = ["--config", str(LOGS / "config.yaml"), f"--ckpt_path={RUN / 'last.ckpt'}"]
    fit(tmp_path, *resume)
    assert torch.load(tmp_path / RUN / "last.ckpt", weights_only=True)["global_step"] == 36
    saved = yaml.safe_load((tmp_path / LOGS / "config.yaml").read_text())
    assert saved["trainer"]["logger"]["init_args"]["version"] is None  # as given, not this resume's own
    assert saved["trainer"]["logger"]["init_args"]["purge_step"] is None
    fit(tmp_path, *resume)  # the same command again
    fit(tmp_path, "--ckpt_path", str(RUN / "last.ckpt"))  # and the checkpoint alone
    assert sorted(p.name for p in (tmp_path / "lightning_logs/loop").iterdir()) == ["version_0"]
    assert sorted(p.name for p in (tmp_path / "checkpoints/loop").iterdir()) == ["version_0"]


def test_extending_a_finished_run_says_why_and_what_to_do(run: Path):
    result = python_m(["fit", f"--ckpt_path={RUN / 'last.ckpt'}", "--trainer.max_epochs=3"], cwd=run)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: the checkpoint's run was planned for 36 optimizer steps"), lines[-3:]
    assert "start a new fit" in lines[-1] and "Traceback" not in result.stderr
    assert torch.load(run / RUN / "last.ckpt", weights_only=True)["global_step"] == 36  # untouched


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (
            "--model.init_args.widthmult=0.5",
            "error: unknown option --model.init_args.widthmult; did you mean --model.init_args.width_mult?",
        ),
        ("--trainer.max_epoch=1", "error: unknown option --trainer.max_epoch; did you mean --trainer.max_epochs?"),
        (
            "--model.init_args.stem=foo",
            "error: option model.init_args.stem: Expected a typing.Literal['imagenet', 'cifar']. Got value: foo",
        ),
    ],
)
def test_a_usage_error_is_two_lines(option: str, expected: str, tmp_path: Path):
    result = python_m(["fit", "--config", QUICK, option], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [expected, "(`python -m mobilenet_lab fit --help` lists every option)"]
    assert not (tmp_path / "lightning_logs").exists()

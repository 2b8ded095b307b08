"""End to end through the command line: help, fit, test, predict, configs, DDP, checkpoints and logs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import python_m
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mobilenet_lab.cli import MobileNetCLI

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
TRAINER_PRESETS = sorted((ROOT / "configs" / "trainer").glob("*.yaml"))
# Small and fast: the tiny archive (4 images per class), narrow networks, no progress bar.
FAST = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.batch_size=32",
    "--data.val_size=100",
    "--trainer.log_every_n_steps=2",
]
# Output a user cannot act on: Lightning's hosted-service adverts, torch deprecations inside Lightning.
NOISE = ("litlogger", "seamless cloud", "LeafSpec")


def run_cli(args: list[str]) -> MobileNetCLI:
    return MobileNetCLI(args=args)


def scalar_tags(log_dir: Path) -> set[str]:
    tags: set[str] = set()
    for event_file in log_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(event_file))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


@pytest.fixture(scope="module")
def fitted(tiny_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real `fit` of 2 epochs on the tiny archive, run through `python -m mobilenet_lab`."""
    work = tmp_path_factory.mktemp("fit")
    result = python_m(
        [
            "fit",
            "--config",
            str(ROOT / "configs/quickstart.yaml"),
            f"--data.data_dir={tiny_cifar}",
            "--trainer.max_epochs=2",
            "--model.init_args.width_mult=0.25",
            *FAST,
        ],
        cwd=work,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (work / "fit_output.txt").write_text(result.stdout + result.stderr)
    return work


def test_top_level_help_lists_every_command(tmp_path: Path):
    from mobilenet_lab.__main__ import COMMANDS

    assert {"fit", "validate", "test", "predict", "summary", "benchmark", "report", "export"} <= set(COMMANDS)
    for args in (["--help"], []):  # no arguments at all shows the same help
        result = python_m(args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: python -m mobilenet_lab <command>")
        assert "__main__.py" not in result.stdout + result.stderr
        lines = result.stdout.splitlines()
        for name, (_, description) in COMMANDS.items():
            assert any(line.split()[:1] == [name] and line.endswith(description) for line in lines), name


def test_command_table_matches_what_runs(monkeypatch):
    import importlib

    from mobilenet_lab import __main__ as entry

    trainer_commands = {name for name, (module, _) in entry.COMMANDS.items() if module == entry.CLI}
    assert trainer_commands == set(MobileNetCLI.subcommands())
    for module in entry.TOOLS.values():
        assert callable(importlib.import_module(module).main)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/mobilenet-lab"])  # the console script
    assert entry.usage().startswith("usage: mobilenet-lab <command>")


def test_command_help_names_the_program(tmp_path: Path):
    result = python_m(["fit", "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: python -m mobilenet_lab [options] fit")
    assert "__main__.py" not in result.stdout
    assert "one folder per run" in result.stdout  # the description from the command table


def test_fit_output_has_no_third_party_noise(fitted: Path):
    output = (fitted / "fit_output.txt").read_text()
    for noise in NOISE:
        assert noise not in output, output[-3000:]


@pytest.mark.usefixtures("one_thread")
def test_logger_less_runs_in_one_folder_keep_their_own_configs(tiny_cifar: Path, tmp_path: Path, monkeypatch):
    from mobilenet_lab.__main__ import main

    monkeypatch.chdir(tmp_path)
    args = [
        "fit",
        "--config",
        str(ROOT / "configs/quickstart.yaml"),
        f"--data.data_dir={tiny_cifar}",
        "--trainer.logger=false",
        "--model.init_args.width_mult=0.25",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        *FAST,
    ]
    for _ in range(2):
        main(args)  # returns (exit 0) instead of raising SystemExit
    assert not (tmp_path / "config.yaml").exists()
    configs = sorted(tmp_path.glob("checkpoints/*/*/config.yaml"))
    assert len(configs) == 2 and configs[0].parent != configs[1].parent, configs
    for config in configs:  # each beside its own run's checkpoints
        assert (config.parent / "last.ckpt").is_file()
        assert yaml.safe_load(config.read_text())["trainer"]["logger"] is False


def test_fit_writes_logs_checkpoints_and_config(fitted: Path):
    log_dir = fitted / "lightning_logs/quickstart/version_0"
    tags = scalar_tags(log_dir)
    for tag in ["train/loss", "train/acc", "val/loss", "val/acc", "val/acc_top5", "hp_metric"]:
        assert tag in tags, sorted(tags)
    assert any(t.startswith("lr-") for t in tags), sorted(tags)
    config = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert config["model"]["class_path"].endswith("MobileNetV3Small")
    assert config["model"]["init_args"]["width_mult"] == 0.25
    ckpt_dir = fitted / "checkpoints/quickstart/version_0"
    assert (ckpt_dir / "last.ckpt").is_file()
    best = [p for p in ckpt_dir.glob("epoch*.ckpt")]
    assert len(best) == 1
    checkpoint = torch.load(best[0], weights_only=True)
    assert checkpoint["mobilenet_lab"]["model_config"]["name"] == "mobilenet_v3_small"
    assert len(checkpoint["mobilenet_lab"]["class_names"]) == 100
    assert not list(ckpt_dir.glob("*.tmp")), "atomic save left a temporary file"


def test_test_from_checkpoint_without_retyping_options(fitted: Path, tiny_cifar: Path):
    best = next((fitted / "checkpoints/quickstart/version_0").glob("epoch*.ckpt"))
    # No --config: the model comes from the checkpoint's hyperparameters (width 0.25 included).
    result = python_m(
        ["test", f"--ckpt_path={best}", f"--data.data_dir={tiny_cifar}", "--trainer.enable_progress_bar=false"],
        cwd=fitted,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/acc" in result.stdout
    runs = sorted((fitted / "lightning_logs").glob("*/version_*"))
    test_run = max(runs, key=lambda p: p.stat().st_mtime)
    tags = scalar_tags(test_run)
    assert {"test/acc", "test/acc_top5"} <= tags
    images = set()
    for event_file in test_run.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(event_file), size_guidance={"images": 0})
        acc.Reload()
        images |= set(acc.Tags()["images"])
    assert {"test/predictions", "test/confusion_matrix"} <= images


def test_fit_learns_and_test_accuracy_matches_checkpoint(tiny_cifar: Path, tmp_path: Path, monkeypatch):
    # The tiny archive's classes are separable (colour + pattern): a few epochs must beat chance
    # (1%) by far, and `test` from the best checkpoint must agree with the loaded weights.
    # (V2: its BatchNorm momentum 0.1 settles in these few steps; V3's 0.01 needs hundreds.)
    monkeypatch.chdir(tmp_path)
    cli = run_cli(
        [
            "fit",
            "--config",
            str(ROOT / "configs/v2.yaml"),
            f"--data.data_dir={tiny_cifar}",
            "--trainer.max_epochs=8",
            "--model.init_args.width_mult=0.5",
            "--model.init_args.lr_scheduler.init_args.warmup_epochs=0",
            *FAST,
            "--data.val_size=0",
        ]
    )
    best = cli.trainer.checkpoint_callback.best_model_path
    assert best and cli.trainer.checkpoint_callback.best_model_score > 0.05
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False)
    assert results[0]["test/acc"] == pytest.approx(float(cli.trainer.checkpoint_callback.best_model_score), abs=1e-6)


def test_overfit_one_batch_drives_loss_near_zero(tiny_cifar: Path):
    from torch import nn

    from mobilenet_lab.data import CIFAR100DataModule
    from mobilenet_lab.versions import MobileNetV2

    torch.manual_seed(0)
    data = CIFAR100DataModule(data_dir=str(tiny_cifar), batch_size=32, augment="none", val_size=0)
    data.setup("fit")
    images, labels = data.on_after_batch_transfer(next(iter(data.val_dataloader())), 0)
    module = MobileNetV2(width_mult=0.25, dropout=0.0, channels_last=False)
    optimizer = torch.optim.AdamW(module.parameters(), lr=5e-3, weight_decay=0.0)
    first = None
    for _ in range(60):
        loss = nn.functional.cross_entropy(module(images), labels)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first > 4.0 and loss.item() < 0.05, (first, loss.item())


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_each_shipped_config_runs_a_few_steps(config: Path, tiny_cifar: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    distill = ((yaml.safe_load(config.read_text()).get("model") or {}).get("init_args") or {}).get("distill")
    if distill:  # a distillation config names its teacher's checkpoint: put one there
        from test_distill import write_teacher_checkpoint

        write_teacher_checkpoint(tmp_path / distill["teacher"], num_classes=100)
    cli = run_cli(
        [
            "fit",
            "--config",
            str(config),
            f"--data.data_dir={tiny_cifar}",
            "--trainer.fast_dev_run=2",
            "--trainer.accelerator=cpu",
            "--data.batch_size=8",
            "--data.val_size=100",
            *FAST[:2],
        ]
    )
    assert cli.trainer.global_step == 2
    assert torch.isfinite(torch.tensor(float(cli.trainer.callback_metrics["train/loss"])))


@pytest.mark.parametrize("preset", TRAINER_PRESETS, ids=lambda p: p.name)
def test_trainer_presets_parse(preset: Path, tmp_path: Path):
    result = python_m(
        ["fit", "--config", str(ROOT / "configs/v3_small.yaml"), "--config", str(preset), "--print_config"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    printed = yaml.safe_load(result.stdout)
    expected = yaml.safe_load(preset.read_text())
    for section in ("trainer", "data", "model"):  # every value the preset sets reaches the config
        assert _contains(printed[section], expected.get(section, {})), section


def _contains(printed: object, expected: object) -> bool:
    """``expected`` is ``printed`` with some dict keys left out (jsonargparse fills in the defaults)."""
    if isinstance(expected, dict):
        return isinstance(printed, dict) and all(k in printed and _contains(printed[k], v) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(printed, list) and len(printed) == len(expected) and all(map(_contains, printed, expected))
    return printed == expected


def test_print_config_round_trips(tiny_cifar: Path, tmp_path: Path):
    first = python_m(
        ["fit", "--config", str(ROOT / "configs/v2.yaml"), "--model.init_args.width_mult=0.75", "--print_config"],
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    (tmp_path / "printed.yaml").write_text(first.stdout)
    second = python_m(["fit", "--config", "printed.yaml", "--print_config"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert yaml.safe_load(first.stdout) == yaml.safe_load(second.stdout)
    assert yaml.safe_load(second.stdout)["model"]["init_args"]["width_mult"] == 0.75


def test_help_documents_version_options(tmp_path: Path):
    result = python_m(["fit", "--model.help", "MobileNetV1"], cwd=tmp_path)
    assert result.returncode == 0
    assert "activation" in result.stdout and "relu6" in result.stdout
    assert "Width multiplier alpha" in result.stdout


def test_predict_writes_csv(fitted: Path, tmp_path: Path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (50, 40), (200, 30, 30)).save(folder / "red.png")
    Image.new("L", (32, 32), 128).save(folder / "gray.jpg")
    (folder / "notes.txt").write_text("not an image")
    best = next((fitted / "checkpoints/quickstart/version_0").glob("epoch*.ckpt"))
    result = python_m(
        ["predict", f"--ckpt_path={best}", f"--data.predict_dir={folder}", "--trainer.enable_progress_bar=false"],
        cwd=fitted,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    csv_path = max(fitted.glob("lightning_logs/*/version_*/predictions.csv"), key=lambda p: p.stat().st_mtime)
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["file"] for r in rows] == ["gray.jpg", "red.png"]
    for row in rows:
        probs = [float(row[f"prob{i}"]) for i in range(1, 6)]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-5
        assert row["class1"] and not row["class1"].isdigit()  # class names, not indices
    assert "notes.txt" in result.stderr  # skipped with a warning: the project's own warnings still show
    for noise in NOISE:
        assert noise not in result.stdout + result.stderr, result.stderr[-3000:]


@pytest.mark.slow
def test_predict_memory_does_not_grow_with_the_folder(fitted: Path, tmp_path: Path):
    """Peak RSS of `predict` over 3,000 images vs over 300: images are decoded batch by batch, rows streamed."""
    import numpy as np
    from PIL import Image

    big, small = tmp_path / "big", tmp_path / "small"
    big.mkdir()
    small.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3000):
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(big / f"img_{i:04d}.jpg")
        if i < 300:
            os.link(big / f"img_{i:04d}.jpg", small / f"img_{i:04d}.jpg")
    best = next((fitted / "checkpoints/quickstart/version_0").glob("epoch*.ckpt"))
    peak_kb, rows = {}, {}
    for folder in (small, big):
        with open(tmp_path / f"{folder.name}.log", "w") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mobilenet_lab",
                    "predict",
                    f"--ckpt_path={best}",
                    f"--data.predict_dir={folder}",
                    "--trainer.enable_progress_bar=false",
                    f"--trainer.logger.init_args.version={folder.name}",
                ],
                cwd=fitted,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=log,
            )
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0, (tmp_path / f"{folder.name}.log").read_text()[-3000:]
        peak_kb[folder.name] = usage.ru_maxrss
        out = next(fitted.glob(f"lightning_logs/*/{folder.name}/predictions.csv"))
        rows[folder.name] = len(out.read_text().splitlines()) - 1
    assert rows == {"small": 300, "big": 3000}
    growth_mb = (peak_kb["big"] - peak_kb["small"]) / 1024
    print(f"peak RSS: 300 images {peak_kb['small'] / 1024:.0f} MB, 3000 images {peak_kb['big'] / 1024:.0f} MB")
    assert growth_mb < 200


def test_trainer_plugins_from_the_command_line_reach_the_trainer(tmp_path: Path, monkeypatch):
    from lightning.fabric.plugins import TorchCheckpointIO
    from lightning.pytorch.plugins import DoublePrecision

    from mobilenet_lab.run_layout import AtomicCheckpointIO

    monkeypatch.chdir(tmp_path)
    base = ["--config", str(ROOT / "configs/quickstart.yaml"), "--model.init_args.width_mult=0.25"]
    cli = MobileNetCLI(args=[*base, "--trainer.plugins=lightning.pytorch.plugins.DoublePrecision"], run=False)
    assert isinstance(cli.trainer.precision_plugin, DoublePrecision)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # ours is added beside it
    cli = MobileNetCLI(
        args=[
            *base,
            "--trainer.plugins+=lightning.pytorch.plugins.DoublePrecision",
            "--trainer.plugins+=lightning.fabric.plugins.TorchCheckpointIO",
        ],
        run=False,
    )
    assert isinstance(cli.trainer.precision_plugin, DoublePrecision)
    checkpoint_io = cli.trainer.strategy.checkpoint_io
    assert type(checkpoint_io) is TorchCheckpointIO  # the user's, not replaced, not doubled


def test_ddp_two_cpu_processes(tiny_cifar: Path, tmp_path: Path):
    result = python_m(
        [
            "fit",
            "--config",
            str(ROOT / "configs/quickstart.yaml"),
            f"--data.data_dir={tiny_cifar}",
            "--trainer.max_epochs=1",
            "--model.init_args.width_mult=0.25",
            "--trainer.strategy=ddp",
            "--trainer.devices=2",
            "--trainer.accelerator=cpu",
            *FAST,
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tags = scalar_tags(tmp_path / "lightning_logs/quickstart/version_0")
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_top5", "hp_metric"} <= tags
    assert (tmp_path / "checkpoints/quickstart/version_0/last.ckpt").is_file()


@pytest.mark.slow
def test_compile_option_trains(tiny_cifar: Path, tmp_path: Path, monkeypatch):
    # torch.compile on CPU: the first compile takes a minute or more.
    monkeypatch.chdir(tmp_path)
    cli = run_cli(
        [
            "fit",
            "--config",
            str(ROOT / "configs/quickstart.yaml"),
            f"--data.data_dir={tiny_cifar}",
            "--model.init_args.width_mult=0.25",
            "--model.init_args.compile=true",
            "--trainer.max_steps=3",
            *FAST,
        ]
    )
    assert cli.trainer.global_step == 3
    state = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=True)["state_dict"]
    assert all(k.startswith("model.") for k in state)  # the compiled wrapper is not saved twice


RECIPES = sorted((ROOT / "configs" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
@pytest.mark.parametrize("version", ["v1.yaml", "v3_small.yaml"])
def test_each_recipe_combines_with_a_version_config(
    recipe: Path, version: str, tiny_cifar: Path, tmp_path: Path, monkeypatch
):
    # A recipe is a partial config laid over a version config: its values win and it runs.
    monkeypatch.chdir(tmp_path)
    cli = run_cli(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / version),
            "--config",
            str(recipe),
            f"--data.data_dir={tiny_cifar}",
            "--trainer.fast_dev_run=2",
            "--trainer.accelerator=cpu",
            "--data.batch_size=8",
            "--data.val_size=100",
            *FAST[:2],
        ]
    )
    assert cli.trainer.global_step == 2
    wanted = (yaml.safe_load(recipe.read_text()).get("model") or {}).get("init_args", {})
    if "bn_momentum" in wanted:
        norms = [m for m in cli.model.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert norms and all(m.momentum == wanted["bn_momentum"] for m in norms)
    if "lr_reference_batch_size" in wanted:  # lr per reference batch, scaled to this run's batch of 8
        expected = wanted["optimizer"]["init_args"]["lr"] * 8 / wanted["lr_reference_batch_size"]
        assert cli.model.optimizers().param_groups[0]["initial_lr"] == pytest.approx(expected)
    assert cli.model.hparams.dropout == wanted.get("dropout", cli.model.hparams.dropout)

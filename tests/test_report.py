"""The report tool on a real TensorBoard log folder laid out as the LightningCLI writes it."""

import csv

import pytest
import yaml
from torch.utils.tensorboard import SummaryWriter

from mobilenet_lab.__main__ import main as cli
from mobilenet_lab.errors import UserError
from mobilenet_lab.models import count_macs, count_params, create_model
from mobilenet_lab.tools import report

T0 = 1_700_000_000.0


def _config(class_path, init_args, ckpt_path=None, accelerator="cpu"):
    # What LightningCLI's SaveConfigCallback writes (trimmed): the data module is not in subclass
    # mode, so its arguments sit directly under ``data``.
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": accelerator,
            "devices": 1,
            "precision": "32-true",
            "max_epochs": 3,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "lightning_logs", "name": "mobilenet"},
            },
        },
        "model": {"class_path": class_path, "init_args": init_args},
        "data": {"data_dir": "data", "batch_size": 128, "num_classes": 100},
        "ckpt_path": ckpt_path,
    }


def _run(root, name, version, scalars, config=None, hparams=None):
    run = root / name / f"version_{version}"
    writer = SummaryWriter(str(run))
    for tag, points in scalars.items():
        for step, value, wall in points:
            writer.add_scalar(tag, value, step, walltime=wall)
    writer.close()
    if config is not None:
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    if hparams is not None:
        (run / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    return run


@pytest.fixture
def logdir(tmp_path):
    root = tmp_path / "lightning_logs"
    v3_args = {
        "width_mult": 0.5,
        "stem": "cifar",
        "downsamples_removed": None,
        "dropout": 0.2,
        "label_smoothing": 0.0,
        "channels_last": True,
    }
    val = [0.10, 0.35, 0.30]  # best is the middle one, not the last
    fit = {
        "epoch": [(s, s // 10, T0 + s) for s in range(30)],
        "train/loss": [(s, 4.6 - 0.05 * s, T0 + s) for s in range(30)],
        "val/acc": [(10 * (e + 1) - 1, v, T0 + 10 * (e + 1)) for e, v in enumerate(val)],
    }
    _run(
        root,
        "mobilenet",
        0,
        fit,
        _config("mobilenet_lab.versions.MobileNetV3Small", v3_args),
        {"num_classes": 100, **v3_args, "_class_path": "mobilenet_lab.versions.MobileNetV3Small"},
    )
    # Two test runs of version_0's checkpoint: the later one counts.
    for version, acc, wall in ((1, 0.31, T0 + 100), (2, 0.33, T0 + 200)):
        _run(
            root,
            "mobilenet",
            version,
            {"test/acc": [(0, acc, wall)], "epoch": [(0, 0, wall)]},
            _config(
                "mobilenet_lab.versions.MobileNetV3Small",
                v3_args,
                ckpt_path=f"checkpoints/mobilenet/version_0/epoch001-val_acc{acc:.4f}.ckpt",
            ),
        )
    # A fit run with hparams.yaml only (no config.yaml), the generic ImageClassifier, no epoch scalar.
    _run(
        root,
        "v2",
        0,
        {"val/acc": [(9, 0.2, T0), (19, 0.25, T0 + 50)], "train/loss": [(0, 4.0, T0)]},
        hparams={
            "model_name": "mobilenet_v2",
            "model_options": {"width_mult": 0.25, "stem": "imagenet"},
            "num_classes": 10,
        },
    )
    # A test run of a checkpoint that is not under this logdir: listed on its own.
    _run(
        root,
        "other",
        0,
        {"test/acc": [(0, 0.5, T0)]},
        _config("mobilenet_lab.versions.MobileNetV1", {"width_mult": 0.25}, ckpt_path="/elsewhere/x.ckpt"),
    )
    return root


def test_table_values(logdir, tmp_path):
    out = tmp_path / "out"
    rows = report.main(["--logdir", str(logdir), "--out", str(out), "--quiet"])
    by_run = {r["run"]: r for r in rows}
    assert set(by_run) == {"mobilenet/version_0", "v2/version_0", "other/version_0 (test only)"}

    v3 = by_run["mobilenet/version_0"]
    model = create_model("mobilenet_v3_small", width_mult=0.5, stem="cifar", num_classes=100)
    assert (v3["model"], v3["width"], v3["stem"], v3["image_size"]) == ("mobilenet_v3_small", 0.5, "cifar", 32)
    assert v3["params"] == count_params(model) and v3["MACs"] == count_macs(model, 32)
    assert v3["best_val_acc"] == pytest.approx(0.35) and v3["epochs"] == 3
    assert v3["wall_time_s"] == pytest.approx(30.0)
    assert v3["last_test_acc"] == pytest.approx(0.33) and v3["test_run"] == "mobilenet/version_2"
    assert v3["accelerator"] == "cpu x1 (32-true)"

    v2 = by_run["v2/version_0"]
    model = create_model("mobilenet_v2", width_mult=0.25, stem="imagenet", num_classes=10)
    assert (v2["model"], v2["width"], v2["stem"]) == ("mobilenet_v2", 0.25, "imagenet")
    assert v2["params"] == count_params(model) and v2["MACs"] == count_macs(model, 32)
    assert v2["epochs"] == 2 and v2["best_val_acc"] == pytest.approx(0.25) and v2["last_test_acc"] is None

    alone = by_run["other/version_0 (test only)"]
    assert alone["model"] == "mobilenet_v1" and alone["stem"] == "cifar"  # the module's default stem
    assert alone["last_test_acc"] == pytest.approx(0.5) and alone["best_val_acc"] is None

    for name in ("report.md", "report.csv", "report.png"):
        assert (out / name).stat().st_size > 0
    with open(out / "report.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == report.COLUMNS and len(table) == 3
    assert "mobilenet/version_0" in (out / "report.md").read_text()


def test_logdir_may_be_one_experiment_folder(logdir, tmp_path):
    rows = report.main(["--logdir", str(logdir / "mobilenet"), "--out", str(tmp_path), "--quiet"])
    assert [r["run"] for r in rows] == ["mobilenet/version_0"]


def test_latency_from_benchmark_csv(logdir, tmp_path):
    bench = tmp_path / "benchmark.csv"
    bench.write_text(
        "model,width,impl,stem,image_size,device,latency_ms\n"
        "mobilenet_v3_small,0.5,ours,cifar,32,cpu,3.5\n"
        "mobilenet_v3_small,0.5,torchvision,cifar,32,cpu,9.0\n"
    )
    assert report.read_latency(bench) == {("mobilenet_v3_small", 0.5, "cifar", 32): 3.5}
    report.main(["--logdir", str(logdir), "--out", str(tmp_path / "o"), "--benchmark_csv", str(bench), "--quiet"])
    assert (tmp_path / "o" / "report.png").stat().st_size > 0


def test_missing_or_empty_logdir_is_one_line(tmp_path, capsys):
    with pytest.raises(UserError, match="no such directory"):
        report.main(["--logdir", str(tmp_path / "nope"), "--out", str(tmp_path)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no runs under"):
        report.main(["--logdir", str(tmp_path / "empty"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exc:
        cli(["report", "--logdir", str(tmp_path / "empty"), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: no runs under") and err.count("\n") == 1


def test_plot_names_each_point_by_its_run_and_shows_percent(logdir, tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig))
    rows = report.main(["--logdir", str(logdir), "--out", str(tmp_path), "--quiet"])
    (ax,) = figures[0].axes
    plotted = [r for r in rows if r["MACs"] and (r["last_test_acc"] is not None or r["best_val_acc"] is not None)]
    assert sorted(t.get_text() for t in ax.texts) == sorted(r["run"] for r in plotted)
    ys = sorted(y for line in ax.lines for y in line.get_ydata())
    accs = sorted(100 * (r["last_test_acc"] if r["last_test_acc"] is not None else r["best_val_acc"]) for r in plotted)
    assert ys == pytest.approx(accs)
    assert ax.yaxis.get_major_formatter()(50, 0) == "50%"

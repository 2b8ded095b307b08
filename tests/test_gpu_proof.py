"""benchmarks/gpu_proof.py --dry-run: the GPU proof's code, run on the CPU with tiny sizes, so it cannot rot.

gpu_proof.py is the command line; its parts live beside it: gpu_proof_speed.py (throughput, timed_fit),
gpu_proof_table.py (the table), gpu_proof_full.py (the full-length trainings), gpu_proof_train.py (one training
in its own process), gpu_proof_render.py.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FULL_RECIPE = ROOT / "configs/recipes/full_gpu.yaml"


def gpu_proof(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "benchmarks/gpu_proof.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def benchmarks_module(name: str):
    """A room of benchmarks/ imported in this process (they find each other on sys.path)."""
    import importlib

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.mark.slow  # ~70 s: the whole runbook script on the CPU (CI runs the slow tests too)
def test_gpu_proof_dry_run_writes_every_table(tmp_path: Path) -> None:
    out = tmp_path / "proof"
    # The throughput part as the runbook's first call runs it: the full-length recipe, a compile mode, a cache.
    probe = ["--fit_compile", "max-autotune-no-cudagraphs", "--fit_args", f"[--config={FULL_RECIPE}]"]
    probe += ["--rounds", "1", "--compile_cache", str(tmp_path / "caches")]
    full = ["--full_models", "[V3-Small]", "--keep", "[]"]
    result = gpu_proof("--dry-run", "--out", str(out), "--models", "[V3-Small]", *probe, *full, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    throughput = list(csv.DictReader(open(out / "throughput.csv")))
    assert [r["model"] for r in throughput] == ["V3-Small"]
    assert float(throughput[0]["fit_img_s"]) > 0 and float(throughput[0]["bare_compiled_img_s"]) > 0
    assert throughput[0]["batch"] == "4" and float(throughput[0]["fit_compiled_img_s"]) > 0  # the part's batch wins
    assert throughput[0]["fit_compile_mode"] == "false"  # a dry run stays eager
    assert [r["network"] for r in csv.DictReader(open(out / "full.csv"))] == ["V3-Small 1.0"]
    timed = list(csv.DictReader(open(out / "timed_fit.csv")))
    assert float(timed[0]["fit_s"]) > 0
    table = list(csv.DictReader(open(out / "table.csv")))
    assert len(table) == 3  # one of the six rows and two recipe comparisons
    for row in table:
        assert row["exit"] == "0" and row["epochs_done"] == "1", row
        assert 0 <= float(row["test_top1_final"]) <= 100
    assert table[2]["batch"] != table[0]["batch"]  # a variant's --data override wins over the presets
    with tarfile.open(out / "logs.tar.gz") as tar:  # the EMA variant's callback survived --trainer.callbacks=[]
        log = tar.extractfile("runs/V3_Small_0_25__short__EMA_of_the_weights.log").read().decode()
    assert "EMA of the weights (decay" in log
    text = (out / "proof.md").read_text()
    assert "fit vs a bare compiled loop" in text and "replaced implementation" in text and "Full-length" in text
    assert (out / "logs.tar.gz").stat().st_size > 0 and (out / "runs.jsonl").stat().st_size > 0


def test_gpu_proof_refuses_to_run_without_a_gpu_unless_dry(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        return
    result = gpu_proof("--out", str(tmp_path), timeout=120)
    assert result.returncode == 2 and "--dry-run" in result.stderr


@pytest.mark.slow  # ~15 s: two tiny trainings
def test_gpu_proof_seeds_run_each_training_once_per_seed(tmp_path: Path) -> None:
    out = tmp_path / "proof"
    result = gpu_proof(
        "--dry-run",
        "--out",
        str(out),
        "--parts",
        "[table]",
        "--runs",
        '["V3-Small 0.25"]',
        "--seeds",
        "[0,3]",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = list(csv.DictReader(open(out / "table.csv")))
    assert [(r["run"], r["base"], r["seed"], r["exit"]) for r in table] == [
        ("V3-Small 0.25", "V3-Small 0.25", "0", "0"),
        ("V3-Small 0.25, seed 3", "V3-Small 0.25", "3", "0"),
    ]
    with tarfile.open(out / "logs.tar.gz") as tar:  # the seed reached the training
        log = tar.extractfile("runs/V3_Small_0_25__seed_3.log").read().decode()
    assert "Seed set to 3" in log
    text = (out / "proof.md").read_text()
    assert "over seeds" in text and re.search(r"\| V3-Small 0\.25 +\| +2 \|", text), text


def test_gpu_proof_render_rebuilds_proof_md_from_the_csvs_in_the_folder(tmp_path: Path) -> None:
    """``--render`` needs no GPU: each CSV found gives its section, a missing one leaves it out."""
    common = {"train_images": 50000, "epochs_done": 2, "replaced": 60.13, "test_top5_final": 89.1, "fit_s": 30}
    rows = [
        {"run": "V3-Small 0.25", "base": "V3-Small 0.25", "seed": 0, "test_top1_final": 63.4, "curve": "10.0 63.4"},
        {"run": "V3-Small 0.25, seed 1", "base": "V3-Small 0.25", "seed": 1, "test_top1_final": 62.4, "curve": "9 62"},
    ]
    rows = [{**row, **common, "val_top1_best_epoch": 63.4, "gain": 3.27, "batch": 128, "exit": 0} for row in rows]
    with open(tmp_path / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = gpu_proof("--render", "--out", str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "proof.md").read_text()
    assert text.strip() == result.stdout.strip()
    assert "replaced implementation" in text and "fit vs a bare compiled loop" not in text  # no throughput.csv
    assert re.search(r"\| V3-Small 0\.25 +\| +2 \| +62\.9 \| +62\.4 \| +63\.4 \|", text), text
    assert "- V3-Small 0.25, seed 1: 9 62" in text


# ------------------------------------------------------------------------------- the full-length part
@pytest.mark.slow  # ~30 s: two tiny trainings at once, the V3-Large weights cut in two
def test_gpu_proof_full_dry_run_trains_scores_once_and_keeps_the_teacher(tmp_path: Path) -> None:
    out = tmp_path / "proof"
    args = ["--dry-run", "--out", str(out), "--parts", "[full]", "--full_models", "[V3-Small,V3-Large]"]
    result = gpu_proof(*args, "--parallel", "2", "--compile_cache", str(tmp_path / "caches"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "full.csv")))
    assert [(r["network"], r["exit"], r["epochs"], r["public"]) for r in rows] == [
        ("V3-Small 1.0", "0", "1", "72.93"),
        ("V3-Large 1.0", "0", "1", "75.09"),
    ]
    assert all(0 <= float(r["test_top1_final"]) <= 100 and float(r["wall_s"]) > 0 for r in rows)
    assert rows[0]["weights"] == ""  # only --keep (V3-Large by default) is written
    # V3-Large's weights (16.7 MiB) come back in pieces under a lent machine's 16 MiB per file, and the run says where.
    pieces = rows[1]["weights"].split()
    assert pieces == ["V3_Large_1_0.ckpt.part1", "V3_Large_1_0.ckpt.part2"], pieces
    assert f"final weights in {out}" in result.stdout
    joined = tmp_path / "teacher.ckpt"
    joined.write_bytes(b"".join((out / p).read_bytes() for p in pieces))
    assert hashlib.sha256(joined.read_bytes()).hexdigest() == rows[1]["weights_sha256"]
    from mobilenet_lab.inference import load_model

    assert load_model(joined).model.description.name == "mobilenet_v3_large"  # a distill.teacher as it is
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert not any("val_acc" in r for r in records)  # scored once: no validation ran during training
    assert sorted(r["train_epoch"] for r in records if "train_epoch" in r) == [1, 1]
    with tarfile.open(out / "logs.tar.gz") as tar:
        log = tar.extractfile("runs/V3_Large_1_0.log").read().decode()
    assert "Seed set to 0" in log and "monitored key" not in log  # no checkpoint ranked by a validation
    text = (out / "proof.md").read_text()
    assert "## Full-length" in text and re.search(r"^\| V3-Large 1\.0 \| [0-9.]+ \| 1 \| ", text, re.MULTILINE), text


def test_full_fit_arguments_parse_and_lay_the_recipe_over_the_version(tmp_path: Path, tiny_cifar: Path, monkeypatch):
    """The full part's fit arguments (dry run's device), as the training child hands them to the CLI."""
    from mobilenet_lab.cli import MobileNetCLI

    full = benchmarks_module("gpu_proof_full")
    args = full.fit_arguments("v3_large", tiny_cifar, True, tmp_path / "caches", ["--trainer.max_epochs=3"])
    assert args.index(f"--config={ROOT / 'configs/v3_large.yaml'}") < args.index(f"--config={FULL_RECIPE}")
    assert args[-1] == "--trainer.max_epochs=3"  # --full_args come last and win
    monkeypatch.chdir(tmp_path)
    cli = MobileNetCLI(args=args, run=False)
    assert cli.datamodule.val_size == 0 and cli.trainer.limit_val_batches == 0 and cli.trainer.max_epochs == 3
    assert cli.model.hparams.compile_cache == str(tmp_path / "caches" / "v3_large.bin")
    assert cli.model.optimizer(cli.model.parameter_groups()).defaults["fused"] is True
    checkpoint = next(c for c in cli.trainer.callbacks if type(c).__name__ == "RunCheckpoint")
    assert checkpoint.last_checkpoints() == [] and checkpoint.save_top_k == 0  # the weights written once, at the end


def test_full_refuses_an_unknown_network_before_training(tmp_path: Path) -> None:
    full = benchmarks_module("gpu_proof_full")
    with pytest.raises(SystemExit, match=r"unknown \['V9'\].*'V1', 'V2', 'V3-Small', 'V3-Large'"):
        full.full(tmp_path, tmp_path, tmp_path, True, 0.0, ["V9"], [], 1, [], None, "cpu", "", [])


def test_save_weights_cuts_a_large_checkpoint_into_pieces(tmp_path: Path, monkeypatch) -> None:
    train = benchmarks_module("gpu_proof_train")
    monkeypatch.setattr(train, "PIECE_BYTES", 10)
    data = bytes(range(25))

    class Trainer:
        def save_checkpoint(self, path, weights_only):
            assert weights_only
            Path(path).write_bytes(data)

    record = train.save_weights(Trainer(), tmp_path / "w.ckpt")
    assert record["weights"] == ["w.ckpt.part1", "w.ckpt.part2", "w.ckpt.part3"]
    assert not (tmp_path / "w.ckpt").exists()
    assert b"".join((tmp_path / p).read_bytes() for p in record["weights"]) == data
    assert record["weights_sha256"] == hashlib.sha256(data).hexdigest()
    assert train.save_weights(Trainer(), tmp_path / "small" / "w.ckpt")["weights"] != []  # folder made
    monkeypatch.setattr(train, "PIECE_BYTES", 100)
    assert train.save_weights(Trainer(), tmp_path / "one.ckpt")["weights"] == ["one.ckpt"]


def test_gpu_proof_render_writes_the_full_length_rows_benchmarks_takes(tmp_path: Path) -> None:
    """full.csv (and full_*.csv of other calls) become a section per card with one row per network."""
    common = {
        "test_top5_final": 93.1,
        "fit_s": 430.2,
        "first_step_s": 3.1,
        "public_source": "BSConv README",
        "batch": 512,
        "train_images": 50000,
        "compile": "false",
        "weights_sha256": "",
        "exit": 0,
        "torch": "2.11.0+cu130",
        "command": "python benchmarks/gpu_proof.py --parts '[full]'",
    }
    calls = {
        "full.csv": [
            {
                "network": "V3-Large 1.0",
                "test_top1_final": 75.31,
                "epochs": 140,
                "wall_s": 462.4,
                "train_img_s": 17412,
                "public": 75.09,
                "weights": "V3_Large_1_0.ckpt.part1",
                "device": "NVIDIA H100 80GB HBM3",
            }
        ],
        "full_2.csv": [
            {
                "network": "V1 1.0",
                "test_top1_final": "",
                "epochs": 97,
                "wall_s": "",
                "train_img_s": "",
                "public": 74.58,
                "weights": "",
                "device": "NVIDIA H100 80GB HBM3",
                "exit": -9,
            }
        ],
    }
    for name, rows in calls.items():
        with open(tmp_path / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list({**common, **rows[0]}))
            writer.writeheader()
            writer.writerows({**common, **row} for row in rows)
    result = gpu_proof("--render", "--out", str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "proof.md").read_text()
    assert text.count("## Full-length") == 1 and "on one NVIDIA H100 80GB HBM3" in text
    assert "| V3-Large 1.0 | 75.31 | 140 | 462 s | 17,412 | 75.09 |" in text
    assert "| V1 1.0 | not finished (exit -9) | 97 |  |  | 74.58 |" in text
    assert "final weights: V3_Large_1_0.ckpt.part1" in text and "stricter than the public numbers" in text

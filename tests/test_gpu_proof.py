"""benchmarks/gpu_proof.py --dry-run: the GPU proof's code, run on the CPU with tiny sizes, so it cannot rot.

gpu_proof.py is the command line; its parts live beside it: gpu_proof_speed.py (throughput, timed_fit),
gpu_proof_table.py (the table), gpu_proof_train.py (one training in its own process), gpu_proof_render.py.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def gpu_proof(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "benchmarks/gpu_proof.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.mark.slow  # ~50 s: the whole runbook script on the CPU (CI runs the slow tests too)
def test_gpu_proof_dry_run_writes_every_table(tmp_path: Path) -> None:
    out = tmp_path / "proof"
    result = gpu_proof("--dry-run", "--out", str(out), "--models", "[V3-Small]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    throughput = list(csv.DictReader(open(out / "throughput.csv")))
    assert [r["model"] for r in throughput] == ["V3-Small"]
    assert float(throughput[0]["fit_img_s"]) > 0 and float(throughput[0]["bare_compiled_img_s"]) > 0
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
    assert "fit vs a bare compiled loop" in text and "replaced implementation" in text
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

"""benchmarks/gpu_proof.py --dry-run: the GPU proof's code, run on the CPU with tiny sizes, so it cannot rot."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~50 s: the whole runbook script on the CPU (CI runs the slow tests too)
def test_gpu_proof_dry_run_writes_every_table(tmp_path: Path) -> None:
    out = tmp_path / "proof"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_proof.py"), "--dry-run", "--out", str(out),
                             "--models", "[V3-Small]"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
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
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_proof.py"), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--dry-run" in result.stderr


@pytest.mark.slow  # ~15 s: two tiny trainings
def test_gpu_proof_seeds_run_each_training_once_per_seed(tmp_path: Path) -> None:
    out = tmp_path / "proof"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_proof.py"), "--dry-run", "--out", str(out),
                             "--parts", "[table]", "--runs", '["V3-Small 0.25"]', "--seeds", "[0,3]"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = list(csv.DictReader(open(out / "table.csv")))
    assert [(r["run"], r["base"], r["seed"], r["exit"]) for r in table] == [
        ("V3-Small 0.25", "V3-Small 0.25", "0", "0"), ("V3-Small 0.25, seed 3", "V3-Small 0.25", "3", "0")]
    with tarfile.open(out / "logs.tar.gz") as tar:  # the seed reached the training
        log = tar.extractfile("runs/V3_Small_0_25__seed_3.log").read().decode()
    assert "Seed set to 3" in log
    text = (out / "proof.md").read_text()
    assert "over seeds" in text and re.search(r"\| V3-Small 0\.25 +\| +2 \|", text), text


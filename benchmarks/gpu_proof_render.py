"""``proof.md``: the GPU proof's tables, rendered from whatever CSVs its output folder holds.

``throughput.csv``, ``timed_fit.csv`` and ``table.csv`` (written by ``gpu_proof_speed.py`` and
``gpu_proof_table.py``; a missing one leaves its section out), so CSVs from several calls to a lent
machine, put in one folder, give one report: ``python benchmarks/gpu_proof.py --render --out <folder>``.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mobilenet_lab.tools.tables import markdown_table  # noqa: E402

#: The columns of table.csv that proof.md shows, in order.
TABLE_COLUMNS = (
    "run",
    "train_images",
    "epochs_done",
    "test_top1_final",
    "val_top1_best_epoch",
    "replaced",
    "gain",
    "test_top5_final",
    "fit_s",
    "batch",
)


def render(out: Path) -> str:
    """Writes ``out/proof.md`` from the CSVs in ``out`` and returns its text."""

    def read(name: str) -> list[dict[str, str]]:
        path = out / name
        return list(csv.DictReader(open(path))) if path.is_file() else []

    parts = ["# GPU proof\n"]
    rows = read("throughput.csv")
    if rows:
        parts.append(
            f"## Training images/s through fit vs a bare compiled loop ({rows[0]['device']}, torch "
            f"{rows[0]['torch']}, batch {rows[0]['batch']}, bf16-mixed, channels_last, 4x4 stem; fit eager "
            "as the presets run it unless fit_compiled)\n"
        )
        parts.append(
            markdown_table([{k: v for k, v in r.items() if k not in ("device", "torch", "batch")} for r in rows])
        )
    rows = read("timed_fit.csv")
    if rows:
        parts.append("\n## A whole fit, timed\n")
        parts.append(markdown_table(rows))
    rows = read("table.csv")
    if rows:
        parts.append("\n## The replaced implementation's 20-epoch table (8x8 final map, test set)\n")
        parts.append(markdown_table([{k: r[k] for k in TABLE_COLUMNS} for r in rows]))
        parts.extend(seed_means(rows))
        parts.append("\nPer-epoch validation top-1 (%):\n")
        parts.extend(f"- {r['run']}: {r['curve']}" for r in rows)
    text = "\n".join(parts) + "\n"
    (out / "proof.md").write_text(text)
    return text


def seed_means(rows: list[dict[str, str]]) -> list[str]:
    """The final-epoch test top-1 of each training over its seeds, when one ran more than once; else nothing."""
    finals: dict[str, list[float]] = {}
    for r in rows:  # older CSVs have no base/seed columns: each row is its own group
        if r.get("test_top1_final"):
            finals.setdefault(r.get("base") or r["run"], []).append(float(r["test_top1_final"]))
    if not any(len(v) > 1 for v in finals.values()):
        return []
    means = [
        {"run": k, "seeds": len(v), "mean": round(sum(v) / len(v), 2), "min": min(v), "max": max(v)}
        for k, v in finals.items()
    ]
    return ["\nFinal-epoch test top-1 over seeds:\n", markdown_table(means)]

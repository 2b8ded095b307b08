"""``proof.md``: the GPU proof's tables, rendered from whatever CSVs its output folder holds.

``throughput.csv``, ``timed_fit.csv``, ``table.csv`` and ``full*.csv`` (written by ``gpu_proof_speed.py``,
``gpu_proof_table.py`` and ``gpu_proof_full.py``; a missing one leaves its section out), so CSVs from several
calls to a lent machine, put in one folder, give one report: ``python benchmarks/gpu_proof.py --render --out
<folder>``. The full-length section is written as BENCHMARKS.md takes it: a heading naming the card, one row
per network (``| V3-Large 1.0 | <final test top-1> | epochs | wall time | images/s | public number |``).
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
    full_rows = [row for path in sorted(out.glob("full*.csv")) for row in csv.DictReader(open(path))]
    parts.extend(full_section(full_rows))
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


def full_section(rows: list[dict[str, str]]) -> list[str]:
    """The full-length trainings, one section per card: the rows BENCHMARKS.md takes, then how they were made."""
    parts: list[str] = []
    for device in dict.fromkeys(r["device"] for r in rows):
        mine = [r for r in rows if r["device"] == device]
        parts.append(f"\n## Full-length: V1, V2, V3-Small and V3-Large at width 1.0 on one {device}\n")
        parts.append(
            "Trained on all 50,000 training images (`configs/recipes/full_gpu.yaml` over each version config and "
            "`configs/trainer/gpu.yaml`, no validation during training); the final epoch's weights scored once on "
            "the 10,000 test images, with no choice made on the test set. That is stricter than the public "
            "numbers, which report the best epoch on the test set. Wall time: the whole training process, "
            f"start-up and the test included; images/s: training images over the fit's time (torch {mine[0]['torch']}).\n"
        )
        parts.append("| network | test top-1, final epoch | epochs | wall time | images/s | public number |")
        parts.append("|---|--:|--:|--:|--:|--:|")
        for r in mine:
            top1 = r["test_top1_final"] or f"not finished (exit {r['exit']})"
            wall = f"{float(r['wall_s']):.0f} s" if r["wall_s"] else ""
            rate = f"{int(float(r['train_img_s'])):,}" if r["train_img_s"] else ""
            parts.append(f"| {r['network']} | {top1} | {r['epochs']} | {wall} | {rate} | {r['public']} |")
        parts.append(
            "\nPublic numbers: " + "; ".join(dict.fromkeys(f"{r['network']} {r['public_source']}" for r in mine))
        )
        parts.append("\nHow each row was made (first step: seconds from the fit's start to its first step's end):\n")
        for r in mine:
            weights = f"; final weights: {r['weights']} (sha256 {r['weights_sha256']})" if r.get("weights") else ""
            parts.append(
                f"- {r['network']}: `{r['command']}`; batch {r['batch']}, compile {r['compile']}, top-5 "
                f"{r['test_top5_final']}, first step {r['first_step_s']} s{weights}"
            )
    return parts

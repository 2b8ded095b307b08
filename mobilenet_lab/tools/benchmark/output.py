"""What ``benchmark`` writes: the markdown report, the chart, and the accuracy it reads from ``report``."""

from __future__ import annotations

import csv
import math
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from ..tables import markdown_table, save_figure
from .measure import COLUMNS, HARDWARE_COLUMNS, hardware_info, load_average

__all__ = ["FORMATS", "markdown_report", "read_accuracy", "plot"]


def _fmt(digits: int) -> Callable[[Any], str]:
    return lambda v: "" if v is None else f"{v:,.{digits}f}"


FORMATS = {
    "latency_ms": _fmt(2),
    "latency_p90_ms": _fmt(2),
    "infer_img_s": _fmt(0),
    "train_img_s": _fmt(0),
    "latency_vs_torchvision": lambda v: "" if v is None else f"{v:.2f}x",
}


def markdown_report(rows: list[dict[str, Any]], args: Namespace, elapsed: float) -> str:
    hw = {k: rows[0][k] for k in HARDWARE_COLUMNS} if rows else hardware_info(args.channels_last == "on")
    table_rows = [{k: r.get(k) for k in COLUMNS} for r in rows]
    lines = [
        "# MobileNet benchmark",
        "",
        f"- CPU: {hw['cpu']}; torch threads: {hw['threads']}",
        f"- GPU: {hw['gpu'] or 'none'}",
        f"- torch {hw['torch']}, Python {platform.python_version()}, channels_last: {hw['channels_last']}; "
        f"environment: {hw['env'] or '(no speed-related variables set)'}",
        f"- stem {args.stem}, {args.num_classes} classes; latency: batch 1, median and p90 of {args.runs} runs "
        f"after {args.warmup} warm-up; throughput: batch {args.batch_size}; training: SGD at batch "
        f"{args.train_batch_size}; median of {args.batch_runs} after {args.batch_warmup} warm-up",
        "- torchvision rows: its network of the same architecture, measured interleaved with ours; "
        "latency_vs_torchvision = our median latency / torchvision's (below 1: ours is faster)",
        f"- sweep took {elapsed:.0f} s; load average (1 min) at start {getattr(args, 'load_start', float('nan')):.2f}, "
        f"at end {load_average():.2f}. On a shared machine timings vary 10-30% (more under load) between runs; "
        "compare rows of one run.",
        "",
        markdown_table(table_rows, FORMATS),
    ]
    notes = [f"- {r['model']} x{r['width']:g}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        lines += ["", "Parameter mismatches with torchvision:", *notes]
    return "\n".join(lines) + "\n"


def read_accuracy(report_csv: Path) -> dict[tuple[str, float, str, int], float]:
    """Best validation accuracy per (model, width, stem, image size) from the report tool's CSV."""
    best: dict[tuple[str, float, str, int], float] = {}
    with open(report_csv, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            try:
                key = (r["model"], float(r["width"]), r.get("stem") or "", int(float(r.get("image_size") or 32)))
                acc = float(r.get("best_val_acc") or "nan")
            except (KeyError, ValueError):
                continue
            if not math.isnan(acc):
                best[key] = max(acc, best.get(key, -1.0))
    return best


def plot(rows: list[dict[str, Any]], path: Path, accuracy: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["device"], r["image_size"]) for r in rows})
    acc_points = []
    if accuracy:
        for r in rows:
            key = (r["model"], float(r["width"]), r["stem"], int(r["image_size"]))
            if r["impl"] == "ours" and key in accuracy:
                acc_points.append((r, accuracy[key]))
    ncols = len(groups) + (1 if acc_points else 0)
    fig, axes = plt.subplots(1, max(ncols, 1), figsize=(6.5 * max(ncols, 1), 5), squeeze=False)
    colors = {m: f"C{i}" for i, m in enumerate(sorted({r["model"] for r in rows}))}
    for ax, (device, size) in zip(axes[0], groups):
        for model, color in colors.items():
            for impl, style in (("ours", "o-"), ("torchvision", "s--")):
                pts = sorted(
                    (r["MACs"], r["latency_ms"], r["width"])
                    for r in rows
                    if r["model"] == model and r["impl"] == impl and r["device"] == device and r["image_size"] == size
                )
                if not pts:
                    continue
                ax.plot(
                    [p[0] / 1e6 for p in pts],
                    [p[1] for p in pts],
                    style,
                    color=color,
                    mfc="none" if impl == "torchvision" else color,
                    label=model if impl == "ours" else f"{model} (torchvision)",
                )
                if impl == "ours":
                    for macs, lat, w in pts:
                        ax.annotate(f"{w:g}", (macs / 1e6, lat), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("MMACs per image")
        ax.set_ylabel("batch-1 latency, median (ms)")
        ax.set_title(f"{device}, {size}x{size}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if acc_points:
        ax = axes[0][-1]
        for model, color in colors.items():
            pts = sorted((r["latency_ms"], a, r["width"]) for r, a in acc_points if r["model"] == model)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=model)
                for lat, a, w in pts:
                    ax.annotate(f"{w:g}", (lat, a), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("batch-1 latency, median (ms)")
        ax.set_ylabel("best val/acc (report)")
        ax.set_title("accuracy vs latency")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)

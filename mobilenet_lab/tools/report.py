"""``python -m mobilenet_lab report``: one table of all training runs under a log directory.

Walks ``<logdir>/<name>/version_N/`` (the TensorBoardLogger's layout; ``--logdir`` may also be a
single ``<name>`` folder), reads each run's ``config.yaml`` (saved by the LightningCLI),
``hparams.yaml`` and TensorBoard scalars, and lists per run: model (registered name), width, stem,
image size, parameters and MACs (computed from the model config at the run's image size), epochs,
wall time (first to last logged event), accelerator, best ``val/acc`` and the last ``test/acc``.

A ``test`` command logs under a version folder of its own: it is matched to the fit run whose
checkpoint it tested (``ckpt_path`` in its config.yaml: ``checkpoints/<name>/version_N/...``);
an unmatched test run is listed as a row of its own.

Writes ``<out>/report.md``, ``report.csv`` and ``report.png`` (accuracy vs latency with
``--benchmark_csv`` from ``python -m mobilenet_lab benchmark``, else accuracy vs MACs). For each
tested run the report also lists the 10 most-confused class pairs and the 10 worst classes (from
the ``confusion_matrix.csv`` the test wrote).

``--sweep NAME`` tabulates a sweep instead (``python -m mobilenet_lab sweep``): one row per trial
with the swept values, read from the sweep's storage (``--storage``, default
``sqlite:///sweeps/NAME.db``), written to ``sweeps/NAME/`` unless ``--out`` says otherwise.

Example:
    python -m mobilenet_lab report --logdir lightning_logs --out benchmarks_out
    python -m mobilenet_lab report --sweep quick_widths
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser

from ..errors import UserError
from .arguments import parse, tool_parser
from .runs import collect_runs, find_runs, read_scalars, report_rows, run_description
from .tables import confusion_sections, duration, markdown_table, output_dir, save_figure, write_report

__all__ = ["main", "collect_runs", "report_rows", "find_runs", "read_scalars", "run_description", "COLUMNS"]

#: Columns of report.csv and of the markdown table.
COLUMNS = [
    "run",
    "model",
    "width",
    "stem",
    "image_size",
    "params",
    "MACs",
    "epochs",
    "wall_time_s",
    "accelerator",
    "best_val_acc",
    "last_test_acc",
    "test_run",
]


# ---------------------------------------------------------------------------------- output
FORMATS = {
    "wall_time_s": duration,
    "best_val_acc": lambda v: "" if v is None else f"{v:.4f}",
    "last_test_acc": lambda v: "" if v is None else f"{v:.4f}",
}


def read_latency(benchmark_csv: Path) -> dict[tuple[str, float, str, int], float]:
    """Median batch-1 latency (ms) of our rows per (model, width, stem, image size); CPU rows first."""
    latency: dict[tuple[str, float, str, int], float] = {}
    with open(benchmark_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: r.get("device") != "cpu")  # the CPU row wins when both devices ran
    for r in rows:
        if r.get("impl", "ours") != "ours":
            continue
        try:
            key = (r["model"], float(r["width"]), r["stem"], int(r["image_size"]))
            latency.setdefault(key, float(r["latency_ms"]))
        except (KeyError, ValueError):
            continue
    return latency


def plot(rows: list[dict[str, Any]], path: Path, latency: dict | None = None) -> str:
    """Accuracy vs latency (when known) or vs MACs; returns the x quantity used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def x_of(r: dict[str, Any]) -> float | None:
        if latency is not None:
            return latency.get((r["model"], r["width"], r["stem"], r["image_size"]))
        return r["MACs"] / 1e6 if r["MACs"] else None

    from matplotlib.ticker import PercentFormatter

    fig, ax = plt.subplots(figsize=(7, 5))
    models = sorted({r["model"] for r in rows if r["model"]})
    for i, model in enumerate(models):
        pts = []
        for r in rows:
            acc = r["last_test_acc"] if r["last_test_acc"] is not None else r["best_val_acc"]
            x = x_of(r) if r["model"] == model else None
            if x is not None and acc is not None:
                pts.append((x, 100 * acc, r.get("run") or ("" if r["width"] is None else f"{r['width']:g}")))
        pts.sort()
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", color=f"C{i}", label=model)
            for x, a, label in pts:  # each point named by its run
                ax.annotate(label, (x, a), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.set_xlabel("batch-1 latency, median (ms, benchmark)" if latency is not None else "MMACs per image")
    ax.set_ylabel("top-1 accuracy (last test, else best validation)")
    ax.set_title("accuracy vs " + ("latency" if latency is not None else "MACs"))
    ax.grid(alpha=0.3)
    if models:
        ax.legend(fontsize=7)
    save_figure(fig, path)
    return "latency" if latency is not None else "MACs"


def markdown_report(rows: list[dict[str, Any]], logdir: Path) -> str:
    table = markdown_table([{k: r.get(k) for k in COLUMNS} for r in rows], FORMATS)
    return (
        f"# Training runs under {logdir}\n\n"
        "- params/MACs: computed from each run's model config at its image size; wall time: first to last "
        "logged event; best_val_acc: max of val/acc; last_test_acc: the last test run of that fit's checkpoint "
        "(test_run)\n\n"
        + table
        + "\n"
        + confusion_sections([(r["run"], logdir / r["test_run"]) for r in rows if r.get("test_run")])
    )


# ------------------------------------------------------------------------------------- CLI
def build_parser() -> ArgumentParser:
    p = tool_parser("python -m mobilenet_lab report", __doc__)
    p.add_argument("--logdir", type=Path, default=Path("lightning_logs"), help="TensorBoard log folder of the runs")
    p.add_argument(
        "--out",
        type=Path | None,
        default=None,
        help="output folder (default: benchmarks_out/, for a sweep sweeps/<name>/)",
    )
    p.add_argument(
        "--sweep",
        type=str | None,
        default=None,
        metavar="NAME",
        help="tabulate the trials of this sweep (`python -m mobilenet_lab sweep`) instead of --logdir",
    )
    p.add_argument(
        "--storage",
        type=str | None,
        default=None,
        help="the sweep's storage URL (default: sqlite:///sweeps/<name>.db)",
    )
    p.add_argument(
        "--benchmark_csv",
        type=Path | None,
        default=None,
        help="benchmark.csv of `python -m mobilenet_lab benchmark`: plot accuracy vs its latency",
    )
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    return p


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse(build_parser(), argv)
    if args.sweep is not None:
        from .sweep import report_sweep

        return report_sweep(args.sweep, args.storage, args.out, args.quiet)
    args.out = args.out or Path("benchmarks_out")
    if not args.logdir.is_dir():
        raise UserError(f"--logdir {args.logdir}: no such directory (train with `python -m mobilenet_lab fit` first)")
    if args.benchmark_csv is not None and not args.benchmark_csv.is_file():
        raise UserError(f"--benchmark_csv {args.benchmark_csv}: no such file")
    runs = collect_runs(args.logdir)
    if not runs:
        raise UserError(
            f"no runs under {args.logdir} (expected <logdir>/<name>/version_N/ with TensorBoard event files)"
        )
    rows = report_rows(runs)
    output_dir(args.out)
    md = markdown_report(rows, args.logdir)
    latency = read_latency(args.benchmark_csv) if args.benchmark_csv else None
    write_report(args.out, "report", md, rows, COLUMNS, lambda path: plot(rows, path, latency), args.quiet)
    return rows

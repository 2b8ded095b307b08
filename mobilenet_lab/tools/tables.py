"""Output shared by the tools: markdown tables, durations, test-error sections, CSV files, figures, the output folder,
the md/csv/png trio. Imports none of the tools (``report`` and ``sweep`` both import it)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = ["markdown_table", "duration", "confusion_sections", "write_csv", "output_dir", "save_figure", "write_report"]


def markdown_table(rows: list[dict], formats: dict | None = None) -> str:
    """Rows of dicts as a GitHub markdown table (numbers right-aligned, with thousands separators)."""
    if not rows:
        return "(no rows)"
    formats = formats or {}
    keys = list(rows[0])

    def cell(key: str, value: object) -> str:
        if key in formats:
            return formats[key](value)
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:g}"
        return "" if value is None else str(value)

    cells = [[cell(k, r.get(k)) for k in keys] for r in rows]
    numeric = [all(isinstance(r.get(k), (int, float)) for r in rows) for k in keys]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]

    def line(vals: list[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(keys), sep] + [line(c) for c in cells])


def duration(seconds: float | None) -> str:
    """Seconds as ``H:MM:SS`` (empty for None)."""
    if seconds is None:
        return ""
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def confusion_sections(tested: list[tuple[str, Path]], k: int = 10) -> str:
    """For each (run, its test run's folder) with a ``confusion_matrix.csv``: most-confused pairs, worst classes."""
    from ..confusion import CONFUSION_CSV, confusion_markdown, most_confused, read_confusion_csv, worst_classes

    parts = []
    for run, test_dir in tested:
        path = Path(test_dir) / CONFUSION_CSV
        if not path.is_file():
            continue
        try:
            confusion, names = read_confusion_csv(path)
        except (OSError, ValueError, IndexError):
            continue
        parts.append(
            f"\n## {run}: test errors ({path})\n\n{k} most-confused pairs:\n\n"
            + confusion_markdown(
                most_confused(confusion, names, k), ("true class", "predicted as", "images", "share of class")
            )
            + f"\n\n{k} worst classes:\n\n"
            + confusion_markdown(worst_classes(confusion, names, k), ("class", "accuracy", "images"))
            + "\n"
        )
    return "".join(parts)


def write_csv(rows: list[dict[str, Any]], path: Path, columns: Sequence[str]) -> None:
    """Rows as CSV with the given columns (missing values empty, extra keys ignored)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})


def output_dir(path: Path) -> Path:
    """Creates the ``--out`` folder, or says in one line why it cannot."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create --out {path}: {err.strerror}") from None
    return path


def save_figure(fig: Any, path: Path) -> None:
    """Lays out a matplotlib figure, writes it as PNG (120 dpi) and frees it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    out: Path,
    name: str,
    text: str,
    rows: list[dict[str, Any]],
    columns: Sequence[str],
    plot: Callable[[Path], Any],
    quiet: bool = False,
) -> None:
    """The tools' three outputs: ``<out>/<name>.md`` (``text``), ``.csv`` (``rows``), ``.png`` (``plot(path)``).

    Prints the markdown and the written paths unless ``quiet``. ``out`` must exist (:func:`output_dir`).
    """
    md, table, png = (out / f"{name}{suffix}" for suffix in (".md", ".csv", ".png"))
    md.write_text(text, encoding="utf-8")
    write_csv(rows, table, columns)
    plot(png)
    if not quiet:
        print(text)
        print(f"wrote {md}, {table}, {png}")

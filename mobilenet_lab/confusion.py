"""The test confusion matrix as tables, a CSV file and a figure (plain torch + matplotlib, no Lightning).

:class:`~mobilenet_lab.panels.TestPanels` writes them after ``test`` (TensorBoard and
``confusion_matrix.csv`` in the run's folder); ``report`` reads the CSV back and prints the same
tables, without loading Lightning.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CONFUSION_CSV",
    "most_confused",
    "worst_classes",
    "confusion_markdown",
    "write_confusion_csv",
    "read_confusion_csv",
    "confusion_figure",
]

#: File name of the test confusion matrix in a run's folder (rows: true class, columns: predicted).
CONFUSION_CSV = "confusion_matrix.csv"


def most_confused(confusion: torch.Tensor, names: list[str], k: int = 10) -> list[tuple[str, str, int, float]]:
    """The ``k`` largest off-diagonal cells: (true class, predicted class, images, share of the true class)."""

    def label(i: int) -> str:
        return names[i] if i < len(names) else str(i)

    off = confusion.long().clone()
    off.fill_diagonal_(0)
    totals = confusion.long().sum(1).tolist()
    cells = [(int(off[t, p]), t, p) for t, p in off.nonzero().tolist()]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))  # most images first; ties in class order
    return [(label(t), label(p), n, n / max(totals[t], 1)) for n, t, p in cells[:k]]


def worst_classes(confusion: torch.Tensor, names: list[str], k: int = 10) -> list[tuple[str, float, int]]:
    """The ``k`` classes with the lowest accuracy (recall) among those with test images: (class, accuracy, images)."""
    totals = confusion.sum(1)
    seen = [i for i in range(confusion.shape[0]) if int(totals[i]) > 0]
    accuracy = {i: float(confusion[i, i]) / int(totals[i]) for i in seen}
    order = sorted(seen, key=lambda i: (accuracy[i], i))[:k]
    return [(names[i] if i < len(names) else str(i), accuracy[i], int(totals[i])) for i in order]


def confusion_markdown(rows: list[tuple], header: tuple[str, ...]) -> str:
    """Rows of :func:`most_confused` or :func:`worst_classes` as a markdown table (shares as percentages)."""

    def cell(value: Any) -> str:
        return f"{100 * value:.1f}%" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) if rows else "(none)"


def write_confusion_csv(confusion: torch.Tensor, names: list[str], path: Path) -> None:
    """The matrix with class names: first column the true class, one column per predicted class."""
    labels = [names[i] if i < len(names) else str(i) for i in range(confusion.shape[0])]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *labels])
        for label, row in zip(labels, confusion.long().tolist()):
            writer.writerow([label, *row])


def read_confusion_csv(path: Path) -> tuple[torch.Tensor, list[str]]:
    """What :func:`write_confusion_csv` wrote: (matrix, class names)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    names = rows[0][1:]
    return torch.tensor([[int(v) for v in row[1:]] for row in rows[1:]], dtype=torch.long), names


def confusion_figure(confusion: torch.Tensor) -> Any:
    """The row-normalised matrix as a matplotlib figure (for TensorBoard)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 8))
    rows = confusion.sum(1, keepdim=True).clamp(min=1)
    im = ax.imshow((confusion / rows).numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig

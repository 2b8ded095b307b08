"""``python -m mobilenet_lab summary``: parameters and MACs of chosen models and widths, as a table."""

from __future__ import annotations

import argparse

import torch

from ..models import count_macs, count_params, create_model, list_models
from ..models.base import STEMS

__all__ = ["main", "summary_rows", "markdown_table"]


def summary_rows(models: list[str], widths: list[float], image_size: int, num_classes: int, stem: str) -> list[dict]:
    rows = []
    for name in models:
        for width in widths:
            model = create_model(name, width_mult=width, num_classes=num_classes, stem=stem)
            final = model.forward_features(torch.zeros(1, 3, image_size, image_size)).shape[-2:]
            rows.append({
                "model": name,
                "width": width,
                "stem": stem,
                "input": f"{image_size}x{image_size}",
                "params": count_params(model),
                "MACs": count_macs(model, image_size),
                "final map": "x".join(str(s) for s in final),
            })
    return rows


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
    line = lambda vals: "| " + " | ".join(  # noqa: E731
        v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(keys), sep] + [line(c) for c in cells])


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mobilenet_lab summary", description=__doc__)
    parser.add_argument("--models", nargs="+", default=list_models(), choices=list_models(), metavar="MODEL",
                        help=f"models to list (default: all): {', '.join(list_models())}")
    parser.add_argument("--widths", nargs="+", type=float, default=[1.0], help="width multipliers (default: 1.0)")
    parser.add_argument("--image_size", type=int, default=224, help="input side in pixels (default: 224)")
    parser.add_argument("--num_classes", type=int, default=1000, help="output classes (default: 1000)")
    parser.add_argument("--stem", default="imagenet", choices=list(STEMS), help="input stem (default: imagenet)")
    args = parser.parse_args(argv)
    if any(w <= 0 for w in args.widths):
        parser.error("--widths must be > 0")
    if args.image_size < 8:
        parser.error("--image_size must be >= 8")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    rows = summary_rows(args.models, args.widths, args.image_size, args.num_classes, args.stem)
    print(markdown_table(rows))

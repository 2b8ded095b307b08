"""``python -m mobilenet_lab summary``: parameters and MACs of chosen models and widths, as a table."""

from __future__ import annotations

import argparse

import torch

from ..models import count_macs, count_params, create_model, list_models
from ..models.base import STEMS
from .tables import markdown_table

__all__ = ["main", "summary_rows"]


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

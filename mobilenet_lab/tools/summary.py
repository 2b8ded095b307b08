"""``python -m mobilenet_lab summary``: parameters and MACs of chosen models and widths, as a table."""

from __future__ import annotations

import torch
from jsonargparse import ArgumentParser
from jsonargparse.typing import PositiveFloat, PositiveInt

from ..models import count_macs, count_params, create_model, list_models
from ..models.description import STEMS
from .arguments import ImageSize, parse, tool_parser
from .tables import markdown_table

__all__ = ["main", "summary_rows", "build_parser"]


def summary_rows(models: list[str], widths: list[float], image_size: int, num_classes: int, stem: str) -> list[dict]:
    rows = []
    for name in models:
        for width in widths:
            model = create_model(name, width_mult=width, num_classes=num_classes, stem=stem)
            final = model.forward_features(torch.zeros(1, 3, image_size, image_size)).shape[-2:]
            rows.append(
                {
                    "model": name,
                    "width": width,
                    "stem": stem,
                    "input": f"{image_size}x{image_size}",
                    "params": count_params(model),
                    "MACs": count_macs(model, image_size),
                    "final map": "x".join(str(s) for s in final),
                }
            )
    return rows


def build_parser() -> ArgumentParser:
    models = list_models()
    parser = tool_parser("python -m mobilenet_lab summary", __doc__)
    parser.add_argument(
        "--models",
        nargs="+",
        default=models,
        choices=models,
        metavar="MODEL",
        help=f"models to list, any of: {', '.join(models)}",
    )
    parser.add_argument("--widths", nargs="+", type=PositiveFloat, default=[1.0], help="width multipliers")
    parser.add_argument("--image_size", type=ImageSize, default=224, help="input side in pixels")
    parser.add_argument("--num_classes", type=PositiveInt, default=1000, help="output classes")
    parser.add_argument("--stem", default="imagenet", choices=list(STEMS), help="input stem")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parse(build_parser(), argv)
    rows = summary_rows(args.models, args.widths, args.image_size, args.num_classes, args.stem)
    print(markdown_table(rows))

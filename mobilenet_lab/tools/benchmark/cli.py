"""The ``benchmark`` command line: arguments and their checks, then measure and write."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Optional

import torch
from jsonargparse import ArgumentParser, Namespace
from jsonargparse.typing import NonNegativeInt, PositiveFloat, PositiveInt

from ...errors import UserError
from ...models import list_models
from ...models.description import STEMS
from ..arguments import ImageSize, parse, tool_parser
from ..tables import output_dir, write_report
from ..timing import Stopwatch
from .measure import COLUMNS, HARDWARE_COLUMNS, load_average, run_benchmark
from .output import markdown_report, plot, read_accuracy

__all__ = ["build_parser", "parse_args", "main"]


def build_parser() -> ArgumentParser:
    models = list_models()
    p = tool_parser("python -m mobilenet_lab benchmark", sys.modules[__package__].__doc__)
    p.add_argument(
        "--models",
        nargs="+",
        default=models,
        choices=models,
        metavar="MODEL",
        help=f"models to measure, any of: {', '.join(models)}",
    )
    p.add_argument(
        "--widths", nargs="+", type=PositiveFloat, default=[0.25, 0.5, 0.75, 1.0], help="width multipliers, any > 0"
    )
    p.add_argument(
        "--devices",
        nargs="+",
        default=["cpu"],
        choices=["cpu", "cuda"],
        help="devices; cuda is skipped with a note when unavailable",
    )
    p.add_argument(
        "--stem", default="cifar", choices=list(STEMS), help="input stem (cifar: first two stride-2 layers at stride 1)"
    )
    p.add_argument(
        "--image_sizes",
        nargs="+",
        type=ImageSize,
        default=None,
        help="input sides in pixels (default: 32 with --stem cifar, 224 with imagenet)",
    )
    p.add_argument("--num_classes", type=PositiveInt, default=100, help="output classes")
    p.add_argument(
        "--threads",
        type=Optional[PositiveInt],
        default=None,
        help=f"CPU threads for torch (default: torch's, here {torch.get_num_threads()})",
    )
    p.add_argument("--runs", type=PositiveInt, default=100, help="timed batch-1 latency runs")
    p.add_argument("--warmup", type=NonNegativeInt, default=10, help="untimed batch-1 warm-up runs")
    p.add_argument(
        "--batch_runs", type=PositiveInt, default=5, help="timed large-batch inference passes and training steps"
    )
    p.add_argument(
        "--batch_warmup",
        type=NonNegativeInt,
        default=2,
        help="untimed large-batch passes and training steps before timing",
    )
    p.add_argument(
        "--batch_size", type=NonNegativeInt, default=256, help="batch of the inference throughput (0 skips it)"
    )
    p.add_argument("--train_batch_size", type=PositiveInt, default=128, help="training batch")
    p.add_argument("--no_train", action="store_true", help="skip the training measurement")
    p.add_argument("--no_reference", action="store_true", help="skip torchvision's reference networks")
    p.add_argument(
        "--channels_last",
        choices=["on", "off"],
        default="on",
        help="channels-last memory format for models and inputs (on, as fit; in a YAML file quote it: 'off')",
    )
    p.add_argument(
        "--report_csv",
        type=Optional[Path],
        default=None,
        help="report.csv of `python -m mobilenet_lab report`: adds accuracy vs latency to the chart",
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks_out"), help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table on stdout")
    return p


def parse_args(argv: list[str] | None) -> Namespace:
    """The options, checked; ``image_sizes`` filled in from the stem when not given."""
    args = parse(build_parser(), argv)
    if not all(math.isfinite(w) for w in args.widths):
        raise UserError(f"--widths must be finite, got {' '.join(map(str, args.widths))}")
    if args.image_sizes is None:
        args.image_sizes = [32] if args.stem == "cifar" else [224]
    if args.report_csv is not None and not args.report_csv.is_file():
        raise UserError(f"--report_csv {args.report_csv}: no such file")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    output_dir(args.out)
    watch = Stopwatch()
    args.load_start = load_average()
    rows = run_benchmark(args)
    md = markdown_report(rows, args, watch.stop())
    accuracy = read_accuracy(args.report_csv) if args.report_csv else None
    write_report(
        args.out, "benchmark", md, rows, COLUMNS + HARDWARE_COLUMNS, lambda path: plot(rows, path, accuracy), args.quiet
    )
    return rows

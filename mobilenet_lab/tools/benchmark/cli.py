"""The ``benchmark`` command line: arguments and their checks, then measure and write."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import torch

from ...errors import UserError
from ...models import list_models
from ...models.base import STEMS
from ..tables import output_dir, write_report
from ..timing import Stopwatch
from .measure import COLUMNS, HARDWARE_COLUMNS, load_average, run_benchmark
from .output import markdown_report, plot, read_accuracy

__all__ = ["build_parser", "parse_args", "main"]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _positive_int(text) if text.strip() != "0" else 0
    return value


def build_parser() -> argparse.ArgumentParser:
    models = list_models()
    p = argparse.ArgumentParser(prog="python -m mobilenet_lab benchmark", description=sys.modules[__package__].__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=models, choices=models, metavar="MODEL",
                   help=f"models to measure (default: all): {', '.join(models)}")
    p.add_argument("--widths", nargs="+", type=_positive_float, default=[0.25, 0.5, 0.75, 1.0],
                   help="width multipliers, any > 0 (default: 0.25 0.5 0.75 1.0)")
    p.add_argument("--devices", nargs="+", default=["cpu"], choices=["cpu", "cuda"],
                   help="devices (default: cpu); cuda is skipped with a note when unavailable")
    p.add_argument("--stem", default="cifar", choices=list(STEMS),
                   help="input stem (default: cifar: first two stride-2 layers at stride 1)")
    p.add_argument("--image_sizes", nargs="+", type=_positive_int, default=None,
                   help="input sides in pixels (default: 32 with --stem cifar, 224 with imagenet)")
    p.add_argument("--num_classes", type=_positive_int, default=100, help="output classes (default: 100)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help=f"CPU threads for torch (default: torch's, here {torch.get_num_threads()})")
    p.add_argument("--runs", type=_positive_int, default=100, help="timed batch-1 latency runs (default: 100)")
    p.add_argument("--warmup", type=_non_negative_int, default=10, help="untimed batch-1 warm-up runs (default: 10)")
    p.add_argument("--batch_runs", type=_positive_int, default=5,
                   help="timed large-batch inference passes and training steps (default: 5)")
    p.add_argument("--batch_warmup", type=_non_negative_int, default=2,
                   help="untimed large-batch passes and training steps before timing (default: 2)")
    p.add_argument("--batch_size", type=_non_negative_int, default=256,
                   help="batch of the inference throughput (default: 256; 0 skips it)")
    p.add_argument("--train_batch_size", type=_positive_int, default=128, help="training batch (default: 128)")
    p.add_argument("--no_train", action="store_true", help="skip the training measurement")
    p.add_argument("--no_reference", action="store_true", help="skip torchvision's reference networks")
    p.add_argument("--channels_last", choices=["on", "off"], default="on",
                   help="channels-last memory format for models and inputs (default: on, as fit)")
    p.add_argument("--report_csv", type=Path, default=None,
                   help="report.csv of `python -m mobilenet_lab report`: adds accuracy vs latency to the chart")
    p.add_argument("--out", type=Path, default=Path("benchmarks_out"), help="output folder (default: benchmarks_out/)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table on stdout")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.image_sizes is None:
        args.image_sizes = [32] if args.stem == "cifar" else [224]
    for size in args.image_sizes:
        if size < 8:
            raise UserError(f"--image_sizes must be >= 8 pixels, got {size}")
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
    write_report(args.out, "benchmark", md, rows, COLUMNS + HARDWARE_COLUMNS,
                 lambda path: plot(rows, path, accuracy), args.quiet)
    return rows

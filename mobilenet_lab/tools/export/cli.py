"""The ``export`` command line: arguments, default output name, calibration, int8 report, the table."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from jsonargparse import ArgumentParser, Namespace
from jsonargparse.typing import NonNegativeInt, PositiveInt, restricted_number_type

from ...errors import DataError, UserError
from ...inference import Classifier, load_model
from ..arguments import parse, tool_parser
from ..timing import Stopwatch
from .executorch import executorch_logits, executorch_method, export_executorch, require_executorch
from .latency import deployment_rows
from .onnx import export_onnx, onnx_logits, onnx_session, quantize_onnx_int8
from .output import atomic_output
from .verify import (
    INT8_MIN_AGREEMENT,
    accuracy,
    cifar100_images,
    data_available,
    random_images,
    relative_gap,
    top1_agreement,
    torch_logits,
)

__all__ = ["main", "build_parser"]


#: The dynamo exporter's lowest ONNX opset.
Opset = restricted_number_type("Opset", int, (">=", 18), docstring="an ONNX opset the dynamo exporter writes")
#: Fewer timed runs give no usable median or p90.
Runs = restricted_number_type("Runs", int, (">=", 5), docstring="at least 5 timed runs")


def build_parser() -> ArgumentParser:
    parser = tool_parser("python -m mobilenet_lab export", sys.modules[__package__].__doc__)
    parser.add_argument("--ckpt_path", type=str, required=True, help="checkpoint written by fit (e.g. .../last.ckpt)")
    parser.add_argument(
        "--format",
        default="onnx",
        choices=["onnx", "executorch"],
        help="onnx (ONNX Runtime, dynamo exporter) or executorch (.pte lowered to XNNPACK)",
    )
    parser.add_argument(
        "--output",
        type=Optional[str],
        default=None,
        help="file to write (default: the checkpoint's name with .onnx/.pte, plus .int8 when quantized)",
    )
    parser.add_argument(
        "--quantize",
        type=Optional[str],
        choices=["int8"],
        default=None,
        help="int8: post-training static quantization (ONNX Runtime QDQ with per-channel "
        "weights, or the PT2E XNNPACK quantizer for executorch), calibrated on "
        "training images from --data_dir",
    )
    parser.add_argument(
        "--calibration_images", type=PositiveInt, default=512, help="training images used to calibrate int8"
    )
    parser.add_argument(
        "--data_dir",
        type=str,
        default=os.environ.get("MOBILENET_LAB_DATA", "data"),
        help="folder holding cifar-100-python/ (default: $MOBILENET_LAB_DATA or data); "
        "needed by --quantize, used for accuracy when present",
    )
    parser.add_argument(
        "--eval_images",
        type=Optional[PositiveInt],
        default=None,
        help="test images for the fp32 vs int8 accuracy report (default: all 10,000)",
    )
    parser.add_argument(
        "--opset",
        type=Optional[Opset],
        default=None,
        help="ONNX opset, >= 18 for the dynamo exporter (default: the exporter's, 20 with torch 2.14)",
    )
    parser.add_argument(
        "--random_calibration",
        action="store_true",
        help="calibrate int8 on random [0, 1] images instead of the data set "
        "(smoke tests only: the accuracy will suffer)",
    )
    parser.add_argument(
        "--benchmark",
        action="store_true",
        help="also time batch-1 CPU latency (median, p90) of eager PyTorch vs the exported "
        "runtimes (ONNX: fp32 and int8) and print the deployment table",
    )
    parser.add_argument("--runs", type=Runs, default=300, help="timed runs per runtime for --benchmark")
    parser.add_argument("--warmup", type=NonNegativeInt, default=30, help="warm-up runs per runtime for --benchmark")
    parser.add_argument(
        "--threads",
        type=Optional[PositiveInt],
        default=None,
        help="CPU threads for PyTorch and ONNX Runtime (default: torch's default)",
    )
    return parser


def _default_output(ckpt: Path, fmt: str, quantize: str | None) -> Path:
    suffix = (".int8" if quantize else "") + (".onnx" if fmt == "onnx" else ".pte")
    return ckpt.with_suffix(suffix)


def _calibration(args: Namespace, model: Classifier) -> np.ndarray:
    if args.random_calibration:
        print(f"calibrating on {args.calibration_images} random [0, 1] images (--random_calibration)")
        return random_images(args.calibration_images, int(model.image_size), 7)
    try:
        images, _ = cifar100_images(args.data_dir, "train", args.calibration_images, int(model.image_size))
    except DataError as err:
        raise DataError(f"--quantize int8 calibrates on CIFAR-100 training images: {err}") from None
    print(f"calibrating on {len(images)} CIFAR-100 training images from {args.data_dir}")
    return images


def _report_int8(
    model: Classifier,
    fp32_logits_fn: Callable[[np.ndarray], np.ndarray],
    int8_logits_fn: Callable[[np.ndarray], np.ndarray],
    args: Namespace,
) -> None:
    """Accuracy fp32 vs int8 on the test set (when there) and top-1 agreement; fails below the bar."""
    if data_available(args.data_dir):
        images, labels = cifar100_images(args.data_dir, "test", args.eval_images, int(model.image_size))
        fp32, int8 = fp32_logits_fn(images), int8_logits_fn(images)
        agree = top1_agreement(int8, fp32)
        print(
            f"CIFAR-100 test ({len(labels)} images): top-1 fp32 {accuracy(fp32, labels):.4f}, "
            f"int8 {accuracy(int8, labels):.4f}; int8 vs fp32 top-1 agreement {agree:.4f}"
        )
        if agree < INT8_MIN_AGREEMENT:
            raise UserError(
                f"int8 agrees with fp32 on only {agree:.1%} of test images "
                f"(< {INT8_MIN_AGREEMENT:.0%}); try more --calibration_images or keep fp32"
            )
    else:
        images = random_images(64, int(model.image_size), 99)
        fp32, int8 = fp32_logits_fn(images), int8_logits_fn(images)
        print(
            f"no CIFAR-100 test set in {args.data_dir}: on 64 random inputs int8 vs fp32 top-1 "
            f"agreement {top1_agreement(int8, fp32):.3f}, max relative gap {relative_gap(int8, fp32):.3f} "
            "(accuracy not measured)"
        )
        if not np.isfinite(int8).all():
            raise UserError("the int8 model produces non-finite logits; not writing it")


def _export_onnx_cli(args: Namespace, model: Classifier, output: Path, work: Path) -> dict[str, Path]:
    if not args.quantize:
        export_onnx(model, output, args.opset)
        print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB)")
        return {"fp32": output}
    fp32 = work / "fp32.onnx"
    export_onnx(model, fp32, args.opset)
    calibration = _calibration(args, model)
    with atomic_output(output) as tmp:
        quantize_onnx_int8(fp32, tmp, calibration)
        fp32_session, int8_session = onnx_session(fp32), onnx_session(tmp)
        _report_int8(model, lambda x: onnx_logits(fp32_session, x), lambda x: onnx_logits(int8_session, x), args)
    print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB; fp32 {fp32.stat().st_size / 1e6:.2f} MB)")
    return {"fp32": fp32, "int8": output}


def _export_executorch_cli(args: Namespace, model: Classifier, output: Path) -> dict[str, Path]:
    require_executorch()
    if not args.quantize:
        export_executorch(model, output)
        print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB)")
        return {"fp32": output}
    calibration = _calibration(args, model)
    with atomic_output(output) as tmp:
        export_executorch(model, tmp, calibration)
        method = executorch_method(tmp)
        _report_int8(model, lambda x: torch_logits(model, x), lambda x: executorch_logits(method, x), args)
    print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB)")
    return {"int8": output}


def main(argv: list[str] | None = None) -> None:
    args = parse(build_parser(), argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = Path(args.ckpt_path)
    output = Path(args.output) if args.output else _default_output(ckpt, args.format, args.quantize)
    if args.format == "executorch":
        require_executorch()  # fail before the slow parts
    if args.quantize and not args.random_calibration and not data_available(args.data_dir):
        from ...data.cifar100 import missing_files, missing_message

        raise DataError(
            "--quantize int8 calibrates on CIFAR-100 training images: "
            + missing_message(args.data_dir, missing_files(args.data_dir, ("train", "test")))
        )
    model = load_model(ckpt)
    print(
        f"{model.config.get('name')} (width {model.config.get('width_mult')}, {model.config.get('stem')} stem), "
        f"input images N x 3 x {model.image_size} x {model.image_size} float32 RGB [0, 1], "
        f"{len(model.class_names)} classes; {model.weights}"
    )
    watch = Stopwatch()
    with tempfile.TemporaryDirectory(prefix="mobilenet_lab_export_") as work:
        if args.format == "onnx":
            files = _export_onnx_cli(args, model, output, Path(work))
        else:
            files = _export_executorch_cli(args, model, output)
        print(f"export took {watch.stop():.1f} s")
        if args.benchmark:
            _benchmark_cli(args, model, ckpt, files, Path(work))


def _benchmark_cli(args: Namespace, model: Classifier, ckpt: Path, files: dict[str, Path], work: Path) -> None:
    from ..tables import markdown_table

    onnx_fp32, onnx_int8, pte = None, None, {}
    if args.format == "onnx":
        onnx_fp32 = files["fp32"]
        onnx_int8 = files.get("int8")
        if onnx_int8 is None:  # time int8 too: quantize a throw-away copy
            onnx_int8 = work / "int8.onnx"
            if args.random_calibration or not data_available(args.data_dir):
                calibration = random_images(args.calibration_images, int(model.image_size), 7)
            else:
                calibration = cifar100_images(args.data_dir, "train", args.calibration_images, int(model.image_size))[0]
            quantize_onnx_int8(onnx_fp32, onnx_int8, calibration)
    else:
        pte = {f"ExecuTorch XNNPACK {k}": v for k, v in files.items()}
    threads = args.threads or torch.get_num_threads()
    rows = deployment_rows(model, onnx_fp32, onnx_int8, ckpt, args.warmup, args.runs, threads, pte)
    print(
        f"\nbatch-1 CPU latency, {threads} thread(s), median and p90 of {args.runs} interleaved runs "
        f"after {args.warmup} warm-up ({model.config.get('name')} width {model.config.get('width_mult')}):"
    )
    print(
        markdown_table(
            rows,
            {
                "size_MB": lambda v: "-" if v is None else f"{v:.2f}",
                "median_ms": lambda v: f"{v:.3f}",
                "p90_ms": lambda v: f"{v:.3f}",
            },
        )
    )

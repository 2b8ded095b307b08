"""``python -m mobilenet_lab export``: a checkpoint as a deployable ONNX or ExecuTorch file, checked.

    python -m mobilenet_lab export --ckpt_path C --format onnx --output model.onnx
    python -m mobilenet_lab export --ckpt_path C --format onnx --quantize int8 --output model.int8.onnx \\
        --data_dir data
    python -m mobilenet_lab export --ckpt_path C --format executorch [--quantize int8] --output model.pte
    python -m mobilenet_lab export --ckpt_path C --benchmark        (deployment table, no file kept)

Input contract of every exported file (the one of ``load_model``): ``images``, float32 RGB in
[0, 1], N x 3 x S x S (S = the checkpoint's image size, N dynamic); normalisation is inside.
Output: ``logits``, N x classes. ONNX files carry class names, mean, std, image size and the model
config as JSON strings in ``metadata_props``; they are self-contained (weights inlined).

Every file is checked in its runtime (ONNX Runtime CPU / ExecuTorch) against ``load_model``'s
PyTorch output before it is put in place (written to a temporary name, renamed on success):
fp32 must match within 1e-4 relative (max |gap| / max |logit|, per batch); int8 must agree with
fp32 on top-1 labels (on test images when the data set is there, else a weaker random-input check).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, UserError
from ..inference import Classifier, load_model

__all__ = [
    "FP32_RTOL",
    "main",
    "onnx_metadata",
    "read_onnx_metadata",
    "export_onnx",
    "check_onnx",
    "quantize_onnx_int8",
    "export_executorch",
    "check_executorch",
    "cifar100_images",
    "onnx_session",
    "onnx_logits",
    "torch_logits",
    "accuracy",
    "top1_agreement",
    "relative_gap",
    "latency",
    "deployment_rows",
]

FP32_RTOL = 1e-4
"""Largest allowed max |runtime - PyTorch| / max |PyTorch logit| for fp32 files."""
CHECK_BATCHES = (1, 7)
"""Batch sizes of the post-export runtime check (random [0, 1] inputs)."""
INT8_MIN_AGREEMENT = 0.8
"""Smallest top-1 agreement int8 vs fp32 accepted on real test images."""
EXECUTORCH_MAX_BATCH = 256
"""Upper bound of the dynamic batch dimension of ``.pte`` files (ExecuTorch needs one)."""


# ------------------------------------------------------------------------------ helpers
def relative_gap(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (0 when both are all-zero)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    gap = float(np.abs(actual - expected).max()) if expected.size else 0.0
    return gap / scale if scale > 0 else gap


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows whose argmax is the same in ``a`` and ``b``."""
    return float((np.asarray(a).argmax(1) == np.asarray(b).argmax(1)).mean())


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(logits).argmax(1) == np.asarray(labels)).mean())


def _random_images(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32)


def _batches(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(images), batch_size):
        yield np.ascontiguousarray(images[i:i + batch_size])


def torch_logits(model: torch.nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(b)).float().numpy() for b in _batches(images, batch_size)])


@contextlib.contextmanager
def _atomic_output(output: Path) -> Iterator[Path]:
    """A temporary path beside ``output``; renamed onto it if the block succeeds, else removed."""
    output = Path(output)
    if output.is_dir():
        raise UserError(f"--output {output} is a folder; pass a file name, e.g. {output / 'model.onnx'}")
    parent = output.parent if str(output.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    except OSError as err:
        raise UserError(f"cannot write --output {output}: {err.strerror or err}; choose a writable folder") from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, output)
    except OSError as err:
        raise UserError(f"cannot write --output {output}: {err.strerror or err}; choose a writable folder") from None
    finally:
        tmp_path.unlink(missing_ok=True)
        for extra in parent.glob(f"{tmp_path.name}*"):  # external-data side files, if any
            extra.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences the exporters' progress prints and warnings (errors still propagate)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield


# --------------------------------------------------------------------------------- ONNX
def onnx_metadata(model: Classifier) -> dict[str, str]:
    """The ``metadata_props`` written into exported ONNX files: JSON strings."""
    return {
        "mobilenet_lab.class_names": json.dumps(list(model.class_names)),
        "mobilenet_lab.image_size": json.dumps(int(model.image_size)),
        "mobilenet_lab.mean": json.dumps([float(v) for v in model.mean.flatten().tolist()]),
        "mobilenet_lab.std": json.dumps([float(v) for v in model.std.flatten().tolist()]),
        "mobilenet_lab.model_config": json.dumps(dict(model.config)),
        "mobilenet_lab.input": json.dumps({"name": "images", "dtype": "float32", "range": [0, 1],
                                           "layout": "NCHW", "channels": "RGB", "normalised_inside": True}),
    }


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``mobilenet_lab.*`` metadata of an exported file, JSON-decoded, without the prefix."""
    import onnx

    proto = onnx.load(os.fspath(path), load_external_data=False)
    return {p.key.removeprefix("mobilenet_lab."): json.loads(p.value)
            for p in proto.metadata_props if p.key.startswith("mobilenet_lab.")}


def onnx_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([session.run(["logits"], {"images": b})[0] for b in _batches(images, batch_size)])


def _onnx_proto(model: Classifier, opset: int | None) -> Any:
    """The ModelProto of ``model`` from the dynamo exporter: dynamic batch, ``images`` -> ``logits``."""
    size = int(model.image_size)
    example = (torch.rand(2, 3, size, size),)
    try:
        with _quiet():
            program = torch.onnx.export(
                model, example, dynamo=True, opset_version=opset, input_names=["images"],
                output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                optimize=True, verify=False, report=False,
            )
    except Exception as err:  # the exporter's own errors are long; keep the first line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"ONNX export failed (opset {opset or 'default'}): {first[:300]}") from None
    proto = program.model_proto
    for key, value in onnx_metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "mobilenet_lab"
    return proto


def _save_onnx(proto: Any, path: Path) -> None:
    import onnx

    # Inline every initializer (these models are a few MB, far from protobuf's 2 GB limit).
    onnx.save_model(proto, os.fspath(path), save_as_external_data=False)


def check_onnx(model: Classifier, path: str | os.PathLike, batches: Sequence[int] = CHECK_BATCHES,
               seed: int = 0) -> float:
    """The largest relative logit gap of the file in ONNX Runtime vs ``model`` on random inputs."""
    session = onnx_session(path)
    gaps = []
    for i, n in enumerate(batches):
        x = _random_images(n, int(model.image_size), seed + i)
        gaps.append(relative_gap(onnx_logits(session, x), torch_logits(model, x)))
    return max(gaps)


def export_onnx(model: Classifier, output: str | os.PathLike, opset: int | None = None,
                rtol: float = FP32_RTOL, log: Callable[[str], None] = print) -> float:
    """Exports ``model`` to a self-contained fp32 ONNX file, checked in ONNX Runtime.

    Returns:
        The max relative logit gap of the check.

    Raises:
        UserError: the export failed, the output is not writable, or the gap exceeds ``rtol``
            (the file is then not left in place).
    """
    output = Path(output)
    with _atomic_output(output) as tmp:
        _save_onnx(_onnx_proto(model, opset), tmp)
        gap = check_onnx(model, tmp)
        log(f"onnxruntime check (batch {', '.join(map(str, CHECK_BATCHES))}): max relative logit gap "
            f"{gap:.2e} (tolerance {rtol:g})")
        if not gap <= rtol:
            raise UserError(f"the exported ONNX model differs from PyTorch by {gap:.2e} relative "
                            f"(tolerance {rtol:g}); not writing {output}")
    return gap


class _CalibrationReader:
    """onnxruntime.quantization CalibrationDataReader over [0, 1] images (model input contract)."""

    def __init__(self, images: np.ndarray, batch_size: int = 32) -> None:
        self._batches = list(_batches(images.astype(np.float32, copy=False), batch_size))
        self._it = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {"images": batch}

    def rewind(self) -> None:
        self._it = iter(self._batches)


def quantize_onnx_int8(fp32_path: str | os.PathLike, output: str | os.PathLike,
                       calibration: np.ndarray, per_channel: bool = True) -> None:
    """Post-training static int8 quantization with ONNX Runtime (QDQ, U8 activations, S8 weights).

    ``calibration`` are [0, 1] float32 images N x 3 x S x S (no normalisation: it is in the graph).
    The metadata of ``fp32_path`` is carried over.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="mobilenet_lab_quant_") as work:
        pre = Path(work) / "pre.onnx"
        qdq = Path(work) / "int8.onnx"
        with _quiet():
            quant_pre_process(os.fspath(fp32_path), os.fspath(pre), skip_symbolic_shape=True)
            quantize_static(
                os.fspath(pre), os.fspath(qdq), _CalibrationReader(calibration),
                quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        proto = onnx.load(os.fspath(qdq))
        source = onnx.load(os.fspath(fp32_path), load_external_data=False)
        del proto.metadata_props[:]
        proto.metadata_props.extend(source.metadata_props)
        entry = proto.metadata_props.add()
        entry.key, entry.value = "mobilenet_lab.quantization", json.dumps(
            {"scheme": "int8 static PTQ, onnxruntime QDQ", "activations": "uint8", "weights": "int8",
             "per_channel": per_channel, "calibration_images": int(len(calibration))})
        _save_onnx(proto, Path(output))


# ---------------------------------------------------------------------------- ExecuTorch
def _require_executorch() -> None:
    try:
        import executorch  # noqa: F401
        import executorch.runtime  # noqa: F401
    except ImportError:
        raise UserError("--format executorch needs the executorch package: pip install executorch "
                        "(1.5.1 installs beside torch 2.14.1 without replacing it)") from None


def _executorch_program(model: Classifier, calibration: np.ndarray | None) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    size = int(model.image_size)
    example = (torch.rand(2, 3, size, size),)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=EXECUTORCH_MAX_BATCH)},)
    with _quiet():
        if calibration is not None:
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer,
                get_symmetric_quantization_config,
            )
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
            graph = torch.export.export(model, example, dynamic_shapes=dynamic).module()
            prepared = prepare_pt2e(graph, quantizer)
            with torch.no_grad():
                for batch in _batches(calibration, 32):
                    prepared(torch.from_numpy(batch))
            model = convert_pt2e(prepared)
        exported = torch.export.export(model, example, dynamic_shapes=dynamic)
        program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    return program.buffer


def executorch_method(path: str | os.PathLike) -> Any:
    """The ``forward`` method of a ``.pte`` file in ExecuTorch's runtime (call ``.execute([x])``)."""
    from executorch.runtime import Runtime

    return Runtime.get().load_program(Path(path)).load_method("forward")


def executorch_logits(method: Any, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    # Small chunks: the PT2E int8 program's memory plan bounds its input (seen: 15 images), below
    # the dynamic batch limit the fp32 program honours.
    return np.concatenate([method.execute([torch.from_numpy(b)])[0].numpy()
                           for b in _batches(images, min(batch_size, EXECUTORCH_MAX_BATCH))])


def check_executorch(model: Classifier, path: str | os.PathLike, batches: Sequence[int] = CHECK_BATCHES,
                     seed: int = 0) -> tuple[float, float]:
    """(max relative logit gap, top-1 agreement) of the ``.pte`` file vs ``model`` on random inputs."""
    method = executorch_method(path)
    got, want = [], []
    for i, n in enumerate(batches):
        x = _random_images(n, int(model.image_size), seed + i)
        got.append(executorch_logits(method, x))
        want.append(torch_logits(model, x))
    gap = max(relative_gap(a, b) for a, b in zip(got, want))
    return gap, top1_agreement(np.concatenate(got), np.concatenate(want))


def export_executorch(model: Classifier, output: str | os.PathLike, calibration: np.ndarray | None = None,
                      rtol: float = FP32_RTOL, log: Callable[[str], None] = print) -> float:
    """Exports ``model`` to an ExecuTorch ``.pte`` lowered to XNNPACK (int8 PT2E if ``calibration``).

    fp32 files are checked within ``rtol`` in ExecuTorch's runtime; int8 files are checked by the
    caller (agreement). Returns the max relative logit gap vs PyTorch.
    """
    _require_executorch()
    output = Path(output)
    with _atomic_output(output) as tmp:
        try:
            buffer = _executorch_program(model, calibration)
        except UserError:
            raise
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UserError(f"ExecuTorch export failed: {first[:300]}") from None
        tmp.write_bytes(buffer)
        gap, agree = check_executorch(model, tmp)
        log(f"executorch runtime check (batch {', '.join(map(str, CHECK_BATCHES))}): max relative logit gap "
            f"{gap:.2e}, top-1 agreement {agree:.3f}")
        if calibration is None and not gap <= rtol:
            raise UserError(f"the ExecuTorch program differs from PyTorch by {gap:.2e} relative "
                            f"(tolerance {rtol:g}); not writing {output}")
    return gap


# ----------------------------------------------------------------------------------- data
def cifar100_images(data_dir: str | os.PathLike, split: str, count: int | None, image_size: int = 32,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images of a CIFAR-100 split as the model input: float32 [0, 1] N x 3 x S x S, + labels.

    ``train`` draws a seeded random subset (calibration); ``test`` takes the first ``count``
    (all when None).

    Raises:
        DataError: the data set is missing or damaged (one line saying where it was looked for).
    """
    from ..data.augment import resize
    from ..data.cifar100 import load_split

    images, labels = load_split(data_dir, split)  # type: ignore[arg-type]
    n = len(labels) if count is None else min(int(count), len(labels))
    if split == "train":
        index = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n]
    else:
        index = torch.arange(n)
    x = images[index].to(torch.float32).div_(255.0)
    x = resize(x, image_size)
    return x.numpy(), labels[index].numpy()


def _data_available(data_dir: str | os.PathLike) -> bool:
    from ..data.cifar100 import missing_files

    return not missing_files(data_dir, ("train", "test"))


# -------------------------------------------------------------------------------- latency
def latency(fns: dict[str, Callable[[], Any]], warmup: int = 20, runs: int = 200) -> dict[str, dict[str, float]]:
    """Median and p90 latency in ms of each function, interleaved (A B C, C B A, ...) after warm-up."""
    from .benchmark import interleaved_times, percentile

    times = interleaved_times(list(fns.values()), warmup, runs)
    return {name: {"median_ms": 1000 * statistics.median(t), "p90_ms": 1000 * percentile(t, 90)}
            for name, t in zip(fns, times)}


def deployment_rows(model: Classifier, fp32_path: str | os.PathLike, int8_path: str | os.PathLike | None,
                    ckpt_path: str | os.PathLike | None = None, warmup: int = 20, runs: int = 200,
                    threads: int | None = None, pte_paths: dict[str, Path] | None = None) -> list[dict[str, Any]]:
    """One row per runtime: file size and batch-1 CPU latency (median, p90), measured interleaved.

    Eager PyTorch is ``load_model``'s module under ``torch.inference_mode``; ONNX Runtime uses the
    CPU provider with ``threads`` intra-op threads (default: ``torch.get_num_threads()``).
    """
    threads = threads or torch.get_num_threads()
    size = int(model.image_size)
    x = _random_images(1, size, 123)
    xt = torch.from_numpy(x)
    fns: dict[str, Callable[[], Any]] = {}
    files: dict[str, Path | None] = {}

    def eager() -> None:
        with torch.inference_mode():
            model(xt)

    fns["PyTorch eager fp32"] = eager
    files["PyTorch eager fp32"] = Path(ckpt_path) if ckpt_path else None
    for name, path in (("ONNX Runtime fp32", fp32_path), ("ONNX Runtime int8", int8_path)):
        if path is None:
            continue
        session = onnx_session(path, threads)
        fns[name] = (lambda s: lambda: s.run(["logits"], {"images": x}))(session)
        files[name] = Path(path)
    for name, path in (pte_paths or {}).items():
        method = executorch_method(path)
        fns[name] = (lambda m: lambda: m.execute([xt]))(method)
        files[name] = Path(path)
    with torch.inference_mode():
        measured = latency(fns, warmup, runs)
    rows = []
    for name, m in measured.items():
        path = files[name]
        rows.append({
            "runtime": name,
            "file": path.name if path else "-",
            "size_MB": round(path.stat().st_size / 1e6, 2) if path else None,
            "median_ms": round(m["median_ms"], 3),
            "p90_ms": round(m["p90_ms"], 3),
        })
    return rows


# ------------------------------------------------------------------------------------ CLI
def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mobilenet_lab export", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by fit (e.g. .../last.ckpt)")
    parser.add_argument("--format", default="onnx", choices=["onnx", "executorch"],
                        help="onnx (ONNX Runtime, dynamo exporter) or executorch (.pte lowered to XNNPACK); "
                             "default: onnx")
    parser.add_argument("--output", help="file to write (default: the checkpoint's name with .onnx/.pte, "
                                         "plus .int8 when quantized)")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="int8: post-training static quantization (ONNX Runtime QDQ with per-channel "
                             "weights, or the PT2E XNNPACK quantizer for executorch), calibrated on "
                             "training images from --data_dir")
    parser.add_argument("--calibration_images", type=int, default=512,
                        help="training images used to calibrate int8 (default: 512)")
    parser.add_argument("--data_dir", default=os.environ.get("MOBILENET_LAB_DATA", "data"),
                        help="folder holding cifar-100-python/ (default: $MOBILENET_LAB_DATA or data); "
                             "needed by --quantize, used for accuracy when present")
    parser.add_argument("--eval_images", type=int, default=None,
                        help="test images for the fp32 vs int8 accuracy report (default: all 10,000)")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset (default: the exporter's, 20 with torch 2.14); >= 18 for the dynamo exporter")
    parser.add_argument("--random_calibration", action="store_true",
                        help="calibrate int8 on random [0, 1] images instead of the data set "
                             "(smoke tests only: the accuracy will suffer)")
    parser.add_argument("--benchmark", action="store_true",
                        help="also time batch-1 CPU latency (median, p90) of eager PyTorch vs the exported "
                             "runtimes (ONNX: fp32 and int8) and print the deployment table")
    parser.add_argument("--runs", type=int, default=300, help="timed runs per runtime for --benchmark (default: 300)")
    parser.add_argument("--warmup", type=int, default=30, help="warm-up runs per runtime for --benchmark (default: 30)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch and ONNX Runtime (default: torch's default)")
    args = parser.parse_args(argv)
    if args.calibration_images < 1:
        parser.error("--calibration_images must be >= 1")
    if args.eval_images is not None and args.eval_images < 1:
        parser.error("--eval_images must be >= 1")
    if args.opset is not None and args.opset < 18:
        parser.error("--opset must be >= 18 (the dynamo exporter's minimum)")
    if args.runs < 5 or args.warmup < 0:
        parser.error("--runs must be >= 5 and --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def _default_output(ckpt: Path, fmt: str, quantize: str | None) -> Path:
    suffix = (".int8" if quantize else "") + (".onnx" if fmt == "onnx" else ".pte")
    return ckpt.with_suffix(suffix)


def _calibration(args: argparse.Namespace, model: Classifier) -> np.ndarray:
    if args.random_calibration:
        print(f"calibrating on {args.calibration_images} random [0, 1] images (--random_calibration)")
        return _random_images(args.calibration_images, int(model.image_size), 7)
    try:
        images, _ = cifar100_images(args.data_dir, "train", args.calibration_images, int(model.image_size))
    except DataError as err:
        raise DataError(f"--quantize int8 calibrates on CIFAR-100 training images: {err}") from None
    print(f"calibrating on {len(images)} CIFAR-100 training images from {args.data_dir}")
    return images


def _report_int8(model: Classifier, fp32_logits_fn: Callable[[np.ndarray], np.ndarray],
                 int8_logits_fn: Callable[[np.ndarray], np.ndarray], args: argparse.Namespace) -> None:
    """Accuracy fp32 vs int8 on the test set (when there) and top-1 agreement; fails below the bar."""
    if _data_available(args.data_dir):
        images, labels = cifar100_images(args.data_dir, "test", args.eval_images, int(model.image_size))
        fp32, int8 = fp32_logits_fn(images), int8_logits_fn(images)
        agree = top1_agreement(int8, fp32)
        print(f"CIFAR-100 test ({len(labels)} images): top-1 fp32 {accuracy(fp32, labels):.4f}, "
              f"int8 {accuracy(int8, labels):.4f}; int8 vs fp32 top-1 agreement {agree:.4f}")
        if agree < INT8_MIN_AGREEMENT:
            raise UserError(f"int8 agrees with fp32 on only {agree:.1%} of test images "
                            f"(< {INT8_MIN_AGREEMENT:.0%}); try more --calibration_images or keep fp32")
    else:
        images = _random_images(64, int(model.image_size), 99)
        fp32, int8 = fp32_logits_fn(images), int8_logits_fn(images)
        print(f"no CIFAR-100 test set in {args.data_dir}: on 64 random inputs int8 vs fp32 top-1 "
              f"agreement {top1_agreement(int8, fp32):.3f}, max relative gap {relative_gap(int8, fp32):.3f} "
              "(accuracy not measured)")
        if not np.isfinite(int8).all():
            raise UserError("the int8 model produces non-finite logits; not writing it")


def _export_onnx_cli(args: argparse.Namespace, model: Classifier, output: Path, work: Path) -> dict[str, Path]:
    if not args.quantize:
        export_onnx(model, output, args.opset)
        print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB)")
        return {"fp32": output}
    fp32 = work / "fp32.onnx"
    export_onnx(model, fp32, args.opset)
    calibration = _calibration(args, model)
    with _atomic_output(output) as tmp:
        quantize_onnx_int8(fp32, tmp, calibration)
        fp32_session, int8_session = onnx_session(fp32), onnx_session(tmp)
        _report_int8(model, lambda x: onnx_logits(fp32_session, x), lambda x: onnx_logits(int8_session, x), args)
    print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB; fp32 {fp32.stat().st_size / 1e6:.2f} MB)")
    return {"fp32": fp32, "int8": output}


def _export_executorch_cli(args: argparse.Namespace, model: Classifier, output: Path) -> dict[str, Path]:
    _require_executorch()
    if not args.quantize:
        export_executorch(model, output)
        print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB)")
        return {"fp32": output}
    calibration = _calibration(args, model)
    with _atomic_output(output) as tmp:
        export_executorch(model, tmp, calibration)
        method = executorch_method(tmp)
        _report_int8(model, lambda x: torch_logits(model, x), lambda x: executorch_logits(method, x), args)
    print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB)")
    return {"int8": output}


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = Path(args.ckpt_path)
    output = Path(args.output) if args.output else _default_output(ckpt, args.format, args.quantize)
    if args.format == "executorch":
        _require_executorch()  # fail before the slow parts
    if args.quantize and not args.random_calibration and not _data_available(args.data_dir):
        from ..data.cifar100 import _missing_message, missing_files

        raise DataError("--quantize int8 calibrates on CIFAR-100 training images: "
                        + _missing_message(args.data_dir, missing_files(args.data_dir, ("train", "test"))))
    model = load_model(ckpt)
    print(f"{model.config.get('name')} (width {model.config.get('width_mult')}, {model.config.get('stem')} stem), "
          f"input images N x 3 x {model.image_size} x {model.image_size} float32 RGB [0, 1], "
          f"{len(model.class_names)} classes; {model.weights}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mobilenet_lab_export_") as work:
        if args.format == "onnx":
            files = _export_onnx_cli(args, model, output, Path(work))
        else:
            files = _export_executorch_cli(args, model, output)
        print(f"export took {time.perf_counter() - start:.1f} s")
        if args.benchmark:
            _benchmark_cli(args, model, ckpt, files, Path(work))


def _benchmark_cli(args: argparse.Namespace, model: Classifier, ckpt: Path, files: dict[str, Path],
                   work: Path) -> None:
    from .tables import markdown_table

    onnx_fp32, onnx_int8, pte = None, None, {}
    if args.format == "onnx":
        onnx_fp32 = files["fp32"]
        onnx_int8 = files.get("int8")
        if onnx_int8 is None:  # time int8 too: quantize a throw-away copy
            onnx_int8 = work / "int8.onnx"
            if args.random_calibration or not _data_available(args.data_dir):
                calibration = _random_images(args.calibration_images, int(model.image_size), 7)
            else:
                calibration = cifar100_images(args.data_dir, "train", args.calibration_images,
                                              int(model.image_size))[0]
            quantize_onnx_int8(onnx_fp32, onnx_int8, calibration)
    else:
        pte = {f"ExecuTorch XNNPACK {k}": v for k, v in files.items()}
    threads = args.threads or torch.get_num_threads()
    rows = deployment_rows(model, onnx_fp32, onnx_int8, ckpt, args.warmup, args.runs, threads, pte)
    print(f"\nbatch-1 CPU latency, {threads} thread(s), median and p90 of {args.runs} interleaved runs "
          f"after {args.warmup} warm-up ({model.config.get('name')} width {model.config.get('width_mult')}):")
    print(markdown_table(rows, {"size_MB": lambda v: "-" if v is None else f"{v:.2f}",
                                "median_ms": lambda v: f"{v:.3f}", "p90_ms": lambda v: f"{v:.3f}"}))


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

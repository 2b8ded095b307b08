"""ONNX: export with the dynamo exporter (dynamic batch, metadata), check in ONNX Runtime and OpenCV, int8 QDQ."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import UserError
from ...inference import Classifier
from .opencv import check_opencv, expand_gate_hardsigmoids, opencv_available, opencv_version
from .output import atomic_output, quiet
from .verify import CHECK_BATCHES, FP32_RTOL, batches, random_images, relative_gap, torch_logits

__all__ = [
    "onnx_metadata",
    "read_onnx_metadata",
    "onnx_session",
    "onnx_logits",
    "check_onnx",
    "export_onnx",
    "quantize_onnx_int8",
]


def onnx_metadata(model: Classifier) -> dict[str, str]:
    """The ``metadata_props`` written into exported ONNX files: JSON strings."""
    return {
        "mobilenet_lab.class_names": json.dumps(list(model.class_names)),
        "mobilenet_lab.image_size": json.dumps(int(model.image_size)),
        "mobilenet_lab.mean": json.dumps([float(v) for v in model.mean.flatten().tolist()]),
        "mobilenet_lab.std": json.dumps([float(v) for v in model.std.flatten().tolist()]),
        "mobilenet_lab.model_config": json.dumps(dict(model.config)),
        "mobilenet_lab.input": json.dumps(
            {
                "name": "images",
                "dtype": "float32",
                "range": [0, 1],
                "layout": "NCHW",
                "channels": "RGB",
                "normalised_inside": True,
            }
        ),
    }


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``mobilenet_lab.*`` metadata of an exported file, JSON-decoded, without the prefix."""
    import onnx

    proto = onnx.load(os.fspath(path), load_external_data=False)
    return {
        p.key.removeprefix("mobilenet_lab."): json.loads(p.value)
        for p in proto.metadata_props
        if p.key.startswith("mobilenet_lab.")
    }


def onnx_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of ``path`` (``threads`` intra-op threads, else the runtime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The session's logits for [0, 1] images, batch by batch."""
    return np.concatenate([session.run(["logits"], {"images": b})[0] for b in batches(images, batch_size)])


def _onnx_proto(model: Classifier, opset: int | None) -> Any:
    """The ModelProto of ``model`` from the dynamo exporter: dynamic batch, ``images`` -> ``logits``.

    Squeeze-excite gates are written as ``Clip(x * alpha + beta, 0, 1)`` rather than HardSigmoid
    (the same function; see :mod:`.opencv` for the OpenCV fusion this keeps clear of).
    """
    size = int(model.image_size)
    example = (torch.rand(2, 3, size, size),)
    try:
        with quiet():
            program = torch.onnx.export(
                model,
                example,
                dynamo=True,
                opset_version=opset,
                input_names=["images"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                optimize=True,
                verify=False,
                report=False,
            )
    except Exception as err:  # the exporter's own errors are long; keep the first line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"ONNX export failed (opset {opset or 'default'}): {first[:300]}") from None
    proto = program.model_proto
    expand_gate_hardsigmoids(proto)
    for key, value in onnx_metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "mobilenet_lab"
    return proto


def _save_onnx(proto: Any, path: Path) -> None:
    import onnx

    # Inline every initializer (these models are a few MB, far from protobuf's 2 GB limit).
    onnx.save_model(proto, os.fspath(path), save_as_external_data=False)


def check_onnx(
    model: Classifier, path: str | os.PathLike, batches: Sequence[int] = CHECK_BATCHES, seed: int = 0
) -> float:
    """The largest relative logit gap of the file in ONNX Runtime vs ``model`` on random inputs."""
    session = onnx_session(path)
    gaps = []
    for i, n in enumerate(batches):
        x = random_images(n, int(model.image_size), seed + i)
        gaps.append(relative_gap(onnx_logits(session, x), torch_logits(model, x)))
    return max(gaps)


def export_onnx(
    model: Classifier,
    output: str | os.PathLike,
    opset: int | None = None,
    rtol: float = FP32_RTOL,
    log: Callable[[str], None] = print,
) -> float:
    """Exports ``model`` to a self-contained fp32 ONNX file, checked in ONNX Runtime (and OpenCV's DNN).

    The OpenCV check runs when ``cv2`` is installed, on the same inputs and with the same tolerance.

    Returns:
        The max relative logit gap of the ONNX Runtime check.

    Raises:
        UserError: the export failed, the output is not writable, or a runtime's gap exceeds
            ``rtol`` (the file is then not left in place).
    """
    output = Path(output)
    sizes = ", ".join(map(str, CHECK_BATCHES))
    with atomic_output(output) as tmp:
        _save_onnx(_onnx_proto(model, opset), tmp)
        gap = check_onnx(model, tmp)
        log(f"onnxruntime check (batch {sizes}): max relative logit gap {gap:.2e} (tolerance {rtol:g})")
        if not gap <= rtol:
            raise UserError(
                f"the exported ONNX model differs from PyTorch by {gap:.2e} relative "
                f"(tolerance {rtol:g}); not writing {output}"
            )
        agreed = ["onnxruntime"]
        if opencv_available():
            cv_gap = _check_opencv_or_fail(model, tmp, output)
            log(
                f"opencv {opencv_version()} check (batch {sizes}): max relative logit gap {cv_gap:.2e} "
                f"(tolerance {rtol:g})"
            )
            if not cv_gap <= rtol:
                raise UserError(
                    f"the exported ONNX model differs from PyTorch in OpenCV's DNN by {cv_gap:.2e} "
                    f"relative (tolerance {rtol:g}); not writing {output}"
                )
            agreed.append(f"opencv {opencv_version()}")
        else:
            log("opencv not installed: OpenCV's DNN not checked (pip install opencv-python-headless)")
        log(f"agreed with PyTorch: {', '.join(agreed)}")
    return gap


def _check_opencv_or_fail(model: Classifier, path: Path, output: Path) -> float:
    try:
        return check_opencv(model, path)
    except Exception as err:  # cv2.error: keep OpenCV's own first line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(
            f"OpenCV's DNN cannot run the exported ONNX model: {first[:300]}; not writing {output} "
            "(uninstall opencv-python-headless to skip this check)"
        ) from None


class _CalibrationReader:
    """onnxruntime.quantization CalibrationDataReader over [0, 1] images (model input contract)."""

    def __init__(self, images: np.ndarray, batch_size: int = 32) -> None:
        self._batches = list(batches(images.astype(np.float32, copy=False), batch_size))
        self._it = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {"images": batch}

    def rewind(self) -> None:
        self._it = iter(self._batches)


def quantize_onnx_int8(
    fp32_path: str | os.PathLike, output: str | os.PathLike, calibration: np.ndarray, per_channel: bool = True
) -> None:
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
        with quiet():
            quant_pre_process(os.fspath(fp32_path), os.fspath(pre), skip_symbolic_shape=True)
            quantize_static(
                os.fspath(pre),
                os.fspath(qdq),
                _CalibrationReader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        proto = onnx.load(os.fspath(qdq))
        source = onnx.load(os.fspath(fp32_path), load_external_data=False)
        del proto.metadata_props[:]
        proto.metadata_props.extend(source.metadata_props)
        entry = proto.metadata_props.add()
        entry.key, entry.value = (
            "mobilenet_lab.quantization",
            json.dumps(
                {
                    "scheme": "int8 static PTQ, onnxruntime QDQ",
                    "activations": "uint8",
                    "weights": "int8",
                    "per_channel": per_channel,
                    "calibration_images": int(len(calibration)),
                }
            ),
        )
        _save_onnx(proto, Path(output))

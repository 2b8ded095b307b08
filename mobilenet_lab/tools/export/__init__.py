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

Every file is checked in its runtime (ONNX Runtime CPU, and OpenCV's DNN when installed / ExecuTorch) against ``load_model``'s
PyTorch output before it is put in place (written to a temporary name, renamed on success):
fp32 must match within 1e-4 relative (max |gap| / max |logit|, per batch); int8 must agree with
fp32 on top-1 labels (on test images when the data set is there, else a weaker random-input check).
Modules: ``onnx`` (export, ONNX Runtime check, int8 QDQ), ``opencv`` (the squeeze-excite gate rewrite
OpenCV's importer needs, and its check), ``executorch`` (``.pte`` for XNNPACK),
``verify`` (tolerances, gaps, agreement, accuracy, CIFAR-100 inputs), ``latency`` (the
``--benchmark`` table), ``output`` (atomic file writing), ``cli`` (the command line). None of them
imports Lightning.
"""

from __future__ import annotations

from .cli import main
from .executorch import (
    EXECUTORCH_MAX_BATCH,
    check_executorch,
    executorch_logits,
    executorch_method,
    export_executorch,
)
from .latency import deployment_rows, latency
from .onnx import (
    check_onnx,
    export_onnx,
    onnx_logits,
    onnx_metadata,
    onnx_session,
    quantize_onnx_int8,
    read_onnx_metadata,
)
from .verify import (
    CHECK_BATCHES,
    FP32_RTOL,
    INT8_MIN_AGREEMENT,
    accuracy,
    cifar100_images,
    relative_gap,
    top1_agreement,
    torch_logits,
)

__all__ = [
    "FP32_RTOL",
    "CHECK_BATCHES",
    "INT8_MIN_AGREEMENT",
    "EXECUTORCH_MAX_BATCH",
    "main",
    "onnx_metadata",
    "read_onnx_metadata",
    "export_onnx",
    "check_onnx",
    "quantize_onnx_int8",
    "export_executorch",
    "check_executorch",
    "executorch_method",
    "executorch_logits",
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

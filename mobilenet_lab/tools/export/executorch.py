"""ExecuTorch: a ``.pte`` program lowered to XNNPACK (fp32 or int8 PT2E), checked in ExecuTorch's runtime."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import UserError
from ...inference import Classifier
from .output import atomic_output, quiet
from .verify import CHECK_BATCHES, FP32_RTOL, batches, random_images, relative_gap, top1_agreement, torch_logits

__all__ = [
    "EXECUTORCH_MAX_BATCH",
    "require_executorch",
    "executorch_method",
    "executorch_logits",
    "check_executorch",
    "export_executorch",
]

EXECUTORCH_MAX_BATCH = 256
"""Upper bound of the dynamic batch dimension of ``.pte`` files (ExecuTorch needs one)."""


def require_executorch() -> None:
    """UserError (how to install it) unless the executorch package is importable."""
    try:
        import executorch  # noqa: F401
        import executorch.runtime  # noqa: F401
    except ImportError:
        raise UserError(
            "--format executorch needs the executorch package: pip install executorch "
            "(1.5.1 installs beside torch 2.14.1 without replacing it)"
        ) from None


def _executorch_program(model: Classifier, calibration: np.ndarray | None) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    size = int(model.image_size)
    example = (torch.rand(2, 3, size, size),)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=EXECUTORCH_MAX_BATCH)},)
    with quiet():
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
                for batch in batches(calibration, 32):
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
    return np.concatenate(
        [
            method.execute([torch.from_numpy(b)])[0].numpy()
            for b in batches(images, min(batch_size, EXECUTORCH_MAX_BATCH))
        ]
    )


def check_executorch(
    model: Classifier, path: str | os.PathLike, batches: Sequence[int] = CHECK_BATCHES, seed: int = 0
) -> tuple[float, float]:
    """(max relative logit gap, top-1 agreement) of the ``.pte`` file vs ``model`` on random inputs."""
    method = executorch_method(path)
    got, want = [], []
    for i, n in enumerate(batches):
        x = random_images(n, int(model.image_size), seed + i)
        got.append(executorch_logits(method, x))
        want.append(torch_logits(model, x))
    gap = max(relative_gap(a, b) for a, b in zip(got, want))
    return gap, top1_agreement(np.concatenate(got), np.concatenate(want))


def export_executorch(
    model: Classifier,
    output: str | os.PathLike,
    calibration: np.ndarray | None = None,
    rtol: float = FP32_RTOL,
    log: Callable[[str], None] = print,
) -> float:
    """Exports ``model`` to an ExecuTorch ``.pte`` lowered to XNNPACK (int8 PT2E if ``calibration``).

    fp32 files are checked within ``rtol`` in ExecuTorch's runtime; int8 files are checked by the
    caller (agreement). Returns the max relative logit gap vs PyTorch.
    """
    require_executorch()
    output = Path(output)
    with atomic_output(output) as tmp:
        try:
            buffer = _executorch_program(model, calibration)
        except UserError:
            raise
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UserError(f"ExecuTorch export failed: {first[:300]}") from None
        tmp.write_bytes(buffer)
        gap, agree = check_executorch(model, tmp)
        log(
            f"executorch runtime check (batch {', '.join(map(str, CHECK_BATCHES))}): max relative logit gap "
            f"{gap:.2e}, top-1 agreement {agree:.3f}"
        )
        if calibration is None and not gap <= rtol:
            raise UserError(
                f"the ExecuTorch program differs from PyTorch by {gap:.2e} relative "
                f"(tolerance {rtol:g}); not writing {output}"
            )
    return gap

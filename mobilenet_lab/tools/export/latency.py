"""The deployment table of ``export --benchmark``: file size and batch-1 CPU latency per runtime."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ...inference import Classifier
from ..timing import interleaved, summary_ms
from .executorch import executorch_method
from .onnx import onnx_session
from .verify import random_images

__all__ = ["latency", "deployment_rows"]


def latency(fns: dict[str, Callable[[], Any]], warmup: int = 20, runs: int = 200) -> dict[str, dict[str, float]]:
    """Median and p90 latency in ms of each function, interleaved (A B C, C B A, ...) after warm-up."""
    measured = interleaved(list(fns.values()), warmup, runs, names=list(fns))
    return {name: summary_ms(m) for name, m in zip(fns, measured)}


def deployment_rows(
    model: Classifier,
    fp32_path: str | os.PathLike,
    int8_path: str | os.PathLike | None,
    ckpt_path: str | os.PathLike | None = None,
    warmup: int = 20,
    runs: int = 200,
    threads: int | None = None,
    pte_paths: dict[str, Path] | None = None,
) -> list[dict[str, Any]]:
    """One row per runtime: file size and batch-1 CPU latency (median, p90), measured interleaved.

    Eager PyTorch is ``load_model``'s module under ``torch.inference_mode``; ONNX Runtime uses the
    CPU provider with ``threads`` intra-op threads (default: ``torch.get_num_threads()``).
    """
    threads = threads or torch.get_num_threads()
    size = int(model.image_size)
    x = random_images(1, size, 123)
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
        rows.append(
            {
                "runtime": name,
                "file": path.name if path else "-",
                "size_MB": round(path.stat().st_size / 1e6, 2) if path else None,
                "median_ms": round(m["median_ms"], 3),
                "p90_ms": round(m["p90_ms"], 3),
            }
        )
    return rows

"""The measurements: batch-1 latency, large-batch throughput and training speed, with the hardware they ran on.

Every figure comes from :func:`mobilenet_lab.tools.timing.interleaved` (ours and torchvision's
network take turns call by call).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from typing import Any

import torch
from jsonargparse import Namespace
from torch import nn

from ...errors import UserError
from ...models import count_macs, count_params, create_model
from ..timing import interleaved, median, summary_ms
from .loops import train_step
from .reference import torchvision_reference

__all__ = ["COLUMNS", "HARDWARE_COLUMNS", "cpu_model", "hardware_info", "load_average", "run_benchmark"]

#: Columns of benchmark.csv (and of the markdown table, less the hardware columns).
COLUMNS = [
    "model",
    "width",
    "impl",
    "stem",
    "image_size",
    "device",
    "params",
    "MACs",
    "latency_ms",
    "latency_p90_ms",
    "infer_img_s",
    "train_img_s",
    "latency_vs_torchvision",
]
HARDWARE_COLUMNS = ["cpu", "threads", "torch", "gpu", "channels_last", "env"]
#: Environment variables that change CPU speed (recorded when set).
SPEED_ENV = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "KMP_BLOCKTIME",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "LD_PRELOAD",
)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def hardware_info(channels_last: bool) -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return {
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical cores)",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": gpu,
        "channels_last": channels_last,
        "env": " ".join(f"{k}={os.environ[k]}" for k in SPEED_ENV if os.environ.get(k)),
    }


def load_average() -> float:
    """The 1-minute load average (NaN where the system has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _inference_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    def run() -> None:
        with torch.inference_mode():
            model(x)

    return run


def _batch(n: int, size: int, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = torch.randn(n, 3, size, size, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _measure(
    models: list[nn.Module],
    size: int,
    device: torch.device,
    args: Namespace,
) -> list[dict[str, Any]]:
    """Latency, throughput, training speed of ``models`` (interleaved), one dict each."""
    cl = args.channels_last == "on"
    for m in models:
        m.to(device)
        if cl:
            m.to(memory_format=torch.channels_last)
        m.eval()
    results: list[dict[str, Any]] = [{} for _ in models]
    x1 = _batch(1, size, device, cl)
    lat = interleaved([_inference_fn(m, x1) for m in models], args.warmup, args.runs)
    for r, t in zip(results, lat):
        ms = summary_ms(t)
        r["latency_ms"], r["latency_p90_ms"] = ms["median_ms"], ms["p90_ms"]
    if args.batch_size > 0:
        xb = _batch(args.batch_size, size, device, cl)
        thr = interleaved([_inference_fn(m, xb) for m in models], args.batch_warmup, args.batch_runs)
        for r, t in zip(results, thr):
            r["infer_img_s"] = args.batch_size / median(t)
        del xb
    if not args.no_train:
        xt = _batch(args.train_batch_size, size, device, cl)
        yt = torch.randint(0, args.num_classes, (args.train_batch_size,), device=device)
        for m in models:
            m.train()
        tr = interleaved([train_step(m, [(xt, yt)]) for m in models], args.batch_warmup, args.batch_runs)
        for r, t in zip(results, tr):
            r["train_img_s"] = args.train_batch_size / median(t)
        for m in models:
            m.eval()
    return results


def run_benchmark(args: Namespace) -> list[dict[str, Any]]:
    """Runs the sweep of parsed arguments; returns one row per (model, width, device, size, impl)."""
    from tqdm import tqdm

    devices = _devices(args.devices)
    combos = [(d, s, m, w) for d in devices for s in args.image_sizes for m in args.models for w in args.widths]
    hw = hardware_info(args.channels_last == "on")
    rows: list[dict[str, Any]] = []
    bar = tqdm(combos, desc="benchmark", unit="config", file=sys.stderr, disable=args.quiet)
    for device_name, size, name, width in bar:
        bar.set_postfix_str(f"{name} x{width:g} {device_name} {size}px")
        device = torch.device(device_name)
        torch.manual_seed(0)
        try:
            ours = create_model(name, width_mult=width, num_classes=args.num_classes, stem=args.stem)
        except ValueError as err:
            raise UserError(str(err)) from None
        entries = [("ours", ours)]
        reference = None if args.no_reference else torchvision_reference(name, width, args.num_classes, args.stem)
        if reference is not None:
            entries.append(("torchvision", reference))
        counts = [(count_params(m), count_macs(m, size)) for _, m in entries]
        measured = _measure([m for _, m in entries], size, device, args)
        for (impl, _), (params, macs), meas in zip(entries, counts, measured):
            row = {
                "model": name,
                "width": width,
                "impl": impl,
                "stem": args.stem,
                "image_size": size,
                "device": device_name,
                "params": params,
                "MACs": macs,
                "latency_ms": meas["latency_ms"],
                "latency_p90_ms": meas["latency_p90_ms"],
                "infer_img_s": meas.get("infer_img_s"),
                "train_img_s": meas.get("train_img_s"),
                "latency_vs_torchvision": None,
            }
            row.update(hw)
            rows.append(row)
        if reference is not None:
            ours_row, ref_row = rows[-2], rows[-1]
            ours_row["latency_vs_torchvision"] = ours_row["latency_ms"] / ref_row["latency_ms"]
            if ours_row["params"] != ref_row["params"]:
                ours_row["note"] = f"torchvision has {ref_row['params']:,} parameters"
        del entries, ours, reference
    return rows


def _devices(requested: list[str]) -> list[str]:
    devices = []
    for d in dict.fromkeys(requested):
        if d == "cuda" and not torch.cuda.is_available():
            if requested == ["cuda"] or set(requested) == {"cuda"}:
                raise UserError(
                    "--devices cuda: no CUDA device is available (torch.cuda.is_available() is False); "
                    "use --devices cpu"
                )
            print("note: CUDA is not available; skipping --devices cuda", file=sys.stderr)
            continue
        devices.append(d)
    return devices

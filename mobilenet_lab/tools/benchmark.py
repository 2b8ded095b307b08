"""``python -m mobilenet_lab benchmark``: latency, throughput and training speed of MobileNets.

For every (model, width, device, image size): parameters, MACs, batch-1 inference latency
(median and p90 of many timed runs after a warm-up; eval mode, ``torch.inference_mode``, CUDA
synchronised), inference throughput at a large batch (images/s) and training speed (images/s of
SGD steps: forward, backward, step, after a warm-up).

Where torchvision builds the same architecture (MobileNetV2 at any width, V3-Small/Large at width
1.0; V1 none) its network is measured in the same run as a reference row, interleaved with ours
(the order alternates every repetition, so machine noise hits both). With ``--stem cifar`` its
first two stride-2 layers run at stride 1, as ours do, and its parameter count is checked equal.

Writes ``<out>/benchmark.md``, ``benchmark.csv`` and ``benchmark.png`` (latency vs MACs; with
``--report_csv`` from ``python -m mobilenet_lab report``, also accuracy vs latency). Timings on a
shared machine vary from run to run: compare rows of one run, and read them as ranges.

Example:
    python -m mobilenet_lab benchmark --models mobilenet_v3_small --widths 0.5 1.0 --threads 2
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..models import count_macs, count_params, create_model, list_models
from ..models.base import STEMS
from .tables import markdown_table, output_dir, write_csv
from .timing import Stopwatch, interleaved, median, summary_ms

__all__ = [
    "main",
    "run_benchmark",
    "torchvision_reference",
    "hardware_info",
    "COLUMNS",
]

#: Columns of benchmark.csv (and of the markdown table, less the hardware columns).
COLUMNS = [
    "model", "width", "impl", "stem", "image_size", "device", "params", "MACs",
    "latency_ms", "latency_p90_ms", "infer_img_s", "train_img_s", "latency_vs_torchvision",
]
HARDWARE_COLUMNS = ["cpu", "threads", "torch", "gpu", "channels_last", "env"]
#: Environment variables that change CPU speed (recorded when set).
SPEED_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "MALLOC_MMAP_THRESHOLD_",
             "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "LD_PRELOAD")
TORCHVISION_MODELS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")


# ----------------------------------------------------------------------------- hardware
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


# ---------------------------------------------------------------------- torchvision reference
def torchvision_reference(name: str, width: float, num_classes: int, stem: str) -> nn.Module | None:
    """torchvision's network of the same architecture as ``create_model(name, ...)``, or None.

    torchvision's width semantics equal ours for MobileNetV2 at every width and for V3 at width 1.0
    only (for V3 it scales the head layer and rounds expanded widths differently); it has no V1.
    For a stem that runs the first k stride-2 layers at stride 1 (``cifar``: k = 2), the same k
    convolutions of torchvision's network are set to stride 1, and a block whose shortcut that
    makes possible gets it (as ours: stride 1 and equal channels).
    """
    if name not in TORCHVISION_MODELS or (name != "mobilenet_v2" and width != 1.0):
        return None
    import torchvision

    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if name == "mobilenet_v2":
        kwargs["width_mult"] = width
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    remove = STEMS[stem]
    for module in model.modules():  # module order is forward order in these networks
        if remove == 0:
            break
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (1, 1)
            remove -= 1
    for module in model.modules():
        if hasattr(module, "use_res_connect"):
            body = module.block if hasattr(module, "block") else module.conv
            convs = [m for m in body.modules() if isinstance(m, nn.Conv2d)]  # expand/dw, SE, project
            strided = any(c.stride != (1, 1) for c in convs)
            module.use_res_connect = not strided and convs[0].in_channels == convs[-1].out_channels
    return model


# -------------------------------------------------------------------------------- timing
def _inference_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    def run() -> None:
        with torch.inference_mode():
            model(x)
    return run


def _train_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], Any]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return step


def _batch(n: int, size: int, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = torch.randn(n, 3, size, size, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ------------------------------------------------------------------------------- sweep
def _measure(
    models: list[nn.Module], size: int, device: torch.device, args: argparse.Namespace,
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
        tr = interleaved([_train_fn(m, xt, yt) for m in models], args.batch_warmup, args.batch_runs)
        for r, t in zip(results, tr):
            r["train_img_s"] = args.train_batch_size / median(t)
        for m in models:
            m.eval()
    return results


def run_benchmark(args: argparse.Namespace) -> list[dict[str, Any]]:
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
                "model": name, "width": width, "impl": impl, "stem": args.stem, "image_size": size,
                "device": device_name, "params": params, "MACs": macs,
                "latency_ms": meas["latency_ms"], "latency_p90_ms": meas["latency_p90_ms"],
                "infer_img_s": meas.get("infer_img_s"), "train_img_s": meas.get("train_img_s"),
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
                raise UserError("--devices cuda: no CUDA device is available (torch.cuda.is_available() is False); "
                                "use --devices cpu")
            print("note: CUDA is not available; skipping --devices cuda", file=sys.stderr)
            continue
        devices.append(d)
    return devices


# ------------------------------------------------------------------------------ output
def _fmt(digits: int) -> Callable[[Any], str]:
    return lambda v: "" if v is None else f"{v:,.{digits}f}"


FORMATS = {
    "latency_ms": _fmt(2), "latency_p90_ms": _fmt(2), "infer_img_s": _fmt(0), "train_img_s": _fmt(0),
    "latency_vs_torchvision": lambda v: "" if v is None else f"{v:.2f}x",
}


def markdown_report(rows: list[dict[str, Any]], args: argparse.Namespace, elapsed: float) -> str:
    hw = {k: rows[0][k] for k in HARDWARE_COLUMNS} if rows else hardware_info(args.channels_last == "on")
    table_rows = [{k: r.get(k) for k in COLUMNS} for r in rows]
    lines = [
        "# MobileNet benchmark",
        "",
        f"- CPU: {hw['cpu']}; torch threads: {hw['threads']}",
        f"- GPU: {hw['gpu'] or 'none'}",
        f"- torch {hw['torch']}, Python {platform.python_version()}, channels_last: {hw['channels_last']}; "
        f"environment: {hw['env'] or '(no speed-related variables set)'}",
        f"- stem {args.stem}, {args.num_classes} classes; latency: batch 1, median and p90 of {args.runs} runs "
        f"after {args.warmup} warm-up; throughput: batch {args.batch_size}; training: SGD at batch "
        f"{args.train_batch_size}; median of {args.batch_runs} after {args.batch_warmup} warm-up",
        "- torchvision rows: its network of the same architecture, measured interleaved with ours; "
        "latency_vs_torchvision = our median latency / torchvision's (below 1: ours is faster)",
        f"- sweep took {elapsed:.0f} s; load average (1 min) at start {getattr(args, 'load_start', float('nan')):.2f}, "
        f"at end {_load():.2f}. On a shared machine timings vary 10-30% (more under load) between runs; "
        "compare rows of one run.",
        "",
        markdown_table(table_rows, FORMATS),
    ]
    notes = [f"- {r['model']} x{r['width']:g}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        lines += ["", "Parameter mismatches with torchvision:", *notes]
    return "\n".join(lines) + "\n"


def read_accuracy(report_csv: Path) -> dict[tuple[str, float, str, int], float]:
    """Best validation accuracy per (model, width, stem, image size) from the report tool's CSV."""
    best: dict[tuple[str, float, str, int], float] = {}
    with open(report_csv, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            try:
                key = (r["model"], float(r["width"]), r.get("stem") or "", int(float(r.get("image_size") or 32)))
                acc = float(r.get("best_val_acc") or "nan")
            except (KeyError, ValueError):
                continue
            if not math.isnan(acc):
                best[key] = max(acc, best.get(key, -1.0))
    return best


def plot(rows: list[dict[str, Any]], path: Path, accuracy: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["device"], r["image_size"]) for r in rows})
    acc_points = []
    if accuracy:
        for r in rows:
            key = (r["model"], float(r["width"]), r["stem"], int(r["image_size"]))
            if r["impl"] == "ours" and key in accuracy:
                acc_points.append((r, accuracy[key]))
    ncols = len(groups) + (1 if acc_points else 0)
    fig, axes = plt.subplots(1, max(ncols, 1), figsize=(6.5 * max(ncols, 1), 5), squeeze=False)
    colors = {m: f"C{i}" for i, m in enumerate(sorted({r["model"] for r in rows}))}
    for ax, (device, size) in zip(axes[0], groups):
        for model, color in colors.items():
            for impl, style in (("ours", "o-"), ("torchvision", "s--")):
                pts = sorted((r["MACs"], r["latency_ms"], r["width"]) for r in rows
                             if r["model"] == model and r["impl"] == impl and r["device"] == device
                             and r["image_size"] == size)
                if not pts:
                    continue
                ax.plot([p[0] / 1e6 for p in pts], [p[1] for p in pts], style, color=color,
                        mfc="none" if impl == "torchvision" else color,
                        label=model if impl == "ours" else f"{model} (torchvision)")
                if impl == "ours":
                    for macs, lat, w in pts:
                        ax.annotate(f"{w:g}", (macs / 1e6, lat), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("MMACs per image")
        ax.set_ylabel("batch-1 latency, median (ms)")
        ax.set_title(f"{device}, {size}x{size}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if acc_points:
        ax = axes[0][-1]
        for model, color in colors.items():
            pts = sorted((r["latency_ms"], a, r["width"]) for r, a in acc_points if r["model"] == model)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=model)
                for lat, a, w in pts:
                    ax.annotate(f"{w:g}", (lat, a), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("batch-1 latency, median (ms)")
        ax.set_ylabel("best val/acc (report)")
        ax.set_title("accuracy vs latency")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------- CLI
def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


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
    p = argparse.ArgumentParser(prog="python -m mobilenet_lab benchmark", description=__doc__,
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
    args.load_start = _load()
    rows = run_benchmark(args)
    md = markdown_report(rows, args, watch.stop())
    (args.out / "benchmark.md").write_text(md, encoding="utf-8")
    write_csv(rows, args.out / "benchmark.csv", COLUMNS + HARDWARE_COLUMNS)
    accuracy = read_accuracy(args.report_csv) if args.report_csv else None
    plot(rows, args.out / "benchmark.png", accuracy)
    if not args.quiet:
        print(md)
        print(f"wrote {args.out / 'benchmark.md'}, {args.out / 'benchmark.csv'}, {args.out / 'benchmark.png'}")
    return rows

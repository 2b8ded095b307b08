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

Modules: ``measure`` (the timed runs, hardware), ``reference`` (torchvision's networks),
``output`` (report, chart), ``cli`` (the command line).

Example:
    python -m mobilenet_lab benchmark --models mobilenet_v3_small --widths 0.5 1.0 --threads 2
"""

from __future__ import annotations

from .cli import build_parser, main, parse_args
from .measure import COLUMNS, HARDWARE_COLUMNS, cpu_model, hardware_info, run_benchmark
from .output import FORMATS, markdown_report, plot, read_accuracy
from .reference import TORCHVISION_MODELS, torchvision_reference

__all__ = [
    "main",
    "build_parser",
    "parse_args",
    "run_benchmark",
    "torchvision_reference",
    "TORCHVISION_MODELS",
    "hardware_info",
    "cpu_model",
    "COLUMNS",
    "HARDWARE_COLUMNS",
    "FORMATS",
    "markdown_report",
    "plot",
    "read_accuracy",
]

"""The floor for training speed: a bare eager PyTorch loop, no Lightning, no data loading.

Trains torchvision's network (CIFAR-adapted: the first two stride-2 layers at stride 1, exactly as
``create_model(..., stem="cifar")``; ``--impl ours`` trains ``create_model`` instead) with SGD on
random float 32x32 batches already in memory, and prints images/s per timed window and their
median. Compare with the images/s of ``python -m mobilenet_lab fit`` at the same batch size. The
step is the one every speed comparison times (``mobilenet_lab.tools.benchmark.loops.train_step``).

    python benchmarks/bare_loop.py --model mobilenet_v3_small --threads 2
    python benchmarks/bare_loop.py --model mobilenet_v3_large --impl ours --no_channels_last true

glibc's allocator returns large activation buffers to the OS every step, which cost the 4x4-map
variants 1.2-1.5x on the 2-core CPU (sys time 11.9 s -> 1.4 s, page faults 4.3 M -> 0.55 M);
``--malloc_tuning true`` restarts this script with the MALLOC_* settings that avoid it (they must
be in the environment before the process starts).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jsonargparse import Namespace  # noqa: E402
from jsonargparse.typing import PositiveInt  # noqa: E402

from mobilenet_lab.errors import UserError  # noqa: E402
from mobilenet_lab.tools.arguments import ImageSize, parse, tool_parser  # noqa: E402

MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "4294967296",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "1073741824",
}


def build_parser():
    from mobilenet_lab.models import list_models

    p = tool_parser("benchmarks/bare_loop.py", __doc__)
    p.add_argument("--model", type=Literal[tuple(list_models())], default="mobilenet_v3_small")
    p.add_argument(
        "--impl",
        type=Literal["torchvision", "ours"],
        default="torchvision",
        help="torchvision's network where it builds the same one, else ours; or always ours",
    )
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (torchvision: V2 any, V3 1.0 only)")
    p.add_argument("--stem", type=Literal["cifar", "imagenet"], default="cifar")
    p.add_argument("--image_size", type=ImageSize, default=32)
    p.add_argument("--num_classes", type=PositiveInt, default=100)
    p.add_argument("--batch_size", type=PositiveInt, default=128)
    p.add_argument("--batches", type=PositiveInt, default=4, help="distinct random batches in memory, cycled")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--windows", type=PositiveInt, default=5, help="timed windows")
    p.add_argument("--steps", type=PositiveInt, default=5, help="steps per timed window")
    p.add_argument("--threads", type=PositiveInt | None, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no_channels_last", type=bool, default=False, help="contiguous (NCHW) instead of channels-last")
    p.add_argument("--malloc_tuning", type=bool, default=False, help="re-run with glibc MALLOC_* tuning env vars")
    return p


def build(args: Namespace):
    from mobilenet_lab.models import describe
    from mobilenet_lab.tools.benchmark.loops import bare_model

    try:
        description = describe(args.model, width_mult=args.width, num_classes=args.num_classes, stem=args.stem)
    except ValueError as err:
        raise UserError(str(err)) from None
    model = bare_model(description, args.impl)
    if args.impl == "torchvision" and type(model).__module__.startswith("mobilenet_lab"):
        raise UserError(
            f"torchvision has no {args.model} with our width semantics at width {args.width:g}; use --impl ours"
        )
    return model


def main(argv: list[str] | None = None) -> float:
    args = parse(build_parser(), argv)
    if args.malloc_tuning and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    import torch

    from mobilenet_lab.tools.benchmark.loops import random_batches, train_step
    from mobilenet_lab.tools.timing import Stopwatch, median

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args).train()
    channels_last = not args.no_channels_last
    model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    step = train_step(
        model,
        random_batches(args.batches, args.batch_size, args.image_size, args.num_classes, channels_last=channels_last),
    )
    print(
        f"{args.impl} {args.model} x{args.width:g} stem={args.stem} {args.image_size}px batch={args.batch_size} "
        f"threads={torch.get_num_threads()} channels_last={channels_last} "
        f"malloc_tuning={all(os.environ.get(k) == v for k, v in MALLOC_ENV.items())} torch={torch.__version__}",
        flush=True,
    )
    for _ in range(args.warmup):
        step()
    rates = []
    for w in range(args.windows):
        watch = Stopwatch()
        for _ in range(args.steps):
            step()
        rates.append(args.steps * args.batch_size / watch.stop())
        print(f"  window {w + 1}/{args.windows}: {rates[-1]:.1f} images/s", flush=True)
    med = median(rates)
    print(
        f"median {med:.1f} images/s (min {min(rates):.1f}, max {max(rates):.1f}; "
        f"load average {os.getloadavg()[0]:.2f})",
        flush=True,
    )
    return med


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        sys.exit(f"error: {err}")

"""The floor for training speed: a bare eager PyTorch loop, no Lightning, no data loading.

Trains torchvision's network (CIFAR-adapted: the first two stride-2 layers at stride 1, exactly as
``create_model(..., stem="cifar")``; ``--impl ours`` trains ``create_model`` instead) with SGD on
random float 32x32 batches already in memory, and prints images/s per timed window and their
median. Compare with the images/s of ``python -m mobilenet_lab fit`` at the same batch size.

    python benchmarks/bare_loop.py --model mobilenet_v3_small --threads 2
    python benchmarks/bare_loop.py --model mobilenet_v3_large --impl ours --no_channels_last

glibc's allocator returns large activation buffers to the OS every step (see FINDINGS.md);
``--malloc_tuning`` restarts this script with the MALLOC_* settings that avoid it (they must be in
the environment before the process starts).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "4294967296",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "1073741824",
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobilenet_v3_small",
                   choices=["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v1"])
    p.add_argument("--impl", default="torchvision", choices=["torchvision", "ours"],
                   help="torchvision's network (default) or this package's create_model")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (torchvision: V2 any, V3 1.0 only)")
    p.add_argument("--stem", default="cifar", choices=["cifar", "imagenet"])
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--num_classes", type=int, default=100)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--batches", type=int, default=4, help="distinct random batches in memory, cycled (default 4)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--windows", type=int, default=5, help="timed windows (default 5)")
    p.add_argument("--steps", type=int, default=5, help="steps per timed window (default 5)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no_channels_last", action="store_true", help="contiguous (NCHW) instead of channels-last")
    p.add_argument("--malloc_tuning", action="store_true", help="re-run with glibc MALLOC_* tuning env vars")
    return p.parse_args(argv)


def build(args: argparse.Namespace):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if args.impl == "ours":
        from mobilenet_lab.models import create_model

        return create_model(args.model, width_mult=args.width, num_classes=args.num_classes, stem=args.stem)
    from mobilenet_lab.tools.benchmark import torchvision_reference

    model = torchvision_reference(args.model, args.width, args.num_classes, args.stem)
    if model is None:
        sys.exit(f"error: torchvision has no {args.model} with our width semantics at width {args.width}; "
                 "use --impl ours")
    return model


def main(argv: list[str] | None = None) -> float:
    args = parse(argv)
    if args.malloc_tuning and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mobilenet_lab.tools.timing import Stopwatch, median

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args).train()
    fmt = torch.contiguous_format if args.no_channels_last else torch.channels_last
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    data = [
        (torch.randn(args.batch_size, 3, args.image_size, args.image_size).contiguous(memory_format=fmt),
         torch.randint(0, args.num_classes, (args.batch_size,)))
        for _ in range(args.batches)
    ]
    step = 0

    def train_step() -> None:
        nonlocal step
        x, y = data[step % len(data)]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        step += 1

    print(f"{args.impl} {args.model} x{args.width:g} stem={args.stem} {args.image_size}px batch={args.batch_size} "
          f"threads={torch.get_num_threads()} channels_last={not args.no_channels_last} "
          f"malloc_tuning={all(os.environ.get(k) == v for k, v in MALLOC_ENV.items())} torch={torch.__version__}",
          flush=True)
    for _ in range(args.warmup):
        train_step()
    rates = []
    for w in range(args.windows):
        watch = Stopwatch()
        for _ in range(args.steps):
            train_step()
        rate = args.steps * args.batch_size / watch.stop()
        rates.append(rate)
        print(f"  window {w + 1}/{args.windows}: {rate:.1f} images/s", flush=True)
    med = median(rates)
    print(f"median {med:.1f} images/s (min {min(rates):.1f}, max {max(rates):.1f}; "
          f"load average {os.getloadavg()[0]:.2f})", flush=True)
    return med


if __name__ == "__main__":
    main()

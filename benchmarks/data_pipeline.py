"""Images/s of the data pipeline alone: train loader + on-device crop/flip/normalise, no model.

    python benchmarks/data_pipeline.py --data_dir ../shared/datasets [--batch_size 128] [--threads 2]

Compare with the images/s the model trains at (fit_vs_bare.py): the pipeline must never be the
bottleneck (target: at least 20x).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jsonargparse.typing import PositiveInt  # noqa: E402

from mobilenet_lab.data.datasets import AugmentName  # noqa: E402
from mobilenet_lab.errors import UserError  # noqa: E402
from mobilenet_lab.tools.arguments import parse, tool_parser  # noqa: E402
from mobilenet_lab.tools.timing import Stopwatch, median  # noqa: E402


def build_parser():
    p = tool_parser("benchmarks/data_pipeline.py", __doc__)
    p.add_argument(
        "--data_dir", type=Path, default=ROOT.parent / "shared/datasets", help="the folder that holds cifar-100-python"
    )
    p.add_argument("--batch_size", type=PositiveInt, default=128)
    p.add_argument("--augment", type=AugmentName, default="standard", help="the data module's augment option")
    p.add_argument("--epochs", type=PositiveInt, default=3)
    p.add_argument("--threads", type=PositiveInt | None, default=None)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parse(build_parser(), argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mobilenet_lab.data import CIFAR100DataModule

    data = CIFAR100DataModule(data_dir=args.data_dir, batch_size=args.batch_size, augment=args.augment)
    watch = Stopwatch()
    data.setup("fit")
    print(f"decode + split: {watch.stop():.2f} s")
    rates = []
    for epoch in range(args.epochs):
        loader = data.train_dataloader()
        loader.sampler.set_epoch(epoch)
        n = 0
        watch.start()
        for batch in loader:
            images, _ = data.on_after_batch_transfer(batch, 0)
            n += len(images)
        rates.append(n / watch.stop())
        print(f"epoch {epoch}: {rates[-1]:,.0f} images/s ({n} images)")
    print(
        f"median {median(rates):,.0f} images/s, batch {args.batch_size}, {torch.get_num_threads()} threads, "
        f"augment {args.augment}"
    )


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        sys.exit(f"error: {err}")

"""Training images/s of the framework (`fit`'s Trainer, data module, metrics, logging) against a bare loop.

Both sides train the same network at the same batch size, threads and memory format, interleaved
in one process (A B A B ...) so machine noise hits both: `fit` is the training command itself, built
from the config by the same CLI (`mobilenet_lab.tools.benchmark.loops.fit_images_per_second`); the
bare side is torchvision's network of the fitted model's description (ours where torchvision has
none) trained by the bare step on float tensors already in memory (`loops.train_step`). The
framework side reads the real CIFAR-100 through the data module (uint8 in memory, crop/flip/normalise
on the device), updates torchmetrics, logs to TensorBoard and writes its checkpoint; validation is off.

    python benchmarks/fit_vs_bare.py --fit_config configs/quickstart.yaml --data_dir ../shared/datasets

Prints each round's images/s and the median ratio fit / bare (1.0 = no overhead).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jsonargparse.typing import PositiveInt  # noqa: E402

from mobilenet_lab.errors import UserError  # noqa: E402
from mobilenet_lab.tools.arguments import parse, tool_parser  # noqa: E402
from mobilenet_lab.tools.benchmark.loops import (  # noqa: E402
    bare_images_per_second,
    bare_model,
    fit_images_per_second,
    random_batches,
    train_step,
)
from mobilenet_lab.tools.timing import median  # noqa: E402


def build_parser():
    p = tool_parser("benchmarks/fit_vs_bare.py", __doc__)
    p.add_argument(
        "--fit_config",
        type=Path,
        default=ROOT / "configs/quickstart.yaml",
        help="the training config whose fit is timed (its model, batch size, optimizer)",
    )
    p.add_argument(
        "--data_dir", type=Path, default=ROOT.parent / "shared/datasets", help="the folder that holds cifar-100-python"
    )
    p.add_argument("--steps", type=PositiveInt, default=40, help="timed steps")
    p.add_argument("--skip", type=PositiveInt, default=8, help="untimed warm-up steps")
    p.add_argument("--rounds", type=PositiveInt, default=3)
    p.add_argument("--threads", type=PositiveInt | None, default=None)
    return p


def main(argv: list[str] | None = None) -> float:
    args = parse(build_parser(), argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.fit_config.is_file():
        raise UserError(f"--fit_config {args.fit_config}: no such file")
    fits, bares = [], []
    with tempfile.TemporaryDirectory() as logdir:
        fit_args = [
            "--config",
            str(args.fit_config),
            f"--data.data_dir={args.data_dir}",
            f"--trainer.max_steps={args.skip + args.steps}",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--trainer.limit_val_batches=0",
            "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={logdir}",
            f"--checkpoint.root={logdir}/checkpoints",
        ]
        for r in range(args.rounds):
            rate, _, module = fit_images_per_second(fit_args, args.steps, args.skip)
            fits.append(rate)
            batch = module.trainer.datamodule.batch_size
            description = module.model.description
            torch.manual_seed(0)
            model = bare_model(description).to(memory_format=torch.channels_last).train()
            step = train_step(model, random_batches(4, batch, 32, description.num_classes))
            bares.append(bare_images_per_second(step, batch, args.steps, args.skip)[0])
            print(
                f"round {r + 1}: fit {fits[-1]:.0f} img/s, bare loop {bares[-1]:.0f} img/s, "
                f"ratio {fits[-1] / bares[-1]:.2f}",
                flush=True,
            )
    ratios = [f / b for f, b in zip(fits, bares)]
    print(
        f"\n{description.name} x{description.width_mult:g}, batch {batch}, {torch.get_num_threads()} threads: "
        f"fit median {median(fits):.0f} img/s, bare median {median(bares):.0f} img/s, median ratio fit/bare "
        f"{median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})"
    )
    return median(ratios)


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        sys.exit(f"error: {err}")

"""Training images/s of the framework (`fit`'s Trainer, data module, metrics, logging) against a bare loop.

Both sides train the same architecture (our LightningModule from a config vs torchvision's
CIFAR-adapted network), at the same batch size, threads and memory format, interleaved in one
process (A B A B ...) so machine noise hits both. The framework side reads the real CIFAR-100
through the data module (uint8 in memory, crop/flip/normalise on the device), updates
torchmetrics and logs to TensorBoard; the bare side trains on float tensors already in memory.

    python benchmarks/fit_vs_bare.py --config configs/quickstart.yaml --data_dir ../shared/datasets

Prints each round's images/s and the median ratio fit / bare (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobilenet_lab.tools.timing import Stopwatch, median  # noqa: E402


class StepTimer:
    """Times training batches `skip`..end (images/s), as a Lightning callback."""

    def __init__(self, skip: int, batch_size: int) -> None:
        import lightning as L

        class _Callback(L.Callback):
            def on_train_batch_start(cb, trainer, *args) -> None:  # noqa: N805
                if trainer.global_step == skip:
                    self.watch.start()

            def on_train_end(cb, trainer, *args) -> None:  # noqa: N805
                self.seconds = self.watch.stop()
                self.images = (trainer.global_step - skip) * batch_size

        self.callback = _Callback()
        self.watch = Stopwatch()
        self.seconds = 0.0
        self.images = 0


def fit_images_per_second(config: str, data_dir: str, steps: int, skip: int, logdir: str) -> float:
    import lightning as L
    import yaml

    from mobilenet_lab.callbacks import AtomicCheckpointIO
    from mobilenet_lab.data import CIFAR100DataModule

    cfg = yaml.safe_load(Path(config).read_text())
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_subclass_arguments(L.LightningModule, "model")
    parsed = parser.parse_object({"model": cfg["model"]})
    module = parser.instantiate_classes(parsed).model
    batch_size = cfg["data"].get("batch_size", 128)
    data = CIFAR100DataModule(data_dir=data_dir, batch_size=batch_size, val_size=cfg["data"].get("val_size", 5000))
    timer = StepTimer(skip, batch_size)
    trainer = L.Trainer(
        max_steps=steps, max_epochs=1, limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False,
        logger=L.pytorch.loggers.TensorBoardLogger(logdir, name="bench"), callbacks=[timer.callback],
        enable_checkpointing=False, plugins=[AtomicCheckpointIO()], accelerator="cpu", devices=1,
        use_distributed_sampler=False, log_every_n_steps=50,
    )
    trainer.fit(module, datamodule=data)
    return timer.images / timer.seconds


def bare_images_per_second(model_name: str, batch_size: int, steps: int, skip: int) -> float:
    from mobilenet_lab.tools.benchmark import torchvision_reference

    torch.manual_seed(0)
    model = torchvision_reference(model_name, 1.0, 100, "cifar").to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (batch_size,))
    watch = Stopwatch()
    for step in range(steps):
        if step == skip:
            watch.start()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (steps - skip) * batch_size / watch.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/quickstart.yaml"))
    p.add_argument("--data_dir", default=str(ROOT.parent / "shared/datasets"))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--skip", type=int, default=8, help="untimed warm-up steps")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import yaml

    cfg = yaml.safe_load(Path(args.config).read_text())
    model_name = {"MobileNetV1": "mobilenet_v1", "MobileNetV2": "mobilenet_v2", "MobileNetV3Small": "mobilenet_v3_small",
                  "MobileNetV3Large": "mobilenet_v3_large"}[cfg["model"]["class_path"].rsplit(".", 1)[-1]]
    batch_size = cfg["data"].get("batch_size", 128)
    fits, bares = [], []
    with tempfile.TemporaryDirectory() as logdir:
        for r in range(args.rounds):
            fits.append(fit_images_per_second(args.config, args.data_dir, args.steps, args.skip, logdir))
            bares.append(bare_images_per_second(model_name, batch_size, args.steps, args.skip))
            print(f"round {r + 1}: fit {fits[-1]:.0f} img/s, bare loop {bares[-1]:.0f} img/s, "
                  f"ratio {fits[-1] / bares[-1]:.2f}", flush=True)
    ratios = [f / b for f, b in zip(fits, bares)]
    print(f"\n{model_name}, batch {batch_size}, {torch.get_num_threads()} threads: fit median {median(fits):.0f} "
          f"img/s, bare median {median(bares):.0f} img/s, median ratio fit/bare {median(ratios):.2f} "
          f"(range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()

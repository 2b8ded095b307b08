"""The two training loops that every speed comparison of the project sets side by side.

- The **bare loop** (:func:`train_step`): forward, loss, backward and one SGD step (Nesterov
  momentum, weight decay: the recipes' optimizer) on batches already in memory, nothing else;
  optionally under bf16 autocast like ``precision: bf16-mixed``. ``benchmark``'s training speed,
  ``benchmarks/bare_loop.py``, ``benchmarks/fit_vs_bare.py`` and ``benchmarks/gpu_proof.py`` all
  time this one step.
- **fit** (:func:`fit_images_per_second`): ``python -m mobilenet_lab fit`` itself, built from
  command-line arguments by the same CLI, with a callback marking the steps between which it is timed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...models import ModelDescription, create_model
from ..timing import Stopwatch, clock
from .reference import torchvision_reference

__all__ = ["random_batches", "train_step", "bare_model", "bare_images_per_second", "fit_images_per_second"]


def random_batches(
    count: int, batch: int, size: int, num_classes: int, device: torch.device | str = "cpu", channels_last: bool = True
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` random (images, labels) batches on ``device``, cycled by :func:`train_step`."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [
        (
            torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt),
            torch.randint(0, num_classes, (batch,), device=device),
        )
        for _ in range(count)
    ]


def train_step(
    model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], bf16: bool = False, compile: bool = False
) -> Callable[[], None]:
    """A function doing one bare training step per call, over ``batches`` in turn.

    ``bf16``: forward and loss under bf16 autocast (the GPU preset's ``precision: bf16-mixed``);
    ``compile``: the forward through ``torch.compile``.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    forward = torch.compile(model) if compile else model
    device_type = batches[0][0].device.type
    calls = 0

    def step() -> None:
        nonlocal calls
        x, y = batches[calls % len(batches)]
        calls += 1
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def bare_model(description: ModelDescription, impl: str = "torchvision") -> nn.Module:
    """torchvision's network for ``description`` (``impl="torchvision"``) where it builds the same
    architecture, else ours (V1, V4, V3 at widths other than 1.0, a ``downsamples_removed`` override)."""
    if impl == "torchvision" and description.downsamples_removed is None:
        reference = torchvision_reference(
            description.name, description.width_mult, description.num_classes, description.stem
        )
        if reference is not None:
            return reference
    return create_model(description)


def bare_images_per_second(step: Callable[[], None], batch: int, steps: int, skip: int) -> tuple[float, float]:
    """(images/s over ``steps`` steps after ``skip`` untimed ones, seconds of the first step) of ``step``."""
    watch = Stopwatch()
    step()
    first = watch.stop()
    for _ in range(1, skip):
        step()
    watch.start()
    for _ in range(steps):
        step()
    return steps * batch / watch.stop(), first


def fit_images_per_second(fit_args: list[str], steps: int, skip: int) -> tuple[float, float, Any]:
    """(images/s over steps ``skip``..``skip + steps``, seconds to the end of the first step, the fitted
    module) of one ``fit`` built from ``fit_args`` by the training CLI, on one device.

    ``fit_args`` must let the run train ``skip + steps`` steps (``--trainer.max_steps``, data for as
    many) and should turn validation off; the images per step are the data module's ``batch_size``.
    """
    import lightning as L

    from ...cli import MobileNetCLI

    marks: dict[int, float] = {}

    class Marks(L.Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step in (1, skip, skip + steps):
                marks[trainer.global_step] = clock()

    cli = MobileNetCLI(args=fit_args, run=False)
    cli.trainer.callbacks.append(Marks())
    start = clock()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    if skip + steps not in marks:
        raise RuntimeError(
            f"fit stopped after {cli.trainer.global_step} steps, before step {skip + steps}: "
            "give it --trainer.max_steps and data for that many"
        )
    images = steps * cli.datamodule.batch_size
    return images / (marks[skip + steps] - marks[skip]), marks[1] - start, cli.model

"""Learning-rate schedules that step once per optimizer step.

Each takes the optimizer, the run's total number of optimizer steps and the steps per epoch
(the LightningModule fills both in from the trainer), so a YAML config states only the shape of
the schedule, in epochs::

    lr_scheduler:
      class_path: mobilenet_lab.schedules.WarmupCosine
      init_args: {warmup_epochs: 5}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

__all__ = ["ScheduleCallable", "WarmupCosine", "OneCycle", "MultiStep", "Constant"]

#: What a config's ``lr_scheduler`` builds: ``schedule(optimizer, total_steps, steps_per_epoch)``.
ScheduleCallable = Callable[[Optimizer, int, int], LRScheduler]


class WarmupCosine(LambdaLR):
    """Linear warmup from ``warmup_start_factor`` to the base LR, then cosine decay to ``min_lr_factor``."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        steps_per_epoch: int,
        warmup_epochs: float = 5.0,
        warmup_start_factor: float = 0.01,
        min_lr_factor: float = 0.0,
    ) -> None:
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        warmup = min(int(round(warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))

        def factor(step: int) -> float:
            if step < warmup:
                return warmup_start_factor + (1 - warmup_start_factor) * step / warmup
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return min_lr_factor + (1 - min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))

        super().__init__(optimizer, factor)


class OneCycle(OneCycleLR):
    """Smith's one-cycle policy (torch's OneCycleLR) peaking at the optimizer's configured LR."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        steps_per_epoch: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
    ) -> None:
        max_lr = [group["lr"] for group in optimizer.param_groups]
        # torch's OneCycleLR needs at least two steps in each phase (tiny debug runs).
        total_steps = max(total_steps, 4)
        pct_start = min(max(pct_start, 2 / total_steps), 0.5)
        super().__init__(
            optimizer,
            max_lr=max_lr,
            total_steps=total_steps,
            pct_start=pct_start,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
        )


class MultiStep(LambdaLR):
    """Multiplies the LR by ``gamma`` at each milestone epoch (the replaced trainer's recipe)."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        steps_per_epoch: int,
        milestones: Sequence[int] = (60, 120, 160),
        gamma: float = 0.2,
    ) -> None:
        boundaries = sorted(m * steps_per_epoch for m in milestones)
        super().__init__(optimizer, lambda step: gamma ** sum(step >= b for b in boundaries))


class Constant(LambdaLR):
    """No schedule: the optimizer's LR throughout."""

    def __init__(self, optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> None:
        super().__init__(optimizer, lambda step: 1.0)

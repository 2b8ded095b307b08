"""Weight EMA: Lightning's ``WeightAveraging`` with an EMA decay that warms up, for any fit.

Switched on by a config (``configs/recipes/ema.yaml`` adds :class:`EMA` to ``trainer.callbacks``).
Lightning's callback keeps a ``torch.optim.swa_utils.AveragedModel`` beside the module, updates it
after optimizer steps, swaps the averaged weights in for every validation (so ``val/acc``, the best
checkpoint and early stopping judge the averaged model), copies them into the module when the fit
ends, and writes checkpoints whose ``state_dict`` *is* the average (the live weights go to
``current_model_state``, ``n_averaged`` to ``averaging_state``). So ``test``/``validate``/``predict
--ckpt_path``, :func:`mobilenet_lab.load_model` and export read the averaged weights without knowing
about EMA, and a resumed fit restores both models exactly.

BatchNorm: ``use_buffers=True`` (Lightning's default), so running means and variances are averaged
with the same decay as the weights, as timm's ``ModelEmaV3`` does; integer buffers
(``num_batches_tracked``) are copied, not averaged.
"""

from __future__ import annotations

import itertools
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from .checkpoint import WEIGHTS_KEY
from .compat import averaged_model, averaging_device, latest_update_step, set_latest_update_step
from .errors import UserError

__all__ = ["EMA", "EMAUpdate"]


class EMAUpdate:
    """The ``multi_avg_fn`` of :class:`~torch.optim.swa_utils.AveragedModel`: EMA with a warmup of the decay.

    After ``n`` averaged updates the next one uses ``decay_n = min(decay, 1 - (1 + n) ** -warmup_power)``
    (timm's ``ModelEmaV3`` warmup, gamma 1): early averages forget the random initial weights fast,
    so a short run's EMA is not dominated by them (with 0.999 and no warmup, the first 1,000 steps
    keep 37% of the initial weights). ``n`` is ``AveragedModel.n_averaged``, which checkpoints hold,
    so the schedule resumes exactly; :class:`EMA` passes a host mirror of it, so no update waits on a GPU.

    Args:
        decay: Final decay per update (0.999: an average over about the last 1,000 updates).
        warmup_power: Power of the warmup (3/4 reaches 0.999 after 10,000 updates, 2/3 after 31,600);
            None: ``decay`` from the first update.
    """

    def __init__(self, decay: float = 0.999, warmup_power: float | None = 0.75) -> None:
        self.decay = decay
        self.warmup_power = warmup_power

    def decay_at(self, n_averaged: int) -> float:
        """The decay of the update that follows ``n_averaged`` averaged updates."""
        if self.warmup_power is None:
            return self.decay
        return min(self.decay, 1 - (1 + n_averaged) ** -self.warmup_power)

    @torch.no_grad()
    def apply(self, averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: int) -> None:
        """One update of tensors that share a device and dtype, after ``n_averaged`` updates (a host int).

        The weight reaches ``_foreach_lerp_`` as a Python number: torch has no tensor-weight overload,
        so a 0-d device tensor there would be read back to the host (a GPU sync) on every update.
        """
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1 - self.decay_at(n_averaged))
        else:  # num_batches_tracked: a count, keep the live one
            torch._foreach_copy_(averaged, current)

    def __call__(self, averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        # AveragedModel.update_parameters calls this once per (device, dtype) group (EMA._update does not).
        self.apply(averaged, current, int(n_averaged))


class EMA(WeightAveraging):
    """Exponential moving average of the weights and BatchNorm statistics, used for validation and saved.

    Everything is Lightning's ``WeightAveraging`` (see the module docstring) with
    :class:`EMAUpdate` as the average; on top: the averaged copy lives on the training device
    (Lightning builds it in ``setup``, before the module is moved to the GPU, and would otherwise
    keep it on the CPU and copy every weight there after each step), the run says which weights it
    validates and saves, and checkpoints record the average (``checkpoint["mobilenet_lab_weights"]``)
    for ``load_model`` and export to report.

    Args:
        decay: Final EMA decay per update (timm and the public MobileNetV3 CIFAR-100 recipes: 0.999
            at ~400 steps per epoch; use ~0.9998 at batch 64 on 50k images over hundreds of epochs).
        warmup_power: Warmup of the decay (see :class:`EMAUpdate`); null for a constant decay.
        every_n_steps: Update after every this many optimizer steps (the decay applies per update).
        device: Where the averaged copy lives (default: the training device); ``cpu`` saves GPU memory.
    """

    def __init__(
        self, decay: float = 0.999, warmup_power: float | None = 0.75, every_n_steps: int = 1, device: str | None = None
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise UserError(f"EMA decay must be in [0, 1), got {decay} (0.999 is typical)")
        if warmup_power is not None and warmup_power <= 0:
            raise UserError(f"EMA warmup_power must be > 0 or null, got {warmup_power} (0.75 is typical)")
        if every_n_steps < 1:
            raise UserError(f"EMA every_n_steps must be >= 1, got {every_n_steps}")
        self.update = EMAUpdate(decay, warmup_power)
        self.every_n_steps = every_n_steps
        self._updates: int | None = None  # host mirror of n_averaged (see _update)
        super().__init__(device=device, use_buffers=True, multi_avg_fn=self.update)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and (step_idx + 1) % self.every_n_steps == 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Lightning's hook, with `_update` in place of AveragedModel.update_parameters.
        step = trainer.global_step
        if step > latest_update_step(self) and self.should_update(step_idx=step - 1):
            self._update(pl_module)
            set_latest_update_step(self, step)

    def _update(self, pl_module: L.LightningModule) -> None:
        """``AveragedModel.update_parameters`` (use_buffers=True) without its host syncs.

        torch's version reads ``n_averaged`` back from the device twice per update (``bool(n == 0)``,
        ``n > 0``): on a GPU, two waits for the whole queued step, every step. Here a host-side count
        mirrors it, read from the device once per fit or checkpoint load; it sets the decay
        (:class:`EMAUpdate`), and the device count goes on counting for the checkpoint.
        """
        average = averaged_model(self)
        assert average is not None
        if self._updates is None:
            self._updates = int(average.n_averaged)  # the one read: at the first update of a fit or resume
        averaged = [t.detach() for t in itertools.chain(average.module.parameters(), average.module.buffers())]
        current = [
            t.detach().to(a.device)
            for a, t in zip(averaged, itertools.chain(pl_module.parameters(), pl_module.buffers()), strict=True)
        ]
        if self._updates == 0:
            for a, c in zip(averaged, current):
                a.copy_(c)
        else:
            groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
            for a, c in zip(averaged, current):
                group = groups.setdefault((a.device, a.dtype), ([], []))
                group[0].append(a), group[1].append(c)
            for a, c in groups.values():
                self.update.apply(a, c, self._updates)
        average.n_averaged += 1
        self._updates += 1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._updates = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        average = averaged_model(self)
        if average is not None and averaging_device(self) is None:
            average.to(pl_module.device)  # the module has reached its device by now
        warmup = (
            f", warming up as 1 - (1 + n)^-{self.update.warmup_power}" if self.update.warmup_power is not None else ""
        )
        rank_zero_info(
            f"EMA of the weights (decay {self.update.decay}{warmup}): validation, checkpoints "
            "and the final model use the averaged weights"
        )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        average = averaged_model(self)
        if average is not None:
            checkpoint[WEIGHTS_KEY] = {
                "kind": "ema",
                "decay": self.update.decay,
                "warmup_power": self.update.warmup_power,
                "updates": int(average.n_averaged),
            }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if averaged_model(self) is None:
            return  # validate/test/predict: the checkpoint's state_dict already is the average
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        self._updates = None  # n_averaged came from the checkpoint: read it again at the next update

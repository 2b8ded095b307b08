"""Exact resume of a fit: the train loader continues where the checkpoint left it."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from .compat import load_pending_train_loader_state

__all__ = ["ResumeTrainLoader"]


class ResumeTrainLoader(Callback):
    """Hands the checkpoint's train-loader state to the loader when Lightning did not (Lightning #20550).

    Lightning saves the state of a stateful train loader (:class:`~mobilenet_lab.data.loader.ResumableLoader`)
    in every checkpoint and restores it on resume, but only if the loader is built after the
    checkpoint is loaded. An LR schedule that reads ``trainer.estimated_stepping_batches`` in
    ``configure_optimizers`` (ours do) builds it earlier, and the saved state is silently dropped.
    This calls the fit loop's own loading step at ``on_train_start``, before the first batch is
    drawn; it does nothing when there is nothing pending (a fresh fit, or a fixed Lightning).
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        load_pending_train_loader_state(trainer)

"""A callback that signals its own process at a chosen moment of a fit (tests pass it with --trainer.callbacks+=).

A signal sent from inside the process lands at an exact point of the loop (a test polling files
from outside cannot aim at "during validation"); SIGKILL runs no handler, like an OOM kill or a
power cut; SIGTERM sent by one rank to itself is a stop request that reached that rank only.
"""

from __future__ import annotations

import os
import signal

import lightning as L


class SignalAt(L.Callback):
    """Sends ``signal_name`` (default SIGKILL) to its own process at ``moment`` of ``epoch``.

    Args:
        moment: ``train_batch`` (after the optimizer step of batch ``batch``, before any checkpoint
            of that step), ``epoch_start`` (the epoch's start: the previous epoch's end checkpoint is
            written), or ``validation_batch`` (after validation batch ``batch`` of the epoch's end).
        epoch: 0-based epoch.
        batch: Batch index within the epoch (``train_batch``, ``validation_batch``).
        rank: Only this global rank signals itself (-1: every rank).
        signal_name: ``SIGKILL``, ``SIGTERM``, ``SIGINT``.
    """

    def __init__(self, moment: str, epoch: int, batch: int = 0, rank: int = -1, signal_name: str = "SIGKILL") -> None:
        self.moment, self.epoch, self.batch, self.rank = moment, epoch, batch, rank
        self.signum = getattr(signal, signal_name)

    def _kill(self, trainer: L.Trainer, moment: str, batch: int = 0) -> None:
        if (moment, trainer.current_epoch, batch) == (self.moment, self.epoch, self.batch):
            if self.rank < 0 or trainer.global_rank == self.rank:
                os.kill(os.getpid(), self.signum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._kill(trainer, "train_batch", batch_idx)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._kill(trainer, "epoch_start")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._kill(trainer, "validation_batch", batch_idx)

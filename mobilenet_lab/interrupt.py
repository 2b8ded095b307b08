"""Graceful stop: SIGINT or SIGTERM during ``fit`` ends every rank at the same step with one ``last.ckpt``."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from .compat import is_last_batch, take_over_child_processes
from .errors import TrainingInterrupted
from .run_layout import LastCheckpoint

__all__ = ["GracefulStop"]


class GracefulStop(Callback):
    """SIGINT or SIGTERM during ``fit``: every rank finishes the current batch, ``last.ckpt`` is written once, stop.

    The signal may reach one rank or all of them: after each training batch the ranks decide
    together whether any received one (``reduce_boolean_decision``, as ``EarlyStopping`` does),
    so all stop at the same step and save together. The checkpoint is written at that batch's
    end (at an epoch's last batch: by the epoch-end :class:`LastCheckpoint`, after validation);
    the fit stops at the next hook (after Lightning has logged the batch, so the resumed curves
    have no gap) by raising :class:`TrainingInterrupted`: the command line prints how to resume
    and exits with 128 + the signal number. A second SIGINT interrupts at once.

    Lightning registers its own SIGTERM handler after ``on_fit_start`` (it broadcasts from inside
    the handler and stops without a checkpoint); this callback installs its handlers over it at
    ``on_sanity_check_start`` and ``on_train_start``, and puts the previous ones back at the end.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.received = 0  # signal number, 0 for none
        self._previous: dict[int, Any] = {}
        self._stop: tuple[str, int, str] | None = None  # signal name, exit code, checkpoint
        self._stop_at: tuple[str, ...] = ()

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl+C stops at once

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.SIGNALS:
            signum = getattr(signal, name)
            current = signal.getsignal(signum)
            if current != self._handler:
                self._previous.setdefault(signum, current)
                signal.signal(signum, self._handler)

    def _restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._handler:
                signal.signal(signum, handler)
        self._previous.clear()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received = 0
        self._stop = None

    # Installed only once Lightning has registered its own handlers (which it restores on teardown).
    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._stop is not None or not trainer.strategy.reduce_boolean_decision(self.received != 0, all=False):
            return
        signum = self.received
        if trainer.world_size > 1:  # the ranks that got no signal learn which one it was
            signum = int(
                trainer.strategy.reduce(torch.tensor(signum, device=trainer.strategy.root_device), reduce_op="max")
            )
        epoch_end = next(
            (
                cb
                for cb in trainer.checkpoint_callbacks
                if isinstance(cb, LastCheckpoint) and cb.dirpath and cb.every_n_epochs
            ),
            None,
        )
        if epoch_end is not None and is_last_batch(trainer):
            # The epoch's validation and its end checkpoint come next: let them, then stop (a
            # checkpoint from before validation would resume past it).
            path = epoch_end.last_path
            self._stop_at = ("on_train_batch_start", "on_train_end")
        else:
            path = (
                epoch_end.last_path
                if epoch_end is not None
                else os.path.join(trainer.default_root_dir, "interrupted.ckpt")
            )
            trainer.save_checkpoint(path, weights_only=False)
            self._stop_at = ("on_train_batch_start", "on_validation_start", "on_train_epoch_end", "on_train_end")
        self._stop = (signal.Signals(signum).name, 128 + signum, path)

    def _stop_now(self, trainer: L.Trainer, hook: str) -> None:
        if self._stop is None or hook not in self._stop_at:
            return
        name, code, path = self._stop
        self._stop = None
        # Lightning's launcher SIGKILLs every rank as soon as one exits with a non-zero status:
        # rank 0 takes its children over and waits for them instead.
        children = take_over_child_processes(trainer)
        raise TrainingInterrupted(name, code, path, children=children, global_rank=trainer.global_rank)

    # The first of these hooks after the stop was decided raises (see on_train_batch_end).
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._stop_now(trainer, "on_train_batch_start")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_now(trainer, "on_validation_start")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_now(trainer, "on_train_epoch_end")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_now(trainer, "on_train_end")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

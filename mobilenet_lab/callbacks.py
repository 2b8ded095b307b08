"""Checkpoints, run folders and graceful stop, as Lightning plugins and callbacks.

What a run writes and how it stops: atomic checkpoint I/O, the best and last checkpoints in the
run's own folder, the mid-epoch resume fix, SIGINT/SIGTERM handling. The output callbacks
(:class:`~mobilenet_lab.panels.TestPanels`, :class:`~mobilenet_lab.panels.PredictionWriter`) live
in :mod:`mobilenet_lab.panels` and the confusion tables in :mod:`mobilenet_lab.confusion` (no
Lightning); their names are re-exported here, so ``from mobilenet_lab.callbacks import X`` works
for all of them.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from .atomic import atomic_path
from .checkpoint import safe_load_checkpoint
from .confusion import (
    CONFUSION_CSV,
    confusion_markdown,
    most_confused,
    read_confusion_csv,
    worst_classes,
    write_confusion_csv,
)
from .errors import TrainingInterrupted, UserError
from .panels import PredictionWriter, TestPanels

__all__ = [
    "GracefulStop",
    "AtomicCheckpointIO",
    "safe_load_checkpoint",
    "RunCheckpoint",
    "LastCheckpoint",
    "ResumeTrainLoader",
    "TestPanels",
    "most_confused",
    "worst_classes",
    "read_confusion_csv",
    "write_confusion_csv",
    "confusion_markdown",
    "CONFUSION_CSV",
    "PredictionWriter",
    "run_folder",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint with :func:`~mobilenet_lab.atomic.atomic_path` (temporary file, fsync, rename).

    A kill during a save leaves either the previous file or the new one, never a truncated one.
    Loading goes through :func:`safe_load_checkpoint` (``weights_only=True``).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return safe_load_checkpoint(path, map_location=map_location or "cpu")


class RunCheckpoint(ModelCheckpoint):
    """The best checkpoints by ``val/acc``, in ``<root>/<run name>/<version>/`` (the logger's name and version).

    ``last.ckpt`` is written beside them by :class:`LastCheckpoint` callbacks that share this folder
    (:meth:`last_checkpoints`; the command line adds them). A new run gets a new version folder, so
    it never overwrites another run's files; a run resumed from a checkpoint of its own folder
    (:meth:`continue_run`) keeps writing there.

    Args:
        root: Folder holding one sub-folder per run name.
        monitor: Metric that ranks checkpoints.
        mode: ``max`` or ``min`` for ``monitor``.
        save_top_k: How many best checkpoints to keep.
        save_last: Keep ``last.ckpt``, the latest state, the one to resume from.
        last_every_n_steps: Also refresh ``last.ckpt`` every N optimizer steps (0: only at epoch ends).
        filename: Name pattern of the best checkpoints.
    """

    def __init__(
        self,
        root: str = "checkpoints",
        monitor: str | None = "val/acc",
        mode: str = "max",
        save_top_k: int = 1,
        save_last: bool = True,
        last_every_n_steps: int = 0,
        filename: str = "epoch{epoch:03d}-val_acc{val/acc:.4f}",
    ) -> None:
        if last_every_n_steps < 0:
            raise UserError(f"checkpoint.last_every_n_steps must be >= 0, got {last_every_n_steps}")
        # ModelCheckpoint's own save_last writes last.ckpt only when it also writes a top-k file:
        # with a monitor, last.ckpt would stop moving as soon as val/acc plateaus.
        super().__init__(monitor=monitor, mode=mode, save_top_k=save_top_k, save_last=False,
                         filename=filename, auto_insert_metric_name=False)
        self.root = root
        self.keep_last = save_last
        self.last_every_n_steps = last_every_n_steps
        self._continue_dir: str | None = None
        self._resolved: str | None = None

    def last_checkpoints(self) -> list[LastCheckpoint]:
        """The callbacks that keep ``last.ckpt`` in this folder: one per epoch end, one every N steps."""
        if not self.keep_last:
            return []
        callbacks = [LastCheckpoint()]
        if self.last_every_n_steps:
            callbacks.append(LastCheckpoint(every_n_train_steps=self.last_every_n_steps))
        return callbacks

    def continue_run(self, ckpt_path: str | os.PathLike) -> None:
        """The fit resumes from ``ckpt_path``: if that file lies in this run's folder, keep writing there."""
        self._continue_dir = os.path.realpath(os.path.dirname(os.fspath(ckpt_path)))

    def run_dir(self, trainer: L.Trainer) -> str:
        """``<root>/<logger name>/<logger version>`` (absolute), decided once and shared by all ranks."""
        if self._resolved is None:
            logger = trainer.logger
            name = logger.name if logger is not None else "default"
            version = logger.version if logger is not None else 0
            version = version if isinstance(version, str) else f"version_{version}"
            dirpath = os.path.realpath(os.path.join(self.root, name, version))
            suffix = 1
            while dirpath != self._continue_dir and os.path.isdir(dirpath) and os.listdir(dirpath):
                suffix += 1  # another run's files: never mix
                dirpath = os.path.realpath(os.path.join(self.root, name, f"{version}_{suffix}"))
            self._resolved = trainer.strategy.broadcast(dirpath)
        return self._resolved

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = self.run_dir(trainer)
        super().setup(trainer, pl_module, stage)


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: the latest training state, rewritten whatever the monitored metric does.

    Lightning's ``ModelCheckpoint(monitor=None, save_top_k=1)`` keeps the latest checkpoint; here its
    name is fixed to ``last.ckpt`` (no version suffix). The default instance writes it at every
    training epoch end (after that epoch's validation); one with ``every_n_train_steps`` also
    within epochs (the two options are exclusive in ``ModelCheckpoint``, hence two instances).
    The folder is the :class:`RunCheckpoint`'s when the trainer has one.

    Args:
        every_n_train_steps: Write every N optimizer steps instead of at epoch ends (0: epoch ends).
    """

    def __init__(self, every_n_train_steps: int = 0) -> None:
        super().__init__(
            filename=self.CHECKPOINT_NAME_LAST, monitor=None, save_top_k=1, enable_version_counter=False,
            every_n_train_steps=every_n_train_steps or None, every_n_epochs=None if every_n_train_steps else 1,
            save_on_train_epoch_end=True,
        )

    @property
    def last_path(self) -> str | None:
        return None if self.dirpath is None else self.format_checkpoint_name({})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # At an epoch's last batch the epoch-end last.ckpt follows, after validation. One written
        # here, before validation, would resume into the next epoch and that validation (its
        # val/acc point, its best checkpoint) would never happen.
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run = next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, RunCheckpoint)), None)
        if self.dirpath is None and run is not None:
            self.dirpath = run.run_dir(trainer)
        super().setup(trainer, pl_module, stage)


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
        loop = trainer.fit_loop
        if getattr(loop, "_combined_loader_states_to_load", None):
            loop._load_combined_loader_states()


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
            signum = int(trainer.strategy.reduce(torch.tensor(signum, device=trainer.strategy.root_device),
                                                 reduce_op="max"))
        epoch_end = next((cb for cb in trainer.checkpoint_callbacks
                          if isinstance(cb, LastCheckpoint) and cb.dirpath and cb.every_n_epochs), None)
        if epoch_end is not None and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            # The epoch's validation and its end checkpoint come next: let them, then stop (a
            # checkpoint from before validation would resume past it).
            path = epoch_end.last_path
            self._stop_at = ("on_train_batch_start", "on_train_end")
        else:
            path = epoch_end.last_path if epoch_end is not None else os.path.join(trainer.default_root_dir,
                                                                                   "interrupted.ckpt")
            trainer.save_checkpoint(path, weights_only=False)
            self._stop_at = ("on_train_batch_start", "on_validation_start", "on_train_epoch_end", "on_train_end")
        self._stop = (signal.Signals(signum).name, 128 + signum, path)

    def _stop_now(self, trainer: L.Trainer, hook: str) -> None:
        if self._stop is None or hook not in self._stop_at:
            return
        name, code, path = self._stop
        self._stop = None
        # Lightning's launcher watches the processes it started and SIGKILLs every rank as soon as
        # one exits with a non-zero status: rank 0 takes them over and waits for them instead.
        procs = getattr(trainer.strategy.launcher, "procs", None)
        children = list(procs) if isinstance(procs, list) else []
        if children:
            procs.clear()
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


def run_folder(trainer: L.Trainer) -> str:
    """The run's own folder: the logger's, or without a logger the one :class:`RunCheckpoint` picked.

    Without a logger ``trainer.log_dir`` is the working folder, shared by every run started there.
    The checkpoint folder is known once :class:`RunCheckpoint` is set up (Lightning sets checkpoint
    callbacks up last): call this from a hook that runs after ``setup``.
    """
    checkpoint = next((cb for cb in trainer.callbacks if isinstance(cb, RunCheckpoint)), None)
    if trainer.logger is None and checkpoint is not None and checkpoint.dirpath:
        return checkpoint.dirpath
    return trainer.log_dir or "."

"""Where a run writes: its folder, its best and last checkpoints (written atomically), its config.yaml.

A run named ``<name>`` (the logger's name) with version ``version_N`` writes its logs to
``<save_dir>/<name>/version_N/`` (the logger) and its checkpoints to ``checkpoints/<name>/version_N/``
(:class:`RunCheckpoint`, :class:`LastCheckpoint`); ``config.yaml`` goes into the run's log folder
(:class:`RunConfig`). A new run never writes into another run's folder.
"""

from __future__ import annotations

import glob
import os
import shutil
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback

from .atomic import atomic_path
from .checkpoint import safe_load_checkpoint
from .compat import is_last_batch
from .errors import UserError

__all__ = [
    "AtomicCheckpointIO",
    "RunCheckpoint",
    "LastCheckpoint",
    "RunConfig",
    "DiscardFailedRun",
    "run_folder",
    "RUN_KEY",
]

#: Where a checkpoint keeps the run that wrote it: its config (YAML), logger name, version and save_dir.
RUN_KEY = "mobilenet_lab_run"


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
        super().__init__(
            monitor=monitor,
            mode=mode,
            save_top_k=save_top_k,
            save_last=False,
            filename=filename,
            auto_insert_metric_name=False,
        )
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
        self.stage = stage
        super().setup(trainer, pl_module, stage)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Only a resumed fit continues the checkpoint's record of best files; an evaluation of a
        # checkpoint (which Lightning also hands this state) writes none, in another folder.
        if getattr(self, "stage", "fit") == "fit":
            super().load_state_dict(state_dict)


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
            filename=self.CHECKPOINT_NAME_LAST,
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
            every_n_train_steps=every_n_train_steps or None,
            every_n_epochs=None if every_n_train_steps else 1,
            save_on_train_epoch_end=True,
        )

    @property
    def last_path(self) -> str | None:
        return None if self.dirpath is None else self.format_checkpoint_name({})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # At an epoch's last batch the epoch-end last.ckpt follows, after validation. One written
        # here, before validation, would resume into the next epoch and that validation (its
        # val/acc point, its best checkpoint) would never happen.
        if is_last_batch(trainer):
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run = next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, RunCheckpoint)), None)
        if self.dirpath is None and run is not None:
            self.dirpath = run.run_dir(trainer)
        self.stage = stage
        super().setup(trainer, pl_module, stage)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if getattr(self, "stage", "fit") == "fit":  # (see RunCheckpoint.load_state_dict)
            super().load_state_dict(state_dict)


def run_folder(trainer: L.Trainer) -> str:
    """The run's own folder: the logger's, or without a logger the one :class:`RunCheckpoint` picks.

    Without a logger ``trainer.log_dir`` is the working folder, shared by every run started there.
    A collective under DDP the first time (the folder is decided on rank 0 and broadcast): call it on
    every rank.
    """
    checkpoint = next((cb for cb in trainer.callbacks if isinstance(cb, RunCheckpoint)), None)
    if trainer.logger is None and checkpoint is not None:
        return checkpoint.dirpath or checkpoint.run_dir(trainer)
    return trainer.log_dir or "."


class RunConfig(SaveConfigCallback):
    """Writes the run's ``config.yaml`` into the run's own folder (:func:`run_folder`), never over another's,
    and keeps the same config (and the run's name and version) in every checkpoint it writes.

    With a logger that is the logger's folder, as Lightning does. Without one Lightning would use
    the working folder, where the next run collides; the config goes beside the checkpoints instead.
    Lightning's ``setup`` calls :meth:`save_config` on rank 0; the folder and the collision check are
    decided before, on every rank, so that a collision stops all of them with one line.

    The config written is the one the user gave: values the command line filled in for this
    invocation only (``restore``: the logger version and purge step of a resumed run) are written as
    given, so the same config resumes the run again, any number of times. A checkpoint's copy
    (:data:`RUN_KEY`) lets ``fit --ckpt_path C`` resume and ``test --ckpt_path C`` evaluate with
    nothing else on the command line.
    """

    def __init__(self, *args: Any, restore: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False})
        self.restore = dict(restore or {})
        self._path: str | None = None
        self._run: dict[str, Any] | None = None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if not self.already_saved:
            self._path = os.path.join(run_folder(trainer), self.config_filename)
            exists = trainer.strategy.broadcast(
                get_filesystem(self._path).isfile(self._path) if trainer.is_global_zero else False
            )
            if exists and not self.overwrite:
                raise UserError(
                    f"{self._path} already exists (another run's config); give this run its own "
                    "folder (another logger name or version) or move that run away"
                )
        super().setup(trainer, pl_module, stage)

    def given_config(self) -> Any:
        """The config as the user gave it (the command line's own additions put back)."""
        config = self.config.clone()
        for key, value in self.restore.items():
            config[key] = value
        return config

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        assert self._path is not None
        fs = get_filesystem(self._path)
        fs.makedirs(os.path.dirname(self._path), exist_ok=True)
        self.parser.save(
            self.given_config(), self._path, skip_none=False, overwrite=self.overwrite, multifile=self.multifile
        )

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if self._run is None:  # the same for every checkpoint of the run: built once
            self._run = self._run_record(trainer)
        checkpoint[RUN_KEY] = dict(self._run)

    def _run_record(self, trainer: Any) -> dict[str, Any]:
        config = self.given_config()
        if "ckpt_path" in config:  # where this invocation started from is not part of the run
            config["ckpt_path"] = None
        key = "data.init_args.data_dir" if "data.init_args" in config else "data.data_dir"
        if isinstance(config.get(key), str):  # evaluations may run from another working folder
            config[key] = os.path.abspath(config[key])
        logger = trainer.logger
        return {
            "config": self.parser.dump(config, skip_none=False),
            "name": getattr(logger, "name", None),
            "version": _version_name(getattr(logger, "version", None)),
            "save_dir": os.path.abspath(logger.save_dir) if getattr(logger, "save_dir", None) else None,
        }


def _version_name(version: Any) -> str | None:
    return None if version is None else version if isinstance(version, str) else f"version_{version}"


class DiscardFailedRun(Callback):
    """A command that fails leaves nothing behind: the folders it created are removed, unless a
    checkpoint was written in them (a fit stopped by a signal or a non-finite loss keeps its run).

    Args:
        folders: The folders this command would create (the CLI lists those that do not exist yet).
    """

    def __init__(self, folders: list[str]) -> None:
        self.folders = [os.path.abspath(f) for f in folders]

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not trainer.is_global_zero:
            return
        existing = [f for f in self.folders if os.path.isdir(f)]
        if any(glob.glob(os.path.join(f, "**", "*.ckpt"), recursive=True) for f in existing):
            return
        for folder in existing:
            shutil.rmtree(folder, ignore_errors=True)

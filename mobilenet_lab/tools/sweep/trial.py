"""The callback that makes an ordinary ``fit`` a sweep trial (it runs in the trial's own process).

The sweep adds it to each trial's command line (``--trainer.callbacks+=``), so the trial's
``config.yaml`` says which sweep and trial it was. It

- reports the sweep's metric after every validation to the trial in the study, and stops the fit
  (like early stopping: ``last.ckpt`` is written) when the sweep's pruner says so, through
  Optuna's own :class:`optuna_integration.PyTorchLightningPruningCallback`;
- writes the TensorBoard HParams summary with the swept values, so the HParams tab shows the
  trials side by side (``hp_metric`` is the best validation accuracy);
- ends the fit when the sweep process that started it is gone (Linux: SIGTERM, which the
  graceful stop turns into a saved ``last.ckpt``), and when the study no longer counts this
  trial as running (the sweep was re-run and queued it again).

The storage URL comes from the environment (:data:`STORAGE_ENV`), never from the config, so a
database password is not written into ``config.yaml``. Without it (a trial's config re-run by
hand) the callback does nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from ...compat import study_id, tensorboard_file_writer, trial_id
from ...errors import UserError

__all__ = ["SweepTrial", "STORAGE_ENV", "PARENT_ENV"]

#: Environment variables the sweep sets for each trial process.
STORAGE_ENV = "MOBILENET_LAB_SWEEP_STORAGE"
PARENT_ENV = "MOBILENET_LAB_SWEEP_PARENT"
#: Trial attribute: the epoch at which the pruner stopped the trial.
PRUNED_ATTR = "pruned_at_epoch"
#: Metrics shown beside the hyperparameters in TensorBoard's HParams tab.
HPARAMS_METRICS = ("hp_metric", "val/acc", "val/loss")


def _end_with_parent() -> None:
    """SIGTERM this process when the sweep process that started it exits (Linux's parent-death signal)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # it is already gone
        os.kill(os.getpid(), signal.SIGTERM)


class SweepTrial(Callback):
    """Connects a fit to trial ``trial`` of sweep ``sweep``: metric reports, pruning, HParams.

    Args:
        sweep: The sweep's (study's) name.
        trial: The trial's number in the study.
    """

    def __init__(self, sweep: str, trial: int) -> None:
        self.sweep = sweep
        self.trial = trial
        self.params: dict[str, Any] = {}
        self._optuna_trial: Any = None
        self._pruning: Any = None
        if os.environ.get(STORAGE_ENV):
            _end_with_parent()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        url = os.environ.get(STORAGE_ENV)
        if stage != "fit" or not url or self._optuna_trial is not None:
            return
        import optuna
        from optuna_integration import PyTorchLightningPruningCallback

        from .spec import build_pruner
        from .storage import SPEC_ATTR, open_storage

        storage = open_storage(url, heartbeat=False)
        study = optuna.load_study(study_name=self.sweep, storage=storage)
        spec = study.user_attrs[SPEC_ATTR]
        study.pruner = build_pruner(spec)
        number_id = storage.get_trial_id_from_study_id_trial_number(study_id(study), self.trial)
        self.params = dict(storage.get_trial(number_id).params)
        self._optuna_trial = optuna.Trial(study, number_id)
        if trainer.is_global_zero:
            self._optuna_trial.set_user_attr("fit_pid", os.getpid())  # which process trains it
        self._pruning = PyTorchLightningPruningCallback(self._optuna_trial, monitor=spec["metric"])

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pruning is None:
            return
        self._pruning.on_fit_start(trainer, pl_module)
        if trainer.is_global_zero:
            self._log_hparams(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pruning is None or trainer.sanity_checking:
            return
        import optuna

        try:
            self._pruning.on_validation_end(trainer, pl_module)
        except optuna.TrialPruned:
            self._stop_pruned(trainer)
        except optuna.exceptions.UpdateFinishedTrialError:
            raise UserError(
                f"trial {self.trial} of sweep {self.sweep} is no longer running in the study (its "
                "sweep was stopped and re-run, which queued it again); stopping this copy"
            ) from None
        if self._pruning.is_ddp_backend and trainer.should_stop and trainer.is_global_zero:
            attrs = self._optuna_trial.storage.get_trial_system_attrs(trial_id(self._optuna_trial))
            if attrs.get("ddp_pl:pruned"):
                self._stop_pruned(trainer)

    def _stop_pruned(self, trainer: L.Trainer) -> None:
        trainer.should_stop = True  # ends after this epoch, as early stopping does: last.ckpt is written
        self._optuna_trial.set_user_attr(PRUNED_ATTR, trainer.current_epoch)
        print(f"sweep {self.sweep}: trial {self.trial} pruned at epoch {trainer.current_epoch}")

    def _log_hparams(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The HParams summary: the module's and data's hyperparameters plus the swept values."""
        from lightning.pytorch.loggers import TensorBoardLogger
        from torch.utils.tensorboard.summary import hparams

        logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if logger is None:
            return
        values = _flat(pl_module.hparams_initial)
        if trainer.datamodule is not None:
            values.update(_flat(trainer.datamodule.hparams_initial))
        values.update({"sweep": self.sweep, "trial": self.trial})
        values.update(_flat(self.params))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summaries = hparams(values, {name: 0.0 for name in HPARAMS_METRICS})
        writer = tensorboard_file_writer(logger.experiment)  # as TensorBoardLogger.log_hyperparams writes it
        for summary in summaries:
            writer.add_summary(summary)


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameters as ``{"a/b": value}`` (as Lightning logs them), values TensorBoard can show."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, argparse.Namespace):  # jsonargparse's, e.g. an optimizer's init_args
            value = vars(value)
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat

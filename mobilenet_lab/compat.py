"""The only room that touches Lightning's, Optuna's and TensorBoard's private names.

Each shim names the upstream behaviour it works around, reads the private name in one line, and
fails loudly (:class:`FrameworkChanged`) when the framework no longer has it, instead of silently
doing nothing. ``tests/test_compat.py`` exercises every shim against the installed versions, so an
upgrade beyond the range ``pyproject.toml`` pins (lightning 2.6.x, optuna 5.x) fails there first.
Nothing else in ``mobilenet_lab/`` uses a private framework name (``tests/test_layout.py`` checks).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "FrameworkChanged",
    "is_last_batch",
    "load_pending_train_loader_state",
    "take_over_child_processes",
    "tensorboard_file_writer",
    "averaged_model",
    "averaging_device",
    "latest_update_step",
    "set_latest_update_step",
    "trial_id",
    "study_id",
]


class FrameworkChanged(RuntimeError):
    """A private name this project relies on is gone: the installed framework is outside the tested range."""


def _get(obj: Any, name: str, what: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise FrameworkChanged(
            f"{type(obj).__module__}.{type(obj).__name__} has no {name!r} ({what}); this framework version is "
            "outside the range pyproject.toml pins: install the pinned one or update mobilenet_lab/compat.py"
        ) from None


# ----------------------------------------------------------------------------------- Lightning
def is_last_batch(trainer: Any) -> bool:
    """Whether the training batch that just ended is the epoch's last one.

    Lightning keeps this in its fit loop's progress tracker only (``Trainer`` has no public
    equivalent that also holds for loaders without a length and for resumed mid-epoch runs).
    """
    progress = _get(trainer.fit_loop.epoch_loop, "batch_progress", "the epoch loop's progress")
    return bool(_get(progress, "is_last_batch", "the epoch loop's progress"))


def load_pending_train_loader_state(trainer: Any) -> None:
    """Hands a resumed checkpoint's train-loader state to the loader if Lightning has not (Lightning #20550).

    Lightning restores a stateful loader's state only when the loader is built after the checkpoint
    is read; a schedule that reads ``trainer.estimated_stepping_batches`` in ``configure_optimizers``
    builds it earlier and the state is silently dropped. Does nothing when nothing is pending.
    """
    loop = trainer.fit_loop
    pending = _get(loop, "_combined_loader_states_to_load", "Lightning #20550 workaround")
    if pending:
        _get(loop, "_load_combined_loader_states", "Lightning #20550 workaround")()


def take_over_child_processes(trainer: Any) -> list[Any]:
    """Takes the DDP launcher's child processes away from it and returns them (rank 0; else ``[]``).

    Lightning's subprocess launcher watches the ranks it started and SIGKILLs all of them as soon as
    one exits with a non-zero status (``_SubprocessScriptLauncher``'s process observer, Lightning
    PR #18218; no public way to hand the children over, Lightning #17248): a
    graceful stop that exits with 128 + signal would kill the other ranks mid-save. The launcher's
    ``procs`` list is emptied so its observer has nothing to kill; the caller waits for them instead.
    """
    launcher = getattr(trainer.strategy, "launcher", None)
    procs = getattr(launcher, "procs", None) if launcher is not None else None
    if not isinstance(procs, list):
        return []
    children = list(procs)
    procs.clear()
    return children


def tensorboard_file_writer(experiment: Any) -> Any:
    """The ``FileWriter`` behind a ``SummaryWriter``, as ``TensorBoardLogger.log_hyperparams`` uses it.

    Writing hparams summaries into an existing event file (no new sub-folder per call) needs the
    writer itself; ``SummaryWriter`` exposes it only as ``_get_file_writer``.
    """
    return _get(experiment, "_get_file_writer", "TensorBoard's hparams writer")()


def averaged_model(callback: Any) -> Any:
    """The ``AveragedModel`` a ``WeightAveraging`` callback keeps (None outside ``fit``).

    Lightning's ``WeightAveraging`` has no public accessor; :class:`mobilenet_lab.ema.EMA` replaces its
    per-step update (torch's ``update_parameters`` syncs with the host twice per step on a GPU) and
    must reach the average it updates.
    """
    return _get(callback, "_average_model", "WeightAveraging's averaged model")


def averaging_device(callback: Any) -> Any:
    """The device ``WeightAveraging`` was asked to keep the average on (None: the module's)."""
    return _get(callback, "_device", "WeightAveraging's device")


def latest_update_step(callback: Any) -> int:
    """The global step of ``WeightAveraging``'s latest update (its guard against updating twice per step)."""
    return int(_get(callback, "_latest_update_step", "WeightAveraging's latest update step"))


def set_latest_update_step(callback: Any, step: int) -> None:
    _get(callback, "_latest_update_step", "WeightAveraging's latest update step")
    callback._latest_update_step = step


# -------------------------------------------------------------------------------------- Optuna
def trial_id(trial: Any) -> int:
    """The storage's id of a ``Trial`` or ``FrozenTrial`` (Optuna exposes only the per-study ``number``;
    Optuna #6365 and #5647 ask for a public way).

    Storage methods (``set_trial_state_values``, ``get_trial``) take this id.
    """
    return int(_get(trial, "_trial_id", "Optuna's storage id of a trial"))


def study_id(study: Any) -> int:
    """The storage's id of a ``Study`` (``get_trial_id_from_study_id_trial_number`` takes it)."""
    return int(_get(study, "_study_id", "Optuna's storage id of a study"))

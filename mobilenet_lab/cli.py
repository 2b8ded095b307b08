"""The LightningCLI: ``fit``/``validate``/``test``/``predict`` with YAML configs, links and checks."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from .callbacks import (
    AtomicCheckpointIO,
    GracefulStop,
    PredictionWriter,
    ResumeTrainLoader,
    RunCheckpoint,
    TestPanels,
    run_folder,
    safe_load_checkpoint,
)
from .data import CIFAR100DataModule
from .errors import UserError
from .checkpoint import saved_description
from .modules import ImageClassifier, architecture_diff, description_of

__all__ = ["MobileNetCLI", "RunConfig", "cli_main"]

TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "lightning_logs", "name": "mobilenet"},
    },
    "use_distributed_sampler": False,  # the data module shards with its own (seed, epoch) sampler
}


class MobileNetCLI(LightningCLI):
    """LightningCLI over the MobileNet LightningModules and the CIFAR-100 data module."""

    def __init__(self, args: list[str] | None = None, **kwargs: Any) -> None:
        given = list(sys.argv[1:] if args is None else args)
        args = _model_from_checkpoint(given)
        self._model_from_checkpoint = args != given
        self._checkpoint: dict[str, Any] | None = None  # the --ckpt_path checkpoint, once read
        self._continued_run: str | None = None  # fit resumes a run in its own folder
        super().__init__(
            ImageClassifier,
            CIFAR100DataModule,
            subclass_mode_model=True,
            trainer_defaults=TRAINER_DEFAULTS,
            save_config_callback=RunConfig,
            save_config_kwargs={"overwrite": False},
            auto_configure_optimizers=False,
            args=args,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        # Refuse a missing, truncated or code-carrying checkpoint with one line before Lightning
        # (or this CLI's hyperparameter parsing) touches it.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            checkpoint = self._checkpoint = safe_load_checkpoint(ckpt_path)
            if not self._model_from_checkpoint:
                _check_same_architecture(self.config[subcommand].get("model"), checkpoint, ckpt_path)
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        # Checkpoints are written atomically and loaded safely, unless the user gave a CheckpointIO.
        plugins = self._get(self.config_init, "trainer", default={}).get("plugins")
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [] if plugins is None else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            plugins.append(AtomicCheckpointIO())
        kwargs["plugins"] = plugins
        if self._continued_run is not None:  # the resumed run rewrites its own config.yaml
            self.save_config_kwargs = {**self.save_config_kwargs, "overwrite": True}
        trainer = super().instantiate_trainer(**kwargs)
        extra: list[Any] = [GracefulStop(), ResumeTrainLoader(), TestPanels(), PredictionWriter()]
        if trainer.loggers:  # the learning-rate curve needs a logger
            extra.insert(0, LearningRateMonitor(logging_interval="step"))
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, RunCheckpoint):
                extra += callback.last_checkpoints()
        trainer.callbacks.extend(extra)
        return trainer

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        _check_model(config.get("model"))
        _check_devices(config.get("trainer"))
        if self.subcommand == "fit":
            self._continue_in_place(config)

    def _continue_in_place(self, config: Any) -> None:
        """``fit --ckpt_path checkpoints/<name>/<version>/x.ckpt``: log to that run's version again.

        Only when the logger is a TensorBoardLogger whose version the user left unset (setting
        ``--trainer.logger.init_args.version`` starts a new version instead). The event files get
        ``purge_step`` = the checkpoint's step, so TensorBoard hides what the interrupted run
        logged after its checkpoint and the curves continue as one.
        """
        ckpt_path = config.get("ckpt_path")
        logger = config.get("trainer", {}).get("logger")
        if not ckpt_path or self._checkpoint is None or not hasattr(logger, "class_path"):
            return
        if logger.class_path.rsplit(".", 1)[-1] != "TensorBoardLogger" or logger.init_args.get("version") is not None:
            return
        run_dir = Path(ckpt_path).resolve().parent
        runs = Path(config.checkpoint.root).resolve() / str(logger.init_args.get("name"))
        if run_dir.parent != runs:
            return
        logger.init_args.version = run_dir.name
        if logger.init_args.get("purge_step") is None:
            logger.init_args.purge_step = int(self._checkpoint.get("global_step", 0))
        self._continued_run = str(run_dir)

    def before_fit(self) -> None:
        _check_writable(self.trainer)
        ckpt_path = self.config_init["fit"].get("ckpt_path")
        if ckpt_path:
            for callback in self.trainer.checkpoint_callbacks:
                if isinstance(callback, RunCheckpoint):
                    callback.continue_run(ckpt_path)

    def before_predict(self) -> None:
        # Predictions stream to predictions.csv batch by batch; keeping them all in memory too would
        # make a large folder's memory grow with its size.
        if self.config_init["predict"].get("return_predictions") is None:
            self.config_init["predict"]["return_predictions"] = False


class RunConfig(SaveConfigCallback):
    """Writes the run's ``config.yaml`` into the run's own folder (:func:`run_folder`), never over another's.

    With a logger that is the logger's folder, as Lightning does. Without one Lightning would use
    the working folder, where the next run collides; the config goes beside the checkpoints instead,
    into the folder :class:`RunCheckpoint` picks in its ``setup``. Lightning sets checkpoint callbacks
    up last, so a logger-less run writes its config when the stage starts rather than in ``setup``.
    """

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if trainer.logger is not None:
            self._save(trainer, pl_module, stage)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._save(trainer, pl_module, "fit")

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._save(trainer, pl_module, "validate")

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._save(trainer, pl_module, "test")

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._save(trainer, pl_module, "predict")

    def _save(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # SaveConfigCallback.setup, in run_folder() and with a collision as one line instead of a traceback.
        if self.already_saved:
            return
        folder = run_folder(trainer)
        config_path = os.path.join(folder, self.config_filename)
        fs = get_filesystem(folder)
        exists = trainer.strategy.broadcast(fs.isfile(config_path) if trainer.is_global_zero else False)
        if exists and not self.overwrite:
            raise UserError(f"{config_path} already exists (another run's config); give this run its own folder "
                            "(another logger name or version) or move that run away")
        if trainer.is_global_zero:
            fs.makedirs(folder, exist_ok=True)
            self.parser.save(self.config, config_path, skip_none=False, overwrite=self.overwrite,
                             multifile=self.multifile)
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


#: Model options that ``test``/``validate``/``predict --ckpt_path`` take without a config.
EVALUATION_OPTIONS = ("--model.init_args.test_time_flip",)


def _model_from_checkpoint(args: list[str]) -> list[str]:
    """``test/validate/predict --ckpt_path C`` with no model given: take the model class from C.

    LightningCLI fills the model's arguments from the checkpoint's hyperparameters, but only
    once a model class is chosen; this picks the class the checkpoint was trained with.
    """
    if not args or args[0] not in ("test", "validate", "predict"):
        return args
    ckpt_path = _option(args, "--ckpt_path")
    if ckpt_path is None or _option(args, "--model") is not None or _option(args, "--config") is not None:
        return args
    # Evaluation options (not part of the checkpoint) still take the model class from it.
    if any(a in ("-c",) or (a.startswith("--model.") and not a.startswith(EVALUATION_OPTIONS)) for a in args):
        return args
    checkpoint = safe_load_checkpoint(ckpt_path)
    # Lightning's record of the class (it may be the generic ImageClassifier or a user subclass),
    # else the version class of the checkpoint's model description.
    class_path = checkpoint.get("hyper_parameters", {}).get("_class_path")
    if class_path is None:
        class_path = _version_class_path(checkpoint)
    if class_path is None:
        raise UserError(f"{ckpt_path} does not name its model class; pass --config with the run's config.yaml")
    return [args[0], f"--model={class_path}", *args[1:]]


def _version_class_path(checkpoint: dict[str, Any]) -> str | None:
    """``<module>.<Class>`` of the version LightningModule the checkpoint's description names."""
    from . import modules

    try:
        saved = saved_description(checkpoint)
    except ValueError:
        return None
    cls = modules.VERSION_MODULES.get(saved.name) if saved is not None else None
    return f"{cls.__module__}.{cls.__name__}" if cls is not None else None


def _import_model_class(model: Any) -> type | None:
    if model is None or not getattr(model, "class_path", None):
        return None
    module_name, _, class_name = model.class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name, None)
    except ImportError:
        return None


def _check_same_architecture(model: Any, checkpoint: dict[str, Any], ckpt_path: str) -> None:
    """The config's model must be the checkpoint's: LightningCLI would otherwise silently take the latter.

    Compares the checkpoint's model description with the one the config builds.
    """
    cls = _import_model_class(model)
    try:
        saved = saved_description(checkpoint)
        ours = description_of(cls, dict(model.get("init_args") or {})) if cls is not None else None
    except ValueError:
        return  # _check_model / the module reports a bad config; a bad checkpoint fails on load
    if saved is None or ours is None:
        return
    # num_classes is linked from the data module after this check: compare the rest.
    diffs = [d for d in architecture_diff(saved, ours) if not d.startswith("num_classes:")
             or (model.get("init_args") or {}).get("num_classes") is not None]
    if saved.name != ours.name:
        diffs = [f"model: checkpoint {saved.name} vs config {ours.name}"]
    if diffs:
        raise UserError(f"{ckpt_path} does not match the config ({'; '.join(diffs)}); use the config the "
                        "checkpoint was trained with, or leave out --config to take everything from the checkpoint")


def _check_model(model: Any) -> None:
    """Validates the network options with the model description's own checks, before anything is built."""
    cls = _import_model_class(model)
    if cls is None or not isinstance(getattr(cls, "model_name", None), str) or not cls.model_name:
        return
    try:
        description_of(cls, {k: v for k, v in (model.get("init_args") or {}).items() if k != "num_classes"})
    except ValueError as err:
        raise UserError(f"model: {err}") from None


def _check_devices(trainer: Any) -> None:
    """GPU asked on a machine without one, or more devices than exist: say so before starting."""
    if trainer is None:
        return
    accelerator, devices = str(trainer.get("accelerator") or "auto"), trainer.get("devices", "auto")
    count = None
    if isinstance(devices, int):
        count = devices
    elif isinstance(devices, str) and devices.isdigit():
        count = int(devices)
    elif isinstance(devices, (list, tuple)):
        count = len(devices)
    if accelerator in ("gpu", "cuda"):
        available = torch.cuda.device_count()
        if available == 0:
            raise UserError(f"trainer.accelerator={accelerator} but no CUDA GPU is available here; "
                            "use --trainer.accelerator cpu (or --config configs/trainer/cpu.yaml)")
        if count is not None and count > available:
            raise UserError(f"trainer.devices={count} but only {available} GPU(s) are available; "
                            f"use --trainer.devices {available} (or -1 for all)")
    if accelerator == "cpu" and count is not None and count > (os.cpu_count() or 1):
        raise UserError(f"trainer.devices={count} CPU processes but this machine has {os.cpu_count()} cores; "
                        "use fewer (each process trains a shard of every batch)")


def _check_writable(trainer: Any) -> None:
    folders = []
    if trainer.logger is not None and getattr(trainer.logger, "save_dir", None):
        folders.append(Path(trainer.logger.save_dir))
    folders += [Path(cb.root) for cb in trainer.callbacks if isinstance(cb, RunCheckpoint)]
    for folder in folders:
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK):
            raise UserError(f"cannot write to {folder} ({probe} is not writable); "
                            "choose another folder or fix its permissions")


class _NoHostedServiceTips(logging.Filter):
    """Drops Lightning's adverts for its hosted logger and model registry ("Tip: For seamless cloud ...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless cloud" not in record.getMessage()


_NO_HOSTED_SERVICE_TIPS = _NoHostedServiceTips()


def cli_main(args: list[str] | None = None, parser_kwargs: dict[str, Any] | None = None) -> MobileNetCLI:
    """Runs the LightningCLI; ``parser_kwargs`` as LightningCLI's (``prog``, per-command ``description``)."""
    # Noise the user cannot act on, silenced narrowly (by message, category and origin); the
    # project's own warnings, and everything else from Lightning, still show.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NO_HOSTED_SERVICE_TIPS)  # (once)
    # torch deprecated LeafSpec; Lightning's own _pytree still uses it on every fit and predict.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"lightning\.")
    # We pass the (possibly completed) command line as args on purpose.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    return MobileNetCLI(args=args, parser_kwargs=parser_kwargs)

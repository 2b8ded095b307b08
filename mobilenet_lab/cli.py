"""The LightningCLI: ``fit``/``validate``/``test``/``predict`` with YAML configs, links and checks."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningCLI

from .checkpoint import safe_load_checkpoint
from .classifier import ImageClassifier
from .cli_checks import check_devices, check_model, check_same_architecture, check_writable
from .data import CIFAR100DataModule
from .from_checkpoint import model_from_checkpoint
from .interrupt import GracefulStop
from .panels import PredictionWriter, TestPanels
from .resume import ResumeTrainLoader
from .run_layout import AtomicCheckpointIO, RunCheckpoint, RunConfig

__all__ = ["MobileNetCLI", "cli_main"]

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
        args = model_from_checkpoint(given)
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

    def parse_arguments(self, parser: Any, args: Any) -> None:
        super().parse_arguments(parser, args)
        # Refuse a missing, truncated or code-carrying checkpoint with one line before Lightning
        # (which reads the checkpoint's hyperparameters next) touches it.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            checkpoint = self._checkpoint = safe_load_checkpoint(ckpt_path)
            if not self._model_from_checkpoint:
                check_same_architecture(self.config[subcommand].get("model"), checkpoint, ckpt_path)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        # Checkpoints are written atomically and loaded safely, unless the user gave a CheckpointIO.
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        plugins = (config.get("trainer") or {}).get("plugins")
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
        check_model(config.get("model"))
        check_devices(config.get("trainer"))
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
        check_writable(self.trainer)
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

"""The LightningCLI: ``fit``/``validate``/``test``/``predict`` with YAML configs, links and checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningCLI

from .callbacks import AtomicCheckpointIO, PredictionWriter, RunCheckpoint, TestPanels, safe_load_checkpoint
from .data import CIFAR100DataModule
from .errors import UserError
from .modules import ImageClassifier

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
        super().__init__(
            ImageClassifier,
            CIFAR100DataModule,
            subclass_mode_model=True,
            trainer_defaults=TRAINER_DEFAULTS,
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
            safe_load_checkpoint(ckpt_path)
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        extra = [LearningRateMonitor(logging_interval="step"), TestPanels(), PredictionWriter()]
        kwargs.setdefault("plugins", [])
        kwargs["plugins"] = [AtomicCheckpointIO()]
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.extend(extra)
        return trainer

    def before_fit(self) -> None:
        _check_writable(self.trainer)


def _check_writable(trainer: Any) -> None:
    folders = []
    if trainer.logger is not None and getattr(trainer.logger, "save_dir", None):
        folders.append(Path(trainer.logger.save_dir))
    folders += [Path(cb.root) for cb in trainer.callbacks if isinstance(cb, RunCheckpoint)]
    for folder in folders:
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not os.access(probe, os.W_OK):
            raise UserError(f"cannot write to {folder} ({probe} is not writable); "
                            "choose another folder or fix its permissions")


def cli_main(args: list[str] | None = None) -> MobileNetCLI:
    return MobileNetCLI(args=args)

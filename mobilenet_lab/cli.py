"""The LightningCLI: ``fit``/``validate``/``test``/``predict`` with YAML configs, links and checks."""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from .checkpoint import safe_load_checkpoint
from .classifier import ImageClassifier
from .cli_checks import check_devices, check_model, check_same_architecture, check_writable
from .data import CIFAR100DataModule
from .from_checkpoint import complete_args
from .interrupt import GracefulStop
from .panels import PredictionWriter, TestPanels
from .resume import ResumeTrainLoader
from .run_layout import RUN_KEY, AtomicCheckpointIO, DiscardFailedRun, RunCheckpoint, RunConfig

__all__ = ["MobileNetCLI", "cli_main"]

TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "lightning_logs", "name": "mobilenet"},
    },
    "use_distributed_sampler": False,  # the data module shards with its own (seed, epoch) sampler
}


class CommandLineParser(LightningArgumentParser):
    """A usage error in one or two lines: what is wrong, the nearest valid option, where the list is."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        if not self.exit_on_error:
            return super().error(message, ex)
        wrong = _wrong_key(message)
        line = f"error: {_first_line(message)}"
        if wrong is not None:
            near = difflib.get_close_matches(wrong, _valid_keys(message, self, wrong), n=1, cutoff=0.6)
            line = f"error: unknown option --{wrong}" + (f"; did you mean --{near[0]}?" if near else "")
        sys.stderr.write(f"{line}\n(`{self.prog.replace(' [options]', '')} --help` lists every option)\n")
        self.exit(2)


def _wrong_key(message: str) -> str | None:
    """The option a parse error names as unknown, as a dotted key (``model.init_args.widthmult``)."""
    accepted = re.search(r"Option '([^']+)' is not accepted", message)
    if accepted:
        prefix = re.search(r"Parser key \"([^\"]+)\"", message)
        return f"{prefix.group(1)}.init_args.{accepted.group(1)}" if prefix else accepted.group(1)
    unrecognized = re.search(r"unrecognized arguments: --?([\w.\-]+)", message, re.IGNORECASE)
    return unrecognized.group(1) if unrecognized else None


def _valid_keys(message: str, parser: Any, wrong: str) -> list[str]:
    """Options the parser (and the class a ``class_path`` names) accepts, as dotted keys."""
    keys = list(parser.get_defaults().keys())
    class_path = re.search(r"class_path '([^']+)'", message)
    if class_path and ".init_args." in wrong:
        import importlib
        import inspect

        module, _, name = class_path.group(1).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            return keys
        prefix = wrong.split(".init_args.")[0]
        for klass in cls.__mro__:
            if "__init__" in vars(klass):
                keys += [
                    f"{prefix}.init_args.{p}"
                    for p in inspect.signature(klass.__init__).parameters
                    if p not in ("self", "args", "kwargs")
                ]
    return keys


def _first_line(message: str) -> str:
    """The message on one line: jsonargparse's "Parser key X:" with the first reason after it."""
    inner = re.search(r'Problem with given class_path [^\n]*\n\s*Parser key "([^"]+)":\s*\n\s*([^\n]+)', message)
    if inner:  # a wrong value of a class's argument: name the argument, not the class union
        outer = re.match(r'Parser key "([^"]+)"', message)
        key = f"{outer.group(1)}.init_args.{inner.group(1)}" if outer else inner.group(1)
        return f"option {key}: {inner.group(2).strip()}"
    lines = [line.strip(" -") for line in message.strip().splitlines() if line.strip(" -")]
    if not lines:
        return "invalid arguments"
    line = lines[0] if not lines[0].endswith(":") or len(lines) == 1 else f"{lines[0]} {lines[1]}"
    return line.replace("Parser key ", "option ").replace('"', "")


class MobileNetCLI(LightningCLI):
    """LightningCLI over the MobileNet LightningModules and the CIFAR-100 data module."""

    def __init__(self, args: list[str] | None = None, **kwargs: Any) -> None:
        given = list(sys.argv[1:] if args is None else args)
        args = complete_args(given)
        # The model class alone came from the checkpoint (no config): its arguments come from there too.
        self._model_from_checkpoint = args != given and not args[1].startswith("--config=")
        self._checkpoint: dict[str, Any] | None = None  # the --ckpt_path checkpoint, once read
        self._continued_run: str | None = None  # fit resumes a run in its own folder
        self._given_logger: dict[str, Any] = {}  # logger options as given, before _continue_in_place
        super().__init__(
            ImageClassifier,
            CIFAR100DataModule,
            subclass_mode_model=True,
            trainer_defaults=TRAINER_DEFAULTS,
            save_config_callback=RunConfig,
            save_config_kwargs={"overwrite": False},
            auto_configure_optimizers=False,
            parser_class=CommandLineParser,
            args=args,
            **kwargs,
        )

    def init_parser(self, **kwargs: Any) -> Any:
        # No argparse prefix guessing: --trainer.max_epoch is a mistake, not --trainer.max_epochs.
        return super().init_parser(**{"allow_abbrev": False, **kwargs})

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
        if self._continued_run is not None:  # the resumed run rewrites its own config.yaml, as it was given
            self.save_config_kwargs = {**self.save_config_kwargs, "overwrite": True, "restore": self._given_logger}
        trainer = super().instantiate_trainer(**kwargs)
        extra: list[Any] = [
            GracefulStop(),
            ResumeTrainLoader(),
            TestPanels(),
            PredictionWriter(),
            DiscardFailedRun(self._fresh_folders(trainer)),
        ]
        if trainer.loggers:  # the learning-rate curve needs a logger
            extra.insert(0, LearningRateMonitor(logging_interval="step"))
        if self.subcommand == "fit":
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
        # The run the checkpoint records (the same on every node, whatever its working folder), else
        # the checkpoint's folder under this run's checkpoint root (older checkpoints).
        run = self._checkpoint.get(RUN_KEY) or {}
        run_dir = Path(ckpt_path).resolve().parent
        if run.get("name") and run.get("version"):
            if run["name"] != str(logger.init_args.get("name")):
                return
            version = run["version"]
        else:
            runs = Path(config.checkpoint.root).resolve() / str(logger.init_args.get("name"))
            if run_dir.parent != runs:
                return
            version = run_dir.name
        self._given_logger = {
            "trainer.logger.init_args.version": None,
            "trainer.logger.init_args.purge_step": logger.init_args.get("purge_step"),
        }
        logger.init_args.version = version
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

    def _fresh_folders(self, trainer: Any) -> list[str]:
        """The folders this command will create: a failed command removes them (DiscardFailedRun)."""
        folders = []
        logger = trainer.logger
        if logger is not None and getattr(logger, "log_dir", None):
            folders.append(logger.log_dir)
            checkpoint = next((cb for cb in trainer.callbacks if isinstance(cb, RunCheckpoint)), None)
            if checkpoint is not None:
                version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
                folders.append(os.path.join(checkpoint.root, logger.name, version))
        return [f for f in folders if not os.path.exists(f)]

    def _say_where(self) -> None:
        if self.trainer.logger is not None and getattr(self.trainer.logger, "log_dir", None):
            rank_zero_info(f"{self.subcommand}: writing to {self.trainer.logger.log_dir}")

    def before_test(self) -> None:
        self._say_where()

    def before_validate(self) -> None:
        self._say_where()

    def before_predict(self) -> None:
        self._say_where()
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
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.",
    )
    # We pass the (possibly completed) command line as args on purpose.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    return MobileNetCLI(args=args, parser_kwargs=parser_kwargs)

"""What a command takes from its checkpoint: ``fit``/``test``/``validate``/``predict --ckpt_path C`` need no config.

A checkpoint written by ``fit`` holds its run's config, name and version
(:data:`~mobilenet_lab.run_layout.RUN_KEY`). ``fit --ckpt_path C`` alone resumes that run with that
config; an evaluation takes the run's config (its data folder among it) and writes beside the run,
into ``<save_dir>/<name>/<version>_<command>/``. Whatever the command line gives overrides it.
Checkpoints without that record (older ones, or from elsewhere) still give their model class.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from .checkpoint import safe_load_checkpoint, saved_description
from .errors import UserError

__all__ = ["complete_args", "model_from_checkpoint", "option_value", "EVALUATION_OPTIONS"]

EVALUATIONS = ("test", "validate", "predict")


def option_value(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


#: Model options that ``test``/``validate``/``predict --ckpt_path`` take without a config.
EVALUATION_OPTIONS = ("--model.init_args.test_time_flip",)


def _gives(args: list[str], *names: str) -> bool:
    return any(a in names or a.split("=", 1)[0] in names for a in args)


def complete_args(args: list[str]) -> list[str]:
    """The command line with what it left out taken from its ``--ckpt_path`` checkpoint (see the module)."""
    if not args or args[0] not in ("fit", *EVALUATIONS):
        return args
    ckpt_path = option_value(args, "--ckpt_path")
    if (
        ckpt_path is None
        or ckpt_path in ("last", "best", "hpc", "registry")
        or _gives(args, "--config", "-c", "--model")
    ):
        return args
    if args[0] in EVALUATIONS and any(a.startswith("--model.") and not a.startswith(EVALUATION_OPTIONS) for a in args):
        return args
    checkpoint = safe_load_checkpoint(ckpt_path)
    from .run_layout import RUN_KEY

    run = checkpoint.get(RUN_KEY)
    if not isinstance(run, dict) or not run.get("config"):
        if args[0] == "fit":
            raise UserError(
                f"{ckpt_path} does not hold its run's config (an older checkpoint); resume with "
                "--config <the run's config.yaml> --ckpt_path ..."
            )
        return model_from_checkpoint(args, checkpoint)
    completed = [args[0], f"--config={run['config']}"]
    if args[0] in EVALUATIONS:
        completed += _beside_the_run(run, args[0])
    return [*completed, *args[1:]]


def _beside_the_run(run: dict[str, Any], command: str) -> list[str]:
    """Logger options that put an evaluation's output in ``<save_dir>/<name>/<version>_<command>`` (a free one)."""
    config = yaml.safe_load(run["config"]) or {}
    logger = (config.get("trainer") or {}).get("logger")
    if not isinstance(logger, dict) or not str(logger.get("class_path", "")).endswith("TensorBoardLogger"):
        return []
    name, version, save_dir = run.get("name"), run.get("version"), run.get("save_dir")
    if not (name and version and save_dir):
        return []
    base = f"{version}_{command}"
    candidate, suffix = base, 1
    while os.path.exists(os.path.join(save_dir, name, candidate)):
        suffix += 1
        candidate = f"{base}_{suffix}"
    return [
        f"--trainer.logger.init_args.save_dir={save_dir}",
        f"--trainer.logger.init_args.name={name}",
        f"--trainer.logger.init_args.version={candidate}",
    ]


def model_from_checkpoint(args: list[str], checkpoint: dict[str, Any] | None = None) -> list[str]:
    """``test/validate/predict --ckpt_path C`` with no model given: take the model class from C.

    LightningCLI fills the model's arguments from the checkpoint's hyperparameters, but only
    once a model class is chosen; this picks the class the checkpoint was trained with.
    """
    if not args or args[0] not in EVALUATIONS:
        return args
    ckpt_path = option_value(args, "--ckpt_path")
    if ckpt_path is None or _gives(args, "--config", "-c", "--model"):
        return args
    # Evaluation options (not part of the checkpoint) still take the model class from it.
    if any(a.startswith("--model.") and not a.startswith(EVALUATION_OPTIONS) for a in args):
        return args
    checkpoint = checkpoint if checkpoint is not None else safe_load_checkpoint(ckpt_path)
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
    from .versions import VERSION_MODULES

    try:
        saved = saved_description(checkpoint)
    except ValueError:
        return None
    cls = VERSION_MODULES.get(saved.name) if saved is not None else None
    return f"{cls.__module__}.{cls.__name__}" if cls is not None else None

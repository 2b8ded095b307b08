"""What evaluation commands take from a checkpoint: ``test/validate/predict --ckpt_path C`` needs no config."""

from __future__ import annotations

from typing import Any

from .checkpoint import safe_load_checkpoint, saved_description
from .errors import UserError

__all__ = ["model_from_checkpoint", "option_value", "EVALUATION_OPTIONS"]


def option_value(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


#: Model options that ``test``/``validate``/``predict --ckpt_path`` take without a config.
EVALUATION_OPTIONS = ("--model.init_args.test_time_flip",)


def model_from_checkpoint(args: list[str]) -> list[str]:
    """``test/validate/predict --ckpt_path C`` with no model given: take the model class from C.

    LightningCLI fills the model's arguments from the checkpoint's hyperparameters, but only
    once a model class is chosen; this picks the class the checkpoint was trained with.
    """
    if not args or args[0] not in ("test", "validate", "predict"):
        return args
    ckpt_path = option_value(args, "--ckpt_path")
    if ckpt_path is None or option_value(args, "--model") is not None or option_value(args, "--config") is not None:
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
    from .versions import VERSION_MODULES

    try:
        saved = saved_description(checkpoint)
    except ValueError:
        return None
    cls = VERSION_MODULES.get(saved.name) if saved is not None else None
    return f"{cls.__module__}.{cls.__name__}" if cls is not None else None

"""mobilenet_lab: train, evaluate, benchmark and export the MobileNet family on CIFAR-100."""

import importlib
from typing import Any

__all__ = ["load_model", "create_model", "list_models"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Lazy: ``import mobilenet_lab.models`` must not pay for Lightning.
    if name == "load_model":
        from .inference import load_model

        return load_model
    if name in ("create_model", "list_models"):
        from . import models

        return getattr(models, name)
    # The LightningModules: the version classes and ImageClassifier (configs say mobilenet_lab.MobileNetV2).
    # Capitalised names only: ``from mobilenet_lab import models`` asks here for the submodule
    # first, which must not import Lightning.
    if name[:1].isupper():
        for room in ("versions", "classifier"):
            module = importlib.import_module(f"{__name__}.{room}")
            if name in module.__all__:
                return getattr(module, name)
    raise AttributeError(f"module 'mobilenet_lab' has no attribute {name!r}")

"""mobilenet_lab: train, evaluate, benchmark and export the MobileNet family on CIFAR-100."""

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
    if name in ("MobileNetV1", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "ImageClassifier"):
        from . import modules

        return getattr(modules, name)
    raise AttributeError(f"module 'mobilenet_lab' has no attribute {name!r}")

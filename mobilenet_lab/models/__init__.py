"""Pure PyTorch MobileNets (no Lightning): V1, V2, V3-Small/Large, V4 conv-S/M/L at any width multiplier.

A network is described by one :class:`ModelDescription` (``description.py``); each version's
file holds its paper's table as data and registers its builder and defaults with
``@register_model`` (``registry.py``, which imports no model file). Importing this package
imports the version files, which fills the registry.
"""

# The version files register themselves on import (as torchvision's models/__init__.py does).
from . import mobilenet_v1, mobilenet_v2, mobilenet_v3, mobilenet_v4  # noqa: F401  (registration)
from .base import MobileNet
from .description import STEMS, ModelDescription, describe
from .layers import make_divisible
from .profile import count_macs, count_params
from .registry import check_model_args, create_model, list_models, model_options, register_model
from .timm import convert_timm_state_dict
from .torchvision import convert_torchvision_state_dict

__all__ = [
    "MobileNet",
    "ModelDescription",
    "check_model_args",
    "STEMS",
    "convert_timm_state_dict",
    "convert_torchvision_state_dict",
    "count_macs",
    "count_params",
    "create_model",
    "describe",
    "list_models",
    "make_divisible",
    "model_options",
    "register_model",
]

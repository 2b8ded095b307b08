"""Pure PyTorch MobileNets (no Lightning): V1, V2, V3-Small, V3-Large at any width multiplier."""

from .base import STEMS, MobileNet
from .layers import make_divisible
from .profile import count_macs, count_params
from .registry import check_model_args, create_model, list_models, model_options, register_model
from .torchvision import convert_torchvision_state_dict

__all__ = [
    "MobileNet",
    "check_model_args",
    "STEMS",
    "convert_torchvision_state_dict",
    "count_macs",
    "count_params",
    "create_model",
    "list_models",
    "make_divisible",
    "model_options",
    "register_model",
]

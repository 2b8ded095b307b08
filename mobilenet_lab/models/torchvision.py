"""Import torchvision's MobileNetV2/V3 weights: the same function, op for op, under our names."""

from __future__ import annotations

import re

import torch
from torch import nn

__all__ = ["convert_torchvision_state_dict", "load_torchvision_weights", "TORCHVISION_MODELS"]

TORCHVISION_MODELS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")


def _num_blocks(state_dict: dict[str, torch.Tensor]) -> int:
    indices = {int(m.group(1)) for k in state_dict if (m := re.match(r"features\.(\d+)\.", k))}
    return max(indices) + 1


def convert_torchvision_state_dict(name: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a torchvision MobileNetV2/V3 state dict to this package's module names.

    torchvision keeps everything in ``features``: the stem at index 0, the inverted residuals,
    then the last 1x1 conv. Ours has ``stem``, ``blocks`` and ``final_conv``. Inside a V2 block,
    torchvision's ``conv`` ends with a bare Conv2d and BatchNorm where ours has a linear
    ``ConvNormAct`` (V3 already uses that form, under ``block``).
    """
    if name not in TORCHVISION_MODELS:
        raise ValueError(f"torchvision weights exist for {', '.join(TORCHVISION_MODELS)}, not {name!r}")
    last = _num_blocks(state_dict) - 1
    converted = {}
    for key, value in state_dict.items():
        m = re.match(r"features\.(\d+)\.(.*)", key)
        if m is None:  # classifier.* and anything else keep their names
            converted[key] = value
            continue
        index, rest = int(m.group(1)), m.group(2)
        if index == 0:
            converted[f"stem.{rest}"] = value
        elif index == last:
            converted[f"final_conv.{rest}"] = value
        else:
            if name == "mobilenet_v2":
                rest = _v2_block_key(rest, state_dict, index)
            converted[f"blocks.{index - 1}.{rest}"] = value
    return converted


def _v2_block_key(rest: str, state_dict: dict[str, torch.Tensor], index: int) -> str:
    # torchvision V2: conv.{0..k-1} are ConvNormAct, conv.k is the projection Conv2d and
    # conv.{k+1} its BatchNorm; ours: block.k.0 and block.k.1.
    m = re.match(r"conv\.(\d+)\.(.*)", rest)
    if m is None:
        raise ValueError(f"unexpected torchvision MobileNetV2 key features.{index}.{rest}")
    sub, tail = int(m.group(1)), m.group(2)
    prefix = f"features.{index}.conv."
    subs = sorted({int(k[len(prefix) :].split(".")[0]) for k in state_dict if k.startswith(prefix)})
    projection = subs[-2]
    if sub < projection:
        return f"block.{sub}.{tail}"
    return f"block.{projection}.{sub - projection}.{tail}"


def load_torchvision_weights(model: nn.Module, name: str) -> None:
    """Loads torchvision's ImageNet weights (its DEFAULT) into ``model``, through torchvision's weights API.

    The architecture must be width 1.0 (the only width torchvision publishes). When the class
    count differs from 1000, the last classifier layer keeps its fresh initialisation.
    """
    from torchvision.models import get_model_weights

    from ..errors import UserError

    if name not in TORCHVISION_MODELS:
        raise ValueError(f"torchvision weights exist for {', '.join(TORCHVISION_MODELS)}, not {name!r}")
    if model.config.get("width_mult", 1.0) != 1.0:
        raise ValueError("torchvision publishes MobileNet weights for width_mult=1.0 only")
    weights = get_model_weights(name).DEFAULT
    try:
        state_dict = weights.get_state_dict(progress=False)
    except Exception as err:  # URLError, socket errors, certificate errors: all mean "no download"
        raise UserError(
            f"could not download torchvision's {weights} ({type(err).__name__}: {err}); "
            f"connect to the internet or place {weights.url.rsplit('/', 1)[-1]} in torch.hub's checkpoint dir "
            f"({torch.hub.get_dir()}/checkpoints)"
        ) from None
    converted = convert_torchvision_state_dict(name, state_dict)
    own = model.state_dict()
    head = [k for k in own if k.startswith("classifier.") and own[k].shape != converted.get(k, own[k]).shape]
    for k in head:  # a different class count: keep our freshly initialised last layer
        converted[k] = own[k]
    model.load_state_dict(converted, strict=True)

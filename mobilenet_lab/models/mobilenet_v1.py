"""MobileNetV1 (Howard et al., 2017, arXiv:1704.04861)."""

from __future__ import annotations

from typing import Literal

from torch import nn

from .base import MobileNet, stride_budget
from .layers import ConvNormAct, DepthwiseSeparable, init_weights, make_divisible
from .registry import register_model

__all__ = ["mobilenet_v1"]

# Table 1: (output channels, stride) of each depthwise-separable block after the 3x3 stem
# (32 channels, stride 2). The table prints stride 2 for the second-last block, but its output
# stays 7x7 and the reference implementations use stride 1.
STEM_CHANNELS = 32
BLOCKS: list[tuple[int, int]] = [
    (64, 1),    # Conv dw / s1, Conv / s1: 112x112x32 -> 112x112x64
    (128, 2),   # 112 -> 56
    (128, 1),
    (256, 2),   # 56 -> 28
    (256, 1),
    (512, 2),   # 28 -> 14
    (512, 1),   # "5x" rows
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),  # 14 -> 7
    (1024, 1),
]

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


@register_model
def mobilenet_v1(
    *,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    stem: str = "imagenet",
    downsamples_removed: int | None = None,
    dropout: float = 0.0,
    activation: Literal["relu", "relu6"] = "relu",
) -> MobileNet:
    """MobileNetV1 with width multiplier alpha (section 4.2) and BatchNorm after every conv.

    The resolution multiplier rho is the input size (``image_size`` of the data module).

    Args:
        num_classes: Output classes.
        width_mult: Width multiplier alpha; every layer's channels become ``make_divisible(alpha * c)``.
        stem: ``"imagenet"`` (the paper) or ``"cifar"`` (first two stride-2 layers at stride 1).
        downsamples_removed: Overrides the stem's number of early stride-2 layers run at stride 1.
        dropout: Dropout before the classifier (the paper uses little regularisation: 0 by default).
        activation: ``"relu"`` (the paper) or ``"relu6"`` (as Keras' implementation).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
    act = ACTIVATIONS[activation]
    strides = stride_budget(stem, downsamples_removed)
    channels = make_divisible(STEM_CHANNELS * width_mult)
    stem_layer = ConvNormAct(3, channels, 3, strides(2), activation=act)
    blocks = []
    for out, stride in BLOCKS:
        out = make_divisible(out * width_mult)
        blocks.append(DepthwiseSeparable(channels, out, strides(stride), activation=act))
        channels = out
    classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
    model = MobileNet(stem_layer, nn.Sequential(*blocks), None, classifier, channels)
    init_weights(model)
    return model

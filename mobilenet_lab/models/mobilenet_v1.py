"""MobileNetV1 (Howard et al., 2017, arXiv:1704.04861)."""

from __future__ import annotations

from torch import nn

from .base import MobileNet, stride_budget
from .description import ModelDescription
from .layers import ConvNormAct, DepthwiseSeparable, init_weights, make_divisible
from .registry import register_model

__all__ = ["mobilenet_v1"]

# Table 1: (output channels, stride) of each depthwise-separable block after the 3x3 stem
# (32 channels, stride 2). The table prints stride 2 for the second-last block, but its output
# stays 7x7 and the reference implementations use stride 1.
STEM_CHANNELS = 32
# fmt: off
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
# fmt: on

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


@register_model(
    ModelDescription("mobilenet_v1", dropout=0.0, activation="relu"), choices={"activation": tuple(ACTIVATIONS)}
)
def mobilenet_v1(d: ModelDescription) -> MobileNet:
    """MobileNetV1 with width multiplier alpha (section 4.2) and BatchNorm after every conv.

    The resolution multiplier rho is the input size (``image_size`` of the data module). The paper
    uses little regularisation (dropout 0) and ReLU (``relu6`` as Keras' implementation).
    """
    act = ACTIVATIONS[d.activation]
    strides = stride_budget(d)
    channels = make_divisible(STEM_CHANNELS * d.width_mult)
    stem_layer = ConvNormAct(3, channels, 3, strides(2), activation=act)
    blocks = []
    for out, stride in BLOCKS:
        out = make_divisible(out * d.width_mult)
        blocks.append(DepthwiseSeparable(channels, out, strides(stride), activation=act))
        channels = out
    classifier = nn.Sequential(nn.Dropout(d.dropout), nn.Linear(channels, d.num_classes))
    model = MobileNet(stem_layer, nn.Sequential(*blocks), None, classifier, channels)
    init_weights(model)
    return model

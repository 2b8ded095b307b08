"""MobileNetV2 (Sandler et al., 2018, arXiv:1801.04381)."""

from __future__ import annotations

from torch import nn

from .base import MobileNet, stride_budget
from .description import ModelDescription
from .layers import ConvNormAct, InvertedResidual, init_weights, make_divisible
from .registry import register_model

__all__ = ["mobilenet_v2"]

# Table 2: expansion t, output channels c, repeats n, first stride s of each bottleneck stage,
# after a 3x3 stride-2 conv with 32 channels; then a 1x1 conv to 1280.
STEM_CHANNELS = 32
# fmt: off
STAGES: list[tuple[int, int, int, int]] = [
    # t, c,   n, s
    (1, 16, 1, 1),   # 112x112x32
    (6, 24, 2, 2),   # 112 -> 56
    (6, 32, 3, 2),   # 56 -> 28
    (6, 64, 4, 2),   # 28 -> 14
    (6, 96, 3, 1),
    (6, 160, 3, 2),  # 14 -> 7
    (6, 320, 1, 1),
]
# fmt: on
LAST_CHANNELS = 1280


@register_model(ModelDescription("mobilenet_v2", dropout=0.2))  # dropout 0.2 as torchvision
def mobilenet_v2(d: ModelDescription) -> MobileNet:
    """MobileNetV2 with ReLU6 inverted residuals and linear bottlenecks.

    The last 1x1 conv (1280) is not reduced below width 1.0 (section 5.1).
    """
    strides = stride_budget(d)
    channels = make_divisible(STEM_CHANNELS * d.width_mult)
    stem_layer = ConvNormAct(3, channels, 3, strides(2), activation=nn.ReLU6)
    blocks = []
    for t, c, n, s in STAGES:
        out = make_divisible(c * d.width_mult)
        for i in range(n):
            stride = strides(s) if i == 0 else 1
            hidden = int(round(channels * t))
            blocks.append(InvertedResidual(channels, hidden, out, 3, stride, activation=nn.ReLU6))
            channels = out
    last = make_divisible(LAST_CHANNELS * max(1.0, d.width_mult))
    final_conv = ConvNormAct(channels, last, 1, activation=nn.ReLU6)
    classifier = nn.Sequential(nn.Dropout(d.dropout), nn.Linear(last, d.num_classes))
    model = MobileNet(stem_layer, nn.Sequential(*blocks), final_conv, classifier, last)
    init_weights(model)
    return model

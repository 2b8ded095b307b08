"""MobileNetV2 (Sandler et al., 2018, arXiv:1801.04381)."""

from __future__ import annotations

from torch import nn

from .base import MobileNet, stride_budget
from .layers import ConvNormAct, InvertedResidual, init_weights, make_divisible
from .registry import register_model

__all__ = ["mobilenet_v2"]

# Table 2: expansion t, output channels c, repeats n, first stride s of each bottleneck stage,
# after a 3x3 stride-2 conv with 32 channels; then a 1x1 conv to 1280.
STEM_CHANNELS = 32
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
LAST_CHANNELS = 1280


@register_model
def mobilenet_v2(
    *,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    stem: str = "imagenet",
    downsamples_removed: int | None = None,
    dropout: float = 0.2,
) -> MobileNet:
    """MobileNetV2 with ReLU6 inverted residuals and linear bottlenecks.

    Args:
        num_classes: Output classes.
        width_mult: Width multiplier; the last 1x1 conv (1280) is not reduced below 1.0 (section 5.1).
        stem: ``"imagenet"`` (the paper) or ``"cifar"`` (first two stride-2 layers at stride 1).
        downsamples_removed: Overrides the stem's number of early stride-2 layers run at stride 1.
        dropout: Dropout before the classifier (0.2 as torchvision).
    """
    strides = stride_budget(stem, downsamples_removed)
    channels = make_divisible(STEM_CHANNELS * width_mult)
    stem_layer = ConvNormAct(3, channels, 3, strides(2), activation=nn.ReLU6)
    blocks = []
    for t, c, n, s in STAGES:
        out = make_divisible(c * width_mult)
        for i in range(n):
            stride = strides(s) if i == 0 else 1
            hidden = int(round(channels * t))
            blocks.append(InvertedResidual(channels, hidden, out, 3, stride, activation=nn.ReLU6))
            channels = out
    last = make_divisible(LAST_CHANNELS * max(1.0, width_mult))
    final_conv = ConvNormAct(channels, last, 1, activation=nn.ReLU6)
    classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
    model = MobileNet(stem_layer, nn.Sequential(*blocks), final_conv, classifier, last)
    init_weights(model)
    return model

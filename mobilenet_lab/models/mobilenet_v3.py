"""MobileNetV3-Large and -Small (Howard et al., 2019, arXiv:1905.02244)."""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from .base import MobileNet, stride_budget
from .description import ModelDescription
from .layers import ConvNormAct, InvertedResidual, PooledHead, batch_norm, init_weights, make_divisible
from .registry import register_model

__all__ = ["mobilenet_v3_large", "mobilenet_v3_small"]


class Bneck(NamedTuple):
    """One row of the paper's table: kernel, expanded ("exp size"), out, SE, activation, stride."""

    kernel: int
    expanded: int
    out: int
    se: bool
    act: str  # "RE" (ReLU) or "HS" (hard-swish)
    stride: int


RE, HS = "RE", "HS"

# Table 1 (MobileNetV3-Large), after a 3x3 stride-2 conv with 16 channels (hard-swish).
# fmt: off
LARGE = [
    Bneck(3, 16, 16, False, RE, 1),
    Bneck(3, 64, 24, False, RE, 2),
    Bneck(3, 72, 24, False, RE, 1),
    Bneck(5, 72, 40, True, RE, 2),
    Bneck(5, 120, 40, True, RE, 1),
    Bneck(5, 120, 40, True, RE, 1),
    Bneck(3, 240, 80, False, HS, 2),
    Bneck(3, 200, 80, False, HS, 1),
    Bneck(3, 184, 80, False, HS, 1),
    Bneck(3, 184, 80, False, HS, 1),
    Bneck(3, 480, 112, True, HS, 1),
    Bneck(3, 672, 112, True, HS, 1),
    Bneck(5, 672, 160, True, HS, 2),
    Bneck(5, 960, 160, True, HS, 1),
    Bneck(5, 960, 160, True, HS, 1),
]
# fmt: on
# Table 2 (MobileNetV3-Small).
# fmt: off
SMALL = [
    Bneck(3, 16, 16, True, RE, 2),
    Bneck(3, 72, 24, False, RE, 2),
    Bneck(3, 88, 24, False, RE, 1),
    Bneck(5, 96, 40, True, HS, 2),
    Bneck(5, 240, 40, True, HS, 1),
    Bneck(5, 240, 40, True, HS, 1),
    Bneck(5, 120, 48, True, HS, 1),
    Bneck(5, 144, 48, True, HS, 1),
    Bneck(5, 288, 96, True, HS, 2),
    Bneck(5, 576, 96, True, HS, 1),
    Bneck(5, 576, 96, True, HS, 1),
]
# fmt: on
STEM_CHANNELS = 16
# Last rows of the tables: 1x1 conv (no SE: Table 2 marks SE on Small's 576 conv, the official
# code has none), pool, then a 1x1 conv without BN to the head width, hard-swish, classifier.
FINAL_CHANNELS = {"large": 960, "small": 576}
HEAD_CHANNELS = {"large": 1280, "small": 1024}
ACTIVATIONS = {RE: nn.ReLU, HS: nn.Hardswish}


def _mobilenet_v3(variant: str, rows: list[Bneck], d: ModelDescription) -> MobileNet:
    strides = stride_budget(d)
    # Paper section 6.1: decay 0.99 (PyTorch momentum 0.01), epsilon 1e-3.
    norm = batch_norm(eps=1e-3, momentum=0.01)
    channels = make_divisible(STEM_CHANNELS * d.width_mult)
    stem_layer = ConvNormAct(3, channels, 3, strides(2), norm=norm, activation=nn.Hardswish)
    blocks = []
    # The table's input width of each row, to turn "exp size" into the official code's expansion
    # ratio (e.g. 184/80 = 2.3), applied to the already-rounded input width.
    table_in = STEM_CHANNELS
    for row in rows:
        out = make_divisible(row.out * d.width_mult)
        expanded = make_divisible(channels * row.expanded / table_in)
        squeeze = make_divisible(expanded // 4) if row.se else None
        blocks.append(
            InvertedResidual(
                channels,
                expanded,
                out,
                row.kernel,
                strides(row.stride),
                squeeze_channels=squeeze,
                norm=norm,
                activation=ACTIVATIONS[row.act],
            )
        )
        channels, table_in = out, row.out
    final = make_divisible(FINAL_CHANNELS[variant] * d.width_mult)
    final_conv = ConvNormAct(channels, final, 1, norm=norm, activation=nn.Hardswish)
    head = HEAD_CHANNELS[variant]  # not scaled by width (official code, timm)
    # The table's "conv2d 1x1, NBN" on the pooled 1x1 map, hard-swish, dropout, classifier.
    classifier = PooledHead(final, head, d.num_classes, d.dropout, nn.Hardswish)
    model = MobileNet(stem_layer, nn.Sequential(*blocks), final_conv, classifier, final)
    init_weights(model)
    return model


# Dropout 0.2 as the paper and torchvision; the head layer (1280 / 1024) is not scaled by width.
@register_model(ModelDescription("mobilenet_v3_large", dropout=0.2))
def mobilenet_v3_large(d: ModelDescription) -> MobileNet:
    """MobileNetV3-Large (Table 1)."""
    return _mobilenet_v3("large", LARGE, d)


@register_model(ModelDescription("mobilenet_v3_small", dropout=0.2))
def mobilenet_v3_small(d: ModelDescription) -> MobileNet:
    """MobileNetV3-Small (Table 2)."""
    return _mobilenet_v3("small", SMALL, d)

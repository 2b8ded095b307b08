"""MobileNetV4 conv-S, conv-M, conv-L (Qin et al., 2024, arXiv:2404.10518).

The tables are the paper's architecture tables (MNv4-Conv-S/M/L) as timm 1.0's
``_gen_mobilenet_v4`` builds them (its ``arch_def`` is the reference where the two differ; the
parameter counts the tests check are timm's). Each row is one block, in network order.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from .base import MobileNet, stride_budget
from .description import ModelDescription
from .layers import (
    ConvNormAct,
    FusedInvertedBottleneck,
    PooledHead,
    UniversalInvertedBottleneck,
    init_weights,
    make_divisible,
)
from .registry import register_model

__all__ = ["mobilenet_v4_conv_small", "mobilenet_v4_conv_medium", "mobilenet_v4_conv_large"]

# Block kinds: a plain conv-BN-ReLU, the fused inverted bottleneck, and the four forms of the
# Universal Inverted Bottleneck (UniversalInvertedBottleneck.FORMS).
CONV, FUSED_IB = "Conv", "FusedIB"
EXTRA_DW, IB, CONVNEXT, FFN = "ExtraDW", "IB", "ConvNext", "FFN"


class Row(NamedTuple):
    """One row of the paper's table: block, DW K1, DW K2, expansion, output channels, stride.

    ``start`` is the depthwise kernel before the expansion (the paper's "DW K1"; 0: none),
    ``kernel`` the middle depthwise kernel ("DW K2"; 0: none) or, for ``Conv`` and ``FusedIB``,
    the full conv's kernel. The paper prints the expanded width; the row keeps the ratio (expanded
    / input), which timm and the official code apply to the already-rounded input width.
    """

    block: str
    start: int
    kernel: int
    expand: float | None  # None for a plain conv
    out: int
    stride: int


# MNv4-Conv-S, after a 3x3 stride-2 conv with 32 channels. The paper prints the first two pairs
# of rows as FusedIB blocks (3x3, expanded 32 and 96, stride 2); timm and the official code build
# each as a 3x3 conv-BN-ReLU then a 1x1 conv-BN-ReLU: the same weights, but with an activation
# after the projection. We follow timm.
# fmt: off
SMALL = [
    #   block     K1 K2 exp   out stride
    Row(CONV,     0, 3, None, 32, 2),    # 112 -> 56 (at 224)
    Row(CONV,     0, 1, None, 32, 1),
    Row(CONV,     0, 3, None, 96, 2),    # 56 -> 28
    Row(CONV,     0, 1, None, 64, 1),
    Row(EXTRA_DW, 5, 5, 3, 96, 2),       # 28 -> 14
    Row(IB,       0, 3, 2, 96, 1),
    Row(IB,       0, 3, 2, 96, 1),
    Row(IB,       0, 3, 2, 96, 1),
    Row(IB,       0, 3, 2, 96, 1),
    Row(CONVNEXT, 3, 0, 4, 96, 1),
    Row(EXTRA_DW, 3, 3, 6, 128, 2),      # 14 -> 7
    Row(EXTRA_DW, 5, 5, 4, 128, 1),
    Row(IB,       0, 5, 4, 128, 1),
    Row(IB,       0, 5, 3, 128, 1),
    Row(IB,       0, 3, 4, 128, 1),
    Row(IB,       0, 3, 4, 128, 1),
]
# fmt: on
# MNv4-Conv-M (the paper's 256x256 model), after a 3x3 stride-2 conv with 32 channels.
# fmt: off
MEDIUM = [
    Row(FUSED_IB, 0, 3, 4, 48, 2),       # 128 -> 64 (at 256)
    Row(EXTRA_DW, 3, 5, 4, 80, 2),       # 64 -> 32
    Row(EXTRA_DW, 3, 3, 2, 80, 1),
    Row(EXTRA_DW, 3, 5, 6, 160, 2),      # 32 -> 16
    Row(EXTRA_DW, 3, 3, 4, 160, 1),
    Row(EXTRA_DW, 3, 3, 4, 160, 1),
    Row(EXTRA_DW, 3, 5, 4, 160, 1),
    Row(EXTRA_DW, 3, 3, 4, 160, 1),
    Row(CONVNEXT, 3, 0, 4, 160, 1),
    Row(FFN,      0, 0, 2, 160, 1),      # timm's comment calls it ExtraDW; its string (a0_k0) is an FFN
    Row(CONVNEXT, 3, 0, 4, 160, 1),
    Row(EXTRA_DW, 5, 5, 6, 256, 2),      # 16 -> 8
    Row(EXTRA_DW, 5, 5, 4, 256, 1),
    Row(EXTRA_DW, 3, 5, 4, 256, 1),
    Row(EXTRA_DW, 3, 5, 4, 256, 1),
    Row(FFN,      0, 0, 4, 256, 1),
    Row(CONVNEXT, 3, 0, 4, 256, 1),
    Row(EXTRA_DW, 3, 5, 2, 256, 1),
    Row(EXTRA_DW, 5, 5, 4, 256, 1),
    Row(FFN,      0, 0, 4, 256, 1),
    Row(FFN,      0, 0, 4, 256, 1),
    Row(CONVNEXT, 5, 0, 2, 256, 1),
]
# fmt: on
# MNv4-Conv-L (the paper's 384x384 model), after a 3x3 stride-2 conv with 24 channels.
# fmt: off
LARGE = [
    Row(FUSED_IB, 0, 3, 4, 48, 2),
    Row(EXTRA_DW, 3, 5, 4, 96, 2),
    Row(EXTRA_DW, 3, 3, 4, 96, 1),
    Row(EXTRA_DW, 3, 5, 4, 192, 2),
    Row(EXTRA_DW, 3, 3, 4, 192, 1),
    Row(EXTRA_DW, 3, 3, 4, 192, 1),
    Row(EXTRA_DW, 3, 3, 4, 192, 1),
    Row(EXTRA_DW, 3, 5, 4, 192, 1),
    Row(EXTRA_DW, 5, 3, 4, 192, 1),
    Row(EXTRA_DW, 5, 3, 4, 192, 1),
    Row(EXTRA_DW, 5, 3, 4, 192, 1),
    Row(EXTRA_DW, 5, 3, 4, 192, 1),
    Row(EXTRA_DW, 5, 3, 4, 192, 1),
    Row(CONVNEXT, 3, 0, 4, 192, 1),
    Row(EXTRA_DW, 5, 5, 4, 512, 2),
    Row(EXTRA_DW, 5, 5, 4, 512, 1),
    Row(EXTRA_DW, 5, 5, 4, 512, 1),
    Row(EXTRA_DW, 5, 5, 4, 512, 1),
    Row(CONVNEXT, 5, 0, 4, 512, 1),
    Row(EXTRA_DW, 5, 3, 4, 512, 1),
    Row(CONVNEXT, 5, 0, 4, 512, 1),
    Row(CONVNEXT, 5, 0, 4, 512, 1),
    Row(EXTRA_DW, 5, 3, 4, 512, 1),
    Row(EXTRA_DW, 5, 5, 4, 512, 1),
    Row(CONVNEXT, 5, 0, 4, 512, 1),
    Row(CONVNEXT, 5, 0, 4, 512, 1),
    Row(CONVNEXT, 5, 0, 4, 512, 1),
]
# fmt: on
STEM_CHANNELS = {"small": 32, "medium": 32, "large": 24}
TABLES = {"small": SMALL, "medium": MEDIUM, "large": LARGE}
# Last rows of every table: 1x1 conv to 960 (scaled by width), pool, 1x1 conv to 1280 with BN and
# ReLU (not scaled: timm's num_features), classifier.
FINAL_CHANNELS = 960
HEAD_CHANNELS = 1280


def _block(row: Row, channels: int, out: int, stride: int) -> nn.Module:
    if row.block == CONV:
        return ConvNormAct(channels, out, row.kernel, stride)
    expanded = make_divisible(channels * row.expand)  # from the rounded input width, as timm
    if row.block == FUSED_IB:
        return FusedInvertedBottleneck(channels, expanded, out, row.kernel, stride)
    block = UniversalInvertedBottleneck(channels, expanded, out, row.start, row.kernel, stride)
    if block.form != row.block:
        raise ValueError(f"table row {row} has the kernels of a {block.form}, not a {row.block}")
    return block


def _mobilenet_v4(variant: str, d: ModelDescription) -> MobileNet:
    strides = stride_budget(d)
    # timm keeps the stem's width below width 1.0 (fix_stem) and scales it above.
    stem_channels = STEM_CHANNELS[variant]
    channels = stem_channels if d.width_mult < 1.0 else make_divisible(stem_channels * d.width_mult)
    # BatchNorm eps 1e-5, momentum 0.1 and ReLU throughout (timm's defaults for the conv models).
    stem = ConvNormAct(3, channels, 3, strides(2))
    blocks = []
    for row in TABLES[variant]:
        out = make_divisible(row.out * d.width_mult)
        blocks.append(_block(row, channels, out, strides(row.stride)))
        channels = out
    final = make_divisible(FINAL_CHANNELS * d.width_mult)
    final_conv = ConvNormAct(channels, final, 1)
    classifier = PooledHead(final, HEAD_CHANNELS, d.num_classes, d.dropout, nn.ReLU, norm=nn.BatchNorm1d)
    model = MobileNet(stem, nn.Sequential(*blocks), final_conv, classifier, final)
    init_weights(model)
    return model


# Dropout 0.2 before the classifier as V2/V3 (timm's builder default is 0; its ImageNet recipes set
# it per run).
@register_model(ModelDescription("mobilenet_v4_conv_small", dropout=0.2))
def mobilenet_v4_conv_small(d: ModelDescription) -> MobileNet:
    """MobileNetV4 conv-S: 3.8M parameters, 0.19G MACs at 224."""
    return _mobilenet_v4("small", d)


@register_model(ModelDescription("mobilenet_v4_conv_medium", dropout=0.2))
def mobilenet_v4_conv_medium(d: ModelDescription) -> MobileNet:
    """MobileNetV4 conv-M: 9.7M parameters, 1.1G MACs at 256."""
    return _mobilenet_v4("medium", d)


@register_model(ModelDescription("mobilenet_v4_conv_large", dropout=0.2))
def mobilenet_v4_conv_large(d: ModelDescription) -> MobileNet:
    """MobileNetV4 conv-L: 32.6M parameters."""
    return _mobilenet_v4("large", d)

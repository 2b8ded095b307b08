"""Building blocks shared by every MobileNet: one definition of each idea.

Module and parameter names follow torchvision's where the blocks coincide (``ConvNormAct`` is a
Sequential of conv, norm, activation; squeeze-excite has ``fc1``/``fc2``), which keeps the
torchvision weight import a renaming of a few prefixes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "make_divisible",
    "ConvNormAct",
    "SqueezeExcite",
    "DepthwiseSeparable",
    "InvertedResidual",
    "UniversalInvertedBottleneck",
    "FusedInvertedBottleneck",
    "PooledHead",
    "StrideBudget",
    "init_weights",
    "batch_norm",
]

Activation = Callable[..., nn.Module]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Rounds a channel count to the nearest multiple of ``divisor``, never below 90% of ``value``.

    The rounding of the official TensorFlow MobileNet code, used for every width-scaled layer.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:  # rounding down must not remove more than 10%
        rounded += divisor
    return rounded


def batch_norm(eps: float = 1e-5, momentum: float = 0.1) -> Callable[[int], nn.BatchNorm2d]:
    """A BatchNorm2d factory with the given epsilon and momentum (PyTorch's momentum convention)."""
    return partial(nn.BatchNorm2d, eps=eps, momentum=momentum)


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm -> activation; ``activation=None`` for a linear layer."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
        activation: Activation | None = nn.ReLU,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=(kernel_size - 1) // 2,
                groups=groups,
                bias=False,
            ),
            norm(out_channels),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al.) as MobileNetV3 uses it (section 5.3): ReLU, hard-sigmoid gate."""

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        activation: Activation = nn.ReLU,
        gate: Activation = nn.Hardsigmoid,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.act = activation(inplace=True)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = gate(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = self.gate(self.fc2(self.act(self.fc1(scale))))
        return x * scale


class DepthwiseSeparable(nn.Module):
    """MobileNetV1's block (Figure 3): 3x3 depthwise conv-BN-act, then 1x1 pointwise conv-BN-act."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
        activation: Activation = nn.ReLU,
    ) -> None:
        super().__init__()
        self.depthwise = ConvNormAct(
            in_channels, in_channels, 3, stride, groups=in_channels, norm=norm, activation=activation
        )
        self.pointwise = ConvNormAct(in_channels, out_channels, 1, norm=norm, activation=activation)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class InvertedResidual(nn.Module):
    """Inverted residual with linear bottleneck (MobileNetV2 Table 1; MobileNetV3 Figure 4).

    1x1 expansion (skipped when ``expanded == in_channels``), kxk depthwise, optional
    squeeze-excite on the expanded features, 1x1 linear projection; identity shortcut when the
    stride is 1 and the channel count is unchanged.
    """

    def __init__(
        self,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        squeeze_channels: int | None = None,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
        activation: Activation = nn.ReLU6,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded_channels != in_channels:
            layers.append(ConvNormAct(in_channels, expanded_channels, 1, norm=norm, activation=activation))
        layers.append(
            ConvNormAct(
                expanded_channels,
                expanded_channels,
                kernel_size,
                stride,
                groups=expanded_channels,
                norm=norm,
                activation=activation,
            )
        )
        if squeeze_channels is not None:
            layers.append(SqueezeExcite(expanded_channels, squeeze_channels))
        layers.append(ConvNormAct(expanded_channels, out_channels, 1, norm=norm, activation=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class UniversalInvertedBottleneck(nn.Module):
    """MobileNetV4's Universal Inverted Bottleneck (UIB; Qin et al., 2024, section 3.1, Figure 4).

    An inverted bottleneck (1x1 expansion, 1x1 linear projection) with two optional depthwise
    convs: one before the expansion (``start_kernel``) and one after it (``middle_kernel``); 0
    leaves one out. Which are present gives the four forms (``form``): ``ExtraDW`` (both), ``IB``
    (middle only: MobileNetV2's block), ``ConvNext`` (start only) and ``FFN`` (neither: two 1x1
    convs). The start depthwise conv is linear (norm, no activation), as in timm and the official
    TensorFlow code; the stride goes to the middle depthwise conv, else to the start one (an FFN
    cannot downsample). Identity shortcut when the stride is 1 and the width unchanged.

    Module names are timm's (``dw_start``, ``pw_exp``, ``dw_mid``, ``pw_proj``), each a
    ``ConvNormAct``; an absent depthwise conv is an ``nn.Identity``. timm's optional squeeze-excite,
    end depthwise conv and layer scale are left out: no conv model of the paper has them.
    """

    FORMS = {(True, True): "ExtraDW", (False, True): "IB", (True, False): "ConvNext", (False, False): "FFN"}

    def __init__(
        self,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        start_kernel: int = 0,
        middle_kernel: int = 3,
        stride: int = 1,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
        activation: Activation = nn.ReLU,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if stride != 1 and not (start_kernel or middle_kernel):
            raise ValueError("a UIB without depthwise convs (FFN) cannot downsample: give it stride 1")
        self.form = self.FORMS[bool(start_kernel), bool(middle_kernel)]
        self.use_residual = stride == 1 and in_channels == out_channels
        self.dw_start: nn.Module = nn.Identity()
        if start_kernel:
            start_stride = 1 if middle_kernel else stride
            self.dw_start = ConvNormAct(
                in_channels, in_channels, start_kernel, start_stride, groups=in_channels, norm=norm, activation=None
            )
        self.pw_exp = ConvNormAct(in_channels, expanded_channels, 1, norm=norm, activation=activation)
        self.dw_mid: nn.Module = nn.Identity()
        if middle_kernel:
            self.dw_mid = ConvNormAct(
                expanded_channels,
                expanded_channels,
                middle_kernel,
                stride,
                groups=expanded_channels,
                norm=norm,
                activation=activation,
            )
        self.pw_proj = ConvNormAct(expanded_channels, out_channels, 1, norm=norm, activation=None)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw_proj(self.dw_mid(self.pw_exp(self.dw_start(x))))
        return x + out if self.use_residual else out


class FusedInvertedBottleneck(nn.Module):
    """The fused inverted bottleneck (FusedIB; EfficientNet-EdgeTPU; the first block of MobileNetV4 conv-M/L).

    The 1x1 expansion and the depthwise conv fused into one full kxk conv (norm, activation), then
    a 1x1 linear projection; identity shortcut when the stride is 1 and the width unchanged.
    Module names: ``conv_exp`` and ``pw_proj`` (timm's ``EdgeResidual``: ``conv_exp``/``bn1``,
    ``conv_pwl``/``bn2``).
    """

    def __init__(
        self,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
        activation: Activation = nn.ReLU,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv_exp = ConvNormAct(
            in_channels, expanded_channels, kernel_size, stride, norm=norm, activation=activation
        )
        self.pw_proj = ConvNormAct(expanded_channels, out_channels, 1, norm=norm, activation=None)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw_proj(self.conv_exp(x))
        return x + out if self.use_residual else out


class PooledHead(nn.Sequential):
    """The head after global pooling of MobileNetV3 and V4 (V3's "efficient last stage").

    The paper's 1x1 conv on the pooled 1x1 map, as a ``Linear`` to ``hidden_features``; then
    (V4) BatchNorm, the activation, dropout and the classifier. Without a norm (V3: the table's
    "NBN") the first layer has a bias; with one it has none. Indices: V3 ``0`` linear, ``1``
    activation, ``2`` dropout, ``3`` classifier (torchvision's); V4 ``0`` linear, ``1`` norm,
    ``2`` activation, ``3`` dropout, ``4`` classifier. The last layer is always the classifier.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        num_classes: int,
        dropout: float,
        activation: Activation,
        norm: Callable[[int], nn.Module] | None = None,
    ) -> None:
        layers: list[nn.Module] = [nn.Linear(in_features, hidden_features, bias=norm is None)]
        if norm is not None:
            layers.append(norm(hidden_features))
        layers += [activation(inplace=True), nn.Dropout(dropout), nn.Linear(hidden_features, num_classes)]
        super().__init__(*layers)


class StrideBudget:
    """Hands out strides in network order, turning the first ``remove`` stride-2 layers into stride 1.

    This is the CIFAR adaptation: on 32x32 inputs, removing the first two downsamplings ends the
    network at a 4x4 map instead of 1x1 (removing three ends at 8x8).
    """

    def __init__(self, remove: int) -> None:
        if remove < 0:
            raise ValueError(f"the number of removed downsamplings must be >= 0, got {remove}")
        self.left = remove

    def __call__(self, stride: int) -> int:
        if stride == 2 and self.left > 0:
            self.left -= 1
            return 1
        return stride


def init_weights(model: nn.Module) -> None:
    """torchvision's initialisation: Kaiming-normal (fan-out) convs, N(0, 0.01) linears, BN 1/0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

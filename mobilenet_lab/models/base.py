"""The uniform model API every MobileNet shares (as timm's): features, head, classifier reset."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .description import ModelDescription
from .layers import StrideBudget

__all__ = ["MobileNet", "stride_budget"]


def stride_budget(description: ModelDescription) -> StrideBudget:
    """The stride budget of a validated description (``ModelDescription.strides_removed``)."""
    return StrideBudget(description.strides_removed)


class MobileNet(nn.Module):
    """A stem, a sequence of blocks, an optional last 1x1 conv, global pooling and a classifier.

    ``forward(x) == forward_head(forward_features(x))``; ``forward_features`` returns the final
    N x C x H x W map before pooling. ``description`` (set by ``create_model``) is the
    :class:`~mobilenet_lab.models.ModelDescription` that recreates the architecture; ``config`` is
    its plain dict (``create_model(**model.config)``).
    """

    def __init__(
        self,
        stem: nn.Module,
        blocks: nn.Sequential,
        final_conv: nn.Module | None,
        classifier: nn.Sequential,
        num_features: int,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = blocks
        self.final_conv = final_conv if final_conv is not None else nn.Identity()
        self.classifier = classifier
        self.num_features = num_features
        self.description: ModelDescription | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The description as a plain dict (empty when not built by ``create_model``)."""
        return self.description.to_dict() if self.description is not None else {}

    @property
    def num_classes(self) -> int:
        return self.classifier[-1].out_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(self.blocks(self.stem(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1)
        return self.classifier(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the last linear layer (fine-tuning to a new class count), N(0, 0.01) init."""
        last = self.classifier[-1]
        fc = nn.Linear(last.in_features, num_classes)
        nn.init.normal_(fc.weight, 0, 0.01)
        nn.init.zeros_(fc.bias)
        self.classifier[-1] = fc
        if self.description is not None:
            self.description = self.description.replace(num_classes=num_classes)

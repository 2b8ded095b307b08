"""Parameter and multiply-accumulate counts (MACs counted by torch.utils.flop_counter)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params", "count_macs"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(model: nn.Module, image_size: int | tuple[int, int] = 224) -> int:
    """Multiply-accumulates of one forward pass on one 3 x H x W image.

    FlopCounterMode counts a multiply-accumulate as two FLOPs (convolutions and matmuls; the
    element-wise activations and BatchNorm, which fold into the convolutions, are not counted),
    so MACs = FLOPs / 2, the convention of the MobileNet papers.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    param = next(model.parameters())
    x = torch.zeros(1, 3, h, w, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2

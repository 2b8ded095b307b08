"""The one normalisation step: images to ``(x - mean) / std`` per channel, in plain torch.

Its own module (torch only, no torchvision, no Lightning) because both the training pipeline
(:mod:`~mobilenet_lab.data.datamodule`) and deployment (:class:`~mobilenet_lab.inference.Classifier`,
which every exported file contains) run it; the CIFAR-100 statistics it is used with are
:data:`~mobilenet_lab.data.cifar100.CIFAR100_MEAN` and ``CIFAR100_STD``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["normalize", "denormalize"]


def normalize(images: Tensor, mean: Tensor | Sequence[float], std: Tensor | Sequence[float]) -> Tensor:
    """uint8 (0..255) or float (0..1) images to a new float32 ``(x - mean) / std`` per channel.

    Matches ``v2.ToDtype(torch.float32, scale=True)`` followed by ``v2.Normalize(mean, std)``.
    The one normalisation of the project: the DataModule applies it to every batch and
    :class:`~mobilenet_lab.inference.Classifier` (hence every exported file) inside its forward.
    The input is never modified; pass ``mean``/``std`` as tensors on the images' device to avoid
    a host-to-device copy per call.
    """
    x = images.to(torch.float32)
    if images.dtype == torch.uint8:
        x = x.div_(255.0)  # a fresh copy: safe in place
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return x.sub(mean_t).div_(std_t)


def denormalize(images: Tensor, mean: Tensor | Sequence[float], std: Tensor | Sequence[float]) -> Tensor:
    """The inverse of :func:`normalize` for float images: ``x * std + mean`` (0..1 RGB again, for display)."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return images.to(torch.float32) * std_t + mean_t

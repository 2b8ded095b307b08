"""Batched, device-side image operations and counter-based randomness for the data pipeline.

Everything here is a small pure function on whole batches (no Python loop over images), so
the training device does the per-pixel work. Randomness is never taken from a process-wide
generator: random parameters are derived from explicit integers with :func:`counter_hash`
(for per-sample draws in the dataset) or from an explicit seed (for per-batch draws), so an
epoch's augmentation depends only on the configured seed, the epoch and the sample index.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from mobilenet_lab.data.normalize import normalize  # re-exported: part of the batch pipeline

__all__ = [
    "counter_hash",
    "derive_seed",
    "crop_flip_params",
    "pad_crop_flip",
    "normalize",
    "resize",
    "sample_erasing_params",
    "erase",
    "BatchMixer",
    "strong_transform",
    "apply_seeded",
]

_MASK64 = 0xFFFF_FFFF_FFFF_FFFF
_MASK63 = 0x7FFF_FFFF_FFFF_FFFF

# Stream ids keep the draws for different purposes independent of each other.
STREAM_SHUFFLE = 1
STREAM_CROP = 2
STREAM_STRONG = 3
STREAM_BATCH = 4
STREAM_SPLIT = 5
STREAM_ERASE = 6
STREAM_MIX = 7


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (a well-mixed bijection, wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _u64(value: int | np.ndarray) -> np.ndarray:
    """Any integer (array) as uint64, negative values wrapped two's-complement style."""
    if isinstance(value, np.ndarray):
        return value.astype(np.int64, copy=False).view(np.uint64) if value.dtype != np.uint64 else value
    return np.array([int(value) & _MASK64], dtype=np.uint64)


def counter_hash(seed: int, epoch: int | np.ndarray, index: int | np.ndarray, stream: int) -> np.ndarray:
    """Hash (seed, stream, epoch, index) to uniformly distributed uint64 values.

    Args:
        seed: The run's seed.
        epoch: Epoch number(s), an int or an int64 array broadcastable with ``index``.
        index: Sample index (or indices).
        stream: Which independent random stream (one of the ``STREAM_*`` constants).

    Returns:
        A uint64 array (at least 1-D) with one value per (epoch, index) pair.
    """
    h = _splitmix64(_u64(seed))
    h = _splitmix64(h ^ _u64(stream))
    h = _splitmix64(h ^ _u64(np.atleast_1d(np.asarray(epoch, dtype=np.int64))))
    return _splitmix64(h ^ _u64(np.atleast_1d(np.asarray(index, dtype=np.int64))))


def derive_seed(seed: int, *values: int) -> int:
    """A 63-bit seed (valid for ``torch.manual_seed``) derived from ``seed`` and more integers."""
    h = _splitmix64(_u64(seed))
    for v in values:
        h = _splitmix64(h ^ _u64(v))
    return int(h[0]) & _MASK63


def crop_flip_params(seed: int, epoch: np.ndarray | int, index: np.ndarray, padding: int = 4) -> np.ndarray:
    """Draw RandomCrop(padding) offsets and horizontal-flip bits for each sample.

    Every offset pair in ``0..2*padding`` and both flip states are equally likely (up to a
    2^-64 modulo bias), like ``RandomCrop(size, padding) + RandomHorizontalFlip()``.

    Returns:
        int64 array N x 3 of (top, left, flip) for the padded image.
    """
    span = np.uint64(2 * padding + 1)
    h = counter_hash(seed, epoch, index, STREAM_CROP)
    top = h % span
    left = (h // span) % span
    flip = (h // (span * span)) % np.uint64(2)
    return np.stack([top, left, flip], axis=1).astype(np.int64)


def pad_crop_flip(images: Tensor, top: Tensor, left: Tensor, flip: Tensor, padding: int = 4) -> Tensor:
    """Zero-pad, crop back to the original size at per-sample offsets, then optionally flip.

    Equivalent, image by image, to ``v2.functional.crop(v2.functional.pad(img, padding), top,
    left, H, W)`` followed by ``horizontal_flip`` where ``flip`` is 1, but done as one gather.

    Args:
        images: N x C x H x W tensor of any dtype (uint8 on the fast path).
        top: N offsets into the padded image, in ``0..2*padding``.
        left: N offsets, in ``0..2*padding``.
        flip: N values; nonzero mirrors the crop horizontally.
        padding: Zero padding on each side.

    Returns:
        N x C x H x W tensor, same dtype and device.
    """
    n, c, h, w = images.shape
    hp, wp = h + 2 * padding, w + 2 * padding
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    device = images.device
    rows = top.to(device).view(n, 1) + torch.arange(h, device=device)  # N x H
    col = torch.arange(w, device=device)
    left = left.to(device).view(n, 1)
    cols = torch.where(flip.to(device).view(n, 1) != 0, left + (w - 1 - col), left + col)  # N x W
    index = (rows.unsqueeze(2) * wp + cols.unsqueeze(1)).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, hp * wp).gather(2, index).view(n, c, h, w)


def resize(images: Tensor, size: int) -> Tensor:
    """Bilinear, antialiased resize of a float N x C x H x W batch to ``size`` x ``size``."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def sample_erasing_params(
    n: int,
    height: int,
    width: int,
    p: float,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    attempts: int = 10,
) -> Tensor:
    """Per-sample boxes with the distribution of ``v2.RandomErasing(p, scale, ratio)``.

    torchvision draws one box per call (the same for a whole batch), so this draws N
    independent boxes at once with its algorithm: erase with probability ``p``; try up to
    ``attempts`` (area, aspect) pairs and take the first that fits; no box if none fits.

    Args:
        n: Batch size.
        height: Image height.
        width: Image width.
        p: Probability of erasing each image.
        generator: CPU generator (drawing on the CPU keeps results identical across devices).
        scale: Range of the erased area as a fraction of the image.
        ratio: Range of the box aspect ratio (h / w), sampled log-uniformly.
        attempts: Tries per sample, as torchvision.

    Returns:
        int64 CPU tensor N x 4 of (top, left, h, w); h = w = 0 where nothing is erased.
    """
    area = height * width
    apply = torch.rand(n, generator=generator) < p
    erase_area = area * torch.empty(n, attempts).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.log(torch.tensor(ratio))
    aspect = torch.exp(torch.empty(n, attempts).uniform_(float(log_ratio[0]), float(log_ratio[1]), generator=generator))
    h = torch.round(torch.sqrt(erase_area * aspect)).long()
    w = torch.round(torch.sqrt(erase_area / aspect)).long()
    fits = (h < height) & (w < width)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first attempt that fits
    h = h.gather(1, first).squeeze(1)
    w = w.gather(1, first).squeeze(1)
    keep = apply & fits.any(dim=1)
    h = torch.where(keep, h, 0)
    w = torch.where(keep, w, 0)
    u = torch.rand(n, 2, generator=generator)
    top = torch.floor(u[:, 0] * (height - h + 1)).long()
    left = torch.floor(u[:, 1] * (width - w + 1)).long()
    return torch.stack([top, left, h, w], dim=1)


def erase(images: Tensor, boxes: Tensor, value: float = 0.0) -> Tensor:
    """Fill one box per image with ``value`` (0 on normalised images = the data set mean).

    Args:
        images: N x C x H x W float batch.
        boxes: N x 4 (top, left, h, w) from :func:`sample_erasing_params`.
        value: Fill value.
    """
    n, _, h, w = images.shape
    boxes = boxes.to(images.device)
    top, left, bh, bw = boxes.unbind(1)
    rows = torch.arange(h, device=images.device).view(1, h)
    cols = torch.arange(w, device=images.device).view(1, w)
    in_rows = (rows >= top.view(n, 1)) & (rows < (top + bh).view(n, 1))
    in_cols = (cols >= left.view(n, 1)) & (cols < (left + bw).view(n, 1))
    mask = (in_rows.unsqueeze(2) & in_cols.unsqueeze(1)).unsqueeze(1)  # N x 1 x H x W
    return images.masked_fill(mask, value)


class BatchMixer:
    """MixUp and/or CutMix (torchvision v2) on a batch, seeded explicitly.

    With both alphas > 0 each batch uses one of the two, chosen with probability 1/2.
    Labels come out as N x num_classes float soft targets whose rows sum to 1, so the
    model's loss must accept probabilities (``F.cross_entropy`` does).

    Args:
        num_classes: Number of classes for the one-hot encoding.
        mixup_alpha: Beta(alpha, alpha) parameter of MixUp; 0 disables it.
        cutmix_alpha: Beta(alpha, alpha) parameter of CutMix; 0 disables it.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> None:
        ops: list[v2.Transform] = []
        if cutmix_alpha > 0:
            ops.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        if mixup_alpha > 0:
            ops.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if not ops:
            raise ValueError("BatchMixer needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.op: v2.Transform = ops[0] if len(ops) == 1 else v2.RandomChoice(ops)

    def __call__(self, images: Tensor, labels: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        """Mix ``images`` (N x C x H x W float) and int64 ``labels`` (N) with randomness from ``seed``."""
        # The v2 ops draw lambda, the box and the choice from the global CPU generator (even for
        # CUDA batches); fork_rng isolates that so only `seed` decides, whatever ran before.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            images, labels = self.op(images, labels)
        return images, labels.to(torch.float32)


def strong_transform(kind: str, size: int = 32, padding: int = 4) -> v2.Compose:
    """Per-sample uint8 pipeline: RandomCrop(size, padding) + flip + TrivialAugmentWide/AutoAugment.

    Args:
        kind: ``"trivialaugment"`` or ``"autoaugment"`` (AutoAugment with the CIFAR10 policy).
        size: Crop size.
        padding: Zero padding of the crop.
    """
    if kind == "trivialaugment":
        policy: v2.Transform = v2.TrivialAugmentWide()
    elif kind == "autoaugment":
        policy = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    else:
        raise ValueError(f"unknown strong augmentation {kind!r}")
    return v2.Compose([v2.RandomCrop(size, padding=padding), v2.RandomHorizontalFlip(), policy])


def apply_seeded(transform: v2.Transform, image: Tensor, seed: int) -> Tensor:
    """Run a (random) v2 transform with its global-RNG draws fixed by ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)

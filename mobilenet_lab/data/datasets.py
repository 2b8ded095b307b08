"""CIFAR-100 training and evaluation data sets, the batches they build, and the train/val split.

The images are decoded once (:mod:`~mobilenet_lab.data.cifar100`) into a uint8 tensor; a data set
builds a whole batch per DataLoader call (``__getitems__``, one gather). Per-image work is either
none (standard path: the crop/flip offsets are drawn here, from (seed, epoch, index), and applied
on the device by the DataModule) or torchvision v2 per sample here, in the loader workers (strong
path: TrivialAugment/AutoAugment).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

from mobilenet_lab.data import augment as aug
from mobilenet_lab.data.cifar100 import IMAGE_SHAPE
from mobilenet_lab.errors import UserError

__all__ = [
    "CROP_PADDING",
    "AUGMENTS",
    "STRONG_AUGMENTS",
    "TrainBatch",
    "EvalBatch",
    "CIFAR100TrainDataset",
    "CIFAR100EvalDataset",
    "collate_batched",
    "split_indices",
]

CROP_PADDING = 4
AugmentName = Literal["standard", "trivialaugment", "autoaugment", "none"]
AUGMENTS = ("standard", "trivialaugment", "autoaugment", "none")
STRONG_AUGMENTS = ("trivialaugment", "autoaugment")
"""The per-sample (worker-side) policies; the others are batched on the device."""


class TrainBatch(NamedTuple):
    """A training batch as the DataLoader yields it (before ``on_after_batch_transfer``).

    Attributes:
        images: uint8 N x 3 x 32 x 32 (fast path: not yet cropped/flipped; strong path: done),
            or None when the training images live on the device (gathered there by key).
        labels: int64 N.
        aug: int64 N x 4: (key, top, left, flip); key = epoch * len(dataset) + index, and
            (top, left, flip) the crop offsets into the 4-padded image and the flip bit
            (identity (4, 4, 0) where the crop is not applied on the device).
        seed: Seed for this batch's on-device randomness (erasing, mixup/cutmix), derived
            from (seed, epoch, first index).
    """

    images: Tensor | None
    labels: Tensor
    aug: Tensor
    seed: int


class EvalBatch(NamedTuple):
    """A validation/test batch as the DataLoader yields it: uint8 images and int64 labels."""

    images: Tensor
    labels: Tensor


class CIFAR100TrainDataset(Dataset[Any]):
    """Training images addressed by epoch-tagged keys (see :class:`EpochKeySampler`).

    ``dataset[key]`` returns one sample (image, label, aug row); the DataLoader uses
    :meth:`__getitems__`, which returns a whole :class:`TrainBatch` with one tensor gather.

    Args:
        images: uint8 N x 3 x 32 x 32.
        labels: int64 N.
        seed: The run's seed; all randomness derives from (seed, epoch, index).
        augment: ``"standard"`` (crop/flip offsets drawn here, applied on the device),
            ``"none"``, or ``"trivialaugment"``/``"autoaugment"`` (v2 per sample, here).
    """

    def __init__(self, images: Tensor, labels: Tensor, seed: int = 0, augment: AugmentName = "standard") -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        self.images = images
        self.labels = labels
        self.seed = seed
        self.augment = augment
        #: Leave images out of batches: the data module gathers them from its copy on the device.
        self.images_on_device = False
        self._strong = (
            aug.strong_transform(augment, IMAGE_SHAPE[1], CROP_PADDING) if augment in STRONG_AUGMENTS else None
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int) -> tuple[Tensor, Tensor, Tensor]:
        batch = self.__getitems__([key])
        return batch.images[0], batch.labels[0], batch.aug[0]

    def __getitems__(self, keys: Sequence[int]) -> TrainBatch:
        """Build a batch from epoch-tagged keys (called by the DataLoader with a batch's keys)."""
        keys_np = np.asarray(keys, dtype=np.int64)
        epoch, index = np.divmod(keys_np, len(self))
        index_t = torch.from_numpy(index)
        if self.augment == "standard":
            params = aug.crop_flip_params(self.seed, epoch, index, CROP_PADDING)
        else:
            params = np.tile(np.array([CROP_PADDING, CROP_PADDING, 0], dtype=np.int64), (len(keys_np), 1))
        if self.images_on_device:
            images = None
        elif self._strong is None:
            images = self.images[index_t]
        else:
            seeds = aug.counter_hash(self.seed, epoch, index, aug.STREAM_STRONG)
            with _single_thread():
                images = torch.stack(
                    [
                        aug.apply_seeded(self._strong, self.images[i], int(s) & 0x7FFF_FFFF_FFFF_FFFF)
                        for i, s in zip(index.tolist(), seeds)
                    ]
                )
        aug_t = torch.from_numpy(np.concatenate([keys_np[:, None], params], axis=1))
        seed = aug.derive_seed(self.seed, aug.STREAM_BATCH, int(epoch[0]), int(index[0]))
        return TrainBatch(images, self.labels[index_t], aug_t, seed)


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run tiny per-image ops on one intra-op thread (10x faster than several that contend).

    DataLoader workers already run single-threaded; this matters for ``num_workers=0``.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class CIFAR100EvalDataset(Dataset[tuple[Tensor, Tensor]]):
    """Validation/test images by plain index; :meth:`__getitems__` gathers a batch at once."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> EvalBatch:
        index_t = torch.as_tensor(indices, dtype=torch.int64)
        return EvalBatch(self.images[index_t], self.labels[index_t])


def collate_batched(batch: Any) -> Any:
    """DataLoader ``collate_fn``: batches built by ``__getitems__`` pass through, lists are collated."""
    if isinstance(batch, (TrainBatch, EvalBatch)):
        return batch
    return default_collate(batch)


def split_indices(n: int, val_size: int | float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded train/validation split of ``range(n)``; both index lists sorted.

    Args:
        n: Number of training images.
        val_size: Count, or fraction in (0, 1) (at least one image).
        seed: Split seed.

    Returns:
        (train indices, validation indices), int64 tensors.

    Raises:
        UserError: The validation set would take every training image.
    """
    count = val_size if isinstance(val_size, int) else max(1, round(val_size * n))
    if count >= n:
        raise UserError(
            f"val_size={val_size} takes {count} of the {n} training images and leaves none to train on;"
            " set --data.val_size lower (0 validates on the test set)"
        )
    g = torch.Generator().manual_seed(aug.derive_seed(seed, aug.STREAM_SPLIT))
    perm = torch.randperm(n, generator=g)
    return perm[count:].sort().values, perm[:count].sort().values


def check_int(name: str, value: Any, minimum: int | None) -> None:
    """UserError unless ``value`` is an int (not bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be an integer, got {value!r}; set --data.{name}")
    if minimum is not None and value < minimum:
        raise UserError(f"{name} must be >= {minimum}, got {value}; set --data.{name}")

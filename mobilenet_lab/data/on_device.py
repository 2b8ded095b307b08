"""The on-device half of the CIFAR-100 data module: each batch finished on the training device.

Training batches (:class:`~mobilenet_lab.data.datasets.TrainBatch`) get crop + flip, normalisation,
resizing, random erasing and mixup/cutmix there, every draw seeded from the batch's keys;
evaluation and predict batches are normalised and resized only. With the training images resident on
the device (a GPU by default) a batch arrives as keys alone and is gathered there.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mobilenet_lab.data import augment as aug
from mobilenet_lab.data.cifar100 import CIFAR100_MEAN, CIFAR100_STD
from mobilenet_lab.data.datasets import CROP_PADDING, STRONG_AUGMENTS, TrainBatch

__all__ = ["OnDeviceBatches"]


class OnDeviceBatches:
    """Mixed into :class:`~mobilenet_lab.data.datamodule.CIFAR100DataModule` (Lightning's
    ``on_after_batch_transfer`` hook). Reads the module's ``augment``, ``image_size``,
    ``random_erasing``, ``mixer``, ``images_on_device`` and ``train_dataset``."""

    augment: str
    image_size: int
    random_erasing: float
    mixer: Any
    images_on_device: bool | None
    train_dataset: Any

    def _init_on_device(self) -> None:
        self._device_images: tuple[torch.device, Tensor] | None = None
        self._stats: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def _use_device_images(self, trainer: Any) -> bool:
        if self.augment in STRONG_AUGMENTS:
            return False
        if self.images_on_device is not None:
            return self.images_on_device
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _images_on(self, device: torch.device) -> Tensor:
        """The training images on ``device`` (copied there once)."""
        assert self.train_dataset is not None
        if self._device_images is None or self._device_images[0] != device:
            self._device_images = (device, self.train_dataset.images.to(device))
        return self._device_images[1]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int = 0) -> Any:
        """Finish the batch on the training device.

        Training (:class:`TrainBatch`): crop + flip (standard), normalise, resize, random
        erasing, mixup/cutmix, all seeded from the batch's keys. Evaluation and predict
        batches (``(images, labels or names)``): normalise and resize only.

        Returns:
            ``(images, targets)``: float32 contiguous N x 3 x image_size x image_size, and
            int64 labels, float N x 100 soft targets (mixup/cutmix), or the file names.
        """
        if isinstance(batch, TrainBatch):
            return self._train_transform(batch)
        images, second = batch
        return self._to_model_input(images).contiguous(), second

    def _to_model_input(self, images: Tensor) -> Tensor:
        mean, std = self._mean_std(images.device)
        return aug.resize(aug.normalize(images, mean, std), self.image_size)

    def _mean_std(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._stats:
            self._stats[device] = (
                torch.tensor(CIFAR100_MEAN, device=device).view(1, 3, 1, 1),
                torch.tensor(CIFAR100_STD, device=device).view(1, 3, 1, 1),
            )
        return self._stats[device]

    def _train_transform(self, batch: TrainBatch) -> tuple[Tensor, Tensor]:
        images, labels, params, seed = batch
        if images is None:  # resident on the device: gather by key (key = epoch * N + index)
            resident = self._images_on(params.device)
            images = resident.index_select(0, params[:, 0].remainder(len(resident)))
        if self.augment == "standard":
            images = aug.pad_crop_flip(images, params[:, 1], params[:, 2], params[:, 3], CROP_PADDING)
        x = self._to_model_input(images)
        if self.random_erasing > 0:
            g = torch.Generator().manual_seed(aug.derive_seed(seed, aug.STREAM_ERASE))
            boxes = aug.sample_erasing_params(len(x), x.shape[-2], x.shape[-1], self.random_erasing, g)
            x = aug.erase(x, boxes)
        targets: Tensor = labels
        if self.mixer is not None:
            x, targets = self.mixer(x, labels, aug.derive_seed(seed, aug.STREAM_MIX))
        return x.contiguous(), targets

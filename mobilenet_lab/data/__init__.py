"""Data side of mobilenet_lab: CIFAR-100 reading, the Lightning DataModule, augmentation, predict images.

Importing this package does not import Lightning; :class:`CIFAR100DataModule` (and the other
names of :mod:`mobilenet_lab.data.cifar100`) are loaded on first access.
"""

from __future__ import annotations

from typing import Any

from mobilenet_lab.data.safe_pickle import safe_load

__all__ = [
    "CIFAR100DataModule",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "NUM_CLASSES",
    "EpochKeySampler",
    "TrainBatch",
    "load_split",
    "load_class_names",
    "ImageFolderPredictDataset",
    "safe_load",
]

_CIFAR = {"CIFAR100DataModule", "CIFAR100_MEAN", "CIFAR100_STD", "NUM_CLASSES", "EpochKeySampler", "TrainBatch",
          "load_split", "load_class_names"}


def __getattr__(name: str) -> Any:
    # Lazy so that `import mobilenet_lab.data.safe_pickle` (e.g. from a checkpoint tool) stays light.
    if name in _CIFAR:
        from mobilenet_lab.data import cifar100

        return getattr(cifar100, name)
    if name == "ImageFolderPredictDataset":
        from mobilenet_lab.data.predict import ImageFolderPredictDataset

        return ImageFolderPredictDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

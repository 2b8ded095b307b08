"""Data side of mobilenet_lab, one room per purpose.

- ``cifar100.py``: the reader (archive layout, validation, download, mean/std; no Lightning)
- ``normalize.py``: the one normalisation step (training batches and deployed models)
- ``sampler.py``: ``EpochKeySampler``, epoch-tagged keys, resumable mid-epoch
- ``datasets.py``: the training/evaluation data sets, their batches, the train/val split
- ``datamodule.py``: ``CIFAR100DataModule`` (Lightning), on-device augmentation of each batch
- ``loader.py`` (resumable train loader), ``augment.py`` (batched ops), ``predict.py``, ``safe_pickle.py``

Importing this package does not import Lightning; the names below are loaded on first access.
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


def __getattr__(name: str) -> Any:
    # Lazy so that `import mobilenet_lab.data.safe_pickle` (e.g. from a checkpoint tool) stays light.
    if name == "ImageFolderPredictDataset":
        from mobilenet_lab.data.predict import ImageFolderPredictDataset

        return ImageFolderPredictDataset
    if name in __all__:
        from mobilenet_lab.data import cifar100  # the reader, which also resolves the training-side names

        return getattr(cifar100, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

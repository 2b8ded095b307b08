"""CIFAR-100 reader: the official python archive, read, validated and decoded, without Lightning.

Layout read: ``<data_dir>/cifar-100-python/{train,test,meta}``, the pickles of the official
``cifar-100-python.tar.gz`` (dict keys may be str or bytes; subsets and re-packed copies work),
through the restricted unpickler of :mod:`~mobilenet_lab.data.safe_pickle`. A split decodes to one
uint8 N x 3 x 32 x 32 tensor. :func:`download_cifar100` fetches the archive with torchvision,
which checks its md5 (:data:`ARCHIVE_MD5`) before extracting it.

This module imports torch and numpy only, so export, inference and the tools read CIFAR-100
without loading Lightning; the training side lives in :mod:`~mobilenet_lab.data.sampler`,
:mod:`~mobilenet_lab.data.datasets` and :mod:`~mobilenet_lab.data.datamodule`. Their names are
still importable from here (``from mobilenet_lab.data.cifar100 import CIFAR100DataModule``):
they load on first access.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from mobilenet_lab.data.safe_pickle import safe_load
from mobilenet_lab.errors import DataError

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "NUM_CLASSES",
    "IMAGE_SHAPE",
    "ARCHIVE_FOLDER",
    "ARCHIVE_MD5",
    "ARCHIVE_URL",
    "CIFAR100Split",
    "missing_files",
    "missing_message",
    "load_split",
    "load_class_names",
    "download_cifar100",
]

CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4865, 0.4409)
"""Per-channel mean of the CIFAR-100 training images (RGB, 0..1)."""
CIFAR100_STD: tuple[float, float, float] = (0.2673, 0.2564, 0.2762)
"""Per-channel standard deviation of the CIFAR-100 training images (RGB, 0..1)."""
NUM_CLASSES = 100
IMAGE_SHAPE = (3, 32, 32)
ARCHIVE_FOLDER = "cifar-100-python"
ARCHIVE_FILENAME = "cifar-100-python.tar.gz"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
SPLIT_FILES = ("train", "test", "meta")

# Names that moved to the training-side modules; resolved lazily so this module stays Lightning-free.
_MOVED = {
    "EpochKeySampler": "sampler",
    "TrainBatch": "datasets",
    "EvalBatch": "datasets",
    "CIFAR100TrainDataset": "datasets",
    "CIFAR100EvalDataset": "datasets",
    "collate_batched": "datasets",
    "split_indices": "datasets",
    "CROP_PADDING": "datasets",
    "CIFAR100DataModule": "datamodule",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"mobilenet_lab.data.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CIFAR100Split(NamedTuple):
    """One decoded split: uint8 images N x 3 x 32 x 32 (RGB) and int64 fine labels N."""

    images: Tensor
    labels: Tensor


def _split_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / ARCHIVE_FOLDER


def missing_files(data_dir: str | os.PathLike[str], files: Sequence[str] = SPLIT_FILES) -> list[Path]:
    """The files of ``<data_dir>/cifar-100-python/`` among ``files`` that do not exist."""
    folder = _split_dir(data_dir)
    return [folder / name for name in files if not (folder / name).is_file()]


def missing_message(data_dir: str | os.PathLike[str], missing: Sequence[Path]) -> str:
    """One line: which CIFAR-100 files are missing, where to put the official archive, how to download it."""
    names = ", ".join(p.name for p in missing)
    return (
        f"CIFAR-100 not found: {names} missing in {_split_dir(data_dir)}/; put the extracted official"
        f" archive there ({ARCHIVE_FILENAME}, md5 {ARCHIVE_MD5}, unpacks to {ARCHIVE_FOLDER}/), or set"
        f" download: true (--data.download true) to fetch it from {ARCHIVE_URL}"
    )


def _str_keys(obj: Any, source: Path) -> dict[str, Any]:
    """The pickled dict with bytes keys (Python 2 / encoding="bytes" copies) turned into str."""
    if not isinstance(obj, dict):
        raise DataError(
            f"{source} holds a {type(obj).__name__}, expected the dict of the CIFAR-100 python archive;"
            " replace the file with the official one"
        )
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _require(d: dict[str, Any], key: str, source: Path) -> Any:
    if key not in d:
        found = ", ".join(sorted(map(str, d))) or "none"
        raise DataError(
            f"{source} has no {key!r} entry (found: {found}); it is not a CIFAR-100 python archive"
            " file, replace it with the official one"
        )
    return d[key]


def _decode_split(d: dict[str, Any], source: Path) -> CIFAR100Split:
    """Validate ``data``/``fine_labels`` of one split and decode them to tensors."""
    data = _require(d, "data", source)
    labels_raw = _require(d, "fine_labels", source)
    if not isinstance(data, np.ndarray):
        raise DataError(f"{source}: 'data' is a {type(data).__name__}, expected a numpy uint8 array N x 3072")
    if data.dtype != np.uint8:
        raise DataError(f"{source}: 'data' has dtype {data.dtype}, expected uint8 (pixel values 0..255)")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{source}: 'data' has shape {tuple(data.shape)}, expected N x 3072 (32x32 RGB planes per row)")
    try:
        labels = np.asarray(labels_raw)
    except Exception:  # ragged or odd objects
        labels = np.asarray([], dtype=object)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(
            f"{source}: 'fine_labels' must be a flat list of integers, got {type(labels_raw).__name__}"
            f" of dtype {labels.dtype} and shape {labels.shape}"
        )
    if len(labels) != len(data):
        raise DataError(f"{source}: {len(data)} images but {len(labels)} fine_labels; the file is damaged, replace it")
    if len(data) == 0:
        raise DataError(f"{source} contains no images; replace it with the official file")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= NUM_CLASSES:
        raise DataError(
            f"{source}: fine_labels range {low}..{high}, expected 0..{NUM_CLASSES - 1}; this is not CIFAR-100"
        )
    # One reshape of the whole array (rows are R, G, B planes of 32x32), copied so the tensor
    # owns writable, contiguous memory whatever the unpickler produced.
    images = torch.from_numpy(np.ascontiguousarray(data.reshape(len(data), *IMAGE_SHAPE)).copy())
    return CIFAR100Split(images, torch.from_numpy(labels.astype(np.int64)))


def load_split(data_dir: str | os.PathLike[str], split: Literal["train", "test"]) -> CIFAR100Split:
    """Read, validate and decode ``<data_dir>/cifar-100-python/<split>``.

    Raises:
        DataError: The file is missing (the message says where to put the data and how to
            download it), truncated, refused by the safe unpickler or not in the expected layout.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    missing = missing_files(data_dir, (split,))
    if missing:
        raise DataError(missing_message(data_dir, missing))
    source = _split_dir(data_dir) / split
    return _decode_split(_str_keys(safe_load(source), source), source)


def load_class_names(data_dir: str | os.PathLike[str]) -> list[str]:
    """The 100 fine class names from ``<data_dir>/cifar-100-python/meta``, in label order."""
    missing = missing_files(data_dir, ("meta",))
    if missing:
        raise DataError(missing_message(data_dir, missing))
    source = _split_dir(data_dir) / "meta"
    names = _require(_str_keys(safe_load(source), source), "fine_label_names", source)
    if not isinstance(names, (list, tuple)) or len(names) != NUM_CLASSES:
        count = len(names) if isinstance(names, (list, tuple)) else type(names).__name__
        raise DataError(f"{source}: 'fine_label_names' should list {NUM_CLASSES} names, got {count}")
    out = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    if not all(isinstance(n, str) for n in out):
        raise DataError(f"{source}: 'fine_label_names' must be strings")
    return out


def download_cifar100(data_dir: str | os.PathLike[str]) -> None:
    """Download and extract the official archive into ``data_dir`` with torchvision (md5-checked).

    Raises:
        DataError: The download or extraction failed (one line: what failed and how to get
            the archive by hand).
    """
    from torchvision.datasets import CIFAR100
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(
            CIFAR100.url, download_root=os.fspath(data_dir), filename=CIFAR100.filename, md5=CIFAR100.tgz_md5
        )
    except Exception as exc:  # URLError, HTTPError, OSError, tarfile errors, md5 mismatch ...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(
            f"downloading CIFAR-100 from {CIFAR100.url} failed ({type(exc).__name__}: {reason}); download"
            f" {ARCHIVE_FILENAME} (md5 {ARCHIVE_MD5}) by hand and extract it into {os.fspath(data_dir)}/"
        ) from None
    still = missing_files(data_dir)
    if still:
        raise DataError(missing_message(data_dir, still))

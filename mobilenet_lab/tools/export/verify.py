"""Checking an exported file against PyTorch: tolerances, logit gaps, top-1 agreement, accuracy, inputs.

Every exported file is run in its runtime (an ONNX file in ONNX Runtime, and in OpenCV's DNN when
``cv2`` is installed) on the same inputs as ``load_model``'s module: random [0, 1] images for the
fp32 check, CIFAR-100 images (read with the Lightning-free reader, :mod:`mobilenet_lab.data.cifar100`)
for int8 calibration and the accuracy report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

__all__ = [
    "FP32_RTOL",
    "CHECK_BATCHES",
    "INT8_MIN_AGREEMENT",
    "relative_gap",
    "top1_agreement",
    "accuracy",
    "random_images",
    "batches",
    "torch_logits",
    "cifar100_images",
    "data_available",
]

FP32_RTOL = 1e-4
"""Largest allowed max |runtime - PyTorch| / max |PyTorch logit| for fp32 files."""
CHECK_BATCHES = (1, 7)
"""Batch sizes of the post-export runtime check (random [0, 1] inputs)."""
INT8_MIN_AGREEMENT = 0.8
"""Smallest top-1 agreement int8 vs fp32 accepted on real test images."""


def relative_gap(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (0 when both are all-zero)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    gap = float(np.abs(actual - expected).max()) if expected.size else 0.0
    return gap / scale if scale > 0 else gap


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows whose argmax is the same in ``a`` and ``b``."""
    return float((np.asarray(a).argmax(1) == np.asarray(b).argmax(1)).mean())


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax is the label."""
    return float((np.asarray(logits).argmax(1) == np.asarray(labels)).mean())


def random_images(n: int, size: int, seed: int) -> np.ndarray:
    """Seeded uniform [0, 1] float32 images N x 3 x S x S (the input contract, no data set needed)."""
    return np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32)


def batches(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Contiguous chunks of at most ``batch_size`` images."""
    for i in range(0, len(images), batch_size):
        yield np.ascontiguousarray(images[i : i + batch_size])


def torch_logits(model: torch.nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The PyTorch reference: ``model``'s logits under ``inference_mode``, batch by batch."""
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(b)).float().numpy() for b in batches(images, batch_size)])


def cifar100_images(
    data_dir: str | os.PathLike, split: str, count: int | None, image_size: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images of a CIFAR-100 split as the model input: float32 [0, 1] N x 3 x S x S, + labels.

    ``train`` draws a seeded random subset (calibration); ``test`` takes the first ``count``
    (all when None).

    Raises:
        DataError: the data set is missing or damaged (one line saying where it was looked for).
    """
    from ...data.augment import resize
    from ...data.cifar100 import load_split

    images, labels = load_split(data_dir, split)  # type: ignore[arg-type]
    n = len(labels) if count is None else min(int(count), len(labels))
    if split == "train":
        index = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n]
    else:
        index = torch.arange(n)
    x = images[index].to(torch.float32).div_(255.0)
    x = resize(x, image_size)
    return x.numpy(), labels[index].numpy()


def data_available(data_dir: str | os.PathLike) -> bool:
    """Whether the CIFAR-100 train and test files are in ``data_dir``."""
    from ...data.cifar100 import missing_files

    return not missing_files(data_dir, ("train", "test"))

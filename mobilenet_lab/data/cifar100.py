"""CIFAR-100: reading the official python archive, and the Lightning DataModule.

Layout read: ``<data_dir>/cifar-100-python/{train,test,meta}``, the pickles of the official
``cifar-100-python.tar.gz`` (dict keys may be str or bytes; subsets and re-packed copies work).
The images are decoded once into a uint8 N x 3 x 32 x 32 tensor; per-image work is either
none (fast path: crop/flip offsets are drawn in the data set and applied on the device in
:meth:`CIFAR100DataModule.on_after_batch_transfer`) or torchvision v2 per sample in the
DataLoader workers (strong path: TrivialAugment/AutoAugment).

Reproducibility: the training sampler yields *epoch-tagged keys* ``epoch * len(dataset) +
index`` and every random draw (order, crop, flip, strong policy, erasing, mixup/cutmix) is
derived from (seed, epoch, index) or (seed, epoch, first index of the batch). An epoch is thus
a pure function of (seed, epoch), whatever the process RNG state, the worker count or where a
run was resumed (the train loader is a :class:`~mobilenet_lab.data.loader.ResumableLoader`).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any, Iterator, Literal, NamedTuple, Sequence

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch.utils.data._utils.collate import default_collate

from mobilenet_lab.data import augment as aug
from mobilenet_lab.data.loader import ResumableLoader
from mobilenet_lab.data.safe_pickle import safe_load
from mobilenet_lab.errors import DataError, UserError

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "NUM_CLASSES",
    "ARCHIVE_FOLDER",
    "ARCHIVE_MD5",
    "ARCHIVE_URL",
    "CIFAR100Split",
    "TrainBatch",
    "EvalBatch",
    "missing_files",
    "load_split",
    "load_class_names",
    "download_cifar100",
    "EpochKeySampler",
    "CIFAR100TrainDataset",
    "CIFAR100EvalDataset",
    "CIFAR100DataModule",
]

CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4865, 0.4409)
"""Per-channel mean of the CIFAR-100 training images (RGB, 0..1)."""
CIFAR100_STD: tuple[float, float, float] = (0.2673, 0.2564, 0.2762)
"""Per-channel standard deviation of the CIFAR-100 training images (RGB, 0..1)."""
NUM_CLASSES = 100
IMAGE_SHAPE = (3, 32, 32)
CROP_PADDING = 4
ARCHIVE_FOLDER = "cifar-100-python"
ARCHIVE_FILENAME = "cifar-100-python.tar.gz"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
SPLIT_FILES = ("train", "test", "meta")
AugmentName = Literal["standard", "trivialaugment", "autoaugment", "none"]
_AUGMENTS = ("standard", "trivialaugment", "autoaugment", "none")
_STRONG = ("trivialaugment", "autoaugment")


class CIFAR100Split(NamedTuple):
    """One decoded split: uint8 images N x 3 x 32 x 32 (RGB) and int64 fine labels N."""

    images: Tensor
    labels: Tensor


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


# ----------------------------------------------------------------------------------------------
# Reading and validating the official layout
# ----------------------------------------------------------------------------------------------


def _split_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / ARCHIVE_FOLDER


def missing_files(data_dir: str | os.PathLike[str], files: Sequence[str] = SPLIT_FILES) -> list[Path]:
    """The files of ``<data_dir>/cifar-100-python/`` among ``files`` that do not exist."""
    folder = _split_dir(data_dir)
    return [folder / name for name in files if not (folder / name).is_file()]


def _missing_message(data_dir: str | os.PathLike[str], missing: Sequence[Path]) -> str:
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
        raise DataError(
            f"{source}: 'data' has shape {tuple(data.shape)}, expected N x 3072 (32x32 RGB planes per row)"
        )
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
        raise DataError(
            f"{source}: {len(data)} images but {len(labels)} fine_labels; the file is damaged, replace it"
        )
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
        raise DataError(_missing_message(data_dir, missing))
    source = _split_dir(data_dir) / split
    return _decode_split(_str_keys(safe_load(source), source), source)


def load_class_names(data_dir: str | os.PathLike[str]) -> list[str]:
    """The 100 fine class names from ``<data_dir>/cifar-100-python/meta``, in label order."""
    missing = missing_files(data_dir, ("meta",))
    if missing:
        raise DataError(_missing_message(data_dir, missing))
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
        raise DataError(_missing_message(data_dir, still))


# ----------------------------------------------------------------------------------------------
# Sampler and data sets
# ----------------------------------------------------------------------------------------------


class EpochKeySampler(DistributedSampler):
    """A shuffling DistributedSampler that yields epoch-tagged keys and can resume mid-epoch.

    Yields ``epoch * len(dataset) + index``; the order depends only on (seed, epoch) (and the
    replica's rank), never on the process RNG. Lightning calls :meth:`set_epoch` each epoch and,
    because this is a ``DistributedSampler``, never replaces it.

    Args:
        dataset: The data set (only its length is used).
        num_replicas: Number of processes (DDP world size).
        rank: This process's rank.
        shuffle: Shuffle each epoch (else in order).
        seed: Shuffle seed, shared by all replicas.
        drop_last: As DistributedSampler: drop the tail instead of padding to divide evenly.
        batch_size: The DataLoader's batch size, used by :meth:`resume_from`.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        batch_size: int = 1,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.dataset_len = len(dataset)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self._resume: tuple[int, int] | None = None  # (epoch, samples to skip), consumed by __iter__

    def resume_from(self, epoch: int, batches_done: int) -> None:
        """Make the next iteration of ``epoch`` start after its first ``batches_done`` batches.

        Sets the epoch, and skips ``batches_done * batch_size`` of this rank's samples the next
        time the sampler is iterated with that epoch (once; later iterations are whole epochs).
        ``len()`` stays the full epoch length, so Lightning's restored batch counter plus the
        remaining batches add up to the usual number of batches per epoch.

        Args:
            epoch: The interrupted epoch (Lightning's ``trainer.current_epoch`` at the crash).
            batches_done: Batches of that epoch already trained on (per rank).
        """
        if epoch < 0 or batches_done < 0:
            raise ValueError(f"epoch and batches_done must be >= 0, got {epoch}, {batches_done}")
        skip = batches_done * self.batch_size
        if skip > self.num_samples:
            raise ValueError(
                f"batches_done={batches_done} x batch_size={self.batch_size} exceeds the {self.num_samples}"
                " samples of an epoch on this rank"
            )
        self.set_epoch(epoch)
        self._resume = (epoch, skip)

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's data set indices of ``epoch`` in order (no skipping, no key tagging)."""
        n = self.dataset_len
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(aug.derive_seed(self.seed, aug.STREAM_SHUFFLE, epoch))
            indices = torch.randperm(n, generator=g).tolist()
        else:
            indices = list(range(n))
        if not self.drop_last:
            padding = self.total_size - len(indices)
            if padding > 0:
                indices += (indices * math.ceil(padding / len(indices)))[:padding]
        else:
            indices = indices[: self.total_size]
        return indices[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        start = 0
        if self._resume is not None and self._resume[0] == epoch:
            start = self._resume[1]
            self._resume = None
        base = epoch * self.dataset_len
        return iter([base + i for i in self.epoch_indices(epoch)[start:]])


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
        if augment not in _AUGMENTS:
            raise ValueError(f"augment must be one of {_AUGMENTS}, got {augment!r}")
        self.images = images
        self.labels = labels
        self.seed = seed
        self.augment = augment
        #: Leave images out of batches: the data module gathers them from its copy on the device.
        self.images_on_device = False
        self._strong = aug.strong_transform(augment, IMAGE_SHAPE[1], CROP_PADDING) if augment in _STRONG else None

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


# ----------------------------------------------------------------------------------------------
# DataModule
# ----------------------------------------------------------------------------------------------


class CIFAR100DataModule(L.LightningDataModule):
    """CIFAR-100 for Lightning: deterministic, resumable, with augmentation on the training device.

    Batches reach the model, after :meth:`on_after_batch_transfer`, as ``(images, targets)``:
    float32 contiguous N x 3 x image_size x image_size, normalised with the CIFAR-100
    mean/std; targets are int64 class indices N, or, when ``mixup_alpha`` or ``cutmix_alpha``
    is > 0, float N x 100 soft targets summing to 1 for training batches (the model's loss
    must accept probabilities, as ``F.cross_entropy`` does). Predict batches are ``(images,
    file_names)``. If the LightningModule overrides ``on_after_batch_transfer`` itself,
    Lightning calls that one instead and this pipeline is skipped.

    Args:
        data_dir: Folder that holds (or will hold) ``cifar-100-python/{train,test,meta}``.
        download: Download the official archive with torchvision if the files are missing.
        val_size: Validation images held out of the training set: a count, or a fraction
            in (0, 1); the split is fixed by ``seed``. 0 validates on the test set.
        batch_size: Training batch size per device.
        eval_batch_size: Validation/test/predict batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes. 0 is right for the fast path (images are in
            memory and per-image work happens on the device); use a few for the strong path.
        pin_memory: Pin host memory for faster copies to the GPU.
        image_size: Side length the model sees; batches are resized on the device (bilinear,
            antialiased) when it is not 32.
        augment: Training augmentation: ``standard`` (random crop 32 with 4 zero padding and
            horizontal flip, batched on the device), ``trivialaugment`` or ``autoaugment``
            (crop, flip and TrivialAugmentWide / AutoAugment CIFAR10 policy, per sample in
            the workers), or ``none``.
        random_erasing: Probability of random erasing per training image (after
            normalisation, erased to 0 = the mean colour); 0 disables it.
        mixup_alpha: MixUp Beta(alpha, alpha) parameter; 0 disables MixUp.
        cutmix_alpha: CutMix Beta(alpha, alpha) parameter; 0 disables CutMix. With both set,
            each batch uses one of them at random.
        seed: Seed of the validation split, the sample order and all augmentation; an epoch
            depends only on (seed, epoch).
        predict_dir: Folder of image files for ``predict`` (every file in it, not recursive).
        images_on_device: Keep the training images (uint8, 150 MB) in the training device's
            memory and gather each batch there, so a step moves only its keys and labels
            (standard/none augmentation). Default: on when the trainer runs on a GPU.
    """

    num_classes: int = NUM_CLASSES

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        val_size: int | float = 5000,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        image_size: int = 32,
        augment: Literal["standard", "trivialaugment", "autoaugment", "none"] = "standard",
        random_erasing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        seed: int = 0,
        predict_dir: str | None = None,
        images_on_device: bool | None = None,
    ) -> None:
        super().__init__()
        _check_int("batch_size", batch_size, minimum=1)
        if eval_batch_size is not None:
            _check_int("eval_batch_size", eval_batch_size, minimum=1)
        _check_int("num_workers", num_workers, minimum=0)
        _check_int("image_size", image_size, minimum=8)
        _check_int("seed", seed, minimum=None)
        if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
            raise UserError(f"val_size must be an image count or a fraction, got {val_size!r}; set --data.val_size")
        if isinstance(val_size, int) and not 0 <= val_size < 50_000:
            raise UserError(f"val_size must be a count in 0..49999 or a fraction in (0, 1), got {val_size}; set --data.val_size")
        if isinstance(val_size, float) and not 0.0 <= val_size < 1.0:
            raise UserError(f"val_size as a fraction must be in [0, 1), got {val_size}; set --data.val_size")
        if augment not in _AUGMENTS:
            raise UserError(f"augment must be one of {', '.join(_AUGMENTS)}, got {augment!r}; set --data.augment")
        if not 0.0 <= float(random_erasing) <= 1.0:
            raise UserError(f"random_erasing is a probability in [0, 1], got {random_erasing}; set --data.random_erasing")
        for name, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if not (float(value) >= 0.0 and math.isfinite(float(value))):
                raise UserError(f"{name} must be >= 0 (0 disables it), got {value}; set --data.{name}")
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.download = download
        self.val_size = val_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.image_size = image_size
        self.augment = augment
        self.random_erasing = float(random_erasing)
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.seed = seed
        self.predict_dir = predict_dir
        if images_on_device and augment in _STRONG:
            raise UserError(f"images_on_device needs augment standard or none (augment={augment} runs per image "
                            "in the loader workers); set --data.images_on_device false")
        self.images_on_device = images_on_device
        self._device_images: tuple[torch.device, Tensor] | None = None
        self.mixer = (
            aug.BatchMixer(NUM_CLASSES, self.mixup_alpha, self.cutmix_alpha)
            if self.mixup_alpha > 0 or self.cutmix_alpha > 0
            else None
        )
        self._class_names: list[str] | None = None
        self._train_split: CIFAR100Split | None = None
        self._test_split: CIFAR100Split | None = None
        self.train_dataset: CIFAR100TrainDataset | None = None
        self.val_dataset: CIFAR100EvalDataset | None = None
        self.test_dataset: CIFAR100EvalDataset | None = None
        self._train_sampler: EpochKeySampler | None = None
        self._stats: dict[torch.device, tuple[Tensor, Tensor]] = {}

    # -- metadata ------------------------------------------------------------------------------

    @property
    def class_names(self) -> list[str]:
        """The 100 fine class names (read from ``meta`` on first use; no ``setup`` needed)."""
        if self._class_names is None and not missing_files(self.data_dir, ["meta"]):
            self._class_names = load_class_names(self.data_dir)
        return self._class_names or []

    @property
    def mean(self) -> tuple[float, float, float]:
        """Normalisation mean (RGB, 0..1) applied in :meth:`on_after_batch_transfer`."""
        return CIFAR100_MEAN

    @property
    def std(self) -> tuple[float, float, float]:
        """Normalisation standard deviation (RGB, 0..1)."""
        return CIFAR100_STD

    # -- Lightning hooks -----------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Download the archive when files are missing and ``download`` is set (rank 0 only)."""
        trainer = self._trainer_or_none()
        if trainer is not None and trainer.predicting:
            return  # predict reads predict_dir only
        missing = missing_files(self.data_dir)
        if not missing:
            return
        if not self.download:
            raise DataError(_missing_message(self.data_dir, missing))
        download_cifar100(self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        """Decode the splits needed by ``stage`` (fit/validate/test/predict) and build the data sets."""
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            train = self._load("train")
            n = len(train.labels)
            if self.val_size == 0:
                self.train_dataset = CIFAR100TrainDataset(train.images, train.labels, self.seed, self.augment)
                test = self._load("test")
                self.val_dataset = CIFAR100EvalDataset(test.images, test.labels)
            else:
                train_idx, val_idx = split_indices(n, self.val_size, self.seed)
                self.train_dataset = CIFAR100TrainDataset(
                    train.images[train_idx], train.labels[train_idx], self.seed, self.augment
                )
                self.val_dataset = CIFAR100EvalDataset(train.images[val_idx], train.labels[val_idx])
                self._train_split = None  # the subsets hold copies; free the full set
        if stage in (None, "test") and self.test_dataset is None:
            test = self._load("test")
            self.test_dataset = CIFAR100EvalDataset(test.images, test.labels)

    def _load(self, split: Literal["train", "test"]) -> CIFAR100Split:
        cached = self._train_split if split == "train" else self._test_split
        if cached is None:
            cached = load_split(self.data_dir, split)
            if split == "train":
                self._train_split = cached
            else:
                self._test_split = cached
        return cached

    def _loader_kwargs(self) -> dict[str, Any]:
        return dict(
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_batched,
            # Each loader draws its iterator seed from its own generator, not the global RNG:
            # creating an iterator (every epoch, every validation) must not shift dropout's draws,
            # or a resumed run would diverge from an uninterrupted one.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader[Any]:
        """Shuffled, epoch-keyed training batches (:class:`TrainBatch`), incomplete last batch dropped."""
        if self.train_dataset is None:
            self.setup("fit")
        assert self.train_dataset is not None
        trainer = self._trainer_or_none()
        num_replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = EpochKeySampler(
            self.train_dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=self.seed,
            batch_size=self.batch_size,
        )
        self._train_sampler = sampler
        self.train_dataset.images_on_device = self._use_device_images(trainer)
        # Lightning checkpoints this loader's position and restores it on resume (mid-epoch exact).
        return ResumableLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            # Drop the incomplete batch (BatchNorm must never see a batch of 1) unless a tiny
            # data set has less than one batch per rank, where dropping would leave nothing.
            drop_last=sampler.num_samples >= self.batch_size,
            **self._loader_kwargs(),
        )

    def val_dataloader(self) -> DataLoader[Any]:
        """Validation batches in order (the held-out part of train, or the test set if val_size=0)."""
        if self.val_dataset is None:
            self.setup("validate")
        return self._eval_loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader[Any]:
        """Test batches in order."""
        if self.test_dataset is None:
            self.setup("test")
        return self._eval_loader(self.test_dataset)

    def predict_dataloader(self) -> DataLoader[Any]:
        """Batches of ``(uint8 images, file names)`` from ``predict_dir``, in file-name order."""
        from mobilenet_lab.data.predict import ImageFolderPredictDataset

        if not self.predict_dir:
            raise UserError("no images to predict: set --data.predict_dir to a folder of image files")
        dataset = ImageFolderPredictDataset(self.predict_dir, image_size=IMAGE_SHAPE[1])
        return DataLoader(  # images are decoded here, batch by batch (in the workers if any)
            dataset,
            batch_size=self.eval_batch_size,
            shuffle=False,
            collate_fn=dataset.collate,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def _eval_loader(self, dataset: Dataset[Any] | None) -> DataLoader[Any]:
        assert dataset is not None
        return DataLoader(dataset, batch_size=self.eval_batch_size, shuffle=False, drop_last=False, **self._loader_kwargs())

    def _trainer_or_none(self) -> Any:
        return getattr(self, "trainer", None)

    def _use_device_images(self, trainer: Any) -> bool:
        if self.augment in _STRONG:
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

    @property
    def train_sampler(self) -> EpochKeySampler | None:
        """The sampler of the most recently created train loader (None before ``train_dataloader``)."""
        return self._train_sampler

    # -- on-device transforms --------------------------------------------------------------------

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
        x = images.to(torch.float32).div_(255.0).sub_(mean).div_(std)
        return aug.resize(x, self.image_size)

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


def _check_int(name: str, value: Any, minimum: int | None) -> None:
    """UserError unless ``value`` is an int (not bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be an integer, got {value!r}; set --data.{name}")
    if minimum is not None and value < minimum:
        raise UserError(f"{name} must be >= {minimum}, got {value}; set --data.{name}")

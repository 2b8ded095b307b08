"""``CIFAR100DataModule``: CIFAR-100 for Lightning, deterministic, resumable, augmented on the device.

It reads the archive with :mod:`~mobilenet_lab.data.cifar100`, serves
:class:`~mobilenet_lab.data.datasets.CIFAR100TrainDataset` through an
:class:`~mobilenet_lab.data.sampler.EpochKeySampler` and a
:class:`~mobilenet_lab.data.loader.ResumableLoader`, and finishes each batch on the training device
(:meth:`CIFAR100DataModule.on_after_batch_transfer`: crop/flip, normalise, resize, erasing,
mixup/cutmix). Every random draw derives from (seed, epoch, index) or (seed, epoch, first index of
the batch), so an epoch is a pure function of (seed, epoch), which makes exact resume possible.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from mobilenet_lab.data import augment as aug
from mobilenet_lab.data.cifar100 import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGE_SHAPE,
    NUM_CLASSES,
    CIFAR100Split,
    download_cifar100,
    load_class_names,
    load_split,
    missing_files,
    missing_message,
)
from mobilenet_lab.data.datasets import (
    AUGMENTS,
    STRONG_AUGMENTS,
    CIFAR100EvalDataset,
    CIFAR100TrainDataset,
    check_int,
    collate_batched,
    split_indices,
)
from mobilenet_lab.data.loader import ResumableLoader
from mobilenet_lab.data.on_device import OnDeviceBatches
from mobilenet_lab.data.sampler import EpochKeySampler
from mobilenet_lab.errors import DataError, UserError

__all__ = ["CIFAR100DataModule"]


class CIFAR100DataModule(OnDeviceBatches, L.LightningDataModule):
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
        check_int("batch_size", batch_size, minimum=1)
        if eval_batch_size is not None:
            check_int("eval_batch_size", eval_batch_size, minimum=1)
        check_int("num_workers", num_workers, minimum=0)
        check_int("image_size", image_size, minimum=8)
        check_int("seed", seed, minimum=None)
        if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
            raise UserError(f"val_size must be an image count or a fraction, got {val_size!r}; set --data.val_size")
        if isinstance(val_size, int) and not 0 <= val_size < 50_000:
            raise UserError(
                f"val_size must be a count in 0..49999 or a fraction in (0, 1), got {val_size}; set --data.val_size"
            )
        if isinstance(val_size, float) and not 0.0 <= val_size < 1.0:
            raise UserError(f"val_size as a fraction must be in [0, 1), got {val_size}; set --data.val_size")
        if augment not in AUGMENTS:
            raise UserError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}; set --data.augment")
        if not 0.0 <= float(random_erasing) <= 1.0:
            raise UserError(
                f"random_erasing is a probability in [0, 1], got {random_erasing}; set --data.random_erasing"
            )
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
        if images_on_device and augment in STRONG_AUGMENTS:
            raise UserError(
                f"images_on_device needs augment standard or none (augment={augment} runs per image "
                "in the loader workers); set --data.images_on_device false"
            )
        self.images_on_device = images_on_device
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
        self._init_on_device()

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
            raise DataError(missing_message(self.data_dir, missing))
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
            self.train_dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=self.seed,
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
        return DataLoader(
            dataset, batch_size=self.eval_batch_size, shuffle=False, drop_last=False, **self._loader_kwargs()
        )

    def _trainer_or_none(self) -> Any:
        return getattr(self, "trainer", None)

    @property
    def train_sampler(self) -> EpochKeySampler | None:
        """The sampler of the most recently created train loader (None before ``train_dataloader``)."""
        return self._train_sampler

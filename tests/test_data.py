"""The DataModule, the epoch-keyed sampler, resume-skip and DDP sharding."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_arrays, write_cifar_archive
from lightning.fabric.utilities.types import _Stateful

from mobilenet_lab.data.augment import pad_crop_flip
from mobilenet_lab.data.cifar100 import ARCHIVE_MD5, CIFAR100_MEAN, CIFAR100_STD, load_class_names, load_split
from mobilenet_lab.data.datamodule import CIFAR100DataModule
from mobilenet_lab.data.datasets import TrainBatch, split_indices
from mobilenet_lab.data.sampler import EpochKeySampler
from mobilenet_lab.errors import DataError, UserError

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------
# Missing data, download, class names
# ------------------------------------------------------------------------------------------------


def test_missing_data_without_download_says_where_and_how(tmp_path: Path) -> None:
    dm = CIFAR100DataModule(data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "cifar-100-python") in message
    assert "--data.download true" in message and ARCHIVE_MD5 in message
    assert "\n" not in message
    with pytest.raises(DataError, match="download"):
        dm.setup("fit")
    # Without the data set there are no class names to read (predict then takes them from the
    # checkpoint); the property must not fail.
    assert dm.class_names == []


def test_download_failure_is_one_line_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.utils as tv_utils

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    dm = CIFAR100DataModule(data_dir=str(tmp_path), download=True)
    with pytest.raises(DataError, match=r"downloading CIFAR-100 from https://.* failed .*by hand") as info:
        dm.prepare_data()
    assert "\n" not in str(info.value)


def test_prepare_data_does_not_download_when_files_exist(tiny_cifar: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.utils as tv_utils

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fail)
    CIFAR100DataModule(data_dir=str(tiny_cifar), download=True).prepare_data()


def test_class_names_before_setup(tiny_cifar: Path) -> None:
    dm = CIFAR100DataModule(data_dir=str(tiny_cifar))
    assert dm.num_classes == 100
    assert dm.class_names[:2] == ["class_00", "class_01"] and len(dm.class_names) == 100
    assert dm.train_dataset is None  # class names did not need setup


# ------------------------------------------------------------------------------------------------
# Arguments and the validation split
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an integer"),
        ({"eval_batch_size": -1}, "eval_batch_size"),
        ({"val_size": 50000}, "val_size"),
        ({"val_size": -1}, "val_size"),
        ({"val_size": 1.0}, r"fraction must be in \[0, 1\)"),
        ({"val_size": True}, "val_size"),
        ({"image_size": 4}, "image_size must be >= 8"),
        ({"random_erasing": 1.5}, "random_erasing"),
        ({"mixup_alpha": -0.1}, "mixup_alpha"),
        ({"cutmix_alpha": float("nan")}, "cutmix_alpha"),
        ({"augment": "randaugment"}, "augment must be one of"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_invalid_arguments_raise_user_error(kwargs: dict, expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        CIFAR100DataModule(**kwargs)


def test_val_split_sizes_and_determinism(tiny_cifar: Path) -> None:
    dm = CIFAR100DataModule(data_dir=str(tiny_cifar), val_size=40, seed=3)
    dm.setup("fit")
    assert len(dm.train_dataset) == 360 and len(dm.val_dataset) == 40
    dm_frac = CIFAR100DataModule(data_dir=str(tiny_cifar), val_size=0.25, seed=3)
    dm_frac.setup("fit")
    assert len(dm_frac.train_dataset) == 300 and len(dm_frac.val_dataset) == 100
    # Train and validation are disjoint and cover the set; same seed -> same split.
    train_idx, val_idx = split_indices(400, 40, seed=3)
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(400))
    assert torch.equal(split_indices(400, 40, seed=3)[1], val_idx)
    assert not torch.equal(split_indices(400, 40, seed=4)[1], val_idx)
    full = load_split(tiny_cifar, "train")
    assert torch.equal(dm.val_dataset.labels, full.labels[val_idx])
    # val_size=0 validates on the test set and trains on all 400.
    dm0 = CIFAR100DataModule(data_dir=str(tiny_cifar), val_size=0)
    dm0.setup("fit")
    assert len(dm0.train_dataset) == 400 and len(dm0.val_dataset) == 200
    with pytest.raises(UserError, match="leaves none to train on"):
        CIFAR100DataModule(data_dir=str(tiny_cifar), val_size=400).setup("fit")


# ------------------------------------------------------------------------------------------------
# Sampler: determinism, resume-skip, DDP sharding
# ------------------------------------------------------------------------------------------------


def _epoch_batches(dm: CIFAR100DataModule, epoch: int, limit: int | None = None) -> list[TrainBatch]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(itertools.islice(loader, limit))


def _model_batches(dm: CIFAR100DataModule, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [dm.on_after_batch_transfer(b, 0) for b in _epoch_batches(dm, epoch)]


def _dm(data_dir: Path, **kwargs: object) -> CIFAR100DataModule:
    kwargs.setdefault("val_size", 0)
    kwargs.setdefault("batch_size", 32)
    dm = CIFAR100DataModule(data_dir=str(data_dir), **kwargs)  # type: ignore[arg-type]
    dm.setup("fit")
    return dm


def test_same_seed_and_epoch_give_same_batches_regardless_of_global_rng(tiny_cifar: Path) -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    a = _model_batches(_dm(tiny_cifar, seed=7, random_erasing=0.5, mixup_alpha=0.2, cutmix_alpha=1.0), epoch=2)
    torch.manual_seed(999)
    torch.rand(1000)
    b = _model_batches(_dm(tiny_cifar, seed=7, random_erasing=0.5, mixup_alpha=0.2, cutmix_alpha=1.0), epoch=2)
    assert len(a) == 12  # 400 // 32, last incomplete batch dropped
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_different_epoch_or_seed_changes_order_and_augmentation(tiny_cifar: Path) -> None:
    dm = _dm(tiny_cifar, seed=7)
    e0, e1 = _epoch_batches(dm, 0), _epoch_batches(dm, 1)
    other_seed = _epoch_batches(_dm(tiny_cifar, seed=8), 0)
    keys0 = torch.cat([b.aug[:, 0] for b in e0])
    keys1 = torch.cat([b.aug[:, 0] for b in e1])
    assert torch.equal(keys0 // 400, torch.zeros_like(keys0)) and torch.equal(keys1 // 400, torch.ones_like(keys1))
    assert not torch.equal(keys0, keys1 - 400)  # a different order
    assert not torch.equal(keys0, torch.cat([b.aug[:, 0] for b in other_seed]))
    # Same image index in two epochs gets (almost always) different crop/flip parameters.
    params0 = {int(k) % 400: tuple(p.tolist()) for b in e0 for k, p in zip(b.aug[:, 0], b.aug[:, 1:])}
    params1 = {int(k) % 400: tuple(p.tolist()) for b in e1 for k, p in zip(b.aug[:, 0], b.aug[:, 1:])}
    common = params0.keys() & params1.keys()
    assert sum(params0[i] != params1[i] for i in common) > 0.9 * len(common)


def test_augmentation_independent_of_worker_count(tiny_cifar: Path) -> None:
    a = _model_batches(_dm(tiny_cifar, seed=5, random_erasing=0.5), epoch=1)
    b = _model_batches(_dm(tiny_cifar, seed=5, random_erasing=0.5, num_workers=2), epoch=1)
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("batches_done", [0, 1, 5, 12])
def test_restored_loader_yields_exact_tail_of_the_epoch(tiny_cifar: Path, batches_done: int) -> None:
    full = _model_batches(_dm(tiny_cifar, seed=11, random_erasing=0.3, cutmix_alpha=1.0), epoch=3)
    # The interrupted run: its loader's state after `batches_done` batches of epoch 3.
    before = _dm(tiny_cifar, seed=11, random_erasing=0.3, cutmix_alpha=1.0).train_dataloader()
    before.sampler.set_epoch(3)
    consumed = list(itertools.islice(before, batches_done))
    state = before.state_dict()
    assert state == {"epoch": 3, "batches_done": batches_done} and len(consumed) == batches_done
    # The resumed process: a fresh loader, a different global RNG state, the saved state.
    dm = _dm(tiny_cifar, seed=11, random_erasing=0.3, cutmix_alpha=1.0)
    torch.manual_seed(0)
    loader = dm.train_dataloader()
    assert isinstance(loader, _Stateful)  # Lightning saves and restores it (no "not resumable" warning)
    iterator = iter(loader)  # Lightning creates the iterator before restoring the state and setting the epoch
    loader.load_state_dict(state)
    loader.sampler.set_epoch(3)
    assert len(loader) == len(full)  # full epoch length, Lightning's restored counter adds up
    tail = [dm.on_after_batch_transfer(b, 0) for b in iterator]
    assert len(tail) == len(full) - batches_done
    for (xa, ya), (xb, yb) in zip(full[batches_done:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert loader.state_dict() == {"epoch": 3, "batches_done": len(full)}
    # The restore is consumed: the next epoch is whole.
    loader.sampler.set_epoch(4)
    assert len(list(loader)) == len(full)


def test_epoch_end_state_restores_nothing(tiny_cifar: Path) -> None:
    dm = _dm(tiny_cifar, seed=1)
    loader = dm.train_dataloader()
    expected = [b.aug[:, 0] for b in _epoch_batches(_dm(tiny_cifar, seed=1), 3)]
    loader.load_state_dict({"epoch": 2, "batches_done": len(loader)})  # checkpoint at the end of epoch 2
    loader.sampler.set_epoch(3)
    got = [b.aug[:, 0] for b in loader]
    assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(expected, got))
    with pytest.raises(ValueError, match="exceeds"):
        dm.train_sampler.resume_from(0, 100)


def test_ddp_sharding_covers_epoch_without_overlap(tiny_cifar: Path) -> None:
    dataset = _dm(tiny_cifar).train_dataset
    shards = []
    for rank in range(2):
        sampler = EpochKeySampler(dataset, num_replicas=2, rank=rank, seed=3, batch_size=16)
        sampler.set_epoch(5)
        shards.append(list(sampler))
    assert len(shards[0]) == len(shards[1]) == 200
    assert set(shards[0]).isdisjoint(shards[1])
    assert sorted(shards[0] + shards[1]) == [5 * 400 + i for i in range(400)]
    # Uneven split: padded like DistributedSampler, so both ranks run the same number of batches.
    odd = torch.utils.data.Subset(dataset, range(399))
    a, b = (list(EpochKeySampler(odd, num_replicas=2, rank=r, seed=3)) for r in range(2))
    assert len(a) == len(b) == 200 and set(a) | set(b) == set(range(399))


def test_ddp_resume_skip_per_rank(tiny_cifar: Path) -> None:
    dataset = _dm(tiny_cifar).train_dataset
    for rank in range(2):
        full = EpochKeySampler(dataset, num_replicas=2, rank=rank, seed=3, batch_size=16)
        full.set_epoch(1)
        resumed = EpochKeySampler(dataset, num_replicas=2, rank=rank, seed=3, batch_size=16)
        resumed.resume_from(1, 4)
        assert list(resumed) == list(full)[64:]


def test_tiny_dataset_keeps_incomplete_batch(tmp_path: Path) -> None:
    data_dir = write_cifar_archive(tmp_path, tiny_arrays(1, seed=0))
    dm = CIFAR100DataModule(data_dir=str(data_dir), val_size=0, batch_size=256)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 1 and len(batches[0].labels) == 100


# ------------------------------------------------------------------------------------------------
# Batches through on_after_batch_transfer
# ------------------------------------------------------------------------------------------------


def test_train_and_eval_batches_are_normalised_float32(tiny_cifar: Path) -> None:
    dm = _dm(tiny_cifar, val_size=100, batch_size=50)
    raw = next(iter(dm.train_dataloader()))
    assert isinstance(raw, TrainBatch) and raw.images.dtype == torch.uint8 and raw.images.shape == (50, 3, 32, 32)
    x, y = dm.on_after_batch_transfer(raw, 0)
    assert x.dtype == torch.float32 and x.shape == (50, 3, 32, 32) and x.is_contiguous()
    assert y.dtype == torch.int64 and torch.equal(y, raw.labels)
    val = next(iter(dm.val_dataloader()))
    assert len(val[0]) == 50 and val[0].dtype == torch.uint8
    xv, yv = dm.on_after_batch_transfer(val, 0)
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(xv, (val[0].float() / 255 - mean) / std)
    assert torch.equal(yv, val[1])
    # Evaluation is sequential and deterministic.
    assert torch.equal(torch.cat([b[1] for b in dm.val_dataloader()]), dm.val_dataset.labels)


def test_standard_augment_is_crop_and_flip_of_the_source_image(tiny_cifar: Path) -> None:
    dm = _dm(tiny_cifar, batch_size=16)
    raw = next(iter(dm.train_dataloader()))
    images = dm.on_after_batch_transfer(raw, 0)[0]
    source = dm.train_dataset.images
    for k, (key, top, left, flip) in enumerate(raw.aug.tolist()):
        assert 0 <= top <= 8 and 0 <= left <= 8 and flip in (0, 1)
        padded = torch.nn.functional.pad(source[key % 400], (4, 4, 4, 4))
        crop = padded[:, top : top + 32, left : left + 32]
        if flip:
            crop = crop.flip(-1)
        expected = dm.on_after_batch_transfer((crop[None], torch.zeros(1, dtype=torch.long)), 0)[0][0]
        torch.testing.assert_close(images[k], expected)


def test_image_size_64_resizes(tiny_cifar: Path) -> None:
    dm = _dm(tiny_cifar, image_size=64, batch_size=8, val_size=8)
    x, _ = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32 and x.is_contiguous()
    xv, _ = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert xv.shape == (8, 3, 64, 64)


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.4, 0.0), (0.0, 1.0), (0.2, 1.0)])
def test_mixup_cutmix_soft_targets(tiny_cifar: Path, mixup: float, cutmix: float) -> None:
    dm = _dm(tiny_cifar, mixup_alpha=mixup, cutmix_alpha=cutmix, batch_size=32)
    for raw in list(dm.train_dataloader())[:4]:
        x, y = dm.on_after_batch_transfer(raw, 0)
        assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32
        assert y.shape == (32, 100) and y.dtype == torch.float32
        torch.testing.assert_close(y.sum(1), torch.ones(32))
        # Mass only on the sample's own class and its partner's (the batch rolled by one).
        own = y[torch.arange(32), raw.labels]
        partner = y[torch.arange(32), raw.labels.roll(1)]
        same = raw.labels == raw.labels.roll(1)
        torch.testing.assert_close(torch.where(same, own, own + partner), torch.ones(32))
    # Evaluation batches are untouched by mixing.
    _, yv = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert yv.dtype == torch.int64


def test_random_erasing_in_training_only(tiny_cifar: Path) -> None:
    dm = _dm(tiny_cifar, random_erasing=1.0, batch_size=64, val_size=64)
    plain = _dm(tiny_cifar, random_erasing=0.0, batch_size=64, val_size=64)
    raw = next(iter(dm.train_dataloader()))
    x, _ = dm.on_after_batch_transfer(raw, 0)
    x0, _ = plain.on_after_batch_transfer(raw, 0)
    erased = (x != x0).any(1)  # N x H x W
    assert erased.flatten(1).any(1).float().mean() > 0.9  # p=1: (nearly) every image gets a box
    assert torch.all(x[(x != x0)] == 0)  # erased to 0 (the mean) after normalisation
    val = next(iter(dm.val_dataloader()))
    assert torch.equal(dm.on_after_batch_transfer(val, 0)[0], plain.on_after_batch_transfer(val, 0)[0])


@pytest.mark.parametrize("augment", ["trivialaugment", "autoaugment"])
def test_strong_augment_is_deterministic_per_seed_epoch(tiny_cifar: Path, augment: str) -> None:
    torch.manual_seed(1)
    a = _epoch_batches(_dm(tiny_cifar, augment=augment, batch_size=50, seed=2), 1, limit=2)
    torch.manual_seed(2)
    b = _epoch_batches(_dm(tiny_cifar, augment=augment, batch_size=50, seed=2), 1, limit=2)
    c = _epoch_batches(_dm(tiny_cifar, augment=augment, batch_size=50, seed=2), 2, limit=1)
    for ba, bb in zip(a, b):
        assert torch.equal(ba.images, bb.images) and ba.images.dtype == torch.uint8
    assert not torch.equal(a[0].images, c[0].images)
    # The policy changed the pixels beyond what crop/flip alone explain for most images.
    source = _dm(tiny_cifar).train_dataset.images[a[0].aug[:, 0] % 400]
    grid = torch.cartesian_prod(torch.arange(9), torch.arange(9), torch.arange(2))  # 162 crop/flip variants
    explained = 0
    for img, src in zip(a[0].images, source):
        variants = pad_crop_flip(src.expand(162, 3, 32, 32), grid[:, 0], grid[:, 1], grid[:, 2])
        explained += bool((variants == img).flatten(1).all(1).any())
    assert explained < 25  # of 50; crop/flip alone would explain all 50
    x, _ = _dm(tiny_cifar, augment=augment).on_after_batch_transfer(a[0], 0)
    assert x.shape == (50, 3, 32, 32) and x.dtype == torch.float32


def test_none_augment_returns_source_images(tiny_cifar: Path) -> None:
    dm = _dm(tiny_cifar, augment="none", batch_size=20)
    raw = next(iter(dm.train_dataloader()))
    assert torch.equal(raw.images, dm.train_dataset.images[raw.aug[:, 0] % 400])
    x, _ = dm.on_after_batch_transfer(raw, 0)
    plain = dm.on_after_batch_transfer((raw.images, raw.labels), 0)[0]
    assert torch.equal(x, plain)


def test_predict_dataloader_needs_predict_dir(tiny_cifar: Path) -> None:
    with pytest.raises(UserError, match="set --data.predict_dir"):
        CIFAR100DataModule(data_dir=str(tiny_cifar)).predict_dataloader()


def test_lightning_fit_uses_our_sampler_and_pipeline(tiny_cifar: Path, tmp_path: Path) -> None:
    """A real Trainer: batches reach training_step normalised, in the sampler's (seed, epoch) order."""
    import lightning as L

    seen: list[tuple[int, torch.Tensor]] = []

    class Probe(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3 * 32 * 32, 100)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            x, y = batch
            assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
            seen.append((self.current_epoch, y.clone()))
            return torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
            x, y = batch
            assert x.dtype == torch.float32

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = CIFAR100DataModule(data_dir=str(tiny_cifar), val_size=50, batch_size=64, seed=4)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Probe(), datamodule=dm)
    assert isinstance(trainer.train_dataloader.sampler, EpochKeySampler)
    assert [e for e, _ in seen] == [0] * 5 + [1] * 5  # 350 // 64 = 5 batches per epoch
    ref = CIFAR100DataModule(data_dir=str(tiny_cifar), val_size=50, batch_size=64, seed=4)
    ref.setup("fit")
    for epoch in (0, 1):
        expected = [b.labels for b in _epoch_batches(ref, epoch)]
        got = [y for e, y in seen if e == epoch]
        assert all(torch.equal(a, b) for a, b in zip(expected, got))


# ------------------------------------------------------------------------------------------------
# Real data (MOBILENET_LAB_DATA)
# ------------------------------------------------------------------------------------------------


def test_real_cifar100(real_data_dir: Path) -> None:
    train = load_split(real_data_dir, "train")
    test = load_split(real_data_dir, "test")
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.labels[:5].tolist() == [19, 29, 0, 11, 1]
    assert test.labels[:5].tolist() == [49, 33, 72, 51, 71]
    assert torch.bincount(train.labels, minlength=100).tolist() == [500] * 100
    # Exact per-channel mean/std from pixel-value histograms (cheap, no 600 MB float copy).
    values = torch.arange(256, dtype=torch.float64) / 255
    hist = torch.stack([torch.bincount(train.images[:, c].flatten(), minlength=256) for c in range(3)]).double()
    count = hist.sum(1)
    mean = (hist * values).sum(1) / count
    std = ((hist * values**2).sum(1) / count - mean**2).sqrt()
    torch.testing.assert_close(mean, torch.tensor(CIFAR100_MEAN, dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(std, torch.tensor(CIFAR100_STD, dtype=torch.float64), atol=1e-3, rtol=0)
    names = load_class_names(real_data_dir)
    assert names[:3] == ["apple", "aquarium_fish", "baby"] and names[19] == "cattle"


def test_real_cifar100_datamodule(real_data_dir: Path) -> None:
    dm = CIFAR100DataModule(data_dir=str(real_data_dir), batch_size=128)
    dm.setup("fit")
    assert len(dm.train_dataset) == 45000 and len(dm.val_dataset) == 5000
    assert len(dm.train_dataloader()) == 45000 // 128
    x, y = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert x.shape == (128, 3, 32, 32) and abs(float(x.mean())) < 0.3


def test_lightning_mid_epoch_resume_replays_the_same_batches(tiny_cifar: Path, tmp_path: Path) -> None:
    """Crash mid-epoch, resume from the checkpoint: Lightning restores the loader, identical batches.

    The module reads ``trainer.estimated_stepping_batches`` in ``configure_optimizers`` (as ours does),
    which needs :class:`ResumeTrainLoader` (Lightning #20550).
    """
    import lightning as L

    from mobilenet_lab.resume import ResumeTrainLoader

    class Probe(L.LightningModule):
        def __init__(self, log: list) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3 * 32 * 32, 100)
            self.seen = log

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            x, y = batch
            self.seen.append((self.current_epoch, batch_idx, x.clone(), y.clone()))
            return torch.nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            assert self.trainer.estimated_stepping_batches == 12
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Crash(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
            if trainer.current_epoch == 1 and args[-1] == 2:  # batch_idx 2 of epoch 1
                trainer.save_checkpoint(tmp_path / "mid.ckpt", weights_only=False)
                raise RuntimeError("simulated crash")

    def fit(log: list, callbacks: list, ckpt: Path | None = None) -> None:
        dm = CIFAR100DataModule(
            data_dir=str(tiny_cifar), val_size=0, batch_size=64, seed=3, cutmix_alpha=1.0, random_erasing=0.5
        )
        trainer = L.Trainer(
            max_epochs=2,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            callbacks=[*callbacks, ResumeTrainLoader()],
            default_root_dir=tmp_path,
        )
        trainer.fit(Probe(log), datamodule=dm, ckpt_path=ckpt)

    full: list = []
    fit(full, [])
    part: list = []
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(part, [Crash()])
    assert torch.load(tmp_path / "mid.ckpt", weights_only=True)["loops"]["fit_loop"]["state_dict"][
        "combined_loader"
    ] == [{"epoch": 1, "batches_done": 3}]
    torch.manual_seed(1234)  # the new process's global RNG differs
    rest: list = []
    fit(rest, [], tmp_path / "mid.ckpt")
    resumed = part + rest
    assert [(e, i) for e, i, *_ in resumed] == [(e, i) for e, i, *_ in full] and len(full) == 12
    for (_, _, xa, ya), (_, _, xb, yb) in zip(full, resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("mixup", [0.0, 0.4])
def test_images_on_device_gives_the_same_batches(tiny_cifar: Path, mixup: float) -> None:
    # The GPU path keeps the training images on the device and gathers them by key; batches leave
    # the loader without pixels but must become exactly what the host path produces.
    host = _dm(tiny_cifar, val_size=100, batch_size=32, mixup_alpha=mixup, random_erasing=0.5)
    resident = _dm(
        tiny_cifar, val_size=100, batch_size=32, mixup_alpha=mixup, random_erasing=0.5, images_on_device=True
    )
    for epoch in (0, 3):
        host_loader, resident_loader = host.train_dataloader(), resident.train_dataloader()
        host_loader.sampler.set_epoch(epoch)
        resident_loader.sampler.set_epoch(epoch)
        for a, b in zip(host_loader, resident_loader):
            assert a.images is not None and b.images is None
            assert b.labels.dtype == torch.int64 and torch.equal(a.aug, b.aug)
            xa, ya = host.on_after_batch_transfer(a, 0)
            xb, yb = resident.on_after_batch_transfer(b, 0)
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_images_on_device_refuses_per_image_augmentation() -> None:
    with pytest.raises(UserError, match="images_on_device"):
        CIFAR100DataModule(augment="trivialaugment", images_on_device=True)

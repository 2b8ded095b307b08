"""The Lightning-free CIFAR-100 reader: layout, validation, helpful errors, and no Lightning import."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CLASS_NAMES, assert_imports_no_lightning, make_tiny_images, tiny_arrays, write_cifar_archive

from mobilenet_lab.data.cifar100 import load_class_names, load_split
from mobilenet_lab.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def test_reader_imports_no_lightning(tiny_cifar: Path) -> None:
    # Export and inference read CIFAR-100 through this module; it must not pull in Lightning.
    code = (
        "import sys\n"
        "from mobilenet_lab.data.cifar100 import load_split, load_class_names\n"
        f"split = load_split({str(tiny_cifar)!r}, 'test')\n"
        "assert split.images.shape[1:] == (3, 32, 32)\n"
        f"assert len(load_class_names({str(tiny_cifar)!r})) == 100\n"
        "import mobilenet_lab.tools.export, mobilenet_lab.inference\n"
    )
    assert_imports_no_lightning(code)


def test_moved_names_still_import_from_cifar100() -> None:
    from mobilenet_lab.data import cifar100, datamodule, datasets, sampler

    assert cifar100.CIFAR100DataModule is datamodule.CIFAR100DataModule
    assert cifar100.EpochKeySampler is sampler.EpochKeySampler
    assert cifar100.TrainBatch is datasets.TrainBatch and cifar100.split_indices is datasets.split_indices
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        cifar100.nothing  # noqa: B018


def test_tiny_archive_loads(tiny_cifar: Path) -> None:
    train = load_split(tiny_cifar, "train")
    test = load_split(tiny_cifar, "test")
    assert train.images.shape == (400, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (200, 3, 32, 32)
    assert train.labels.dtype == torch.int64
    assert train.labels[:5].tolist() == [0, 1, 2, 3, 4]
    assert torch.bincount(train.labels, minlength=100).tolist() == [4] * 100
    assert load_class_names(tiny_cifar) == TINY_CLASS_NAMES
    # Decoding: row i of `data` is the R plane, then G, then B, each 32x32 row-major.
    raw, _ = tiny_arrays(4, seed=1)
    assert torch.equal(train.images[7, 1, 3], torch.from_numpy(raw[7, 1024 + 3 * 32 : 1024 + 4 * 32]))


def test_subset_and_repacked_archives_load(tmp_path: Path) -> None:
    data, labels = tiny_arrays(1, seed=3)
    sub = write_cifar_archive(tmp_path / "sub", (data[:37], labels[:37]))
    assert load_split(sub, "train").images.shape == (37, 3, 32, 32)
    # Re-packed with bytes keys, bytes class names, protocol 4 and numpy labels.
    repacked = write_cifar_archive(
        tmp_path / "repacked",
        (data, np.asarray(labels, dtype=np.int64)),
        class_names=[n.encode() for n in TINY_CLASS_NAMES],
        bytes_keys=True,
        protocol=4,
    )
    split = load_split(repacked, "train")
    assert split.labels.tolist() == labels
    assert torch.equal(split.images.reshape(100, -1), torch.from_numpy(data))
    assert load_class_names(repacked)[3] == "class_03"


def _write_train(tmp_path: Path, entry: dict) -> Path:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train", "wb") as f:
        pickle.dump(entry, f, protocol=2)
    return tmp_path


GOOD_DATA = make_tiny_images(np.arange(5), seed=0)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"data": GOOD_DATA.astype(np.int16), "fine_labels": [0, 1, 2, 3, 4]}, r"dtype int16, expected uint8"),
        ({"data": GOOD_DATA.reshape(5, 3, 32, 32), "fine_labels": [0, 1, 2, 3, 4]}, r"shape \(5, 3, 32, 32\)"),
        ({"data": GOOD_DATA[:, :3000], "fine_labels": [0, 1, 2, 3, 4]}, r"expected N x 3072"),
        ({"data": GOOD_DATA, "fine_labels": [0, 1, 2, 3, 100]}, r"range 0\.\.100, expected 0\.\.99"),
        ({"data": GOOD_DATA, "fine_labels": [0, 1, -1, 3, 4]}, r"range -1\.\.4"),
        ({"data": GOOD_DATA, "fine_labels": [0, 1, 2, 3]}, r"5 images but 4 fine_labels"),
        ({"data": GOOD_DATA, "fine_labels": [0.0, 1.0, 2.0, 3.0, 4.0]}, r"flat list of integers"),
        ({"data": GOOD_DATA, "coarse_labels": [0] * 5}, r"no 'fine_labels' entry"),
        ({"fine_labels": [0] * 5}, r"no 'data' entry"),
        ({"data": GOOD_DATA.tolist(), "fine_labels": [0] * 5}, r"'data' is a list"),
        ([1, 2, 3], r"holds a list, expected the dict"),
    ],
)
def test_invalid_archives_raise_helpful_data_errors(tmp_path: Path, entry: object, expected: str) -> None:
    data_dir = _write_train(tmp_path, entry)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=expected) as info:
        load_split(data_dir, "train")
    assert "cifar-100-python/train" in str(info.value)


def test_truncated_archive_raises_data_error(tmp_path: Path, tiny_cifar: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    full = (tiny_cifar / "cifar-100-python" / "train").read_bytes()
    (folder / "train").write_bytes(full[: len(full) * 2 // 3])
    with pytest.raises(DataError, match="truncated|not a readable"):
        load_split(tmp_path, "train")

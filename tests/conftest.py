"""Shared fixtures: a tiny CIFAR-100 archive in the official format, the real data, a malicious pickle;
and the one way tests run the command line in a subprocess (:func:`python_m`)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN_PER_CLASS = 4
TINY_TEST_PER_CLASS = 2
TINY_CLASS_NAMES = [f"class_{i:02d}" for i in range(100)]


def make_tiny_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """Learnable 32x32 RGB images (N x 3072 uint8, official plane layout) for the given labels.

    Class c has its own mean colour (a 5 x 5 x 4 grid of R, G, B levels, so even a global
    average pool separates the 100 classes) modulated by a stripe texture (orientation c % 2,
    period from (c // 2) % 4), plus mild noise.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    red, green, blue = (30, 85, 140, 195, 250), (30, 85, 140, 195, 250), (40, 110, 180, 250)
    out = np.empty((len(labels), 3, 32, 32), dtype=np.uint8)
    for i, c in enumerate(int(v) for v in labels):
        colour = np.array([red[c % 5], green[(c // 5) % 5], blue[c // 25]], dtype=np.float64)
        coord = yy if c % 2 == 0 else xx
        stripes = ((coord // (2 + (c // 2) % 4)) % 2).astype(np.float64)  # 0/1 stripes
        img = colour[:, None, None] * (0.8 + 0.4 * stripes[None])  # mean factor ~1
        img += rng.normal(0.0, 8.0, size=img.shape)
        out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out.reshape(len(labels), 3072)


def write_cifar_archive(
    data_dir: Path,
    train: tuple[np.ndarray, Any],
    test: tuple[np.ndarray, Any] | None = None,
    class_names: list[Any] | None = None,
    bytes_keys: bool = False,
    protocol: int = 2,
) -> Path:
    """Write ``data_dir/cifar-100-python/{train,test,meta}`` like the official archive.

    Args:
        data_dir: Parent folder (created).
        train: (data N x 3072 uint8, fine labels) for ``train``.
        test: The same for ``test`` (default: the first 10 train images).
        class_names: ``fine_label_names`` (default: 100 generated names).
        bytes_keys: Use bytes dict keys, as a Python 3 ``encoding="bytes"`` re-pack has.
        protocol: Pickle protocol (2 as the official Python 2 files).

    Returns:
        ``data_dir`` (what the DataModule's ``data_dir`` takes).
    """
    folder = Path(data_dir) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    test = test if test is not None else (train[0][:10], list(train[1])[:10])
    names = class_names if class_names is not None else TINY_CLASS_NAMES

    def key(k: str) -> Any:
        return k.encode() if bytes_keys else k

    for split, (data, labels) in (("train", train), ("test", test)):
        labels_list = [int(x) for x in labels] if not isinstance(labels, (np.ndarray, str)) else labels
        entry = {
            key("filenames"): [f"img_{i:05d}.png" for i in range(len(data))],
            key("batch_label"): f"{split} batch",
            key("fine_labels"): labels_list,
            key("coarse_labels"): [0] * len(data),
            key("data"): data,
        }
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f, protocol=protocol)
    with open(folder / "meta", "wb") as f:
        pickle.dump(
            {key("fine_label_names"): names, key("coarse_label_names"): [f"super_{i}" for i in range(20)]},
            f,
            protocol=protocol,
        )
    return Path(data_dir)


def tiny_arrays(per_class: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """``per_class`` images of each class, classes interleaved (0, 1, ..., 99, 0, 1, ...)."""
    labels = np.tile(np.arange(100), per_class)
    return make_tiny_images(labels, seed), labels.tolist()


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small archive in the official format: 400 train (4/class), 200 test (2/class), 100 names."""
    root = tmp_path_factory.mktemp("tiny_cifar")
    return write_cifar_archive(
        root, tiny_arrays(TINY_TRAIN_PER_CLASS, seed=1), tiny_arrays(TINY_TEST_PER_CLASS, seed=2)
    )


@pytest.fixture(scope="session")
def plateau_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny archive with shuffled training labels: nothing to learn, val/acc stays at chance (a plateau)."""
    images, labels = tiny_arrays(TINY_TRAIN_PER_CLASS, seed=1)
    shuffled = np.random.default_rng(0).permutation(labels).tolist()
    root = tmp_path_factory.mktemp("plateau_cifar")
    return write_cifar_archive(root, (images, shuffled), tiny_arrays(TINY_TEST_PER_CLASS, seed=2))


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The folder holding the real ``cifar-100-python/`` (env MOBILENET_LAB_DATA), or skip."""
    value = os.environ.get("MOBILENET_LAB_DATA")
    if not value:
        pytest.skip("set MOBILENET_LAB_DATA to the folder that holds cifar-100-python/ to run real-data tests")
    path = Path(value)
    if not (path / "cifar-100-python" / "train").is_file():
        pytest.skip(f"MOBILENET_LAB_DATA={value} has no cifar-100-python/train")
    return path


class _Payload:
    """Unpickling this runs ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


def write_malicious_pickle(path: Path, marker: Path, protocol: int = 2) -> Path:
    """Write a CIFAR-looking dict whose ``data`` entry runs a shell command creating ``marker``."""
    entry = {"data": _Payload(marker), "fine_labels": [0]}
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=protocol)
    return path


@pytest.fixture
def malicious_pickle(tmp_path: Path) -> tuple[Path, Path]:
    """(pickle path, marker path): loading the pickle unsafely would create the marker file."""
    marker = tmp_path / "pwned"
    return write_malicious_pickle(tmp_path / "evil.pkl", marker), marker


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for the test: thousands of tiny 32x32 ops only contend on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------- the command line in a subprocess
def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a command-line subprocess: this checkout and ``tests/`` importable (callbacks
    such as ``kill_points.SignalAt`` are named by class path), plus ``extra``."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), **extra}


def cli_command(*args: object) -> list[str]:
    """``python -m mobilenet_lab <args>`` as an argument list (for ``subprocess.Popen``)."""
    return [sys.executable, "-m", "mobilenet_lab", *map(str, args)]


def run_command(
    command: Sequence[str], cwd: Path, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Runs a command to its end, output captured as text."""
    return subprocess.run(list(command), cwd=cwd, env=env or cli_env(), capture_output=True, text=True, timeout=timeout)


def python_m(
    args: Sequence[object], cwd: Path, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m mobilenet_lab <args>`` in ``cwd``, to its end, output captured as text."""
    return run_command(cli_command(*args), cwd, timeout=timeout, env=env)


def assert_imports_no_lightning(code: str) -> None:
    """Runs ``code`` in a fresh interpreter and asserts it imported no Lightning (nor torchmetrics):
    models, the data reader, export and inference must work with torch alone."""
    check = (
        code + "\nimport sys\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('lightning', 'pytorch_lightning', 'torchmetrics'))\n"
        "assert not bad, bad\n"
    )
    result = run_command([sys.executable, "-c", check], cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]

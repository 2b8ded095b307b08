"""Restricted unpickling for the CIFAR-100 python archive.

The official CIFAR-100 files are Python pickles. A plain :func:`pickle.load` runs whatever
callable the file names, so a tampered download could execute code. :func:`safe_load` only
resolves the few globals that numpy arrays need; everything else is refused with a
:class:`~mobilenet_lab.errors.DataError` before any of it runs.
"""

from __future__ import annotations

import codecs
import os
import pickle
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from mobilenet_lab.errors import DataError

__all__ = ["safe_load", "ALLOWED_GLOBALS"]

try:  # numpy >= 2 moved the implementation to numpy._core; numpy.core is a deprecated alias.
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


def _allowed() -> dict[tuple[str, str], Callable[..., Any] | type]:
    """The (module, name) pairs a data set pickle may reference, mapped to the real objects."""
    table: dict[tuple[str, str], Callable[..., Any] | type] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Pickles of bytes written by Python 3 with protocol < 3 go through _codecs.encode.
        ("_codecs", "encode"): codecs.encode,
    }
    # Old pickles name numpy.core.*, pickles written by numpy 2 name numpy._core.*; both are
    # mapped to the objects imported above so that unpickling never imports anything.
    for package in ("numpy.core", "numpy._core"):
        table[(f"{package}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        table[(f"{package}.multiarray", "scalar")] = _multiarray.scalar
        # Protocol-5 pickles of arrays (out-of-band buffers) rebuild through _frombuffer.
        if hasattr(_numeric, "_frombuffer"):
            table[(f"{package}.numeric", "_frombuffer")] = _numeric._frombuffer
    return table


ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = _allowed()


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` resolves only :data:`ALLOWED_GLOBALS`."""

    def __init__(self, file: IO[bytes], source: str) -> None:
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle {module}.{name} from {self._source}: the data set pickles may"
                " contain only plain containers and numpy arrays (the file is corrupted or was tampered"
                " with; delete it and download the data again)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        # Persistent ids are another way to smuggle objects in; data set files never use them.
        raise DataError(
            f"refusing to unpickle a persistent id from {self._source}: the data set pickles may"
            " contain only plain containers and numpy arrays"
        )


def safe_load(path_or_file: str | os.PathLike[str] | IO[bytes]) -> Any:
    """Unpickle a data set file, allowing only plain containers and numpy arrays.

    Args:
        path_or_file: A path, or a binary file object open for reading.

    Returns:
        The unpickled object (for CIFAR-100, a dict). Text is decoded as latin1, as the
        Python 2 era files need.

    Raises:
        DataError: The file is missing, truncated, not a pickle, or references any global
            outside the numpy allow-list.
    """
    if isinstance(path_or_file, (str, os.PathLike)):
        source = os.fspath(path_or_file)
        try:
            with open(source, "rb") as f:
                return _load(f, source)
        except FileNotFoundError:
            raise DataError(f"{source} does not exist; check the data directory") from None
        except IsADirectoryError:
            raise DataError(f"{source} is a directory, expected a pickle file") from None
    source = str(getattr(path_or_file, "name", "<stream>"))
    return _load(path_or_file, source)


def _load(file: IO[bytes], source: str) -> Any:
    """Run the restricted unpickler and turn low-level failures into one-line DataErrors."""
    try:
        return _RestrictedUnpickler(file, source).load()
    except DataError:
        raise
    except EOFError:
        raise DataError(
            f"{source} is truncated (ended in the middle of the pickle); delete it and download or"
            " extract the data set again"
        ) from None
    except (
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        UnicodeDecodeError,
        MemoryError,
        OverflowError,
    ) as exc:
        # Garbage or cut-off bytes surface as any of these, depending on where the cut falls.
        raise DataError(
            f"{source} is not a readable data set pickle ({type(exc).__name__}: {exc}); delete it"
            " and download or extract the data set again"
        ) from None

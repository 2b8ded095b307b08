"""Atomic file writes: a file appears complete under its name, or not at all.

The one helper behind checkpoint saving (:class:`~mobilenet_lab.run_layout.AtomicCheckpointIO`) and
export (``tools/export``): the writer fills a temporary file in the destination folder (same file
system, so the final ``os.replace`` is atomic), which is then fsynced and renamed onto the
destination, and the folder is fsynced so that the rename survives a power cut. A kill or an error
at any moment leaves the previous file (or none), never a truncated one. Plain ``os``/``tempfile``:
no Lightning, so export and other tools use it without loading the trainer.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], durable: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto ``path`` if the block succeeds, else removed.

    The block writes the file at the yielded path (by name: ``torch.save``, ``onnx.save`` ...).
    Side files a writer puts next to it under the same prefix (e.g. ONNX external data) are
    removed too. The file gets the permissions of a plainly created one (``0o666`` less the
    umask), not ``mkstemp``'s 0600.

    Args:
        path: The destination; its folder is created if needed.
        durable: fsync the file before the rename and the folder after it (a checkpoint must
            survive a crash of the machine; a scratch file need not).

    Raises:
        OSError: The folder cannot be created or written, or the rename failed.
    """
    path = Path(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    tmp = Path(name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        yield tmp
        if durable:
            _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        if durable:
            _fsync(parent, os.O_RDONLY)
    finally:
        tmp.unlink(missing_ok=True)
        for extra in glob.glob(glob.escape(os.fspath(tmp)) + "*"):
            Path(extra).unlink(missing_ok=True)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Writing an exported file: atomically under its name (or not at all), with the exporters kept quiet."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

from ...atomic import atomic_path
from ...errors import UserError

__all__ = ["atomic_output", "quiet"]


@contextlib.contextmanager
def atomic_output(output: Path) -> Iterator[Path]:
    """A temporary path beside ``output``; renamed onto it if the block succeeds, else removed.

    :func:`mobilenet_lab.atomic.atomic_path` with the command line's errors: a folder given as
    ``--output``, or an unwritable place, is one ``UserError`` line.
    """
    output = Path(output)
    if output.is_dir():
        raise UserError(f"--output {output} is a folder; pass a file name, e.g. {output / 'model.onnx'}")
    try:
        with atomic_path(output) as tmp:
            yield tmp
    except OSError as err:
        raise UserError(f"cannot write --output {output}: {err.strerror or err}; choose a writable folder") from None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silences the exporters' progress prints and warnings (errors still propagate)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield

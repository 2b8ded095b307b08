"""A data set of the image files in one folder, for ``predict``.

Building the data set reads each file's header and checks its integrity without decoding it, so
a folder of any size costs only its file names; files that cannot be used (not an image, truncated,
too many pixels) are skipped with one warning each and listed in
:attr:`ImageFolderPredictDataset.skipped`. Images are decoded when the loader asks for them (in the
DataLoader workers when ``num_workers > 0``); a file that passed the check but fails to decode then
is skipped with a warning by :meth:`ImageFolderPredictDataset.collate` (its batch is one image shorter).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset

from mobilenet_lab.errors import UserError

__all__ = ["ImageFolderPredictDataset", "check_image", "load_rgb_image", "UnusableImageError", "DEFAULT_MAX_PIXELS"]

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000
"""Refuse images with more pixels than this (decompression-bomb guard, like ``Image.MAX_IMAGE_PIXELS``)."""


class UnusableImageError(Exception):
    """An image file that exists but will not be used; the message is the reason."""


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    16-bit and 32-bit integer grayscale are scaled down by 256 (not clipped), alpha is
    composited on black, palettes are expanded (with their transparency).
    """
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit samples: keep the top 8 bits; "I" (int32) holds 16-bit PNG/TIFF data too.
        a = np.asarray(im).astype(np.int64)
        a = np.clip(a >> 8, 0, 255).astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    if mode == "F":
        # Float images have no standard range; treat them as 0..255 like PIL's own F -> L.
        a = np.clip(np.rint(np.asarray(im, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("LA", "La", "PA", "RGBa", "RGBA") or (mode == "L" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)
        # Composite on black: colour * alpha / 255, rounded.
        rgb = (rgba[..., :3] * rgba[..., 3:4] + 127) // 255
        return Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    if mode == "RGB":
        return im
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise UnusableImageError(f"cannot convert PIL mode {mode} to RGB ({exc})") from None


def check_image(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Cheap checks of an image file without decoding its pixels: PIL reads it, its size, its integrity.

    ``verify()`` reads the whole file (PNG: every chunk's CRC, so truncation shows) but keeps no
    pixels; formats without a verifier (e.g. JPEG) can still fail later, in :func:`load_rgb_image`.

    Raises:
        UnusableImageError: The file is not a usable image; the message says why.
    """
    with _open_image(path, max_pixels, Exception) as im:  # PIL reports bad files in many ways
        im.verify()


@contextlib.contextmanager
def _open_image(
    path: str | os.PathLike[str], max_pixels: int | None, errors: type[BaseException] | tuple[type[BaseException], ...]
) -> Iterator[Image.Image]:
    """The image at ``path``, opened by PIL and within ``max_pixels``; ``errors`` inside become UnusableImageError.

    PIL's own decompression-bomb warning is silenced: our limit decides (PIL warns between
    ``MAX_IMAGE_PIXELS`` and twice that, and raises above).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                _check_pixels(im, max_pixels)
                yield im
        except UnusableImageError:
            raise
        except errors as exc:
            raise _unusable(exc) from None


def _check_pixels(im: Image.Image, max_pixels: int | None) -> None:
    pixels = im.size[0] * im.size[1]
    if max_pixels is not None and pixels > max_pixels:
        raise UnusableImageError(
            f"{im.size[0]}x{im.size[1]} = {pixels} pixels is over the limit of {max_pixels}"
            " (possible decompression bomb)"
        )


def _unusable(exc: Exception) -> UnusableImageError:
    if isinstance(exc, Image.DecompressionBombError):
        return UnusableImageError(f"too many pixels (possible decompression bomb): {exc}")
    if isinstance(exc, Image.UnidentifiedImageError):
        return UnusableImageError("not an image file PIL can read")
    # PIL reports truncated and corrupt data as OSError/SyntaxError/ValueError/EOFError.
    return UnusableImageError(f"unreadable or truncated image ({exc})")


#: How PIL reports a file it cannot decode (truncated, corrupt, too large, not an image).
_DECODE_ERRORS = (
    Image.DecompressionBombError,
    Image.UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
)


def load_rgb_image(path: str | os.PathLike[str], size: int, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Tensor:
    """Open an image file and return it as uint8 3 x size x size RGB.

    EXIF orientation is applied, the mode converted as :func:`_to_rgb` says, and the image
    resized (bilinear, antialiased; the aspect ratio is not kept, as CIFAR images are square).

    Raises:
        UnusableImageError: The file is not a usable image; the message says why.
    """
    with _open_image(path, max_pixels, _DECODE_ERRORS) as im:
        im.load()  # decode fully now: truncation shows up here
        try:
            im = ImageOps.exif_transpose(im)
        except Exception as exc:  # broken EXIF is not worth dropping the image for
            log.warning("ignoring unreadable EXIF orientation of %s: %s", path, exc)
        rgb = _to_rgb(im)
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
        array = np.array(rgb, dtype=np.uint8)  # H x W x 3, a copy we own
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class ImageFolderPredictDataset(Dataset[tuple[Tensor | None, str]]):
    """Every file directly inside ``directory`` (not recursive; sub-folders are ignored), sorted by name.

    Items are ``(image, file_name)`` with ``image`` a uint8 3 x ``image_size`` x ``image_size``
    RGB tensor, decoded when the item is asked for. Conversions: EXIF orientation applied;
    grayscale, palette, CMYK etc. to RGB; alpha composited on black; 16-bit (``I;16``/``I``)
    divided by 256. Files are checked (header, size, integrity; :func:`check_image`) when the data
    set is built; the unusable ones are skipped with a warning each and listed in :attr:`skipped`
    as ``(file_name, reason)``. A file that passes the check but cannot be decoded later gives
    ``(None, file_name)`` and a warning; :meth:`collate` leaves it out of its batch.

    Args:
        directory: Folder holding the images.
        image_size: Output side length in pixels (32 for CIFAR-trained models; the DataModule
            then resizes on the device like the training images).
        max_pixels: Images with more pixels (width x height) are refused, like PIL's
            ``Image.MAX_IMAGE_PIXELS``; ``None`` leaves only PIL's own limit.

    Raises:
        UserError: ``directory`` is missing, not a folder, empty, or holds no readable image.
    """

    def __init__(
        self, directory: str | os.PathLike[str], image_size: int = 32, max_pixels: int | None = DEFAULT_MAX_PIXELS
    ) -> None:
        root = Path(directory)
        if not root.exists():
            raise UserError(f"predict_dir {root} does not exist; set --data.predict_dir to a folder of images")
        if not root.is_dir():
            raise UserError(f"predict_dir {root} is not a folder; set --data.predict_dir to a folder of images")
        if image_size < 1:
            raise UserError(f"image_size must be positive, got {image_size}")
        names = sorted(entry.name for entry in os.scandir(root) if entry.is_file())
        if not names:
            raise UserError(f"predict_dir {root} contains no files; put the images to classify in it")
        self.directory = root
        self.image_size = image_size
        self.max_pixels = max_pixels
        self.names: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        for name in names:
            try:
                check_image(root / name, max_pixels)
            except UnusableImageError as exc:
                reason = str(exc)
                self.skipped.append((name, reason))
                warnings.warn(f"skipping {root / name}: {reason}", stacklevel=2)
                continue
            self.names.append(name)
        if not self.names:
            raise UserError(
                f"none of the {len(names)} files in {root} is a readable image (first: {self.skipped[0][0]}:"
                f" {self.skipped[0][1]})"
            )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[Tensor | None, str]:
        name = self.names[index]
        try:
            return load_rgb_image(self.directory / name, self.image_size, self.max_pixels), name
        except UnusableImageError as exc:
            warnings.warn(f"skipping {self.directory / name}: {exc}", stacklevel=2)
            return None, name

    def collate(self, items: list[tuple[Tensor | None, str]]) -> tuple[Tensor, list[str]]:
        """DataLoader ``collate_fn``: ``(uint8 N x 3 x S x S, file names)`` without the undecodable items."""
        kept = [(image, name) for image, name in items if image is not None]
        if not kept:
            return torch.empty((0, 3, self.image_size, self.image_size), dtype=torch.uint8), []
        return torch.stack([image for image, _ in kept]), [name for _, name in kept]

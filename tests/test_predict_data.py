"""The predict folder data set: conversions to 8-bit RGB, EXIF orientation, skipped and refused files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet_lab.data.cifar100 import CIFAR100_MEAN, CIFAR100_STD
from mobilenet_lab.data.datamodule import CIFAR100DataModule
from mobilenet_lab.data.predict import ImageFolderPredictDataset, load_rgb_image
from mobilenet_lab.errors import UserError


def _pixel(t: torch.Tensor, y: int = 5, x: int = 5) -> list[int]:
    return t[:, y, x].tolist()


def test_grayscale_rgba_palette_and_16bit(tmp_path: Path) -> None:
    Image.new("L", (20, 20), 100).save(tmp_path / "a_gray.png")
    Image.new("RGBA", (20, 20), (200, 100, 50, 128)).save(tmp_path / "b_rgba.png")
    palette = Image.new("P", (20, 20), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.save(tmp_path / "c_palette.png")
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(tmp_path / "d_16bit.png")
    Image.fromarray(np.full((20, 20), 51200, dtype=np.int32), mode="I").save(tmp_path / "e_int32.tif")
    Image.new("RGB", (50, 30), (1, 2, 3)).save(tmp_path / "f_rgb.png")

    ds = ImageFolderPredictDataset(tmp_path, image_size=32)
    assert ds.names == ["a_gray.png", "b_rgba.png", "c_palette.png", "d_16bit.png", "e_int32.tif", "f_rgb.png"]
    assert ds.skipped == []
    assert Image.open(tmp_path / "d_16bit.png").mode.startswith("I")  # really a 16-bit file
    images = {name: ds[i][0] for i, name in enumerate(ds.names)}
    for img in images.values():
        assert img.shape == (3, 32, 32) and img.dtype == torch.uint8
    assert _pixel(images["a_gray.png"]) == [100, 100, 100]
    assert _pixel(images["b_rgba.png"]) == [100, 50, 25]  # composited on black: c * 128 / 255
    assert _pixel(images["c_palette.png"]) == [10, 20, 30]
    assert _pixel(images["d_16bit.png"]) == [156, 156, 156]  # 40000 / 256, not clipped to 255
    assert _pixel(images["e_int32.tif"]) == [200, 200, 200]  # 51200 / 256
    assert _pixel(images["f_rgb.png"]) == [1, 2, 3]
    assert ds[3][1] == "d_16bit.png"


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 64 wide x 32 tall: left half red, right half blue. Orientation 6 means "rotate
    # 90 degrees clockwise to display", which puts red on top and blue at the bottom.
    raw = np.zeros((32, 64, 3), dtype=np.uint8)
    raw[:, :32, 0] = 255
    raw[:, 32:, 2] = 255
    im = Image.fromarray(raw)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    im.save(tmp_path / "upright.jpg", quality=95)
    ds = ImageFolderPredictDataset(tmp_path)
    rotated, upright = ds[0][0].int(), ds[1][0].int()
    assert ds.names == ["rotated.jpg", "upright.jpg"]
    assert (rotated[0, :12] > 200).all() and (rotated[2, :12] < 60).all()  # top rows red
    assert (rotated[2, -12:] > 200).all() and (rotated[0, -12:] < 60).all()  # bottom rows blue
    assert (upright[0, :, :12] > 200).all() and (upright[2, :, -12:] > 200).all()  # untouched: left red


def test_unreadable_files_are_skipped_and_listed(tmp_path: Path) -> None:
    Image.new("RGB", (16, 16), (9, 8, 7)).save(tmp_path / "good.png")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "full.png").unlink()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "subdir").mkdir()  # ignored: not recursive
    with pytest.warns(UserWarning, match="skipping") as record:
        ds = ImageFolderPredictDataset(tmp_path)
    assert len(ds) == 1 and ds.names == ["good.png"]
    assert [name for name, _ in ds.skipped] == ["notes.txt", "truncated.png"]
    reasons = dict(ds.skipped)
    assert "not an image" in reasons["notes.txt"]
    assert "truncated" in reasons["truncated.png"]
    assert len([w for w in record if "skipping" in str(w.message)]) == 2


def test_too_large_images_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (40, 40)).save(tmp_path / "big.png")
    Image.new("RGB", (10, 10)).save(tmp_path / "small.png")
    with pytest.warns(UserWarning, match="over the limit"):
        ds = ImageFolderPredictDataset(tmp_path, max_pixels=1000)
    assert ds.names == ["small.png"]
    assert ds.skipped[0][0] == "big.png" and "1600 pixels" in ds.skipped[0][1]
    # PIL's own decompression-bomb error is refused the same way, not raised.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.warns(UserWarning, match="decompression bomb"):
        ds = ImageFolderPredictDataset(tmp_path, max_pixels=None)
    assert ds.names == ["small.png"]


def test_directory_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        ImageFolderPredictDataset(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(UserError, match="is not a folder"):
        ImageFolderPredictDataset(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="contains no files"):
        ImageFolderPredictDataset(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("hello")
    with pytest.warns(UserWarning), pytest.raises(UserError, match="none of the 1 files"):
        ImageFolderPredictDataset(tmp_path / "junk")


def test_resize_is_antialiased(tmp_path: Path) -> None:
    # A 1-pixel checkerboard averages to grey when downscaled with antialiasing.
    board = (np.indices((128, 128)).sum(0) % 2 * 255).astype(np.uint8)
    Image.fromarray(board).save(tmp_path / "board.png")
    img = load_rgb_image(tmp_path / "board.png", 32)
    assert img.shape == (3, 32, 32)
    assert abs(img.float().mean().item() - 127.5) < 3 and img.float().std().item() < 10


def test_datamodule_predict_batches(tmp_path: Path) -> None:
    for i in range(5):
        Image.new("RGB", (48, 40), (i * 40, 100, 200)).save(tmp_path / f"img_{i}.png")
    dm = CIFAR100DataModule(data_dir=str(tmp_path / "unused"), predict_dir=str(tmp_path), batch_size=4, image_size=64)
    batches = list(dm.predict_dataloader())
    assert [len(b[1]) for b in batches] == [4, 1]
    images, names = batches[0]
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32)
    x, out_names = dm.on_after_batch_transfer(batches[0], 0)
    assert list(out_names) == ["img_0.png", "img_1.png", "img_2.png", "img_3.png"]
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32
    expected_red = (40 / 255 - CIFAR100_MEAN[0]) / CIFAR100_STD[0]
    assert abs(x[1, 0, 10, 10].item() - expected_red) < 1e-4


def test_building_the_data_set_decodes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only headers are read at __init__ (a folder of any size costs its names); pixels are decoded per item."""
    import mobilenet_lab.data.predict as predict

    for i in range(20):
        Image.new("RGB", (64, 48), (i * 10, 0, 0)).save(tmp_path / f"img_{i:02d}.png")
    decoded: list[str] = []
    real = predict.load_rgb_image
    monkeypatch.setattr(
        predict, "load_rgb_image", lambda path, *a, **k: decoded.append(Path(path).name) or real(path, *a, **k)
    )
    ds = ImageFolderPredictDataset(tmp_path)
    assert len(ds) == 20 and decoded == [] and not hasattr(ds, "_images")
    assert ds[3][0][0, 0, 0].item() == 30 and decoded == ["img_03.png"]


def test_file_failing_only_at_decode_is_left_out_of_its_batch(tmp_path: Path) -> None:
    # A JPEG cut in half passes the header check (JPEG has no verifier) and fails when decoded.
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.fromarray(noise).save(tmp_path / name)
    data = (tmp_path / "b.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(data[: len(data) // 2])
    ds = ImageFolderPredictDataset(tmp_path)
    assert ds.names == ["a.jpg", "b.jpg", "c.jpg"]
    with pytest.warns(UserWarning, match="skipping .*b.jpg"):
        images, names = ds.collate([ds[i] for i in range(3)])
    assert names == ["a.jpg", "c.jpg"] and images.shape == (2, 3, 32, 32)
    with pytest.warns(UserWarning):
        empty, none = ds.collate([ds[1]])
    assert empty.shape == (0, 3, 32, 32) and none == []

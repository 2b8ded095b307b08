"""The batched on-device ops match torchvision's per-image transforms, in result and in distribution."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from mobilenet_lab.data import augment as aug
from mobilenet_lab.data.cifar100 import CIFAR100_MEAN, CIFAR100_STD
from mobilenet_lab.data.datamodule import CIFAR100DataModule
from mobilenet_lab.data.datasets import EvalBatch

pytestmark = pytest.mark.usefixtures("one_thread")


def chi_square_uniform(counts: list[int] | np.ndarray) -> float:
    """Pearson chi-square statistic of ``counts`` against the uniform distribution."""
    c = np.asarray(counts, dtype=np.float64)
    expected = c.sum() / c.size
    return float(((c - expected) ** 2 / expected).sum())


def chi_square_bound(dof: int, z: float = 4.0) -> float:
    """Wilson-Hilferty upper quantile of chi-square(dof) at ``z`` sigmas (false alarm ~3e-5)."""
    k = float(dof)
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    """A 3x32x32 uint8 image whose 162 crop/flip variants are all different."""
    return torch.randint(1, 256, (3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


@pytest.fixture(scope="module")
def variants(image: torch.Tensor) -> dict[bytes, tuple[int, int, int]]:
    """torchvision's own pad+crop(+flip) result for every (top, left, flip), keyed by its bytes."""
    padded = TF.pad(image, [4])
    table = {}
    for top in range(9):
        for left in range(9):
            crop = TF.crop(padded, top, left, 32, 32)
            table[crop.numpy().tobytes()] = (top, left, 0)
            table[TF.horizontal_flip(crop).numpy().tobytes()] = (top, left, 1)
    assert len(table) == 162
    return table


DRAWS = 8100  # 50 per (top, left, flip) cell


def test_our_crop_flip_matches_torchvision_results_and_is_uniform(
    image: torch.Tensor, variants: dict[bytes, tuple[int, int, int]]
) -> None:
    params = torch.from_numpy(aug.crop_flip_params(seed=3, epoch=1, index=np.arange(DRAWS), padding=4))
    out = aug.pad_crop_flip(image.expand(DRAWS, 3, 32, 32), params[:, 0], params[:, 1], params[:, 2], padding=4)
    seen: Counter[tuple[int, int, int]] = Counter()
    for crop, p in zip(out, params.tolist()):
        found = variants.get(crop.numpy().tobytes())
        assert found == tuple(p)  # pixel-identical to torchvision's crop at the same offsets
        seen[found] += 1
    assert len(seen) == 162
    assert chi_square_uniform([seen[k] for k in variants.values()]) < chi_square_bound(161)


def test_torchvision_crop_flip_has_the_same_distribution(
    image: torch.Tensor, variants: dict[bytes, tuple[int, int, int]]
) -> None:
    transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
    torch.manual_seed(0)
    seen: Counter[tuple[int, int, int]] = Counter()
    for _ in range(DRAWS):
        seen[variants[transform(image).numpy().tobytes()]] += 1  # KeyError = a crop we cannot produce
    assert len(seen) == 162
    assert chi_square_uniform([seen[k] for k in variants.values()]) < chi_square_bound(161)


def test_chi_square_check_can_fail() -> None:
    # Guard for the two tests above: a subtly skewed sampler (top offset 0 twice as likely as
    # each other offset, DRAWS samples) is rejected by the same bound.
    rng = np.random.default_rng(0)
    top = rng.choice(9, size=DRAWS, p=np.array([2] + [1] * 8) / 10)
    cells = (top * 9 + rng.integers(0, 9, DRAWS)) * 2 + rng.integers(0, 2, DRAWS)
    assert chi_square_uniform(np.bincount(cells, minlength=162)) > chi_square_bound(161)
    fair = (rng.integers(0, 9, DRAWS) * 9 + rng.integers(0, 9, DRAWS)) * 2 + rng.integers(0, 2, DRAWS)
    assert chi_square_uniform(np.bincount(fair, minlength=162)) < chi_square_bound(161)


def test_crop_params_depend_only_on_seed_epoch_index() -> None:
    idx = np.arange(1000)
    a = aug.crop_flip_params(1, 2, idx)
    assert np.array_equal(a, aug.crop_flip_params(1, 2, idx))
    assert np.array_equal(a[500:], aug.crop_flip_params(1, 2, idx[500:]))  # no sequential state
    assert (a != aug.crop_flip_params(1, 3, idx)).any(1).mean() > 0.9
    assert (a != aug.crop_flip_params(2, 2, idx)).any(1).mean() > 0.9
    assert a[:, :2].min() == 0 and a[:, :2].max() == 8 and set(a[:, 2]) == {0, 1}


def test_normalize_matches_v2_normalize() -> None:
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    reference = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR100_MEAN, CIFAR100_STD)])
    ours = aug.normalize(images, CIFAR100_MEAN, CIFAR100_STD)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference(images), rtol=0, atol=1e-5)
    # Float [0, 1] input (what load_model's Classifier gets) gives the same values and is left unchanged.
    floats = images.float() / 255
    before = floats.clone()
    torch.testing.assert_close(aug.normalize(floats, CIFAR100_MEAN, CIFAR100_STD), ours, rtol=0, atol=1e-5)
    assert torch.equal(floats, before)


def test_resize_matches_v2_resize() -> None:
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(aug.resize(x, 64), TF.resize(x, [64, 64], antialias=True), rtol=0, atol=1e-5)
    torch.testing.assert_close(aug.resize(x, 16), TF.resize(x, [16, 16], antialias=True), rtol=0, atol=1e-5)
    assert aug.resize(x, 32) is x


def test_eval_path_has_no_randomness(tmp_path: object) -> None:
    dm = CIFAR100DataModule(random_erasing=1.0, mixup_alpha=1.0, cutmix_alpha=1.0, image_size=40)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(8)
    torch.manual_seed(0)
    a, ya = dm.on_after_batch_transfer(EvalBatch(images, labels), 0)
    torch.manual_seed(1)
    b, yb = dm.on_after_batch_transfer(EvalBatch(images, labels), 0)
    assert torch.equal(a, b) and torch.equal(ya, labels) and torch.equal(yb, labels)
    expected = aug.resize(aug.normalize(images, CIFAR100_MEAN, CIFAR100_STD), 40)
    torch.testing.assert_close(a, expected)


def test_erase_fills_exactly_the_box() -> None:
    x = torch.randn(3, 3, 32, 32)
    boxes = torch.tensor([[2, 5, 10, 7], [0, 0, 0, 0], [20, 30, 12, 2]])
    out = aug.erase(x, boxes)
    torch.testing.assert_close(out[0], TF.erase(x[0], 2, 5, 10, 7, torch.tensor(0.0)))
    assert torch.equal(out[1], x[1])
    torch.testing.assert_close(out[2], TF.erase(x[2], 20, 30, 12, 2, torch.tensor(0.0)))


def test_erasing_distribution_matches_v2_random_erasing() -> None:
    n = 4000
    boxes = aug.sample_erasing_params(n, 32, 32, p=0.5, generator=torch.Generator().manual_seed(0))
    applied = boxes[:, 2] > 0
    assert abs(applied.float().mean().item() - 0.5) < 0.04
    ours = boxes[applied]
    # torchvision's box parameters for an applied erasing (p handled outside make_params).
    reference = v2.RandomErasing(p=1.0)
    torch.manual_seed(0)
    ref = []
    for _ in range(len(ours)):
        params = reference.make_params([torch.zeros(3, 32, 32)])
        if params["v"] is not None:  # torchvision's "no box fits" is an untouched image
            ref.append([params["i"], params["j"], params["h"], params["w"]])
    theirs = torch.tensor(ref)
    # Fraction of attempts where no box fit: about the same.
    assert abs(len(theirs) / len(ours) - (ours[:, 2] < 32).float().mean().item()) < 0.03
    for column, name in enumerate(["top", "left", "h", "w"]):
        a, b = ours[:, column].double(), theirs[:, column].double()
        for q in (0.1, 0.5, 0.9):
            assert abs(torch.quantile(a, q) - torch.quantile(b, q)) <= 2, (name, q)
        assert abs(a.mean() - b.mean()) < 0.6, name
    area_ours = (ours[:, 2] * ours[:, 3]).double().mean()
    area_theirs = (theirs[:, 2] * theirs[:, 3]).double().mean()
    assert abs(area_ours / area_theirs - 1) < 0.05
    # Boxes always lie inside the image.
    assert torch.all(ours[:, 0] + ours[:, 2] <= 32) and torch.all(ours[:, 1] + ours[:, 3] <= 32)


def test_mixup_is_convex_combination_with_matching_targets() -> None:
    mixer = aug.BatchMixer(num_classes=10, mixup_alpha=0.4)
    x = torch.randn(16, 3, 8, 8)
    y = torch.arange(16) % 10
    lams = []
    for seed in range(200):
        mx, my = mixer(x, y, seed)
        lam = my[0, y[0]].item()  # labels 0 and 15%10=5 differ
        torch.testing.assert_close(mx, lam * x + (1 - lam) * x.roll(1, 0), rtol=0, atol=1e-5)
        torch.testing.assert_close(my.sum(1), torch.ones(16))
        lams.append(lam)
    mx2, my2 = mixer(x, y, 7)
    mx3, _ = mixer(x, y, 7)
    assert torch.equal(mx2, mx3)
    lam_t = torch.tensor(lams)
    # Beta(0.4, 0.4): mean 1/2, variance 1 / (4 (2a + 1)) = 0.139.
    assert abs(lam_t.mean().item() - 0.5) < 0.08
    assert abs(lam_t.var().item() - 1 / (4 * 1.8)) < 0.04


def test_cutmix_targets_match_pasted_area() -> None:
    mixer = aug.BatchMixer(num_classes=4, cutmix_alpha=1.0)
    x = torch.zeros(4, 1, 32, 32)
    x[0] = 1.0  # sample 1's partner is sample 0
    y = torch.tensor([0, 1, 2, 3])
    for seed in range(50):
        mx, my = mixer(x, y, seed)
        pasted = mx[1].mean().item()  # fraction of sample 1 taken from sample 0
        torch.testing.assert_close(my[1, 0].item(), pasted, rtol=0, atol=1e-6)
        torch.testing.assert_close(my[1, 1].item(), 1 - pasted, rtol=0, atol=1e-6)


def test_counter_hash_is_uniform() -> None:
    h = aug.counter_hash(0, 0, np.arange(100_000), aug.STREAM_CROP)
    counts = np.bincount((h % np.uint64(97)).astype(np.int64), minlength=97)
    assert chi_square_uniform(counts) < chi_square_bound(96)
    assert len(np.unique(h)) == 100_000

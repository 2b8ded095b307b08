"""GPU paths (bf16-mixed training, on-device augmentation, CUDA benchmark); skipped without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
ROOT = Path(__file__).resolve().parents[1]


def test_fit_bf16_on_gpu(tiny_cifar: Path, tmp_path: Path, monkeypatch):
    from mobilenet_lab.cli import MobileNetCLI

    monkeypatch.chdir(tmp_path)
    cli = MobileNetCLI(args=["fit", "--config", str(ROOT / "configs/quickstart.yaml"), "--config",
                             str(ROOT / "configs/trainer/gpu.yaml"), f"--data.data_dir={tiny_cifar}",
                             "--data.num_workers=0", "--data.val_size=100", "--data.batch_size=32",
                             "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"])
    assert cli.trainer.global_step == 2 * (300 // 32)
    assert cli.model.model.stem[0].weight.device.type == "cuda"
    assert torch.isfinite(torch.tensor(float(cli.trainer.callback_metrics["val/loss"])))


def test_augmentation_runs_on_the_gpu(tiny_cifar: Path):
    from mobilenet_lab.data import CIFAR100DataModule

    data = CIFAR100DataModule(data_dir=str(tiny_cifar), batch_size=16, val_size=100)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    cuda_batch = type(batch)(*(t.cuda() if isinstance(t, torch.Tensor) else t for t in batch))
    images, labels = data.on_after_batch_transfer(cuda_batch, 0)
    cpu_images, _ = data.on_after_batch_transfer(batch, 0)
    assert images.device.type == "cuda" and images.dtype == torch.float32
    torch.testing.assert_close(images.cpu(), cpu_images)  # same draws on either device


def test_benchmark_on_cuda(tmp_path: Path):
    from mobilenet_lab.tools import benchmark

    benchmark.main(["--models", "mobilenet_v3_small", "--widths", "0.5", "--devices", "cuda", "--runs", "10",
                    "--warmup", "2", "--no_reference", "--no_train", "--out", str(tmp_path), "--quiet"])
    assert "cuda" in (tmp_path / "benchmark.csv").read_text()

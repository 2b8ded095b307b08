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
    cli = MobileNetCLI(
        args=[
            "fit",
            "--config",
            str(ROOT / "configs/quickstart.yaml"),
            "--config",
            str(ROOT / "configs/trainer/gpu.yaml"),
            f"--data.data_dir={tiny_cifar}",
            "--data.num_workers=0",
            "--data.val_size=100",
            "--data.batch_size=32",
            "--trainer.max_epochs=2",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks=[]",
        ]
    )
    assert cli.trainer.global_step == 2 * (300 // 32)
    # Lightning moves the module back to the CPU at teardown; the run itself was on the GPU.
    assert cli.trainer.strategy.root_device.type == "cuda"
    assert cli.datamodule.train_dataset.images_on_device
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

    benchmark.main(
        [
            "--models",
            "mobilenet_v3_small",
            "--widths",
            "0.5",
            "--devices",
            "cuda",
            "--runs",
            "10",
            "--warmup",
            "2",
            "--no_reference",
            "--no_train",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert "cuda" in (tmp_path / "benchmark.csv").read_text()


def _gpu_cli(tiny_cifar: Path, *extra: str):
    from mobilenet_lab.cli import MobileNetCLI

    return MobileNetCLI(
        args=[
            "--config",
            str(ROOT / "configs/quickstart.yaml"),
            "--config",
            str(ROOT / "configs/trainer/gpu.yaml"),
            f"--data.data_dir={tiny_cifar}",
            "--data.val_size=100",
            "--data.batch_size=32",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks=[]",
            "--model.init_args.width_mult=0.25",
            *extra,
        ],
        run=False,
    )


@pytest.mark.parametrize("ema", [False, True], ids=["plain", "with_ema"])
def test_training_steps_never_wait_on_the_host(tiny_cifar: Path, tmp_path: Path, monkeypatch, ema: bool):
    # Steady-state steps (images on the GPU, bf16, metrics, logging at its interval; the EMA update when on)
    # must not synchronise: torch's sync debug mode warns on every synchronising call; none may happen
    # between steps 3 and 8.
    import warnings

    import lightning as L

    monkeypatch.chdir(tmp_path)
    seen: list[str] = []

    class SyncWatch(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 3:
                self.catcher = warnings.catch_warnings(record=True)
                self.records = self.catcher.__enter__()
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 8:
                torch.cuda.set_sync_debug_mode(0)
                self.catcher.__exit__(None, None, None)
                # The first warning is torch's notice that the mode is a prototype; the others name a call.
                seen.extend(
                    str(w.message)[:200]
                    for w in self.records
                    if "synchroniz" in str(w.message) and "prototype feature" not in str(w.message)
                )

    cli = _gpu_cli(tiny_cifar, "--trainer.max_steps=10", "--trainer.log_every_n_steps=50")
    cli.trainer.callbacks.append(SyncWatch())
    if ema:
        from mobilenet_lab.ema import EMA

        cli.trainer.callbacks.append(EMA())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 10
    assert cli.datamodule.train_dataset.images_on_device  # batches carried keys, the images stayed on the GPU
    assert seen == [], seen


def test_nonfinite_loss_on_gpu_stops_without_writing_a_checkpoint(tiny_cifar: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = _gpu_cli(
        tiny_cifar,
        "--trainer.max_epochs=3",
        "--model.init_args.finite_check_every=4",
        "--model.init_args.optimizer.init_args.lr=1e12",
    )
    with pytest.raises(FloatingPointError, match="not finite"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    for ckpt in tmp_path.rglob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), ckpt


def test_compiled_fit_on_gpu(tiny_cifar: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = _gpu_cli(tiny_cifar, "--trainer.max_epochs=1", "--model.init_args.compile=true")
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 300 // 32
    assert torch.isfinite(torch.tensor(float(cli.trainer.callback_metrics["val/loss"])))

"""Export to ONNX (and ExecuTorch when installed): runtime parity, metadata, int8, CLI errors.

Checkpoints are real Lightning checkpoints of small models (cifar stem, 32x32), trained one step
(training to meaningful margins costs minutes on 2 shared cores). Top-1 agreement int8 vs fp32 is
therefore asserted on real CIFAR-100 only (``MOBILENET_LAB_DATA`` pointing at the folder holding
``cifar-100-python/``); on synthetic inputs the int8 test asserts that the logits stay close to
fp32 (relative gap, per-sample correlation), which an untrained network still makes meaningful.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import lightning  # noqa: E402
from conftest import cli_env, python_m  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from mobilenet_lab import versions as modules  # noqa: E402
from mobilenet_lab.errors import CheckpointError, UserError  # noqa: E402
from mobilenet_lab.inference import load_model  # noqa: E402
from mobilenet_lab.tools import export as ex  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = os.environ.get("MOBILENET_LAB_DATA")
MEAN, STD = [0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]
NAMES = [f"class_{i:02d}" for i in range(100)]
# version -> (LightningModule class, width); small widths keep the suite fast.
VERSIONS = {
    "mobilenet_v1": (modules.MobileNetV1, 0.25),
    "mobilenet_v2": (modules.MobileNetV2, 0.35),
    "mobilenet_v3_small": (modules.MobileNetV3Small, 0.5),
    "mobilenet_v3_large": (modules.MobileNetV3Large, 0.25),
    "mobilenet_v4_conv_small": (modules.MobileNetV4ConvSmall, 0.5),
}
# ONNX export (dynamo) takes 10-30 s per model on 2 shared cores: two versions run by default.
SLOW_VERSIONS = {"mobilenet_v2", "mobilenet_v3_large", "mobilenet_v4_conv_small"}
STRUCTURED_CLASSES = 10


def structured_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[0, 1] images of 10 classes: a class colour, a class stripe pattern, and noise."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.Generator().manual_seed(1234)
    base = 0.25 + 0.5 * torch.rand(STRUCTURED_CLASSES, 3, 1, 1, generator=colours)
    labels = torch.randint(0, STRUCTURED_CLASSES, (n,), generator=g)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    freq = 1 + torch.arange(STRUCTURED_CLASSES, dtype=torch.float32) % 5
    angle = torch.arange(STRUCTURED_CLASSES, dtype=torch.float32) * 0.7
    phase = xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None]
    stripes = torch.sin(phase * freq[:, None, None] * 2 * torch.pi / 32)[:, None]  # C x 1 x 32 x 32
    images = base[labels] + 0.2 * stripes[labels] + 0.08 * torch.randn(n, 3, 32, 32, generator=g)
    return images.clamp(0, 1), labels


def _save_checkpoint(module: lightning.LightningModule, loader: DataLoader, steps: int, path: Path) -> Path:
    trainer = lightning.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        devices=1,
    )
    trainer.fit(module, train_dataloaders=loader)
    trainer.save_checkpoint(path)
    # No data module in these runs: give the checkpoint what fit on CIFAR-100 would have written.
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["mobilenet_lab"].update(class_names=NAMES, mean=MEAN, std=STD)
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Lightning checkpoints of the four versions (one training step each)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    noise = DataLoader(TensorDataset(torch.rand(8, 3, 32, 32), torch.randint(0, 100, (8,))), batch_size=4)
    for name, (cls, width) in VERSIONS.items():
        out[name] = _save_checkpoint(cls(width_mult=width), noise, 1, root / f"{name}.ckpt")
    return out


@pytest.fixture(scope="session")
def onnx_files(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """Exports on demand, once per version: ``onnx_files(name) -> (model, path, gap)``."""
    root = tmp_path_factory.mktemp("onnx")
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            model = load_model(checkpoints[name])
            path = root / f"{name}.onnx"
            gap = ex.export_onnx(model, path, log=lambda s: None)
            cache[name] = (model, path, gap)
        return cache[name]

    return get


def _version_params():
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_VERSIONS else n for n in VERSIONS]


@pytest.mark.parametrize("name", _version_params())
def test_onnx_matches_pytorch_and_carries_metadata(name: str, onnx_files) -> None:
    model, path, gap = onnx_files(name)
    assert gap <= ex.FP32_RTOL
    assert not list(path.parent.glob(f".{path.name}.*")), "temporary files left beside the output"
    assert not list(path.parent.glob("*.data")), "weights must be inlined, not external data"

    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value"), "batch axis must be dynamic"
    assert [d.dim_value for d in dims[1:]] == [3, 32, 32]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    for batch in (1, 7):
        x = rng.random((batch, 3, 32, 32), dtype=np.float32)
        got = session.run(["logits"], {"images": x})[0]
        with torch.inference_mode():
            want = model(torch.from_numpy(x)).numpy()
        assert got.shape == (batch, 100)
        assert np.abs(got - want).max() <= ex.FP32_RTOL * np.abs(want).max()

    meta = ex.read_onnx_metadata(path)
    assert meta["class_names"] == NAMES
    assert meta["image_size"] == 32
    assert meta["mean"] == pytest.approx(MEAN) and meta["std"] == pytest.approx(STD)
    assert meta["model_config"]["name"] == name
    assert meta["model_config"]["width_mult"] == VERSIONS[name][1]
    assert meta["model_config"]["stem"] == "cifar"
    raw = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(raw["mobilenet_lab.class_names"])[3] == "class_03"  # plain JSON strings


def test_export_refuses_a_file_that_does_not_match(onnx_files, tmp_path: Path, monkeypatch) -> None:
    """A check beyond tolerance fails with a one-line UserError and leaves no file behind."""
    model, good, _ = onnx_files("mobilenet_v1")
    out = tmp_path / "bad.onnx"
    from mobilenet_lab.tools.export import onnx as ex_onnx

    monkeypatch.setattr(ex_onnx, "_onnx_proto", lambda model, opset: onnx.load(str(good)))
    monkeypatch.setattr(ex_onnx, "check_onnx", lambda model, path: 0.5)
    with pytest.raises(UserError, match="differs from PyTorch"):
        ex.export_onnx(model, out, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["mobilenet_v1", pytest.param("mobilenet_v4_conv_small", marks=pytest.mark.slow)])
def test_int8_runs_and_stays_close_to_fp32(name: str, onnx_files, tmp_path: Path) -> None:
    """Static QDQ int8 (per-channel weights) runs, is smaller, keeps metadata, and tracks fp32 logits."""
    model, fp32_path, _ = onnx_files(name)
    calibration, _ = structured_images(128, seed=1)
    int8_path = tmp_path / "int8.onnx"
    ex.quantize_onnx_int8(fp32_path, int8_path, calibration.numpy())
    proto = onnx.load(str(int8_path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") >= 10 and "DequantizeLinear" in ops
    assert int8_path.stat().st_size < 0.5 * fp32_path.stat().st_size
    meta = ex.read_onnx_metadata(int8_path)
    assert meta["class_names"] == NAMES and meta["quantization"]["per_channel"] is True

    images, _ = structured_images(64, seed=2)  # same distribution as the calibration, held out
    x = images.numpy()
    fp32 = ex.onnx_logits(ex.onnx_session(fp32_path), x)
    int8 = ex.onnx_logits(ex.onnx_session(int8_path), x)
    assert int8.shape == fp32.shape and np.isfinite(int8).all()
    gap = ex.relative_gap(int8, fp32)
    assert 0 < gap < 0.25, gap  # really quantized, yet close
    a = fp32 - fp32.mean(1, keepdims=True)
    b = int8 - int8.mean(1, keepdims=True)
    corr = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
    assert np.median(corr) > 0.95, corr


@pytest.mark.slow
@pytest.mark.skipif(not DATA, reason="set MOBILENET_LAB_DATA to the folder holding cifar-100-python/")
def test_int8_on_real_cifar100_via_cli(checkpoints, tmp_path: Path) -> None:
    """The CLI calibrates on real training images and reports fp32/int8 test accuracy and agreement."""
    out = tmp_path / "v3s.int8.onnx"
    proc = _cli(
        "--ckpt_path",
        checkpoints["mobilenet_v3_small"],
        "--quantize",
        "int8",
        "--output",
        out,
        "--data_dir",
        DATA,
        "--calibration_images",
        "256",
        "--eval_images",
        "1000",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CIFAR-100 test (1000 images)" in proc.stdout and "agreement" in proc.stdout
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    from mobilenet_lab.data.cifar100 import load_split

    images, _ = load_split(DATA, "test")
    x = images[:200].float().div(255).numpy()
    int8 = session.run(["logits"], {"images": x})[0]
    fp32 = torch_logits_of(checkpoints["mobilenet_v3_small"], x)
    assert ex.top1_agreement(int8, fp32) >= 0.8


def torch_logits_of(ckpt: Path, x: np.ndarray) -> np.ndarray:
    return ex.torch_logits(load_model(ckpt), x)


# ---------------------------------------------------------------------------------- CLI
def _cli(*args: object, timeout: int = 600) -> subprocess.CompletedProcess:
    return python_m(["export", *args], cwd=REPO, timeout=timeout, env=cli_env(PYTHONWARNINGS="ignore"))


def test_cli_bad_format_is_one_clear_line(checkpoints, tmp_path: Path) -> None:
    proc = _cli("--ckpt_path", checkpoints["mobilenet_v1"], "--format", "tflite", "--output", tmp_path / "m")
    assert proc.returncode != 0
    assert "invalid choice: 'tflite'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("kind", ["missing", "truncated"])
def test_cli_bad_checkpoint_is_one_clear_line(kind: str, checkpoints, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    if kind == "truncated":
        ckpt.write_bytes(checkpoints["mobilenet_v1"].read_bytes()[:5000])
    out = tmp_path / "model.onnx"
    proc = _cli("--ckpt_path", ckpt, "--output", out)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(ckpt) in lines[0]
    assert ("does not exist" if kind == "missing" else "not a readable checkpoint") in lines[0]
    assert not out.exists()


def test_cli_unwritable_output_is_one_clear_line(checkpoints, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = _cli("--ckpt_path", checkpoints["mobilenet_v1"], "--output", blocker / "model.onnx")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error: cannot write --output" in proc.stderr


def test_cli_quantize_without_data_says_where_to_put_it(checkpoints, tmp_path: Path) -> None:
    proc = _cli(
        "--ckpt_path",
        checkpoints["mobilenet_v1"],
        "--quantize",
        "int8",
        "--output",
        tmp_path / "q.onnx",
        "--data_dir",
        tmp_path / "nowhere",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "CIFAR-100 not found" in proc.stderr and "calibrates" in proc.stderr


def test_load_model_errors_are_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        ex.main(["--ckpt_path", str(tmp_path / "none.ckpt"), "--output", str(tmp_path / "x.onnx")])


@pytest.mark.slow
def test_cli_end_to_end_with_benchmark(checkpoints, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "v3s.onnx"
    proc = _cli(
        "--ckpt_path",
        checkpoints["mobilenet_v3_small"],
        "--output",
        out,
        "--benchmark",
        "--runs",
        "20",
        "--warmup",
        "2",
        "--random_calibration",
        "--calibration_images",
        "16",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "max relative logit gap" in proc.stdout
    for runtime in ("PyTorch eager fp32", "ONNX Runtime fp32", "ONNX Runtime int8"):
        assert runtime in proc.stdout
    assert out.is_file() and oct(out.stat().st_mode & 0o777) != oct(0o600)
    assert [p.name for p in out.parent.iterdir()] == ["v3s.onnx"]


# --------------------------------------------------------------------------- ExecuTorch
@pytest.mark.slow
@pytest.mark.parametrize("quantize", [False, True], ids=["fp32", "int8"])
def test_executorch_pte_runs_in_executorch_runtime(quantize: bool, checkpoints, tmp_path: Path) -> None:
    pytest.importorskip("executorch.runtime")
    model = load_model(checkpoints["mobilenet_v3_small"])
    out = tmp_path / "m.pte"
    calibration = structured_images(64, seed=1)[0].numpy() if quantize else None
    gap = ex.export_executorch(model, out, calibration, log=lambda s: None)
    method = ex.executorch_method(out)
    images, labels = structured_images(64, seed=2)
    got = ex.executorch_logits(method, images.numpy())
    want = ex.torch_logits(model, images.numpy())
    if quantize:
        assert np.isfinite(got).all() and 0 < ex.relative_gap(got, want) < 0.5
    else:
        assert gap <= ex.FP32_RTOL and ex.relative_gap(got, want) <= ex.FP32_RTOL
    one = method.execute([images[:1]])[0]
    assert tuple(one.shape) == (1, 100)

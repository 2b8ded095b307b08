"""The compiled-step options (``mobilenet_lab/compile.py``): the compile mode, the compile cache carried between
machines, the first step's time, and the full-length recipe's fused SGD, all on the CPU.

The fast tests replace ``torch.compile`` and torch's cache functions with stand-ins (compiling on this CPU takes
10-100 s); the slow ones compile a tiny network for real, each in a fresh process with its own cache folder.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mobilenet_lab.classifier import ImageClassifier
from mobilenet_lab.compile import MODES, CompiledNetwork, CudaGraphSteps, compile_mode, load_cache, save_cache
from mobilenet_lab.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.accelerator=cpu",
    "--data.batch_size=32",
    "--data.val_size=100",
]


def tiny_classifier(**kwargs) -> ImageClassifier:
    return ImageClassifier("mobilenet_v3_small", {"width_mult": 0.25, "stem": "cifar"}, **kwargs)


@pytest.fixture
def fake_compile(monkeypatch) -> list[dict]:
    """torch.compile replaced by a recorder that returns the network itself."""
    calls: list[dict] = []

    def record(model, **kwargs):
        calls.append(kwargs)
        return model

    monkeypatch.setattr(torch, "compile", record)
    return calls


def test_the_compile_option_is_false_true_or_a_mode():
    assert compile_mode(False) is None and compile_mode(True) == "default"
    assert [compile_mode(m) for m in MODES] == list(MODES)
    assert set(MODES) == {"default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"}
    with pytest.raises(
        UserError,
        match=r"^compile must be false, true or one of default, .*got 'fastest'; set --model.init_args.compile$",
    ):
        tiny_classifier(compile="fastest")


@pytest.mark.parametrize("mode", [False, True, *MODES])
def test_each_mode_reaches_torch_compile_with_static_shapes(mode, fake_compile, monkeypatch):
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    module = tiny_classifier(compile=mode)
    if mode is False:
        assert fake_compile == [] and module.configure_callbacks() == []
    else:
        assert fake_compile == [{"mode": "default" if mode is True else mode, "dynamic": False}]
        assert module.configure_callbacks() == [module.compiled]  # the trainer runs its hooks
    assert all(k.startswith("model.") for k in module.state_dict())  # the weights once, not under a wrapper
    logits = module(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100)
    # CUDA graph modes: each call is a new step (marked) and the logits are copied out of the graph's memory.
    graphs = mode in ("reduce-overhead", "max-autotune")
    assert isinstance(module.compiled.network, CudaGraphSteps) == graphs and len(marks) == int(graphs)


def test_the_cache_file_is_read_before_the_fit_and_written_at_its_end(tiny_cifar, tmp_path, fake_compile, monkeypatch):
    """Through the command line's fit: the hooks of a compiled network load the cache file, time the first step
    and write torch's artifacts (gzipped, atomically) at the end; a second fit reads them back."""
    from mobilenet_lab.cli import MobileNetCLI

    loaded: list[bytes] = []
    info = SimpleNamespace(artifacts={"inductor": ["a", "b"], "aot_autograd": ["c"]})
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"kernels", info))
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", lambda data: loaded.append(data) or info)
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "caches" / "v3_small.bin"

    def fit() -> CompiledNetwork:
        cli = MobileNetCLI(
            args=[
                "--config",
                str(ROOT / "configs/quickstart.yaml"),
                f"--data.data_dir={tiny_cifar}",
                "--model.init_args.width_mult=0.25",
                "--model.init_args.compile=max-autotune-no-cudagraphs",
                f"--model.init_args.compile_cache={cache}",
                "--trainer.max_steps=2",
                "--trainer.limit_val_batches=1",
                *QUIET,
            ],
            run=False,
        )
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        return cli.model.compiled

    first = fit()
    assert loaded == [] and gzip.decompress(cache.read_bytes()) == b"kernels"
    assert first.first_step_s is not None and first.first_step_s > 0
    assert [p.name for p in cache.parent.iterdir()] == ["v3_small.bin"]  # no temporary file left
    fit()
    assert loaded == [b"kernels"]


def test_cache_messages_missing_damaged_and_nothing_to_save(tmp_path, monkeypatch):
    missing = tmp_path / "none.bin"
    assert "does not exist yet; compiling from scratch" in load_cache(missing)
    damaged = tmp_path / "damaged.bin"
    damaged.write_bytes(b"not gzip")
    assert "not loaded" in load_cache(damaged) and "compiling from scratch" in load_cache(damaged)
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: None)
    assert "nothing compiled" in save_cache(missing) and not missing.exists()
    damaged_before = damaged.read_bytes()
    assert "left as it was" in save_cache(damaged) and damaged.read_bytes() == damaged_before


def test_the_full_recipe_trains_with_fused_sgd_on_the_cpu(tiny_cifar, tmp_path, monkeypatch):
    """configs/recipes/full_gpu.yaml asks for fused SGD (optimizer.init_args.fused): torch accepts it on the CPU."""
    from mobilenet_lab.cli import MobileNetCLI

    monkeypatch.chdir(tmp_path)
    cli = MobileNetCLI(
        args=[
            "--config",
            str(ROOT / "configs/v3_small.yaml"),
            "--config",
            str(ROOT / "configs/recipes/full_gpu.yaml"),
            f"--data.data_dir={tiny_cifar}",
            "--model.init_args.width_mult=0.25",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=1",
            *QUIET,
        ],
        run=False,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    optimizer = cli.model.optimizers().optimizer
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["fused"] is True
    assert optimizer.defaults["nesterov"] is True and cli.trainer.global_step == 2
    assert cli.trainer.max_epochs == 130 and cli.datamodule.eval_batch_size == 1000


# ------------------------------------------------------------------- real compiles, each in its own process
STEP = """
import json, sys, time
from pathlib import Path
import torch
from torch import nn
from mobilenet_lab.compile import CompiledNetwork, load_cache, save_cache
from torch._dynamo.utils import counters

mode, cache, action = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
messages = [load_cache(cache)] if action == "load" else []
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(), nn.AdaptiveAvgPool2d(1),
                    nn.Flatten(), nn.Linear(8, 10))
compiled = CompiledNetwork(net, mode)
start = time.perf_counter()
loss = nn.functional.cross_entropy(compiled.network(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3]))
loss.backward()
seconds = time.perf_counter() - start
if action == "save":
    messages.append(save_cache(cache))
print(json.dumps({"s": seconds, "finite": bool(torch.isfinite(loss)), "grad": net[0].weight.grad is not None,
                  "inductor": dict(counters["inductor"]), "aot": dict(counters["aot_autograd"]), "messages": messages}))
"""


def compiled_step(tmp_path: Path, mode: str, cache: Path, action: str, inductor_dir: str) -> dict:
    env = {"OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / inductor_dir), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", STEP, mode, str(cache), action],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # ~15 s per mode on this CPU
@pytest.mark.parametrize("mode", MODES)
def test_each_mode_compiles_a_training_step_on_the_cpu(tmp_path, mode):
    # CUDA graph modes skip their graphs on the CPU and still train.
    step = compiled_step(tmp_path, mode, tmp_path / "unused.bin", "none", "inductor")
    assert step["finite"] and step["grad"]
    assert step["inductor"].get("fxgraph_cache_miss", 0) >= 1  # compiled by inductor, not run eagerly


@pytest.mark.slow  # ~30 s: two processes compile the same step
def test_the_compile_cache_carries_a_compile_to_a_fresh_process(tmp_path):
    """Process 1 compiles and saves the cache; process 2, with an empty inductor folder of its own (a fresh
    machine), loads it and finds every graph in it: no inductor graph is compiled again."""
    cache = tmp_path / "cache.bin"
    first = compiled_step(tmp_path, "default", cache, "save", "inductor_1")
    assert first["inductor"].get("fxgraph_cache_miss", 0) >= 1 and "compile cache: wrote" in first["messages"][0]
    second = compiled_step(tmp_path, "default", cache, "load", "inductor_2")
    assert "compile cache: loaded" in second["messages"][0]
    assert second["inductor"].get("fxgraph_cache_hit", 0) == first["inductor"]["fxgraph_cache_miss"]
    assert second["inductor"].get("fxgraph_cache_miss", 0) == 0
    assert second["aot"].get("autograd_cache_hit", 0) >= 1
    print(f"first compiled step: {first['s']:.1f} s from scratch, {second['s']:.1f} s from the cache")

"""The classifier's compiled network: the ``torch.compile`` mode, a compile cache carried between machines, and
what the first training step cost.

:class:`~mobilenet_lab.classifier.ImageClassifier` takes ``compile``: ``False`` (eager), ``True`` (torch's default
mode) or a mode name (:data:`MODES`):

- ``default``: Inductor fuses BatchNorm, activations and other elementwise work into fewer passes over the
  activations; convolutions stay cuDNN's.
- ``max-autotune-no-cudagraphs``: also times Triton templates against cuBLAS/cuDNN for each matmul and
  convolution shape and keeps the fastest (minutes of compiling; the compile cache keeps the choices).
- ``reduce-overhead``: CUDA graphs, one launch per step instead of one per kernel; it pays where the host
  cannot launch kernels as fast as the GPU runs them (small batches, small networks). Shapes must repeat: the
  training loader drops its incomplete last batch, and evaluation batches of one size divide the sets.
- ``max-autotune``: both.

The network is compiled with ``dynamic=False``: each batch shape gets its own static graph, as CUDA graphs
need anyway. ``compile_cache`` names a file of torch's compile cache
(``torch.compiler.save_cache_artifacts``, gzipped): read before the first compile and rewritten atomically at
the end of ``fit``, so a later process on a machine of the same kind, with the same torch, finds the compiled
kernels (and autotuning choices) instead of producing them again. The first training step's wall time (the
compile, mostly) is logged once per process.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any, Literal, get_args

import lightning as L
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import nn

from .atomic import atomic_path
from .errors import UserError

__all__ = ["MODES", "CompileMode", "CompiledNetwork", "compile_mode", "load_cache", "save_cache"]

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
#: The ``torch.compile`` modes the ``compile`` option takes by name.
MODES: tuple[str, ...] = get_args(CompileMode)
#: Modes that run the compiled graphs as CUDA graphs (on a GPU).
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compile_mode(compile: bool | str) -> str | None:
    """The ``torch.compile`` mode of the ``compile`` option (``None``: eager); one line for a bad value."""
    if compile is False or compile is None:
        return None
    if compile is True:
        return "default"
    if compile not in MODES:
        raise UserError(
            f"compile must be false, true or one of {', '.join(MODES)}, got {compile!r}; set --model.init_args.compile"
        )
    return str(compile)


class CudaGraphSteps(nn.Module):
    """A compiled network run as CUDA graphs: every call starts a new step and copies its logits out.

    The mark tells torch that the previous call's outputs are no longer needed (a training step's backward
    has run; an evaluation batch has been scored). The copy (batch x classes, negligible) keeps logits valid
    when the graph runs again before they are used, as with test-time flip's two calls per batch.
    """

    def __init__(self, compiled: nn.Module) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        torch.compiler.cudagraph_mark_step_begin()
        return self.compiled(images).clone()


def load_cache(path: Path) -> str:
    """Loads a compile cache file into torch's caches (before the first compile); returns a line saying what."""
    if not path.is_file():
        return f"compile cache: {path} does not exist yet; compiling from scratch (fit writes it at its end)"
    try:
        info = torch.compiler.load_cache_artifacts(gzip.decompress(path.read_bytes()))
    except Exception as err:  # a cache from another torch, or a damaged file: compile from scratch
        return f"compile cache: {path} not loaded ({type(err).__name__}: {err}); compiling from scratch"
    return f"compile cache: loaded {_count(info)} from {path}"


def save_cache(path: Path) -> str:
    """Writes this process's compile artifacts (loaded ones included) to ``path`` atomically; returns a line."""
    saved = torch.compiler.save_cache_artifacts()
    if saved is None or not getattr(saved[1], "artifacts", None):
        return f"compile cache: nothing compiled in this process; {path} left as it was"
    data, info = saved
    packed = gzip.compress(data, compresslevel=6)
    with atomic_path(path) as tmp:
        tmp.write_bytes(packed)
    return f"compile cache: wrote {_count(info)} ({len(packed) / 2**20:.1f} MiB) to {path}"


def _count(info: Any) -> str:
    artifacts = getattr(info, "artifacts", None) or {}
    kinds = ", ".join(f"{kind} {len(keys)}" for kind, keys in sorted(artifacts.items()))
    return f"{sum(len(keys) for keys in artifacts.values())} artifacts ({kinds or 'none'})"


class CompiledNetwork(L.Callback):
    """The network forward() calls (:attr:`network`), and the hooks around it: the cache, the first step's time.

    The classifier returns this object from ``configure_callbacks`` when its network is compiled, so the
    trainer calls the hooks; eager it does nothing (a cache file is then ignored). It is no ``nn.Module``, so the
    compiled wrapper stays out of the classifier's submodules: its state dict holds the weights once, under
    ``model.``.

    Args:
        model: The plain network.
        compile: ``False``, ``True`` or a mode name (:data:`MODES`).
        cache: A compile cache file, or None.
    """

    def __init__(self, model: nn.Module, compile: bool | str, cache: str | None = None) -> None:
        self.mode = compile_mode(compile)
        self.cache = Path(cache).expanduser() if cache else None
        if self.mode is None:
            self.network: nn.Module = model
        else:
            compiled = torch.compile(model, mode=self.mode, dynamic=False)
            on_gpu_graphs = self.mode in CUDA_GRAPH_MODES
            self.network = CudaGraphSteps(compiled) if on_gpu_graphs else compiled
        self.cache_loaded = False
        self.first_step_s: float | None = None
        self._step_started: float | None = None

    @property
    def active(self) -> bool:
        """True when the network is compiled (the hooks have work to do)."""
        return self.mode is not None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.cache is not None and not self.cache_loaded:  # before the first compile, once per process
            self.cache_loaded = True
            rank_zero_info(load_cache(self.cache))

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.first_step_s is None and self._step_started is None:
            self._step_started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.first_step_s is None and self._step_started is not None:
            if pl_module.device.type == "cuda":  # the step's kernels have run (one sync in a whole run)
                torch.cuda.synchronize(pl_module.device)
            self.first_step_s = time.perf_counter() - self._step_started
            rank_zero_info(f"first training step: {self.first_step_s:.1f} s (torch.compile, mode {self.mode})")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.cache is not None and trainer.is_global_zero:
            rank_zero_info(save_cache(self.cache))

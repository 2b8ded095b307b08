"""Which device each trial of this machine gets: one GPU per worker (round robin), else a share of the CPU cores."""

from __future__ import annotations

import os

__all__ = ["cpu_threads_env", "gpu_slots"]


def cpu_threads_env(workers: int, env: dict[str, str]) -> dict[str, str]:
    """``OMP_NUM_THREADS`` for each of ``workers`` trials sharing this machine's cores (unless the user set it).

    Without it every trial takes one thread per core, and trials that outnumber the cores spin against
    each other at every parallel region, several times slower than with one thread each.
    """
    if workers <= 1 or "OMP_NUM_THREADS" in env:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}


def gpu_slots(workers: int) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each worker: one GPU each (round robin), or None without GPUs."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return [None] * workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(count)]
    ids = ids[:count]
    if workers > len(ids):
        print(f"note: {workers} workers share {len(ids)} GPU(s); each GPU runs several trials at once")
    return [ids[i % len(ids)] for i in range(workers)]

"""Per-rank random-number state in checkpoints, for exact resume.

Dropout and augmentation draw from the global RNGs, which Lightning does not checkpoint. Every rank
saves its own state (gathered into the checkpoint rank 0 writes) and on resume takes its own back.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["gather_rng_states", "this_rank_state"]


def gather_rng_states(module: Any, state: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's RNG state, a list indexed by global rank; a collective under DDP.

    ``module`` is the LightningModule (its ``all_gather`` and ``device``); world size 1 needs no trainer.
    """
    try:
        world = module.trainer.world_size
    except RuntimeError:  # not attached to a trainer
        world = 1
    if world == 1:
        return [state]
    gathered = module.all_gather(state.to(module.device))  # world x n (NCCL needs device tensors)
    return [row.cpu().clone() for row in gathered]  # own storage: one file entry per state


def this_rank_state(states: Any, rank: int, world: int) -> torch.Tensor | None:
    """This rank's RNG state from a checkpoint: one per rank, or (older checkpoints) one for all.

    None when the checkpoint was written by another world size: no exact resume is possible, the
    fresh state is kept.
    """
    # A copy: set_rng_state reads a view's storage from its start (a row of a stacked tensor would
    # give another rank's state, or garbage).
    if isinstance(states, torch.Tensor):
        return states.clone()
    if isinstance(states, (list, tuple)) and len(states) == world:
        return states[rank].clone()
    return None

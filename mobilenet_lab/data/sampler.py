"""The training sampler: epoch-tagged keys, a pure function of (seed, epoch), resumable mid-epoch.

The sampler yields *keys* ``epoch * len(dataset) + index``, from which the data set derives every
random draw of a sample (crop, flip, strong policy), so an epoch is the same whatever the process
RNG state, the worker count or where a run was resumed. Being a ``DistributedSampler``, Lightning
calls its ``set_epoch`` and never replaces it; under DDP each rank takes its shard of the same order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler

from mobilenet_lab.data import augment as aug

__all__ = ["EpochKeySampler"]


class EpochKeySampler(DistributedSampler):
    """A shuffling DistributedSampler that yields epoch-tagged keys and can resume mid-epoch.

    Yields ``epoch * len(dataset) + index``; the order depends only on (seed, epoch) (and the
    replica's rank), never on the process RNG. Lightning calls :meth:`set_epoch` each epoch and,
    because this is a ``DistributedSampler``, never replaces it.

    Args:
        dataset: The data set (only its length is used).
        num_replicas: Number of processes (DDP world size).
        rank: This process's rank.
        shuffle: Shuffle each epoch (else in order).
        seed: Shuffle seed, shared by all replicas.
        drop_last: As DistributedSampler: drop the tail instead of padding to divide evenly.
        batch_size: The DataLoader's batch size, used by :meth:`resume_from`.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        batch_size: int = 1,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.dataset_len = len(dataset)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self._resume: tuple[int, int] | None = None  # (epoch, samples to skip), consumed by __iter__

    def resume_from(self, epoch: int, batches_done: int) -> None:
        """Make the next iteration of ``epoch`` start after its first ``batches_done`` batches.

        Sets the epoch, and skips ``batches_done * batch_size`` of this rank's samples the next
        time the sampler is iterated with that epoch (once; later iterations are whole epochs).
        ``len()`` stays the full epoch length, so Lightning's restored batch counter plus the
        remaining batches add up to the usual number of batches per epoch.

        Args:
            epoch: The interrupted epoch (Lightning's ``trainer.current_epoch`` at the crash).
            batches_done: Batches of that epoch already trained on (per rank).
        """
        if epoch < 0 or batches_done < 0:
            raise ValueError(f"epoch and batches_done must be >= 0, got {epoch}, {batches_done}")
        skip = batches_done * self.batch_size
        if skip > self.num_samples:
            raise ValueError(
                f"batches_done={batches_done} x batch_size={self.batch_size} exceeds the {self.num_samples}"
                " samples of an epoch on this rank"
            )
        self.set_epoch(epoch)
        self._resume = (epoch, skip)

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's data set indices of ``epoch`` in order (no skipping, no key tagging)."""
        n = self.dataset_len
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(aug.derive_seed(self.seed, aug.STREAM_SHUFFLE, epoch))
            indices = torch.randperm(n, generator=g).tolist()
        else:
            indices = list(range(n))
        if not self.drop_last:
            padding = self.total_size - len(indices)
            if padding > 0:
                indices += (indices * math.ceil(padding / len(indices)))[:padding]
        else:
            indices = indices[: self.total_size]
        return indices[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        start = 0
        if self._resume is not None and self._resume[0] == epoch:
            start = self._resume[1]
            self._resume = None
        base = epoch * self.dataset_len
        return iter([base + i for i in self.epoch_indices(epoch)[start:]])

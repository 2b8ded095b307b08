"""A training DataLoader that Lightning checkpoints and restores mid-epoch.

Lightning saves the ``state_dict()`` of every training loader that has ``state_dict`` and
``load_state_dict`` into each checkpoint (``loops.fit_loop.state_dict.combined_loader``) and hands it
back to ``load_state_dict`` when a fit resumes; such a loader is "resumable" and Lightning does not
warn about mid-epoch checkpoints. :class:`ResumableLoader` is that loader for a sampler whose epoch
is a pure function of (seed, epoch), such as :class:`~mobilenet_lab.data.sampler.EpochKeySampler`:
its state is only (epoch, batches already yielded), and a restored loader starts the interrupted
epoch after those batches, so the rest of the epoch is what the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

__all__ = ["ResumableLoader"]


class ResumableLoader(DataLoader):
    """A DataLoader with Lightning's stateful-loader protocol (``state_dict`` / ``load_state_dict``).

    Its sampler must have ``epoch`` (set by Lightning through ``set_epoch``) and
    ``resume_from(epoch, batches_done)``. ``len()`` stays the full epoch: Lightning adds its
    restored batch counter to the batches a resumed iterator yields.

    The iterator starts lazily, at the first batch: Lightning creates it before it sets the
    sampler's epoch and, on resume, before it restores the state (Lightning issue #20550), and
    workers would otherwise prefetch from the wrong epoch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch = 0
        self._batches_done = 0
        self._restored: tuple[int, int] | None = None

    def state_dict(self) -> dict[str, int]:
        """Epoch of the current (or last) iteration and the batches it has yielded so far."""
        if self._restored is not None:  # restored, not iterated yet: still where the checkpoint was
            return {"epoch": self._restored[0], "batches_done": self._restored[1]}
        epoch = int(getattr(self.sampler, "epoch", 0))
        if epoch != self._epoch:  # a new epoch was set and has not started
            return {"epoch": epoch, "batches_done": 0}
        return {"epoch": self._epoch, "batches_done": self._batches_done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The next iteration, if it is of the saved epoch, skips the batches already yielded in it.

        An epoch-end state (or any state whose epoch the trainer does not resume) changes nothing.
        """
        self._restored = (int(state_dict["epoch"]), int(state_dict["batches_done"]))

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._iterate()

    def _iterate(self) -> Iterator[Any]:
        epoch = int(getattr(self.sampler, "epoch", 0))
        done = 0
        if self._restored is not None:
            saved_epoch, saved_done = self._restored
            self._restored = None
            if saved_epoch == epoch and saved_done > 0:
                self.sampler.resume_from(epoch, saved_done)  # type: ignore[attr-defined]
                done = saved_done
        self._epoch, self._batches_done = epoch, done
        for batch in super().__iter__():
            self._batches_done += 1
            yield batch

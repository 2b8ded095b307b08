"""User-facing errors: one line that says what is wrong and how to fix it.

Raise :class:`UserError` (or a subclass) for any problem the user can fix (bad config value,
missing data set, unreadable checkpoint). The command line prints ``error: <message>`` and exits
with status 2, without a traceback (set ``MOBILENET_LAB_DEBUG=1`` or pass ``--debug`` to see it).
"""

from collections.abc import Sequence
from typing import Any

__all__ = ["UserError", "DataError", "CheckpointError", "TrainingInterrupted"]


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


class DataError(UserError):
    """The data set is missing, truncated, corrupted or has an unexpected structure."""


class CheckpointError(UserError):
    """A checkpoint is missing, truncated, refused by the safe loader or does not match the config."""


class TrainingInterrupted(Exception):
    """``fit`` stopped on SIGINT/SIGTERM after writing a checkpoint; exits with 128 + signal number.

    Attributes:
        exit_code: 128 + the signal number.
        checkpoint: The checkpoint written at the stop.
        children: Worker processes (other ranks) this process started and must wait for before exiting.
        global_rank: This process's rank (only rank 0 prints the message).
    """

    def __init__(
        self, signal_name: str, exit_code: int, checkpoint: str, children: Sequence[Any] = (), global_rank: int = 0
    ) -> None:
        super().__init__(
            f"{signal_name} received: training stopped after the current batch and saved {checkpoint}; "
            f"resume with the same command plus --ckpt_path {checkpoint}"
        )
        self.exit_code = exit_code
        self.checkpoint = checkpoint
        self.children = list(children)
        self.global_rank = global_rank

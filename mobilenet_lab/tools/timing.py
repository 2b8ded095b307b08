"""One way to time things: every latency and throughput figure of the project is measured here.

Used by ``benchmark`` (latency, throughput, training speed), ``export --benchmark`` (deployment
latency) and the scripts in ``benchmarks/`` (fit vs bare loop, data pipeline, GPU proof).

Built on :mod:`torch.utils.benchmark`: the clock is its ``timer`` (it synchronises the accelerator
before reading the time, so a GPU call is timed to its end, not to its launch), and each result
is its ``Measurement`` (median, IQR, per-call ``times``, a readable ``repr``). We do not call
``Timer.timeit``/``blocked_autorange``: they time one statement in blocks of many calls, each
``timeit`` after a warm-up of its own, so several functions cannot take turns call by call; and
they keep block means, not the per-call times whose 90th percentile our tables print. Taking turns
matters on a shared machine: functions timed A B, B A, A B ... meet the same slow phases, so
their ratio holds even when the absolute times drift.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.benchmark import Measurement, TaskSpec
from torch.utils.benchmark import timer as _clock

__all__ = ["clock", "Stopwatch", "interleaved", "time_calls", "median", "percentile", "summary_ms"]


def clock() -> float:
    """Seconds from a monotonic clock, read after the accelerator (if any) has finished its work."""
    return _clock()


class Stopwatch:
    """Seconds between :meth:`start` (or creation) and :meth:`stop`, read with :func:`clock`.

    For spans the caller marks itself (an epoch of a loader, the steps between two Lightning
    hooks)::

        watch = Stopwatch()
        ...                      # the work
        rate = images / watch.stop()
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = clock()

    def start(self) -> None:
        self._start = clock()

    def stop(self) -> float:
        """Seconds since the start; also kept in :attr:`seconds`."""
        self.seconds = clock() - self._start
        return self.seconds


def interleaved(
    fns: Sequence[Callable[[], Any]], warmup: int, runs: int, names: Sequence[str] | None = None
) -> list[Measurement]:
    """Per-call times of every function, ``runs`` calls each after ``warmup`` untimed calls each.

    The functions take turns within each repetition and the order alternates between
    repetitions (A B, B A, A B, ...), so slow phases of a shared machine hit all of them.

    Returns:
        One ``torch.utils.benchmark.Measurement`` per function (``times``: the seconds of each
        call; ``median``; ``description``: its name).
    """
    names = list(names) if names is not None else [getattr(fn, "__name__", f"fn{i}") for i, fn in enumerate(fns)]
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for rep in range(runs):
        order = range(len(fns)) if rep % 2 == 0 else reversed(range(len(fns)))
        for j in order:
            start = clock()
            fns[j]()
            times[j].append(clock() - start)
    threads = torch.get_num_threads()
    return [
        Measurement(
            number_per_run=1,
            raw_times=t,
            task_spec=TaskSpec(stmt=f"{name}()", setup="pass", description=name, num_threads=threads),
        )
        for name, t in zip(names, times)
    ]


def time_calls(fn: Callable[[], Any], warmup: int, runs: int, name: str | None = None) -> Measurement:
    """:func:`interleaved` for one function."""
    return interleaved([fn], warmup, runs, None if name is None else [name])[0]


def _values(values: Measurement | Sequence[float]) -> list[float]:
    return list(values.times) if isinstance(values, Measurement) else list(values)


def median(values: Measurement | Sequence[float]) -> float:
    """The median (the mean of the two middle values for an even count)."""
    return percentile(values, 50)


def percentile(values: Measurement | Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100] (numpy's default method, as ``Measurement``'s)."""
    s = sorted(_values(values))
    if not s:
        raise ValueError("percentile of no values")
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary_ms(measurement: Measurement | Sequence[float]) -> dict[str, float]:
    """``{"median_ms", "p90_ms"}`` of per-call seconds: the two latency columns of our tables."""
    return {"median_ms": 1000 * median(measurement), "p90_ms": 1000 * percentile(measurement, 90)}

"""tools/timing.py: the one timing helper (interleaving, per-call times, median and p90, the clock)."""

import pytest
from torch.utils.benchmark import Measurement

from mobilenet_lab.tools import timing


def test_median_and_percentile():
    assert timing.median([3.0, 1.0, 2.0]) == 2.0
    assert timing.median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert timing.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)
    with pytest.raises(ValueError, match="no values"):
        timing.percentile([], 50)


def test_interleaved_alternates_and_records_each_call(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(timing, "_clock", lambda: now[0])
    durations = {"a": iter([0.001] * 2 + [0.001 * k for k in range(1, 11)]), "b": iter([0.005] * 12)}
    calls = []

    def call(name):
        def fn():
            calls.append(name)
            now[0] += next(durations[name])

        return fn

    a, b = timing.interleaved([call("a"), call("b")], warmup=2, runs=10, names=["a", "b"])
    assert calls[:4] == ["a", "b", "a", "b"]  # warm-up
    assert calls[4:10] == ["a", "b", "b", "a", "a", "b"]  # then A B, B A, A B ...
    assert isinstance(a, Measurement) and a.task_spec.description == "a"
    assert a.times == pytest.approx([0.001 * k for k in range(1, 11)])
    assert timing.summary_ms(a) == {"median_ms": pytest.approx(5.5), "p90_ms": pytest.approx(9.1)}
    assert a.median == pytest.approx(0.0055)  # torch's Measurement agrees with our median
    assert timing.summary_ms(b) == {"median_ms": pytest.approx(5.0), "p90_ms": pytest.approx(5.0)}


def test_stopwatch_reads_the_clock(monkeypatch):
    now = [10.0]
    monkeypatch.setattr(timing, "_clock", lambda: now[0])
    watch = timing.Stopwatch()
    now[0] = 12.5
    assert watch.stop() == 2.5 and watch.seconds == 2.5
    watch.start()
    now[0] = 13.0
    assert watch.stop() == 0.5

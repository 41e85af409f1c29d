"""pydg.testing on the CPU: calc_diff with numpy, and bench's protocol with a fake event timer."""
import numpy as np
import pytest

from pydg import reference
from pydg.testing import _bench, calc_diff


def test_calc_diff_of_equal_opposite_and_zero_arrays():
    x = np.random.default_rng(0).standard_normal((64, 32))
    assert calc_diff(x, x) == pytest.approx(0.0, abs=1e-15)
    assert calc_diff(x, -x) == pytest.approx(2.0)
    assert calc_diff(np.zeros(3), np.zeros(3)) == 0.0


def test_calc_diff_is_half_the_squared_relative_error_when_small():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(100_000)
    y = x * (1 + 1e-3 * rng.standard_normal(x.shape))
    rel = np.linalg.norm(x - y) / np.linalg.norm(x)
    assert calc_diff(x, y) == pytest.approx(rel**2 / 2, rel=0.05)


def test_calc_diff_agrees_with_the_reference_and_accepts_mixed_dtypes():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 16)).astype(np.float32)
    y = (x + 0.01 * rng.standard_normal(x.shape)).astype(np.float16)
    assert calc_diff(x, y) == pytest.approx(reference.calc_diff(x, y), rel=1e-12)


def test_calc_diff_nan_and_shape_mismatch():
    assert np.isnan(calc_diff(np.array([1.0, np.nan]), np.array([1.0, 2.0])))
    with pytest.raises(ValueError, match="y: expected the shape of x"):
        calc_diff(np.zeros((2, 3)), np.zeros((3, 2)))


class _FakeTimer:
    """Events whose 'time' is the step at which they were recorded; each call of fn takes 1 + its index."""

    def __init__(self):
        self.clock = 0.0
        self.log = []

    def event(self):
        return {}

    def record(self, event):
        event["t"] = self.clock
        self.log.append("record")

    def elapsed_s(self, start, end):
        return end["t"] - start["t"]

    def synchronize(self):
        self.log.append("sync")

    def flush_l2(self):
        self.log.append("flush")
        self.clock += 100.0  # a flush is never counted


def test_bench_warms_up_flushes_and_returns_the_median():
    timer = _FakeTimer()
    durations = iter([0, 0, 5, 1, 3, 2, 100])  # two warm-ups, then five timed calls

    def fn():
        timer.clock += next(durations)
        timer.log.append("fn")

    assert _bench(timer, fn, warmups=2, iters=5, flush_l2=True) == 3
    assert timer.log[:2] == ["fn", "fn"]
    assert timer.log[2:6] == ["flush", "record", "fn", "record"]
    assert timer.log.count("flush") == 5 and timer.log[-1] == "sync"


def test_bench_without_flush_and_bad_counts():
    timer = _FakeTimer()
    assert _bench(timer, lambda: None, warmups=0, iters=3, flush_l2=False) == 0
    assert "flush" not in timer.log
    with pytest.raises(ValueError, match="iters"):
        _bench(timer, lambda: None, warmups=0, iters=0, flush_l2=False)

"""Helpers to check and time GEMMs: DeepGEMM's accuracy measure and a CUDA-event benchmark.

Both work with torch and CuPy (calc_diff with numpy too). Neither library is imported until an
argument or the machine calls for it, so `import pydg.testing` is free.
"""
from __future__ import annotations

import statistics
import sys
from typing import Any, Callable, Protocol

import numpy as np

L2_FLUSH_BYTES = 256 * 2**20  # five times an H100's or H200's 50 MB L2: a write of this evicts it all


def calc_diff(x: Any, y: Any) -> float:
    """DeepGEMM's similarity measure 1 - 2*sum(x*y) / sum(x*x + y*y), computed in float64.

    x, y: arrays of the same shape (torch tensors, CuPy arrays or numpy arrays, any real dtype;
    torch bfloat16/float8 included). Two arrays of the same GPU library are reduced on their GPU;
    other pairs are compared on the host. 0.0 for equal arrays (and for two all-zero ones), about
    rel_err^2 / 2 for a small relative error, 2.0 for x = -y; NaN if either holds a NaN.
    pydg's GEMMs measure at most 1e-5 against the float64 product of their dequantized inputs.
    """
    if tuple(x.shape) != tuple(y.shape):
        raise ValueError(f"y: expected the shape of x {tuple(x.shape)}, got {tuple(y.shape)}")
    library = _library(x)
    if library == _library(y) == "torch" and x.device == y.device:
        x, y = x.double(), y.double()
        numerator, denominator = (x * y).sum(), (x * x + y * y).sum()
    elif library == _library(y) == "cupy" and x.device == y.device:
        x, y = x.astype("float64"), y.astype("float64")
        numerator, denominator = (x * y).sum(), (x * x + y * y).sum()
    else:
        from pydg.reference import to_numpy

        x, y = to_numpy(x).astype(np.float64), to_numpy(y).astype(np.float64)
        numerator, denominator = np.sum(x * y), np.sum(x * x + y * y)
    numerator, denominator = float(numerator), float(denominator)
    if denominator == 0.0:
        return 0.0
    return 1.0 - 2.0 * numerator / denominator


def _library(x: Any) -> str:
    return type(x).__module__.split(".", 1)[0]


# ------------------------------------------------------------------------------------------ bench

class EventTimer(Protocol):
    """What bench needs of a GPU library: timing events on its current stream and an L2 flush."""

    def event(self) -> Any: ...
    def record(self, event: Any) -> None: ...
    def elapsed_s(self, start: Any, end: Any) -> float: ...
    def synchronize(self) -> None: ...
    def flush_l2(self) -> None: ...


class _TorchTimer:
    def __init__(self, torch: Any):
        self.torch = torch
        self._flush = None

    def event(self) -> Any:
        return self.torch.cuda.Event(enable_timing=True)

    def record(self, event: Any) -> None:
        event.record()

    def elapsed_s(self, start: Any, end: Any) -> float:
        return start.elapsed_time(end) / 1e3

    def synchronize(self) -> None:
        self.torch.cuda.synchronize()

    def flush_l2(self) -> None:
        if self._flush is None:
            self._flush = self.torch.empty(L2_FLUSH_BYTES // 4, dtype=self.torch.int32, device="cuda")
        self._flush.zero_()


class _CupyTimer:
    def __init__(self, cupy: Any):
        self.cupy = cupy
        self._flush = None

    def event(self) -> Any:
        return self.cupy.cuda.Event()

    def record(self, event: Any) -> None:
        event.record()  # on CuPy's current stream

    def elapsed_s(self, start: Any, end: Any) -> float:
        return self.cupy.cuda.get_elapsed_time(start, end) / 1e3

    def synchronize(self) -> None:
        self.cupy.cuda.Device().synchronize()

    def flush_l2(self) -> None:
        if self._flush is None:
            self._flush = self.cupy.empty(L2_FLUSH_BYTES // 4, dtype=self.cupy.int32)
        self._flush.fill(0)


def _timer(library: str | None) -> EventTimer:
    """torch if asked for, or if it is imported (or importable) with CUDA; else CuPy."""
    if library not in (None, "torch", "cupy"):
        raise ValueError(f"library: expected 'torch', 'cupy' or None, got {library!r}")
    if library in (None, "torch"):
        torch = sys.modules.get("torch")
        if torch is None:
            try:
                import torch
            except ImportError:
                torch = None
        if torch is not None and torch.cuda.is_available():
            return _TorchTimer(torch)
        if library == "torch":
            raise RuntimeError("bench: torch with CUDA is needed for library='torch'")
    try:
        import cupy
    except ImportError:
        raise RuntimeError("bench: torch with CUDA or CuPy is needed to time on the GPU") from None
    return _CupyTimer(cupy)


def bench(fn: Callable[[], Any], warmups: int = 5, iters: int = 30, flush_l2: bool = True,
          library: str | None = None) -> float:
    """Median GPU time of one call of `fn`, in seconds, from CUDA events around each call.

    fn: launches work on the current stream of torch or CuPy (`library`, default: torch if it has
    CUDA, else CuPy). It is called `warmups` times first (compiling and loading kernels), then
    `iters` times with events recorded just before and after each call; with flush_l2, a 256 MiB
    write before each call empties the L2 cache, so that every call reads its operands from
    memory (its time is not counted). The median resists the odd slow call. One host sync at the
    end; the time covers every kernel `fn` launches and any gap between them.
    """
    return _bench(_timer(library), fn, warmups, iters, flush_l2)


def _bench(timer: EventTimer, fn: Callable[[], Any], warmups: int, iters: int, flush_l2: bool) -> float:
    if warmups < 0 or iters < 1:
        raise ValueError(f"iters: expected warmups >= 0 and iters >= 1, got warmups={warmups}, iters={iters}")
    for _ in range(warmups):
        fn()
    pairs = [(timer.event(), timer.event()) for _ in range(iters)]
    for start, end in pairs:
        if flush_l2:
            timer.flush_l2()
        timer.record(start)
        fn()
        timer.record(end)
    timer.synchronize()
    return statistics.median(timer.elapsed_s(start, end) for start, end in pairs)

"""Device memory the kernels keep for themselves: stream-K's flags and partial tiles.

One workspace per (device, stream): launches on one stream run one after another, so they can share
it, while two streams may run GEMMs at the same time. A workspace is never freed or moved, because a
CUDA graph captured with its address keeps using it at every replay; it only grows, by a new
allocation, when a plan needs more (the old one stays alive for the graphs that hold it). Its flags
start at zero: a new allocation is cleared with a memset enqueued on the stream itself (recorded in
the graph when the stream is being captured), and every kernel sets the flags it raised back to zero
before it ends. cuMemAlloc is refused while the calling thread captures in the global mode (torch's
default), so it runs with the thread switched to the relaxed mode for the call, as torch's own
allocator does.
"""
from __future__ import annotations

import threading

from cuda.bindings import driver as cu

from pydg.driver.cuda import check, pop_context, push_context

# Bytes cleared at the front of each allocation: the flags (plan.py MAX_STREAM_K_CTAS x 4 bytes).
FLAG_BYTES = 4096
_GRANULE = 1 << 21

_lock = threading.Lock()
_workspaces: dict[tuple[int, int], tuple[int, int]] = {}  # (device, stream) -> (address, bytes)


def workspace(device: int, stream: int, nbytes: int) -> int:
    """The address of at least `nbytes` of workspace for launches on `stream` of `device`."""
    key = (device, stream)
    found = _workspaces.get(key)
    if found is not None and found[1] >= nbytes:
        return found[0]
    with _lock:
        found = _workspaces.get(key)
        if found is not None and found[1] >= nbytes:
            return found[0]
        size = -(-max(nbytes, FLAG_BYTES) // _GRANULE) * _GRANULE
        push_context(device)
        try:
            mode = check("cuThreadExchangeStreamCaptureMode", cu.cuThreadExchangeStreamCaptureMode(
                cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED))
            try:
                address = int(check("cuMemAlloc", cu.cuMemAlloc(size)))
            finally:
                check("cuThreadExchangeStreamCaptureMode", cu.cuThreadExchangeStreamCaptureMode(mode))
            check("cuMemsetD8Async", cu.cuMemsetD8Async(address, 0, FLAG_BYTES, cu.CUstream(stream)))
        finally:
            pop_context()
        _workspaces[key] = (address, size)
        return address

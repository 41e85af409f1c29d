"""The CUDA driver through cuda-python: result checking, lazy initialisation, devices and contexts."""
from __future__ import annotations

import ctypes
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache

from cuda.bindings import driver as cu

from pydg.errors import CudaError

_init_lock = threading.Lock()
_initialised = False


def check(call: str, result: tuple):
    """Unpack a cuda-python result tuple, raising CudaError with the driver's name and text."""
    err = result[0]
    if err != cu.CUresult.CUDA_SUCCESS:
        _, name = cu.cuGetErrorName(err)
        _, text = cu.cuGetErrorString(err)
        raise CudaError(call, _decode(name) or str(err), _decode(text))
    if len(result) == 1:
        return None
    return result[1] if len(result) == 2 else result[1:]


def _decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else (str(value) if value is not None else "")


def init() -> None:
    """cuInit, once per process, on first use (importing pydg touches no GPU)."""
    global _initialised
    if _initialised:
        return
    with _init_lock:
        if not _initialised:
            check("cuInit", cu.cuInit(0))
            _initialised = True


def device_count() -> int:
    """Number of CUDA devices, 0 where there is no driver or no GPU."""
    try:
        init()
        return check("cuDeviceGetCount", cu.cuDeviceGetCount())
    except Exception:  # CudaError, or cuda-bindings finding no driver library at all
        return 0


@dataclass(frozen=True)
class DeviceInfo:
    ordinal: int
    name: str
    compute_capability: tuple[int, int]
    num_sms: int
    max_smem_per_block: int  # opt-in dynamic shared memory, bytes


@lru_cache(maxsize=None)
def device_info(ordinal: int) -> DeviceInfo:
    """The device's fixed properties (two threads may both query it once: it is read-only)."""
    init()
    dev = check("cuDeviceGet", cu.cuDeviceGet(ordinal))
    attr = cu.CUdevice_attribute

    def get(a):
        return check("cuDeviceGetAttribute", cu.cuDeviceGetAttribute(a, dev))

    name = check("cuDeviceGetName", cu.cuDeviceGetName(256, dev))
    return DeviceInfo(
        ordinal=ordinal,
        name=_decode(name).rstrip("\x00").strip(),
        compute_capability=(get(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                            get(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)),
        num_sms=get(attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
        max_smem_per_block=get(attr.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
    )


_contexts: dict[int, object] = {}
_contexts_lock = threading.Lock()


def primary_context(ordinal: int):
    """The device's primary context (the one torch and CuPy use), retained once for the process
    (the lock keeps two threads from both retaining it)."""
    ctx = _contexts.get(ordinal)
    if ctx is not None:
        return ctx
    with _contexts_lock:
        ctx = _contexts.get(ordinal)
        if ctx is None:
            init()
            dev = check("cuDeviceGet", cu.cuDeviceGet(ordinal))
            ctx = check("cuDevicePrimaryCtxRetain", cu.cuDevicePrimaryCtxRetain(dev))
            _contexts[ordinal] = ctx
    return ctx


def push_context(ordinal: int) -> None:
    """Make the device's primary context current on this thread until pop_context, whatever was
    current before (the caller's context, torch's current device, stays as it was)."""
    check("cuCtxPushCurrent", cu.cuCtxPushCurrent(primary_context(ordinal)))


def pop_context() -> None:
    check("cuCtxPopCurrent", cu.cuCtxPopCurrent())


@lru_cache(maxsize=None)
def _driver_ctx_get_current():
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    function = ctypes.CDLL(name).cuCtxGetCurrent
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    return function


def current_context() -> int:
    """The calling thread's current context as an integer handle (0: none). Through ctypes, as the
    launch is (driver/launch.py): a GEMM asks on every call where there are several GPUs, and
    cuda-python's wrapper costs about a microsecond."""
    handle = ctypes.c_void_p()
    code = _driver_ctx_get_current()(ctypes.byref(handle))
    if code:
        check("cuCtxGetCurrent", (cu.CUresult(code),))
    return handle.value or 0


def make_current(ordinal: int):
    """Make the device's primary context current on this thread if another (or none) is."""
    ctx = primary_context(ordinal)
    current = check("cuCtxGetCurrent", cu.cuCtxGetCurrent())
    if current is None or int(current) != int(ctx):
        check("cuCtxSetCurrent", cu.cuCtxSetCurrent(ctx))
    return ctx

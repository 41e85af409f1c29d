"""cuLaunchKernelEx with prebuilt arguments: per call, only pointers, tensor maps and the stream change.

The launch itself calls the driver library through ctypes with a CUlaunchConfig laid out here:
cuda-python's wrapper converts and checks every argument on each call (about 5.6 us on an H100
host), while a ctypes call with prebuilt structures costs about a microsecond. Everything else
(modules, functions, attributes) still goes through cuda-python.
"""
from __future__ import annotations

import ctypes
import sys
from functools import lru_cache

from cuda.bindings import driver as cu

from pydg.errors import CudaError

TENSOR_MAP_BYTES = 128
CLUSTER_DIMENSION_ATTRIBUTE = 4  # CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION (cuda.h)

PARAM_TYPES = {"tensor_map": ctypes.c_uint8 * TENSOR_MAP_BYTES, "pointer": ctypes.c_uint64, "u32": ctypes.c_uint32,
               "u32x8": ctypes.c_uint32 * 8}


class LaunchAttribute(ctypes.Structure):
    """CUlaunchAttribute: an id, 4 bytes of padding, and a 64-byte value union (cuda.h)."""
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_uint32 * 16)]


class LaunchConfig(ctypes.Structure):
    """CUlaunchConfig (cuda.h)."""
    _fields_ = [
        ("grid", ctypes.c_uint32 * 3),
        ("block", ctypes.c_uint32 * 3),
        ("shared_mem_bytes", ctypes.c_uint32),
        ("stream", ctypes.c_void_p),
        ("attrs", ctypes.POINTER(LaunchAttribute)),
        ("num_attrs", ctypes.c_uint32),
    ]


@lru_cache(maxsize=None)
def _driver_launch():
    """The driver's cuLaunchKernelEx as a ctypes function (the library cuda-python also loads)."""
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    function = ctypes.CDLL(name).cuLaunchKernelEx
    function.restype = ctypes.c_int
    # No argtypes: every argument is passed as a prebuilt c_void_p (or None), which ctypes hands over
    # as it is; with argtypes it would convert and check each one per call (about 0.3 us).
    return function


def _raise_launch_error(code: int) -> None:
    err = cu.CUresult(code)
    _, name = cu.cuGetErrorName(err)
    _, text = cu.cuGetErrorString(err)
    decode = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
    raise CudaError("cuLaunchKernelEx", decode(name), decode(text))


class KernelLaunch:
    """One kernel's launch configuration and parameter buffers.

    `params` lists the kernel's parameters in order as kinds of PARAM_TYPES. The driver reads each
    parameter through the array of addresses built here, so updating a buffer in place is all a call
    needs to do.
    """

    def __init__(self, func, grid: tuple[int, int, int], block: tuple[int, int, int], smem_bytes: int,
                 cluster_size: int, params: tuple[str, ...]):
        self.func = func
        self.values = [PARAM_TYPES[kind]() for kind in params]
        self.addresses = (ctypes.c_void_p * len(params))(*[ctypes.addressof(v) for v in self.values])
        self.attrs = (LaunchAttribute * 1)()
        config = LaunchConfig()
        config.grid[:] = grid
        config.block[:] = block
        config.shared_mem_bytes = smem_bytes
        if cluster_size > 1:
            self.attrs[0].id = CLUSTER_DIMENSION_ATTRIBUTE
            self.attrs[0].value[:3] = (cluster_size, 1, 1)
            config.num_attrs = 1
        config.attrs = self.attrs
        self.config = config
        self._config_ptr = ctypes.c_void_p(ctypes.addressof(config))
        self._func_ptr = ctypes.c_void_p(int(func))
        self._params_ptr = ctypes.c_void_p(ctypes.addressof(self.addresses))
        self._launch = _driver_launch()
        self._stream = 0

    def set_value(self, index: int, value: int) -> None:
        """Set a pointer or u32 parameter."""
        self.values[index].value = value

    def set_words(self, index: int, words: tuple[int, ...]) -> None:
        """Set a u32x8 parameter (a struct of eight 32-bit words)."""
        self.values[index][:] = words

    def set_tensor_map(self, index: int, encoded_address: int) -> None:
        """Copy 128 encoded bytes from `encoded_address` (a CUtensorMap's getPtr()) into the parameter."""
        ctypes.memmove(ctypes.addressof(self.values[index]), encoded_address, TENSOR_MAP_BYTES)

    def launch(self, stream: int) -> None:
        if stream != self._stream:
            self.config.stream = stream or None
            self._stream = stream
        code = self._launch(self._config_ptr, self._func_ptr, self._params_ptr, None)
        if code:
            _raise_launch_error(code)


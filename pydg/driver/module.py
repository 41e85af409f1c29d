"""Loaded modules and their kernels, per device, cached for the process.

Modules are never unloaded: there is one per kernel (mode, N, K and block configuration) and
device that the process has used, each a few hundred KB of device memory.
"""
from __future__ import annotations

import threading

from cuda.bindings import driver as cu

from pydg.driver.cuda import check, pop_context, push_context

_lock = threading.Lock()
_functions: dict[tuple[int, str, str], object] = {}


def get_function(ordinal: int, key: str, cubin: bytes, name: str, dynamic_smem_bytes: int):
    """The CUfunction `name` of `cubin` loaded in the device's primary context, with its dynamic
    shared-memory limit raised to `dynamic_smem_bytes`."""
    cache_key = (ordinal, key, name)
    func = _functions.get(cache_key)
    if func is not None:
        return func
    with _lock:
        func = _functions.get(cache_key)
        if func is None:
            # Loaded into the device's context without leaving it current: on a machine with several
            # GPUs, the caller's current device (torch's) must not change under it.
            push_context(ordinal)
            try:
                func = _load(cubin, name, dynamic_smem_bytes)
            finally:
                pop_context()
            _functions[cache_key] = func
    return func


def _load(cubin: bytes, name: str, dynamic_smem_bytes: int):
    """Load `cubin` into the current context; its function `name`, allowed that much shared memory."""
    module = check("cuModuleLoadData", cu.cuModuleLoadData(cubin))
    func = check("cuModuleGetFunction", cu.cuModuleGetFunction(module, name.encode()))
    check("cuFuncSetAttribute", cu.cuFuncSetAttribute(
        func, cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, dynamic_smem_bytes))
    return func

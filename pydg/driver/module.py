"""Loaded modules and their kernels, per device, cached for the process."""
from __future__ import annotations

import threading

from cuda.bindings import driver as cu

from pydg.driver.cuda import check, make_current

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
            make_current(ordinal)
            module = check("cuModuleLoadData", cu.cuModuleLoadData(cubin))
            func = check("cuModuleGetFunction", cu.cuModuleGetFunction(module, name.encode()))
            check("cuFuncSetAttribute", cu.cuFuncSetAttribute(
                func, cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                dynamic_smem_bytes))
            _functions[cache_key] = func
    return func

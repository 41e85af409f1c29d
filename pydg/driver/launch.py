"""cuLaunchKernelEx with prebuilt arguments: per call, only pointers, tensor maps and the stream change."""
from __future__ import annotations

import ctypes

from cuda.bindings import driver as cu

from pydg.driver.cuda import check

TENSOR_MAP_BYTES = 128


PARAM_TYPES = {"tensor_map": ctypes.c_uint8 * TENSOR_MAP_BYTES, "pointer": ctypes.c_uint64, "u32": ctypes.c_uint32}


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
        self.params_ptr = ctypes.addressof(self.addresses)
        config = cu.CUlaunchConfig()
        config.gridDimX, config.gridDimY, config.gridDimZ = grid
        config.blockDimX, config.blockDimY, config.blockDimZ = block
        config.sharedMemBytes = smem_bytes
        attrs = []
        if cluster_size > 1:
            attr = cu.CUlaunchAttribute()
            attr.id = cu.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
            attr.value.clusterDim.x = cluster_size
            attr.value.clusterDim.y = 1
            attr.value.clusterDim.z = 1
            attrs.append(attr)
        config.attrs = attrs
        config.numAttrs = len(attrs)
        self.config = config
        self._stream = None

    def set_value(self, index: int, value: int) -> None:
        """Set a pointer or u32 parameter."""
        self.values[index].value = value

    def set_tensor_map(self, index: int, encoded_address: int) -> None:
        """Copy 128 encoded bytes from `encoded_address` (a CUtensorMap's getPtr()) into the parameter."""
        ctypes.memmove(ctypes.addressof(self.values[index]), encoded_address, TENSOR_MAP_BYTES)

    def launch(self, stream: int) -> None:
        if stream != self._stream:
            self.config.hStream = cu.CUstream(stream)
            self._stream = stream
        check("cuLaunchKernelEx", cu.cuLaunchKernelEx(self.config, self.func, self.params_ptr, 0))

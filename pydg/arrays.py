"""What pydg needs to know of a user's array (pointer, shape, strides, dtype, device), and the
caller's current stream, for torch tensors, CuPy arrays and anything with __cuda_array_interface__."""
from __future__ import annotations

import sys
from dataclasses import dataclass

# Names pydg uses for dtypes, whatever the library calls them.
_CAI_TYPESTR = {"|u1": "uint8", "|i1": "int8", "<f4": "float32", "<i4": "int32", "<u2": "uint16",
                "<i2": "int16", "<f2": "float16"}


@dataclass(frozen=True)
class ArrayInfo:
    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements
    dtype: str
    device: int               # CUDA ordinal; -1 for host memory
    library: str              # "torch", "cupy" or "cai"

    @property
    def signature(self) -> tuple:
        """Everything but the pointer: what the per-shape caches are keyed on."""
        return (self.shape, self.strides, self.dtype, self.device)


def _library(x) -> str:
    return type(x).__module__.split(".", 1)[0]


def array_info(x, name: str) -> ArrayInfo:
    """Describe `x`; TypeError naming `name` if it is not an array pydg can read."""
    library = _library(x)
    if library == "torch":
        device = x.device
        return ArrayInfo(x.data_ptr(), tuple(x.shape), tuple(x.stride()), str(x.dtype)[6:],
                         device.index if device.type == "cuda" else -1, "torch")
    if library == "cupy":
        itemsize = x.dtype.itemsize
        return ArrayInfo(x.data.ptr, tuple(x.shape), tuple(s // itemsize for s in x.strides), x.dtype.name,
                         x.device.id, "cupy")
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is not None:
        dtype = _CAI_TYPESTR.get(cai["typestr"])
        if dtype is None:
            raise TypeError(f"{name}: unsupported element type {cai['typestr']!r}")
        itemsize = int(cai["typestr"][2:])
        shape = tuple(cai["shape"])
        strides = cai.get("strides")
        if strides is None:
            strides, step = [], 1
            for d in reversed(shape):
                strides.insert(0, step)
                step *= d
        else:
            strides = [s // itemsize for s in strides]
        ptr = cai["data"][0]
        return ArrayInfo(ptr, shape, tuple(strides), dtype, _pointer_device(ptr), "cai")
    raise TypeError(f"{name}: expected a CUDA array (torch tensor, CuPy array or an object with "
                    f"__cuda_array_interface__), got {type(x).__name__}")


def _pointer_device(ptr: int) -> int:
    from cuda.bindings import driver as cu

    from pydg.driver.cuda import check, init

    if ptr == 0:
        return -1
    init()
    try:
        return int(check("cuPointerGetAttribute", cu.cuPointerGetAttribute(
            cu.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, ptr)))
    except Exception:
        return -1


def current_stream(library: str, device: int) -> int:
    """The handle of the stream the caller's library would use now on `device` (0: legacy default)."""
    if library == "torch":
        torch = sys.modules["torch"]
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        return raw(device) if raw is not None else torch.cuda.current_stream(device).cuda_stream
    if library == "cupy":
        return sys.modules["cupy"].cuda.get_current_stream().ptr
    return 0

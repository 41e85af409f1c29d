"""What pydg needs to know of a user's array (pointer, shape, strides, dtype, device), and the
caller's current stream: torch tensors, CuPy arrays, JAX arrays, objects with
__cuda_array_interface__ or __dlpack__, and DeviceView (explicitly strided device memory)."""
from __future__ import annotations

import ctypes
import functools
import sys
from dataclasses import dataclass
from typing import Any, Callable

# Names pydg uses for dtypes, whatever the library calls them.
_CAI_TYPESTR = {"|u1": "uint8", "|i1": "int8", "<f4": "float32", "<i4": "int32", "<u2": "uint16",
                "<i2": "int16", "<f2": "float16"}
# DLPack's (type code, bits) -> pydg's name (dlpack.h: kDLInt 0, kDLUInt 1, kDLFloat 2, kDLBfloat 4,
# kDLFloat8_e4m3fn 10).
_DLPACK_DTYPES = {(1, 8): "uint8", (0, 8): "int8", (2, 32): "float32", (0, 32): "int32", (1, 16): "uint16",
                  (0, 16): "int16", (2, 16): "float16", (4, 16): "bfloat16", (10, 8): "float8_e4m3fn"}
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13
# What __dlpack__(stream=...) is told: pydg launches arrays of these libraries on the legacy default
# stream, and 1 is DLPack's name for it (the producer makes that stream wait for its pending work).
_DLPACK_LEGACY_STREAM = 1
_ACCEPTED = ("a torch tensor, CuPy array, JAX array, or an object with __cuda_array_interface__ or "
             "__dlpack__, in GPU memory")


@dataclass(frozen=True)
class ArrayInfo:
    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements
    dtype: str
    device: int               # CUDA ordinal; -1 for host memory
    library: str              # "torch", "cupy", "jax", "dlpack" or "cai": which stream the call runs on

    @property
    def signature(self) -> tuple:
        """Everything but the pointer: what the per-shape caches are keyed on."""
        return (self.shape, self.strides, self.dtype, self.device)


@dataclass(frozen=True)
class DeviceView:
    """Device memory described explicitly, for arrays a framework cannot stride as pydg needs.

    JAX arrays are always row-major, so A's scales in the TMA-aligned column-major layout are
    kept as a row-major (KB, align(M, 4)) JAX array and handed to pydg as a DeviceView of shape
    (M, KB) with strides (1, align(M, 4)). `owner` keeps the memory alive as long as the view.
    """
    info: ArrayInfo
    owner: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.info.shape


def _library(x) -> str:
    return type(x).__module__.split(".", 1)[0]


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides in elements."""
    strides, step = [], 1
    for d in reversed(shape):
        strides.insert(0, step)
        step *= d
    return tuple(strides)


def array_info(x, name: str) -> ArrayInfo:
    """Describe `x`; TypeError naming `name` if it is not an array pydg can read."""
    if isinstance(x, DeviceView):
        return x.info
    library = _library(x)
    if library == "torch":
        device = x.device
        return ArrayInfo(x.data_ptr(), tuple(x.shape), tuple(x.stride()), str(x.dtype)[6:],
                         device.index if device.type == "cuda" else -1, "torch")
    if library == "cupy":
        itemsize = x.dtype.itemsize
        return ArrayInfo(x.data.ptr, tuple(x.shape), tuple(s // itemsize for s in x.strides), x.dtype.name,
                         x.device.id, "cupy")
    if library in ("jax", "jaxlib"):
        return _jax_info(x, name)
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is not None:
        return _cai_info(cai, name)
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        return _dlpack_info(x, name)
    raise TypeError(f"{name}: expected a CUDA array ({_ACCEPTED}), got {type(x).__name__}")


def _cai_info(cai: dict, name: str) -> ArrayInfo:
    dtype = _CAI_TYPESTR.get(cai["typestr"])
    if dtype is None:
        raise TypeError(f"{name}: unsupported element type {cai['typestr']!r}")
    itemsize = int(cai["typestr"][2:])
    shape = tuple(cai["shape"])
    strides = cai.get("strides")
    strides = contiguous_strides(shape) if strides is None else tuple(s // itemsize for s in strides)
    ptr = cai["data"][0]
    return ArrayInfo(ptr, shape, strides, dtype, _pointer_device(ptr), "cai")


def _jax_info(x, name: str) -> ArrayInfo:
    """A concrete, single-device jax.Array. JAX computes asynchronously on streams of its own that
    pydg cannot name, so the array is waited for (block_until_ready) before its memory is used;
    pydg then launches on the legacy default stream (see pydg.jax_ops for the whole protocol)."""
    tracer = any(cls.__name__ == "Tracer" for cls in type(x).__mro__)  # jax.core.Tracer, without importing jax
    if tracer or getattr(type(x), "unsafe_buffer_pointer", None) is None:
        raise TypeError(f"{name}: expected a concrete jax.Array; pydg's JAX support runs eagerly, outside "
                        f"jax.jit/vmap/grad, got {type(x).__name__}")
    devices = x.devices()
    if len(devices) != 1:
        raise ValueError(f"{name}: expected a JAX array on one device, got one sharded over {len(devices)}")
    (device,) = devices
    if device.platform not in ("gpu", "cuda"):
        raise ValueError(f"{name}: expected an array in GPU memory on device cuda, got host memory "
                         f"(JAX platform {device.platform!r})")
    x.block_until_ready()
    shape = tuple(x.shape)
    # A buffer of no elements may have no address at all.
    ptr = x.unsafe_buffer_pointer() if all(shape) else 0
    return ArrayInfo(ptr, shape, contiguous_strides(shape), x.dtype.name, int(device.local_hardware_id), "jax")


# ---- DLPack, read without any framework: the capsule's DLTensor through ctypes ------------------

class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensorVersioned(ctypes.Structure):
    # version (major, minor), manager_ctx, deleter, flags, then the DLTensor.
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p), ("flags", ctypes.c_uint64), ("dl_tensor", _DLTensor)]


_capsule_valid = ctypes.pythonapi.PyCapsule_IsValid
_capsule_valid.restype, _capsule_valid.argtypes = ctypes.c_int, [ctypes.py_object, ctypes.c_char_p]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]


@dataclass(frozen=True)
class DLPackTensor:
    """The fields of a DLPack capsule's DLTensor that pydg uses (ptr includes byte_offset)."""
    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements
    dtype: str
    device_type: int
    device_id: int


def read_dlpack_capsule(capsule: Any, name: str = "array") -> DLPackTensor:
    """Read an unconsumed "dltensor" or "dltensor_versioned" capsule without consuming it: the
    capsule's own destructor still releases the producer's memory when the capsule is dropped."""
    if _capsule_valid(capsule, b"dltensor"):
        # DLManagedTensor starts with its DLTensor.
        tensor = _DLTensor.from_address(_capsule_pointer(capsule, b"dltensor"))
    elif _capsule_valid(capsule, b"dltensor_versioned"):
        address = _capsule_pointer(capsule, b"dltensor_versioned")
        tensor = _DLManagedTensorVersioned.from_address(address).dl_tensor
    else:
        raise TypeError(f"{name}: __dlpack__ returned no unconsumed DLPack capsule")
    dtype = _DLPACK_DTYPES.get((tensor.dtype.code, tensor.dtype.bits))
    if dtype is None or tensor.dtype.lanes != 1:
        raise TypeError(f"{name}: unsupported DLPack element type (code {tensor.dtype.code}, "
                        f"{tensor.dtype.bits} bits, {tensor.dtype.lanes} lanes)")
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    strides = (tuple(tensor.strides[i] for i in range(tensor.ndim)) if tensor.strides
               else contiguous_strides(shape))
    ptr = (tensor.data or 0) + tensor.byte_offset
    return DLPackTensor(ptr, shape, strides, dtype, tensor.device.device_type, tensor.device.device_id)


def _dlpack_info(x, name: str) -> ArrayInfo:
    device_type, _ = x.__dlpack_device__()
    if int(device_type) not in (_DL_CUDA, _DL_CUDA_MANAGED):
        where = "host memory" if int(device_type) in (_DL_CPU, _DL_CUDA_HOST) else f"DLPack device {device_type}"
        raise TypeError(f"{name}: expected a CUDA array ({_ACCEPTED}), got {type(x).__name__} in {where}")
    try:
        capsule = x.__dlpack__(stream=_DLPACK_LEGACY_STREAM)
    except TypeError:  # a producer older than the stream argument
        capsule = x.__dlpack__()
    tensor = read_dlpack_capsule(capsule, name)
    return ArrayInfo(tensor.ptr, tensor.shape, tensor.strides, tensor.dtype, tensor.device_id, "dlpack")


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


def stream_getter(library: str, device: int) -> Callable[[], int]:
    """A function of no arguments returning current_stream(library, device), with the library's
    lookup done once (the GEMMs keep one per prepared signature)."""
    if library == "torch":
        raw = getattr(sys.modules["torch"]._C, "_cuda_getCurrentRawStream", None)
        if raw is not None:
            return functools.partial(raw, device)
    return functools.partial(current_stream, library, device)


def current_stream(library: str, device: int) -> int:
    """The handle of the stream the caller's library would use now on `device`.

    torch and CuPy: their current stream (so a call is ordered with the caller's work and can be
    captured in a CUDA graph). Everything else (JAX, DLPack and __cuda_array_interface__ objects,
    DeviceView): 0, the legacy default stream; JAX's own streams cannot be named from Python, so
    pydg.jax_ops waits for its inputs before and for this stream after a call.
    """
    if library == "torch":
        torch = sys.modules["torch"]
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        return raw(device) if raw is not None else torch.cuda.current_stream(device).cuda_stream
    if library == "cupy":
        return sys.modules["cupy"].cuda.get_current_stream().ptr
    return 0

"""Casts of float data into pydg's FP8 recipe.

Per-token (A, the LHS): one float32 scale per row per 128 elements of K.
Per-block (B, the RHS): one float32 scale per 128 x 128 block.
For every block: amax = max |x| (clamped below at 1e-4), scale = amax / 448 in float32, and the
data is x / scale (float32) rounded to E4M3, so the block's largest element becomes +-448. A block
holding a NaN gets a NaN scale and NaN codes; one holding an Inf (and no NaN) an Inf scale.

Inputs may be torch tensors (CPU or CUDA; float32, bfloat16, float16), CuPy arrays (float16,
float32, float64) or numpy arrays (float16, float32, float64); outputs are of the same library on
the same device: torch gives `torch.float8_e4m3fn`, numpy and CuPy raw E4M3 bytes as uint8.
Everything is computed in float32 whatever the input dtype.

GPU arrays (torch CUDA tensors, CuPy arrays) are cast by pydg's own kernels (pydg/kernels/cast.cu,
one pass over memory), allocated with the input's library and launched on its current stream,
with no sync; host arrays by the numpy/torch code below. Both give the same bits. Neither torch nor
CuPy is imported unless such an input is given.
"""
from __future__ import annotations

import functools
import math
import sys
import types
from typing import Any

from pydg.fp8 import E4M3_MAX, array_module, float32_to_e4m3
from pydg.layout import get_col_major_tma_aligned_tensor
from pydg.utils import ceil_div

BLOCK = 128           # the recipe's scaling granularity along K (and along N for B)
AMAX_FLOOR = 1e-4     # keeps all-zero blocks from giving a zero scale (and 0/0 = NaN data)
K_MULTIPLE = 16       # TMA rows must be 16-byte multiples: 16 E4M3 elements
N_MULTIPLE = 8

_TORCH_DTYPES = ("float32", "bfloat16", "float16")
_NUMPY_DTYPES = ("float16", "float32", "float64")


def per_token_cast_to_fp8(x: Any) -> tuple[Any, Any]:
    """Quantize the LHS per token: one scale per row per 128 of K.

    x: (..., M, K) float array, K a multiple of 16 (the last 128-wide block may be shorter).
    Returns (x_fp8, scales): x_fp8 (..., M, K) E4M3 (torch: float8_e4m3fn; numpy/CuPy: uint8 bytes),
    contiguous; scales (..., M, ceil(K/128)) float32.

    GPU input: scales come TMA-aligned column-major, element (..., m, kb) at m + kb * align(M, 4)
    within each leading index, which is what the GEMMs take as they are: (M, K) for the dense and
    contiguous grouped GEMMs, (G, M_max, K) for the masked one. Host input: scales are plain
    row-major (`get_col_major_tma_aligned_tensor` converts them). The values are the same.
    A GPU input whose rows are not contiguous with 16-byte aligned starts is first copied.
    """
    _check_input(x, "x", min_rank=2)
    _check_multiple(x.shape[-1], K_MULTIPLE, "x", "K (last dimension)")
    if _on_gpu(x):
        return _cast_gpu(x, "per_token")
    if _library(x) == "torch":
        return _per_token_torch(x)
    return _per_token_xp(array_module(x), x)


def per_token_cast_to_fp8_masked(x: Any, masked_m: Any) -> tuple[Any, Any]:
    """Quantize the LHS of the masked grouped GEMM: only the valid rows of each group.

    x: (G, M_max, K) float array, K a multiple of 16. masked_m: (G,) int32 on x's device (GPU
    input: read by the kernel only, so the call can be captured in a CUDA graph; values are
    clamped to [0, M_max]).
    Returns (x_fp8, scales) as `m_grouped_gemm_fp8_fp8_bf16_nt_masked` takes them: x_fp8 (G, M_max, K)
    E4M3, contiguous; scales (G, M_max, ceil(K/128)) float32, each group TMA-aligned column-major.
    Rows at or past masked_m[g] are left unwritten on the GPU (the GEMM never uses their results);
    host input is cast whole.
    """
    _check_input(x, "x", min_rank=3)
    if len(x.shape) != 3:
        raise ValueError(f"x: expected a tensor of rank 3 (G, M_max, K), got shape {tuple(x.shape)}")
    _check_multiple(x.shape[-1], K_MULTIPLE, "x", "K (last dimension)")
    if _on_gpu(x):
        return _cast_gpu(x, "per_token", masked_m)
    _check_host_masked_m(masked_m, x.shape[0])
    codes, scales = per_token_cast_to_fp8(x)
    return codes, get_col_major_tma_aligned_tensor(scales)


def per_block_cast_to_fp8(x: Any) -> tuple[Any, Any]:
    """Quantize the RHS per 128 x 128 block.

    x: (..., N, K) float array, N a multiple of 8 and K of 16 (edge blocks may be partial); (N, K)
    for the dense GEMM, (G, N, K) for the grouped ones.
    Returns (x_fp8, scales): x_fp8 (..., N, K) E4M3 (torch: float8_e4m3fn; numpy/CuPy: uint8 bytes),
    contiguous; scales (..., ceil(N/128), ceil(K/128)) float32, contiguous.
    A GPU input whose rows are not contiguous with 16-byte aligned starts is first copied.
    """
    _check_input(x, "x", min_rank=2)
    _check_multiple(x.shape[-2], N_MULTIPLE, "x", "N (second-to-last dimension)")
    _check_multiple(x.shape[-1], K_MULTIPLE, "x", "K (last dimension)")
    if _on_gpu(x):
        return _cast_gpu(x, "per_block")
    if _library(x) == "torch":
        return _per_block_torch(x)
    return _per_block_xp(array_module(x), x)


# ---------------------------------------------------------------------------------------- checks

def _library(x: Any) -> str:
    return type(x).__module__.split(".")[0]


def _dtype_name(x: Any) -> str:
    dtype = x.dtype
    if _library(x) == "torch":
        return str(dtype)[len("torch."):]
    import numpy

    return numpy.dtype(dtype).name


def _check_input(x: Any, name: str, min_rank: int) -> None:
    library = _library(x)
    if library not in ("torch", "cupy", "numpy"):
        raise TypeError(f"{name}: expected a torch tensor, CuPy array or numpy array, got {type(x).__name__}")
    allowed = _TORCH_DTYPES if library == "torch" else _NUMPY_DTYPES
    if _dtype_name(x) not in allowed:
        raise TypeError(f"{name}: expected dtype {' or '.join(allowed)}, got {_dtype_name(x)}")
    if len(x.shape) < min_rank:
        raise ValueError(f"{name}: expected a tensor of rank at least {min_rank}, got shape {tuple(x.shape)}")


def _check_multiple(size: int, multiple: int, name: str, what: str) -> None:
    if size % multiple:
        raise ValueError(f"{name}: expected {what} to be a multiple of {multiple}, got {size}")


def _on_gpu(x: Any) -> bool:
    library = _library(x)
    return library == "cupy" or (library == "torch" and x.is_cuda)


def _check_host_masked_m(masked_m: Any, groups: int) -> None:
    """Host input: masked_m is not used (every row is cast) but must still be what the GEMM takes."""
    if _library(masked_m) not in ("torch", "numpy"):
        raise TypeError(f"masked_m: expected a torch tensor or numpy array like x, got {type(masked_m).__name__}")
    dtype = str(masked_m.dtype).replace("torch.", "")
    if dtype != "int32":
        raise TypeError(f"masked_m: expected dtype int32, got {dtype}")
    if tuple(masked_m.shape) != (groups,):
        raise ValueError(f"masked_m: expected shape ({groups},), got {tuple(masked_m.shape)}")


# ------------------------------------------------------------------------------------------- GPU

def _cast_gpu(x: Any, granularity: str, masked_m: Any = None) -> tuple[Any, Any]:
    """Cast a torch CUDA tensor or CuPy array with pydg's kernels (pydg/kernels/cast.py)."""
    from pydg.arrays import array_info
    from pydg.kernels import cast

    library = _library(x)
    info = array_info(x, "x")
    if not _kernel_can_read(info, cast.ITEMSIZES[info.dtype]):
        x = x.clone(memory_format=sys.modules["torch"].contiguous_format) if library == "torch" else x.copy()
        info = array_info(x, "x")
    plan = _gpu_plan(granularity, info.dtype, info.shape, info.strides, info.device, masked_m is not None)
    masked_ptr = 0 if masked_m is None else _check_gpu_masked_m(masked_m, plan.num_groups, info.device)

    *lead, rows, k = info.shape
    codes = _empty(x, library, (*lead, rows, k), "e4m3")
    storage = _empty(x, library, (*lead, *plan.scale_storage_shape[1:]), "float32")
    if granularity == "per_token":
        # (..., KB, align(M, 4)) seen as (..., M, KB): TMA-aligned column-major.
        scales = storage[..., :rows].swapaxes(-1, -2) if library == "cupy" else storage[..., :rows].transpose(-1, -2)
    else:
        scales = storage
    if not plan.is_empty:
        _launch(plan, info, _pointer(codes, library), _pointer(storage, library), masked_ptr, library)
    return codes, scales


@functools.lru_cache(maxsize=1024)
def _gpu_plan(granularity: str, dtype: str, shape: tuple[int, ...], strides: tuple[int, ...], device: int,
              masked: bool) -> Any:
    """The launch plan for an input of this signature (checked once per signature)."""
    from pydg.driver.cuda import device_info
    from pydg.kernels import cast

    found = device_info(device)
    if found.compute_capability != (9, 0):
        major, minor = found.compute_capability
        raise ValueError(f"x: expected an array on an sm_90 GPU (H100/H200), got cuda:{device}, "
                         f"{found.name} (sm_{major}{minor})")
    *lead, rows, k = shape
    itemsize = cast.ITEMSIZES[dtype]
    groups = math.prod(lead)
    row_stride = strides[-2] * itemsize
    group_stride = _group_stride(shape, strides) * itemsize
    if granularity == "per_block":
        return cast.plan_per_block(dtype, groups, rows, k, row_stride, group_stride)
    return cast.plan_per_token(dtype, groups, rows, k, row_stride, group_stride, found.num_sms, masked)


def _kernel_can_read(info: Any, itemsize: int) -> bool:
    """16-byte loads need unit element strides, 16-byte aligned row and group starts, and leading
    dimensions that collapse into one group stride (non-negative: the kernel's strides are unsigned)."""
    if 0 in info.shape:
        return True
    *lead, rows, k = info.shape
    if any(stride < 0 for stride in info.strides):
        return False
    if info.ptr % 16 or (k > 1 and info.strides[-1] != 1):
        return False
    if rows > 1 and (info.strides[-2] * itemsize) % 16:
        return False
    steps = [(size, stride) for size, stride in zip(lead, info.strides[:-2]) if size > 1]
    if any(outer != inner * size for (_, outer), (size, inner) in zip(steps, steps[1:])):
        return False
    return not steps or (steps[-1][1] * itemsize) % 16 == 0


def _group_stride(shape: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """Elements between groups (the collapsed leading dimensions); 0 where there is one group."""
    steps = [stride for size, stride in zip(shape[:-2], strides[:-2]) if size > 1]
    return steps[-1] if steps else 0


def _check_gpu_masked_m(masked_m: Any, groups: int, device: int) -> int:
    """masked_m's pointer after checking dtype, shape, contiguity and device."""
    from pydg.arrays import array_info

    info = array_info(masked_m, "masked_m")
    if info.dtype != "int32":
        raise TypeError(f"masked_m: expected dtype int32, got {info.dtype}")
    if info.shape != (groups,):
        raise ValueError(f"masked_m: expected shape ({groups},), got {info.shape}")
    if groups > 1 and info.strides[0] != 1:
        raise ValueError(f"masked_m: expected contiguous strides (1,), got {info.strides}")
    if info.device != device:
        where = "host memory" if info.device < 0 else f"cuda:{info.device}"
        raise ValueError(f"masked_m: expected an array on x's GPU, cuda:{device}, got {where}")
    if info.ptr % 4:
        raise ValueError(f"masked_m: expected a data pointer aligned to 4 bytes, got {hex(info.ptr)}")
    return info.ptr


def _empty(x: Any, library: str, shape: tuple[int, ...], kind: str) -> Any:
    """An uninitialised array on x's device, allocated by x's library (on its current stream)."""
    if library == "torch":
        torch = sys.modules["torch"]
        dtype = torch.float8_e4m3fn if kind == "e4m3" else torch.float32
        return torch.empty(shape, dtype=dtype, device=x.device)
    cupy = sys.modules["cupy"]
    with x.device:
        return cupy.empty(shape, dtype=cupy.uint8 if kind == "e4m3" else cupy.float32)


def _pointer(array: Any, library: str) -> int:
    return array.data_ptr() if library == "torch" else array.data.ptr


def _launch(plan: Any, info: Any, codes: int, scales: int, masked_m: int, library: str) -> None:
    from pydg.arrays import current_stream
    from pydg.driver.cuda import make_current, pop_context, push_context
    from pydg.errors import CudaError
    from pydg.kernels import cast

    run = cast.launcher(plan.kernel, info.device)
    if library == "cupy":
        with sys.modules["cupy"].cuda.Device(info.device):
            stream = current_stream(library, info.device)
    else:
        stream = current_stream(library, info.device)
    if _several_gpus():
        # The thread's current context may be another device's: launch in the array's device's
        # primary context and leave the caller's current afterwards (as pydg.gemm does).
        push_context(info.device)
        try:
            run(plan, info.ptr, codes, scales, masked_m, stream)
        finally:
            pop_context()
        return
    try:
        run(plan, info.ptr, codes, scales, masked_m, stream)
    except CudaError as err:
        if err.name != "CUDA_ERROR_INVALID_CONTEXT":
            raise
        # A thread on which no library has used the device yet: bind its primary context once.
        make_current(info.device)
        run(plan, info.ptr, codes, scales, masked_m, stream)


@functools.lru_cache(maxsize=None)
def _several_gpus() -> bool:
    from pydg.driver.cuda import device_count

    return device_count() > 1


# ------------------------------------------------------------------------------------ numpy / CuPy

def _divide_f32(xp: types.ModuleType, numerator: Any, denominator: Any) -> Any:
    """The correctly rounded float32 quotient of float32 operands (as numpy and torch compute it).

    CuPy may build its kernels with approximate float32 division (1 ulp off was seen on an H100),
    so the quotient is taken in float64, whose division is always exact-rounded, then rounded to
    float32: with 53 >= 2*24 + 2 bits that double rounding is provably the same as a direct one.
    """
    return (numerator.astype(xp.float64) / denominator.astype(xp.float64)).astype(xp.float32)


def _scale_from_amax(xp: types.ModuleType, amax: Any) -> Any:
    """float32 scales from float32 block maxima: max(amax, 1e-4) / 448, rounded once to float32."""
    floored = xp.maximum(amax, xp.float32(AMAX_FLOOR))
    return (floored.astype(xp.float64) / E4M3_MAX).astype(xp.float32)  # float64: see _divide_f32


def _pad_last_two(xp: types.ModuleType, x: Any, rows: int, cols: int) -> Any:
    """float32 copy of x (..., R, C) zero-padded to (..., rows, cols); zeros never raise an amax."""
    padded = xp.zeros((*x.shape[:-2], rows, cols), dtype=xp.float32)
    padded[..., : x.shape[-2], : x.shape[-1]] = x
    return padded


def _per_token_xp(xp: types.ModuleType, x: Any) -> tuple[Any, Any]:
    *lead, m, k = x.shape
    kb = ceil_div(k, BLOCK)
    blocks = _pad_last_two(xp, x, m, kb * BLOCK).reshape(*lead, m, kb, BLOCK)
    scales = _scale_from_amax(xp, xp.abs(blocks).max(axis=-1))            # (..., M, KB)
    codes = float32_to_e4m3(_divide_f32(xp, blocks, scales[..., None]))
    return xp.ascontiguousarray(codes.reshape(*lead, m, kb * BLOCK)[..., :k]), scales


def _per_block_xp(xp: types.ModuleType, x: Any) -> tuple[Any, Any]:
    *lead, n, k = x.shape
    nb, kb = ceil_div(n, BLOCK), ceil_div(k, BLOCK)
    blocks = _pad_last_two(xp, x, nb * BLOCK, kb * BLOCK).reshape(*lead, nb, BLOCK, kb, BLOCK)
    scales = _scale_from_amax(xp, xp.abs(blocks).max(axis=(-3, -1)))      # (..., NB, KB)
    codes = float32_to_e4m3(_divide_f32(xp, blocks, scales[..., :, None, :, None]))
    codes = codes.reshape(*lead, nb * BLOCK, kb * BLOCK)[..., :n, :k]
    return xp.ascontiguousarray(codes), scales


# ------------------------------------------------------------------------------------------ torch

def _pad_last_two_torch(x: Any, rows: int, cols: int) -> Any:
    """float32 x (..., R, C) zero-padded at the end to (..., rows, cols), on x's device."""
    import torch.nn.functional as F

    x = x.float()
    pad_cols, pad_rows = cols - x.shape[-1], rows - x.shape[-2]
    return F.pad(x, (0, pad_cols, 0, pad_rows)) if pad_cols or pad_rows else x.contiguous()


def _scales_torch(amax: Any) -> Any:
    """float32 scales from float32 block maxima: max(amax, 1e-4) / 448, correctly rounded.

    torch divides by a Python scalar as a multiplication by its reciprocal (fl(1/448) is inexact:
    1 ulp off for about half the scales, seen on an H100 and on the CPU). A true float64 division
    (tensor by tensor) rounded to float32 gives the correctly rounded quotient, as numpy and CuPy.
    """
    import torch

    floored = amax.clamp(min=AMAX_FLOOR).double()
    return (floored / torch.full_like(floored, E4M3_MAX)).float()


def _per_token_torch(x: Any) -> tuple[Any, Any]:
    import torch

    *lead, m, k = x.shape
    kb = ceil_div(k, BLOCK)
    blocks = _pad_last_two_torch(x, m, kb * BLOCK).view(*lead, m, kb, BLOCK)
    scales = _scales_torch(blocks.abs().amax(dim=-1))                      # float32 (..., M, KB)
    codes = (blocks / scales.unsqueeze(-1)).to(torch.float8_e4m3fn)
    return codes.view(*lead, m, kb * BLOCK)[..., :k].contiguous(), scales


def _per_block_torch(x: Any) -> tuple[Any, Any]:
    import torch

    *lead, n, k = x.shape
    nb, kb = ceil_div(n, BLOCK), ceil_div(k, BLOCK)
    blocks = _pad_last_two_torch(x, nb * BLOCK, kb * BLOCK).view(*lead, nb, BLOCK, kb, BLOCK)
    scales = _scales_torch(blocks.abs().amax(dim=(-3, -1)))                # float32 (..., NB, KB)
    codes = (blocks / scales[..., :, None, :, None]).to(torch.float8_e4m3fn)
    codes = codes.view(*lead, nb * BLOCK, kb * BLOCK)[..., :n, :k]
    return codes.contiguous(), scales.contiguous()


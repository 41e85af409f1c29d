"""Casts of float data into pydg's FP8 recipe (for tests and users).

Per-token (A, the LHS): one float32 scale per row per 128 elements of K.
Per-block (B, the RHS): one float32 scale per 128 x 128 block.
For every block: amax = max |x| (clamped below at 1e-4), scale = amax / 448 in float32, and the
data is x / scale (float32) rounded to E4M3, so the block's largest element becomes +-448.

Inputs may be torch tensors (CPU or CUDA; float32, bfloat16, float16), CuPy arrays or numpy arrays
(float16, float32, float64); outputs are of the same library on the same device. torch is computed
with torch ops (on the tensor's device) and gives `torch.float8_e4m3fn`; numpy and CuPy give raw
E4M3 bytes as uint8 (through `pydg.fp8`). Everything is computed in float32 whatever the input
dtype, as the GPU path does. Neither torch nor CuPy is imported unless such an input is given.
"""
from __future__ import annotations

import types
from typing import Any

import numpy as np

from pydg.fp8 import E4M3_MAX, array_module, float32_to_e4m3
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
    row-major; scales (..., M, ceil(K/128)) float32, plain row-major (convert with
    `get_col_major_tma_aligned_tensor` before a GEMM).
    """
    _check_input(x, "x", min_rank=2)
    _check_multiple(x.shape[-1], K_MULTIPLE, "x", "K (last dimension)")
    if _library(x) == "torch":
        return _per_token_torch(x)
    return _per_token_xp(array_module(x), x)


def per_block_cast_to_fp8(x: Any) -> tuple[Any, Any]:
    """Quantize the RHS per 128 x 128 block.

    x: (..., N, K) float array, N a multiple of 8 and K of 16 (edge blocks may be partial).
    Returns (x_fp8, scales): x_fp8 (..., N, K) E4M3 (torch: float8_e4m3fn; numpy/CuPy: uint8 bytes),
    row-major; scales (..., ceil(N/128), ceil(K/128)) float32, contiguous.
    """
    _check_input(x, "x", min_rank=2)
    _check_multiple(x.shape[-2], N_MULTIPLE, "x", "N (second-to-last dimension)")
    _check_multiple(x.shape[-1], K_MULTIPLE, "x", "K (last dimension)")
    if _library(x) == "torch":
        return _per_block_torch(x)
    return _per_block_xp(array_module(x), x)


# ---------------------------------------------------------------------------------------- checks

def _library(x: Any) -> str:
    return type(x).__module__.split(".")[0]


def _dtype_name(x: Any) -> str:
    dtype = x.dtype
    return str(dtype)[len("torch."):] if _library(x) == "torch" else np.dtype(dtype).name


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


"""The executable spec of pydg's numerics, in numpy float64.

D = (A * sa) @ (B * sb)^T with A (M, K) and B (N, K) E4M3, sa one float32 scale per row per 128 of
K, sb one per 128 x 128 block. Every function accepts torch tensors, CuPy arrays or numpy arrays
(converted with `to_numpy`); scales may have any strides (the TMA-aligned layout included).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from pydg.fp8 import e4m3_to_float32

BLOCK = 128
_FP8_DTYPES = (np.uint8, np.int8)


def to_numpy(x: Any) -> np.ndarray:
    """A host numpy copy (or view) of a torch tensor, CuPy array or array-like.

    torch float8_e4m3fn data comes back as its raw uint8 E4M3 bytes; torch bfloat16/float16 as
    float32 (numpy has no bfloat16). Everything else keeps its dtype.
    """
    library = type(x).__module__.split(".")[0]
    if library == "torch":
        import torch

        x = x.detach()
        if x.dtype == torch.float8_e4m3fn:
            return x.view(torch.uint8).cpu().numpy()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.cpu().numpy()
    if library == "cupy":
        return x.get()
    return np.asarray(x)


def _decode(codes: Any, name: str) -> np.ndarray:
    """float64 values of E4M3 bytes (uint8/int8 array, any shape)."""
    codes = to_numpy(codes)
    if codes.dtype not in _FP8_DTYPES:
        raise TypeError(f"{name}: expected raw E4M3 bytes (uint8/int8 or float8_e4m3fn), got {codes.dtype}")
    return e4m3_to_float32(codes).astype(np.float64)


def _expand(scales: np.ndarray, axis: int, size: int, name: str) -> np.ndarray:
    """Repeat each scale 128 times along `axis` and cut to `size` (ceil(size/128) scales expected)."""
    blocks = -(-size // BLOCK)
    if scales.shape[axis] != blocks:
        raise ValueError(f"{name}: expected {blocks} blocks along axis {axis} for size {size}, "
                         f"got shape {scales.shape}")
    return np.take(np.repeat(scales, BLOCK, axis=axis), np.arange(size), axis=axis)


def dequantize_a(a_codes: Any, sa: Any) -> np.ndarray:
    """LHS values: a_codes (..., M, K) E4M3 bytes, sa (..., M, ceil(K/128)) float32 (any strides).

    Returns float64 (..., M, K): decode(a[m, k]) * sa[m, k // 128].
    """
    values = _decode(a_codes, "a")
    scales = to_numpy(sa).astype(np.float64)
    if scales.shape[:-1] != values.shape[:-1]:
        raise ValueError(f"sa: expected leading shape {values.shape[:-1]}, got {scales.shape}")
    return values * _expand(scales, -1, values.shape[-1], "sa")


def dequantize_b(b_codes: Any, sb: Any) -> np.ndarray:
    """RHS values: b_codes (..., N, K) E4M3 bytes, sb (..., ceil(N/128), ceil(K/128)) float32.

    Returns float64 (..., N, K): decode(b[n, k]) * sb[n // 128, k // 128].
    """
    values = _decode(b_codes, "b")
    scales = to_numpy(sb).astype(np.float64)
    if scales.shape[:-2] != values.shape[:-2]:
        raise ValueError(f"sb: expected leading shape {values.shape[:-2]}, got {scales.shape}")
    scales = _expand(scales, -2, values.shape[-2], "sb")
    return values * _expand(scales, -1, values.shape[-1], "sb")


def gemm_reference(a: Any, sa: Any, b: Any, sb: Any) -> np.ndarray:
    """Dense D (M, N) float64 = dequantize_a(a, sa) @ dequantize_b(b, sb)^T.

    a (M, K) E4M3, sa (M, ceil(K/128)); b (N, K) E4M3, sb (ceil(N/128), ceil(K/128)).
    """
    return dequantize_a(a, sa) @ dequantize_b(b, sb).T


def contiguous_reference(a: Any, sa: Any, b: Any, sb: Any, m_indices: Any) -> np.ndarray:
    """MoE contiguous layout: D (M_sum, N) float64, row i = A[i] @ B[m_indices[i]]^T (dequantized).

    a (M_sum, K), sa (M_sum, ceil(K/128)); b (G, N, K), sb (G, ceil(N/128), ceil(K/128));
    m_indices (M_sum,) integers. Rows whose index is negative (padding) or >= G are NaN: the
    kernel skips or clamps them, so callers mask those rows before comparing.
    """
    a_values = dequantize_a(a, sa)
    b_values = dequantize_b(b, sb)
    experts = to_numpy(m_indices).astype(np.int64).reshape(-1)
    if experts.shape[0] != a_values.shape[0]:
        raise ValueError(f"m_indices: expected {a_values.shape[0]} entries (M_sum), got {experts.shape[0]}")
    out = np.full((a_values.shape[0], b_values.shape[-2]), np.nan)
    for g in range(b_values.shape[0]):
        rows = experts == g
        out[rows] = a_values[rows] @ b_values[g].T
    return out


def masked_reference(a: Any, sa: Any, b: Any, sb: Any, masked_m: Any) -> np.ndarray:
    """MoE masked layout: D (G, M_max, N) float64; rows at or past masked_m[g] are NaN.

    a (G, M_max, K), sa (G, M_max, ceil(K/128)); b (G, N, K), sb (G, ceil(N/128), ceil(K/128));
    masked_m (G,) integers (values outside [0, M_max] are clamped into it).
    """
    a_values = dequantize_a(a, sa)
    b_values = dequantize_b(b, sb)
    groups, m_max = a_values.shape[0], a_values.shape[1]
    valid = np.clip(to_numpy(masked_m).astype(np.int64).reshape(-1), 0, m_max)
    if valid.shape[0] != groups:
        raise ValueError(f"masked_m: expected {groups} entries (G), got {valid.shape[0]}")
    out = np.full((groups, m_max, b_values.shape[-2]), np.nan)
    for g in range(groups):
        out[g, : valid[g]] = a_values[g, : valid[g]] @ b_values[g].T
    return out


def calc_diff(x: Any, y: Any) -> float:
    """DeepGEMM's similarity measure 1 - 2*sum(x*y) / sum(x*x + y*y), in float64.

    0 for identical inputs, 2 for x = -y; 0.0 when both are all zeros.
    """
    x = to_numpy(x).astype(np.float64)
    y = to_numpy(y).astype(np.float64)
    denominator = float(np.sum(x * x + y * y))
    if denominator == 0.0:
        return 0.0
    return float(1.0 - 2.0 * np.sum(x * y) / denominator)


def bf16_round(x: Any) -> np.ndarray:
    """float64 values rounded to the nearest bfloat16 (ties to even), returned as float64.

    bfloat16 has float32's exponent range and 8 significant bits. Rounding is done once, from
    float64 (going through float32 would round twice). Overflow gives +-inf, NaN stays NaN,
    the sign of zero is kept, and subnormals are multiples of 2^-133.
    """
    x = to_numpy(x).astype(np.float64)
    _, exponent = np.frexp(x)                                      # |x| = f * 2^exponent, f in [0.5, 1)
    # The bf16 ulp at x: 2^(exponent - 8) for normals, 2^-133 for subnormals.
    ulp_exponent = np.maximum(exponent - 8, -133)
    with np.errstate(invalid="ignore"):
        rounded = np.ldexp(np.rint(np.ldexp(x, -ulp_exponent)), ulp_exponent)  # both scalings exact
    overflow = np.abs(rounded) >= 2.0**128
    return np.where(overflow, np.copysign(np.inf, x), rounded)

"""The memory layouts the kernels read scales and MoE rows in.

A's scales are "TMA-aligned column-major": for a (M, KB) or (G, M, KB) float32 array, element
(g, m, kb) lives at offset g * (align(M, 4) * KB) + kb * align(M, 4) + m (in elements). Each
column of M scales thus starts on a 16-byte boundary, which TMA requires of every stride.
"""
from __future__ import annotations

from typing import Any

from pydg.utils import align

SCALE_M_ALIGNMENT = 4        # float32 elements per 16 bytes
CONTIGUOUS_M_ALIGNMENT = 128  # every expert's segment in the MoE contiguous layout starts at a multiple
_TMA_ADDRESS_ALIGNMENT = 16


def get_m_alignment_for_contiguous_layout() -> int:
    """Rows per alignment unit of the MoE contiguous layout (each expert's segment starts at a multiple)."""
    return CONTIGUOUS_M_ALIGNMENT


def tma_aligned_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The strides (in elements) of the TMA-aligned column-major layout for a (M, KB) or (G, M, KB) shape."""
    if len(shape) not in (2, 3):
        raise ValueError(f"shape: expected rank 2 or 3, got {shape}")
    m, kb = shape[-2], shape[-1]
    aligned_m = align(m, SCALE_M_ALIGNMENT)
    strides = (1, aligned_m)
    return (aligned_m * kb, *strides) if len(shape) == 3 else strides


def is_col_major_tma_aligned(shape: tuple[int, ...], strides_in_elements: tuple[int, ...]) -> bool:
    """Whether an array of `shape` and `strides_in_elements` has the TMA-aligned column-major layout.

    Only rank 2 (M, KB) and rank 3 (G, M, KB) qualify. Dimensions of size 1 are never stepped, so
    their strides may be anything.
    """
    if len(shape) not in (2, 3) or len(strides_in_elements) != len(shape):
        return False
    wanted = tma_aligned_strides(tuple(shape))
    return all(size <= 1 or got == want for size, got, want in zip(shape, strides_in_elements, wanted))


def get_col_major_tma_aligned_tensor(x: Any) -> Any:
    """The same float32 scales in the TMA-aligned column-major layout.

    x: (M, KB) or (G, M, KB) float32, a torch tensor, CuPy array or numpy array, any strides.
    Returns an array of the same library, device, shape and values with strides (in elements)
    (1, align(M, 4)) or (align(M, 4) * KB, 1, align(M, 4)). `x` itself is returned (no copy)
    when it already has that layout and its data starts 16-byte aligned. Otherwise the result
    is a view into a new zero-filled (G, KB, align(M, 4)) buffer; the padding rows stay zero.
    """
    library = type(x).__module__.split(".")[0]
    if library not in ("torch", "cupy", "numpy"):
        raise TypeError(f"x: expected a torch tensor, CuPy array or numpy array, got {type(x).__name__}")
    shape = tuple(x.shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"x: expected a tensor of rank 2 (M, KB) or 3 (G, M, KB), got shape {shape}")
    dtype = str(x.dtype)
    if dtype not in ("float32", "torch.float32"):
        raise TypeError(f"x: expected dtype float32, got {dtype}")
    strides, address = _strides_and_address(x, library)
    if is_col_major_tma_aligned(shape, strides) and address % _TMA_ADDRESS_ALIGNMENT == 0:
        return x
    return _relayout_torch(x) if library == "torch" else _relayout_xp(x, library)


def _strides_and_address(x: Any, library: str) -> tuple[tuple[int, ...], int]:
    """Strides in elements and the data's address; strides that are not whole elements become -1."""
    if library == "torch":
        return tuple(x.stride()), x.data_ptr()
    itemsize = x.dtype.itemsize
    strides = tuple(s // itemsize if s % itemsize == 0 else -1 for s in x.strides)
    address = x.data.ptr if library == "cupy" else x.ctypes.data
    return strides, address


def _relayout_torch(x: Any) -> Any:
    import torch

    *lead, m, kb = x.shape
    buffer = torch.zeros((*lead, kb, align(m, SCALE_M_ALIGNMENT)), dtype=x.dtype, device=x.device)
    buffer[..., :m] = x.transpose(-1, -2)
    return buffer[..., :m].transpose(-1, -2)


def _relayout_xp(x: Any, library: str) -> Any:
    if library == "cupy":
        import cupy as xp
    else:
        import numpy as xp

    *lead, m, kb = x.shape
    buffer = xp.zeros((*lead, kb, align(m, SCALE_M_ALIGNMENT)), dtype=xp.float32)
    buffer[..., :m] = x.swapaxes(-1, -2)
    return buffer[..., :m].swapaxes(-1, -2)

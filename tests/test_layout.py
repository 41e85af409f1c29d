"""The TMA-aligned column-major layout of A's scales, and the contiguous layout's M alignment."""
from __future__ import annotations

import numpy as np
import pytest

from pydg.layout import (
    get_col_major_tma_aligned_tensor,
    get_m_alignment_for_contiguous_layout,
    is_col_major_tma_aligned,
)


def _element_strides(x: np.ndarray) -> tuple[int, ...]:
    return tuple(s // x.itemsize for s in x.strides)


def _scales(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.1, 2.0, size=shape).astype(np.float32)


def _offset_of(x: np.ndarray, index: tuple[int, ...]) -> int:
    return sum(i * s for i, s in zip(index, _element_strides(x)))


@pytest.mark.parametrize("m,kb", [(5, 3), (8, 2), (1, 4), (7, 1), (130, 56)])
def test_2d_strides_and_values(m, kb):
    x = _scales((m, kb))
    y = get_col_major_tma_aligned_tensor(x)
    aligned_m = -(-m // 4) * 4
    assert y.shape == (m, kb) and y.dtype == np.float32
    # Strides of size-1 dimensions are never stepped: (7, 1) row-major is already aligned.
    wanted = (1, aligned_m)
    assert all(size == 1 or got == want for size, got, want in zip(y.shape, _element_strides(y), wanted))
    np.testing.assert_array_equal(y, x)
    # Element (m, kb) at offset m + kb * align(M, 4), with columns starting 16-byte aligned.
    assert _offset_of(y, (m - 1, kb - 1)) == (m - 1) + (kb - 1) * aligned_m
    assert y.ctypes.data % 16 == 0
    assert is_col_major_tma_aligned(y.shape, _element_strides(y))


@pytest.mark.parametrize("g,m,kb", [(2, 6, 3), (3, 4, 2), (1, 5, 5), (4, 1, 1)])
def test_3d_strides_and_values(g, m, kb):
    x = _scales((g, m, kb), seed=1)
    y = get_col_major_tma_aligned_tensor(x)
    aligned_m = -(-m // 4) * 4
    assert y.shape == (g, m, kb)
    assert _element_strides(y) == (aligned_m * kb, 1, aligned_m)
    np.testing.assert_array_equal(y, x)
    assert _offset_of(y, (g - 1, m - 1, kb - 1)) == (g - 1) * aligned_m * kb + (kb - 1) * aligned_m + m - 1


def test_aligned_input_is_returned_unchanged():
    x = _scales((6, 3))
    y = get_col_major_tma_aligned_tensor(x)
    assert get_col_major_tma_aligned_tensor(y) is y
    # A column-major array with M a multiple of 4 already has the layout.
    col_major = np.asfortranarray(_scales((8, 3)))
    assert get_col_major_tma_aligned_tensor(col_major) is col_major
    z = get_col_major_tma_aligned_tensor(_scales((2, 5, 3)))
    assert get_col_major_tma_aligned_tensor(z) is z


def test_unaligned_layouts_are_copied():
    row_major = _scales((8, 3))
    y = get_col_major_tma_aligned_tensor(row_major)
    assert y is not row_major and not np.shares_memory(y, row_major)
    assert _element_strides(y) == (1, 8)
    # Column-major with M not a multiple of 4: the column stride 5 is not 16-byte aligned.
    col_major = np.asfortranarray(_scales((5, 3)))
    y = get_col_major_tma_aligned_tensor(col_major)
    assert y is not col_major and _element_strides(y) == (1, 8)
    np.testing.assert_array_equal(y, col_major)


def test_misaligned_start_is_copied():
    storage = np.zeros(1 + 8 * 3, dtype=np.float32)
    base = storage[1:] if storage.ctypes.data % 16 == 0 else storage[:-1]
    x = base.reshape(3, 8).T   # strides (1, 8) but the data starts 4 bytes off a 16-byte boundary
    assert _element_strides(x) == (1, 8) and x.ctypes.data % 16 != 0
    y = get_col_major_tma_aligned_tensor(x)
    assert y is not x and y.ctypes.data % 16 == 0
    np.testing.assert_array_equal(y, x)


def test_size_one_strides_are_free():
    assert is_col_major_tma_aligned((1, 3), (99, 4))      # M = 1: only the KB stride (align(1, 4) = 4) counts
    assert is_col_major_tma_aligned((6, 1), (1, 1))       # KB = 1: the KB stride is never stepped
    assert is_col_major_tma_aligned((1, 6, 2), (0, 1, 8))  # G = 1
    assert is_col_major_tma_aligned((2, 6, 2), (16, 1, 8))
    assert not is_col_major_tma_aligned((2, 6, 2), (12, 1, 6))
    assert not is_col_major_tma_aligned((6, 2), (2, 1))
    assert not is_col_major_tma_aligned((1, 3), (1, 1))
    assert not is_col_major_tma_aligned((2, 6, 1), (6, 1, 8))  # groups must start 16-byte aligned too
    assert not is_col_major_tma_aligned((6,), (1,))
    assert not is_col_major_tma_aligned((1, 1, 6, 2), (0, 0, 1, 8))


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="rank"):
        get_col_major_tma_aligned_tensor(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="rank"):
        get_col_major_tma_aligned_tensor(np.zeros((1, 1, 4, 4), dtype=np.float32))
    with pytest.raises(TypeError, match="float32"):
        get_col_major_tma_aligned_tensor(np.zeros((4, 4), dtype=np.float64))


def test_m_alignment_for_contiguous_layout():
    assert get_m_alignment_for_contiguous_layout() == 128


def test_torch_layout():
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(_scales((2, 5, 3)))
    y = get_col_major_tma_aligned_tensor(x)
    assert y.stride() == (24, 1, 8) and y.dtype == torch.float32
    assert torch.equal(y, x)
    assert get_col_major_tma_aligned_tensor(y) is y
    x2 = torch.from_numpy(_scales((7, 2)))
    assert get_col_major_tma_aligned_tensor(x2).stride() == (1, 8)

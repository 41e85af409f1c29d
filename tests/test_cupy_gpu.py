"""pydg's GEMMs on CuPy arrays alone (no torch), and on any DLPack producer, on an sm_90 GPU."""
import numpy as np
import pytest

import pydg
from pydg import reference
from pydg.testing import calc_diff

pytestmark = pytest.mark.gpu
DIFF_LIMIT = 1e-5


@pytest.fixture(scope="module")
def cupy():
    return pytest.importorskip("cupy")


def _bf16_to_float(words: np.ndarray) -> np.ndarray:
    """bfloat16 values from their raw 16-bit words (CuPy has no bfloat16 dtype)."""
    return (words.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def _operands(cupy, rng, m, n, k, groups=None, masked=False):
    lead_a = (groups,) if masked else ()
    lead_b = (groups,) if groups else ()
    a, sa = pydg.per_token_cast_to_fp8(rng.standard_normal((*lead_a, m, k)).astype(np.float32))
    b, sb = pydg.per_block_cast_to_fp8(rng.standard_normal((*lead_b, n, k)).astype(np.float32))
    device = (cupy.asarray(a), pydg.get_col_major_tma_aligned_tensor(cupy.asarray(sa)), cupy.asarray(b),
              cupy.asarray(sb))
    return (a, sa, b, sb), device


def test_dense_on_a_cupy_stream(cupy):
    rng = np.random.default_rng(0)
    m, n, k = 257, 384, 512
    (a, sa, b, sb), (ca, csa, cb, csb) = _operands(cupy, rng, m, n, k)
    out = cupy.full((m, n), 0x7FC0, dtype=cupy.uint16)  # bf16 NaN words
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        pydg.gemm_fp8_fp8_bf16_nt((ca, csa), (cb, csb), out)
        stream.synchronize()
    got = _bf16_to_float(out.get())
    assert not np.isnan(got).any()
    assert calc_diff(got, reference.gemm_reference(a, sa, b, sb)) <= DIFF_LIMIT


def test_grouped_layouts(cupy):
    rng = np.random.default_rng(1)
    align = pydg.get_m_alignment_for_contiguous_layout()
    (a, sa, b, sb), (ca, csa, cb, csb) = _operands(cupy, rng, 2 * align, 256, 256, groups=2)
    m_indices = np.array([0] * 100 + [-1] * (align - 100) + [1] * align, dtype=np.int32)
    out = cupy.zeros((2 * align, 256), dtype=cupy.uint16)
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((ca, csa), (cb, csb), out, cupy.asarray(m_indices))
    valid = m_indices >= 0
    expected = reference.contiguous_reference(a, sa, b, sb, m_indices)
    assert calc_diff(_bf16_to_float(out.get())[valid], expected[valid]) <= DIFF_LIMIT

    (a, sa, b, sb), (ca, csa, cb, csb) = _operands(cupy, rng, 64, 256, 256, groups=3, masked=True)
    masked = np.array([64, 1, 30], dtype=np.int32)
    out = cupy.zeros((3, 64, 256), dtype=cupy.uint16)
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((ca, csa), (cb, csb), out, cupy.asarray(masked), 32)
    got, expected = _bf16_to_float(out.get()), reference.masked_reference(a, sa, b, sb, masked)
    for g, rows in enumerate(masked):
        assert calc_diff(got[g, :rows], expected[g, :rows]) <= DIFF_LIMIT


class OnlyDLPack:
    """An array that offers nothing but the DLPack protocol (as a framework pydg does not know would)."""

    def __init__(self, x):
        self._x = x

    def __dlpack__(self, **kwargs):
        return self._x.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._x.__dlpack_device__()


def test_any_dlpack_producer(cupy):
    rng = np.random.default_rng(2)
    m, n, k = 128, 256, 384
    (a, sa, b, sb), (ca, csa, cb, csb) = _operands(cupy, rng, m, n, k)
    out = cupy.zeros((m, n), dtype=cupy.uint16)
    wrapped = [OnlyDLPack(x) for x in (ca, csa, cb, csb, out)]
    pydg.gemm_fp8_fp8_bf16_nt((wrapped[0], wrapped[1]), (wrapped[2], wrapped[3]), wrapped[4])
    cupy.cuda.Device().synchronize()  # pydg ran these on the legacy default stream
    assert calc_diff(_bf16_to_float(out.get()), reference.gemm_reference(a, sa, b, sb)) <= DIFF_LIMIT

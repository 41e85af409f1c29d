"""pydg.reference (the executable spec) against independent float64 computations."""
from __future__ import annotations

import numpy as np
import pytest

from pydg import reference
from pydg.fp8 import e4m3_to_float32
from pydg.layout import get_col_major_tma_aligned_tensor
from pydg.quantize import per_block_cast_to_fp8, per_token_cast_to_fp8


def _operands(m: int, n: int, k: int, seed: int = 0, groups: int | None = None):
    """(a, sa, b, sb) in the recipe from random normal data; b has a leading G when groups is set."""
    rng = np.random.default_rng(seed)
    a_shape = (m, k) if groups is None else (groups, m, k)
    b_shape = (n, k) if groups is None else (groups, n, k)
    a, sa = per_token_cast_to_fp8(rng.standard_normal(a_shape).astype(np.float32))
    b, sb = per_block_cast_to_fp8((rng.standard_normal(b_shape) * 3).astype(np.float32))
    return a, sa, b, sb


def _loop_gemm(a, sa, b, sb) -> np.ndarray:
    """The recipe as a kernel computes it: per 128-block of K, a scaled partial product, summed."""
    m, k = a.shape
    n = b.shape[0]
    a_values = e4m3_to_float32(a).astype(np.float64)
    b_values = e4m3_to_float32(b).astype(np.float64)
    out = np.zeros((m, n))
    for kb, k0 in enumerate(range(0, k, 128)):
        partial = a_values[:, k0:k0 + 128] @ b_values[:, k0:k0 + 128].T  # unscaled, one block of K
        for i in range(m):
            for j in range(n):
                out[i, j] += partial[i, j] * float(sa[i, kb]) * float(sb[j // 128, kb])
    return out


@pytest.mark.parametrize("m,n,k", [(3, 136, 272), (8, 256, 128), (5, 16, 16)])
def test_gemm_reference_matches_blockwise_loops(m, n, k):
    a, sa, b, sb = _operands(m, n, k)
    got = reference.gemm_reference(a, sa, b, sb)
    assert got.dtype == np.float64 and got.shape == (m, n)
    np.testing.assert_allclose(got, _loop_gemm(a, sa, b, sb), rtol=1e-10, atol=1e-10)


def test_dequantize_a_and_b_elementwise():
    a, sa, b, sb = _operands(4, 136, 272, seed=1)
    da = reference.dequantize_a(a, sa)
    db = reference.dequantize_b(b, sb)
    for m, k in [(0, 0), (3, 127), (2, 128), (1, 271)]:
        assert da[m, k] == float(e4m3_to_float32(a[m:m + 1, k])[0]) * float(sa[m, k // 128])
    for n, k in [(0, 0), (127, 129), (128, 255), (135, 271)]:
        assert db[n, k] == float(e4m3_to_float32(b[n:n + 1, k])[0]) * float(sb[n // 128, k // 128])


def test_scales_in_tma_aligned_layout_give_the_same_result():
    a, sa, b, sb = _operands(6, 128, 384, seed=2)
    aligned = get_col_major_tma_aligned_tensor(sa)
    assert aligned.strides != sa.strides
    np.testing.assert_array_equal(reference.gemm_reference(a, aligned, b, sb),
                                  reference.gemm_reference(a, sa, b, sb))


def test_int8_codes_are_read_as_e4m3_bytes():
    a, sa, b, sb = _operands(4, 128, 256, seed=3)
    np.testing.assert_array_equal(reference.gemm_reference(a.view(np.int8), sa, b.view(np.int8), sb),
                                  reference.gemm_reference(a, sa, b, sb))


def test_scale_shape_mismatch_and_float_codes_are_rejected():
    a, sa, b, sb = _operands(4, 128, 256, seed=4)
    with pytest.raises(ValueError, match="sa"):
        reference.dequantize_a(a, sa[:, :1])
    with pytest.raises(ValueError, match="sb"):
        reference.dequantize_b(b, np.ones((2, 2), np.float32))
    with pytest.raises(TypeError, match="a"):
        reference.dequantize_a(a.astype(np.float32), sa)


def test_contiguous_reference_rows_and_padding():
    groups, n, k = 3, 136, 272
    m_indices = np.array([0] * 5 + [-1] * 3 + [2] * 4 + [1] * 2 + [-1], dtype=np.int32)
    rng = np.random.default_rng(5)
    a, sa = per_token_cast_to_fp8(rng.standard_normal((m_indices.size, k)).astype(np.float32))
    b, sb = per_block_cast_to_fp8(rng.standard_normal((groups, n, k)).astype(np.float32))
    got = reference.contiguous_reference(a, sa, b, sb, m_indices)
    assert got.shape == (m_indices.size, n)
    for i, g in enumerate(m_indices):
        if g < 0:
            assert np.isnan(got[i]).all()
        else:
            expected = reference.gemm_reference(a[i:i + 1], sa[i:i + 1], b[g], sb[g])[0]
            np.testing.assert_allclose(got[i], expected, rtol=1e-10, atol=1e-10)
            assert np.isfinite(got[i]).all()


def test_masked_reference_rows_past_masked_m_are_nan():
    groups, m_max, n, k = 3, 6, 128, 256
    a, sa, b, sb = _operands(m_max, n, k, seed=6, groups=groups)
    masked_m = np.array([6, 0, 2], dtype=np.int32)
    got = reference.masked_reference(a, sa, b, sb, masked_m)
    assert got.shape == (groups, m_max, n)
    for g in range(groups):
        valid = int(masked_m[g])
        assert np.isnan(got[g, valid:]).all()
        expected = reference.gemm_reference(a[g], sa[g], b[g], sb[g])[:valid]
        np.testing.assert_allclose(got[g, :valid], expected, rtol=1e-10, atol=1e-10)
        assert np.isfinite(got[g, :valid]).all()


def test_calc_diff():
    x = np.random.default_rng(7).standard_normal((16, 32))
    assert reference.calc_diff(x, x) == pytest.approx(0.0, abs=1e-15)
    assert reference.calc_diff(x, -x) == pytest.approx(2.0, abs=1e-15)
    assert reference.calc_diff(np.zeros(4), np.zeros(4)) == 0.0
    # A 1% scale error: 1 - 2*1.01/(1 + 1.0201) = 4.95e-5, about what a scale bug shows.
    assert reference.calc_diff(x, 1.01 * x) == pytest.approx(1 - 2 * 1.01 / (1 + 1.01**2), rel=1e-9)
    assert isinstance(reference.calc_diff(x.astype(np.float32), x), float)


def _all_positive_finite_bf16() -> np.ndarray:
    """Every finite positive bfloat16 value, ascending, from its bit patterns."""
    patterns = np.arange(0x0000, 0x7F80, dtype=np.uint32) << 16
    return patterns.view(np.float32).astype(np.float64)


def test_bf16_round_nearest_by_brute_force():
    rng = np.random.default_rng(8)
    x = rng.standard_normal(3000) * np.exp2(rng.uniform(-140, 120, 3000))
    got = reference.bf16_round(x)
    table = _all_positive_finite_bf16()
    magnitude = np.abs(x)
    above = np.clip(np.searchsorted(table, magnitude), 1, table.size - 1)
    best = np.minimum(np.abs(table[above] - magnitude), np.abs(table[above - 1] - magnitude))
    np.testing.assert_array_equal(np.abs(got - x), best)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(x))


def test_bf16_round_ties_to_even_and_specials():
    table = _all_positive_finite_bf16()
    midpoints = (table[:-1] + table[1:]) / 2
    got = reference.bf16_round(midpoints)
    lower_is_even = (np.arange(table.size - 1) % 2) == 0
    np.testing.assert_array_equal(got, np.where(lower_is_even, table[:-1], table[1:]))
    # float64 just above a midpoint must round up (a detour through float32 would tie instead).
    just_above = np.nextafter(1.0 + 2.0**-8, 2.0)
    assert reference.bf16_round(np.array([just_above]))[0] == 1.0 + 2.0**-7
    largest = table[-1]
    specials = np.array([np.inf, -np.inf, np.nan, -0.0, 1e39, largest, largest + 2.0**119, 2.0**-134])
    got = reference.bf16_round(specials)
    assert got[0] == np.inf and got[1] == -np.inf and np.isnan(got[2])
    assert got[3] == 0.0 and np.signbit(got[3])
    assert got[4] == np.inf
    assert got[5] == largest
    assert got[6] == np.inf          # the midpoint to 2^128 ties away from the odd largest value
    assert got[7] == 0.0             # half the smallest subnormal ties to zero


def test_to_numpy_passthrough():
    x = np.arange(6, dtype=np.uint8)
    assert reference.to_numpy(x) is x
    assert reference.to_numpy([1.0, 2.0]).dtype == np.float64


def test_torch_inputs():
    torch = pytest.importorskip("torch")
    a, sa, b, sb = _operands(4, 128, 256, seed=9)
    a_t = torch.from_numpy(a).view(torch.float8_e4m3fn)
    assert reference.to_numpy(a_t).dtype == np.uint8
    np.testing.assert_array_equal(reference.to_numpy(a_t), a)
    got = reference.gemm_reference(a_t, torch.from_numpy(sa), torch.from_numpy(b).view(torch.float8_e4m3fn),
                                   torch.from_numpy(sb))
    np.testing.assert_array_equal(got, reference.gemm_reference(a, sa, b, sb))
    bf16 = torch.tensor([1.5, -2.25], dtype=torch.bfloat16)
    assert reference.to_numpy(bf16).dtype == np.float32
    # bf16_round agrees with torch's float64 -> bfloat16 cast.
    x = np.random.default_rng(10).standard_normal(1000) * 1e3
    expected = torch.from_numpy(x).to(torch.bfloat16).double().numpy()
    np.testing.assert_array_equal(reference.bf16_round(x), expected)

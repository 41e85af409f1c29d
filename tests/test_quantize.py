"""The per-token and per-block casts into the recipe (numpy path; torch path when torch is present)."""
from __future__ import annotations

import numpy as np
import pytest

from pydg.fp8 import e4m3_to_float32, float32_to_e4m3
from pydg.quantize import per_block_cast_to_fp8, per_token_cast_to_fp8


def _data(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Normal data whose rows differ in magnitude by powers of two, so that scales matter."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(-6, 7, size=(*shape[:-1], 1))
    return (rng.standard_normal(shape) * np.exp2(rows)).astype(np.float32)


def _expected_scale(block: np.ndarray) -> np.float32:
    """The amax rule written out for one block: max(max|x|, 1e-4) / 448 in float32."""
    amax = np.float32(np.max(np.abs(block.astype(np.float32))))
    return np.float32(max(amax, np.float32(1e-4)) / np.float32(448.0))


def _check_round_trip(x: np.ndarray, values: np.ndarray, scale_per_element: np.ndarray) -> None:
    """E4M3 keeps 4 significant bits: relative error <= 1/16 on normals, absolute <= scale*2^-10 below."""
    x = x.astype(np.float64)
    error = np.abs(values - x)
    normal = np.abs(x) >= scale_per_element * 2.0**-6
    assert normal.mean() > 0.9  # the bound below is checked on most elements
    assert np.all(error[normal] <= 0.07 * np.abs(x[normal]))
    assert np.all(error[~normal] <= scale_per_element[~normal] * 2.0**-10 * 1.0001)


@pytest.mark.parametrize("m,k", [(5, 320), (8, 128), (3, 16), (4, 1040)])
def test_per_token_scales_follow_the_amax_rule(m, k):
    x = _data((m, k))
    codes, scales = per_token_cast_to_fp8(x)
    kb = -(-k // 128)
    assert codes.shape == (m, k) and codes.dtype == np.uint8 and codes.flags.c_contiguous
    assert scales.shape == (m, kb) and scales.dtype == np.float32 and scales.flags.c_contiguous
    for row in range(m):
        for block in range(kb):
            assert scales[row, block] == _expected_scale(x[row, block * 128:(block + 1) * 128])


@pytest.mark.parametrize("m,k", [(5, 320), (7, 272), (2, 2048)])
def test_per_token_round_trip(m, k):
    x = _data((m, k), seed=1)
    codes, scales = per_token_cast_to_fp8(x)
    expanded = np.repeat(scales.astype(np.float64), 128, axis=1)[:, :k]
    values = e4m3_to_float32(codes).astype(np.float64) * expanded
    _check_round_trip(x, values, expanded)


def test_per_token_codes_are_x_over_scale_rounded_and_hit_448():
    x = _data((6, 400), seed=2)
    codes, scales = per_token_cast_to_fp8(x)
    expanded = np.repeat(scales, 128, axis=1)[:, :400]
    np.testing.assert_array_equal(codes, float32_to_e4m3(x / expanded))
    # Each block's largest element lands on +-448 exactly.
    decoded = e4m3_to_float32(codes)
    for block in range(4):
        part = decoded[:, block * 128:(block + 1) * 128]
        np.testing.assert_array_equal(np.abs(part).max(axis=1), 448.0)


def test_per_token_zero_block_uses_the_floor():
    x = _data((2, 256), seed=3)
    x[1, 128:] = 0.0
    codes, scales = per_token_cast_to_fp8(x)
    assert scales[1, 1] == np.float32(np.float32(1e-4) / np.float32(448))
    assert not codes[1, 128:].any()
    assert np.isfinite(scales).all()


def test_per_token_leading_dims_and_dtypes():
    x = _data((2, 3, 5, 144), seed=4)
    codes, scales = per_token_cast_to_fp8(x)
    assert codes.shape == (2, 3, 5, 144) and scales.shape == (2, 3, 5, 2)
    flat_codes, flat_scales = per_token_cast_to_fp8(x.reshape(30, 144))
    np.testing.assert_array_equal(codes.reshape(30, 144), flat_codes)
    np.testing.assert_array_equal(scales.reshape(30, 2), flat_scales)
    # float64 and float16 inputs are computed in float32.
    codes64, scales64 = per_token_cast_to_fp8(x.astype(np.float64))
    np.testing.assert_array_equal(codes64, codes)
    np.testing.assert_array_equal(scales64, scales)
    codes16, scales16 = per_token_cast_to_fp8(x.astype(np.float16))
    assert codes16.dtype == np.uint8 and scales16.dtype == np.float32


def test_per_token_non_contiguous_input():
    x = _data((256, 8), seed=5).T  # (8, 256) with strides of a transpose
    codes, scales = per_token_cast_to_fp8(x)
    codes_c, scales_c = per_token_cast_to_fp8(np.ascontiguousarray(x))
    np.testing.assert_array_equal(codes, codes_c)
    np.testing.assert_array_equal(scales, scales_c)


@pytest.mark.parametrize("n,k", [(136, 272), (128, 128), (8, 16), (264, 400)])
def test_per_block_scales_follow_the_amax_rule(n, k):
    x = _data((n, k), seed=6)
    codes, scales = per_block_cast_to_fp8(x)
    nb, kb = -(-n // 128), -(-k // 128)
    assert codes.shape == (n, k) and codes.dtype == np.uint8 and codes.flags.c_contiguous
    assert scales.shape == (nb, kb) and scales.dtype == np.float32 and scales.flags.c_contiguous
    for i in range(nb):
        for j in range(kb):
            block = x[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128]
            assert scales[i, j] == _expected_scale(block)


@pytest.mark.parametrize("n,k", [(136, 272), (264, 400)])
def test_per_block_round_trip(n, k):
    x = _data((n, k), seed=7)
    codes, scales = per_block_cast_to_fp8(x)
    expanded = np.repeat(np.repeat(scales.astype(np.float64), 128, axis=0), 128, axis=1)[:n, :k]
    values = e4m3_to_float32(codes).astype(np.float64) * expanded
    _check_round_trip(x, values, expanded)
    np.testing.assert_array_equal(codes, float32_to_e4m3(x / expanded.astype(np.float32)))


def test_per_block_leading_dims():
    x = _data((3, 136, 144), seed=8)
    codes, scales = per_block_cast_to_fp8(x)
    assert codes.shape == (3, 136, 144) and scales.shape == (3, 2, 2)
    for g in range(3):
        codes_g, scales_g = per_block_cast_to_fp8(x[g])
        np.testing.assert_array_equal(codes[g], codes_g)
        np.testing.assert_array_equal(scales[g], scales_g)


def test_nan_propagates_to_its_block_only():
    x = _data((4, 256), seed=9)
    x[2, 5] = np.nan
    codes, scales = per_token_cast_to_fp8(x)
    assert np.isnan(scales[2, 0]) and np.isfinite(np.delete(scales.ravel(), 2 * 2)).all()
    assert np.isnan(e4m3_to_float32(codes[2, :128])).all()
    assert np.isfinite(e4m3_to_float32(codes[2, 128:])).all()


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="multiple of 16"):
        per_token_cast_to_fp8(np.zeros((4, 24), dtype=np.float32))
    with pytest.raises(ValueError, match="multiple of 8"):
        per_block_cast_to_fp8(np.zeros((12, 128), dtype=np.float32))
    with pytest.raises(ValueError, match="rank"):
        per_token_cast_to_fp8(np.zeros(128, dtype=np.float32))
    with pytest.raises(TypeError, match="dtype"):
        per_token_cast_to_fp8(np.zeros((4, 128), dtype=np.int32))
    with pytest.raises(TypeError, match="numpy array"):
        per_token_cast_to_fp8([[0.0] * 16])


def test_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    x = _data((2, 8, 272), seed=10)
    for cast in (per_token_cast_to_fp8, per_block_cast_to_fp8):
        codes, scales = cast(torch.from_numpy(x))
        assert codes.dtype == torch.float8_e4m3fn and scales.dtype == torch.float32
        assert codes.is_contiguous() and scales.is_contiguous()
        expected_codes, expected_scales = cast(x)
        np.testing.assert_array_equal(codes.view(torch.uint8).numpy(), expected_codes)
        np.testing.assert_array_equal(scales.numpy(), expected_scales)


def test_torch_bfloat16_input():
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(_data((4, 144), seed=11)).to(torch.bfloat16)
    codes, scales = per_block_cast_to_fp8(torch.cat([x, x]))
    expected_codes, expected_scales = per_block_cast_to_fp8(torch.cat([x, x]).float().numpy())
    np.testing.assert_array_equal(codes.view(torch.uint8).numpy(), expected_codes)
    np.testing.assert_array_equal(scales.numpy(), expected_scales)

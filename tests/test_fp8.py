"""The E4M3 codec (pydg.fp8) against the format's definition, by brute force."""
from __future__ import annotations

import numpy as np
import pytest

from pydg.fp8 import e4m3_to_float32, float32_to_e4m3

ALL_CODES = np.arange(256, dtype=np.uint8)
NAN_CODES = (0x7F, 0xFF)


def _finite_codes() -> np.ndarray:
    return np.array([c for c in range(256) if c not in NAN_CODES], dtype=np.uint8)


def _definition(code: int) -> float:
    """E4M3 value written from the spec, one code at a time (independent of the vectorised decoder)."""
    sign = -1.0 if code & 0x80 else 1.0
    exponent, mantissa = (code >> 3) & 0xF, code & 0x7
    if exponent == 0xF and mantissa == 0x7:
        return float("nan")
    if exponent == 0:
        return sign * mantissa / 8.0 * 2.0 ** (1 - 7)
    return sign * (1.0 + mantissa / 8.0) * 2.0 ** (exponent - 7)


def _positive_values() -> tuple[np.ndarray, np.ndarray]:
    """(codes 0x00..0x7E, their values), ascending."""
    codes = np.arange(0x7F, dtype=np.uint8)
    return codes, e4m3_to_float32(codes).astype(np.float64)


def test_decode_matches_definition_for_every_code():
    decoded = e4m3_to_float32(ALL_CODES)
    assert decoded.dtype == np.float32
    expected = np.array([_definition(c) for c in range(256)])
    np.testing.assert_array_equal(decoded.astype(np.float64), expected)  # NaNs compare equal here
    assert np.isnan(decoded[list(NAN_CODES)]).all()
    assert np.isfinite(decoded[_finite_codes()]).all()


def test_decode_landmarks():
    decoded = e4m3_to_float32(np.array([0x7E, 0xFE, 0x01, 0x08, 0x38, 0x00, 0x80], dtype=np.uint8))
    assert decoded[0] == 448.0 and decoded[1] == -448.0
    assert decoded[2] == 2.0**-9          # smallest subnormal
    assert decoded[3] == 2.0**-6          # smallest normal
    assert decoded[4] == 1.0
    assert decoded[5] == 0.0 and not np.signbit(decoded[5])
    assert decoded[6] == 0.0 and np.signbit(decoded[6])


def test_decode_int8_same_bits_and_shape():
    codes = np.random.default_rng(0).integers(0, 256, size=(3, 4, 5)).astype(np.uint8)
    from_u8 = e4m3_to_float32(codes)
    from_i8 = e4m3_to_float32(codes.view(np.int8))
    assert from_u8.shape == (3, 4, 5)
    np.testing.assert_array_equal(from_u8, from_i8)


def test_decode_rejects_float_input():
    with pytest.raises(TypeError, match="codes"):
        e4m3_to_float32(np.zeros(4, dtype=np.float32))


def test_encode_decode_round_trip_every_finite_code():
    codes = _finite_codes()
    again = float32_to_e4m3(e4m3_to_float32(codes))
    assert again.dtype == np.uint8
    np.testing.assert_array_equal(again, codes)


def test_midpoints_tie_to_even_code():
    codes, values = _positive_values()
    midpoints = ((values[:-1] + values[1:]) / 2).astype(np.float32)
    # The midpoints need at most 5 significant bits: exact in float32.
    np.testing.assert_array_equal(midpoints.astype(np.float64), (values[:-1] + values[1:]) / 2)
    got = float32_to_e4m3(midpoints)
    even = np.where(codes[:-1] % 2 == 0, codes[:-1], codes[1:])
    np.testing.assert_array_equal(got, even)
    np.testing.assert_array_equal(float32_to_e4m3(-midpoints), even | 0x80)


def test_just_off_midpoints_round_to_the_nearer_side():
    codes, values = _positive_values()
    midpoints = ((values[:-1] + values[1:]) / 2).astype(np.float32)
    below = np.nextafter(midpoints, np.float32(0))
    above = np.nextafter(midpoints, np.float32(np.inf))
    np.testing.assert_array_equal(float32_to_e4m3(below), codes[:-1])
    np.testing.assert_array_equal(float32_to_e4m3(above), codes[1:])


def test_random_values_go_to_the_nearest_representable_value():
    rng = np.random.default_rng(1)
    magnitudes = np.exp2(rng.uniform(-13, 9, size=20000))
    x = (magnitudes * rng.choice([-1.0, 1.0], size=magnitudes.size)).astype(np.float32)
    x = x[np.abs(x) <= 448]
    got = e4m3_to_float32(float32_to_e4m3(x)).astype(np.float64)
    finite = e4m3_to_float32(_finite_codes()).astype(np.float64)
    distances = np.abs(x.astype(np.float64)[:, None] - finite[None, :])
    best = distances.min(axis=1)
    np.testing.assert_array_equal(np.abs(got - x.astype(np.float64)), best)
    # Signs are kept (zero results included).
    np.testing.assert_array_equal(np.signbit(got), np.signbit(x))


def test_saturation_nan_and_zero_signs():
    x = np.array([448.0, 463.9, 464.0, 500.0, 1e30, np.inf, -np.inf, -1e30, np.nan, -np.nan,
                  0.0, -0.0], dtype=np.float32)
    got = float32_to_e4m3(x)
    expected = [0x7E, 0x7E, 0x7E, 0x7E, 0x7E, 0x7E, 0xFE, 0xFE, 0x7F, 0x7F, 0x00, 0x80]
    np.testing.assert_array_equal(got, np.array(expected, dtype=np.uint8))


def test_underflow_and_subnormal_edges():
    x = np.array([2.0**-10, 2.0**-10 * 1.0001, 3 * 2.0**-10, 5 * 2.0**-10, 2.0**-12, 1e-30,
                  15.5 * 2.0**-10, np.float32(2.0**-6) * np.float32(0.99999)], dtype=np.float32)
    got = float32_to_e4m3(x)
    # 2^-10 is half the smallest subnormal: ties to 0 (even). 3*2^-10 = 1.5 ulp -> 2 (even), 5*2^-10 -> 2.
    # 15.5*2^-10 = 7.75 ulp -> 8 = 2^-6 (code 0x08); just under 2^-6 rounds up to it too.
    np.testing.assert_array_equal(got, np.array([0, 1, 2, 2, 0, 0, 8, 8], dtype=np.uint8))


def test_encode_accepts_float64_and_keeps_shape():
    x = np.linspace(-448, 448, 24).reshape(2, 3, 4)
    got = float32_to_e4m3(x)
    assert got.shape == (2, 3, 4) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, float32_to_e4m3(x.astype(np.float32)))


def test_encode_non_contiguous_input():
    x = np.random.default_rng(2).standard_normal((8, 6)).astype(np.float32)
    np.testing.assert_array_equal(float32_to_e4m3(x.T), float32_to_e4m3(np.ascontiguousarray(x.T)))


def test_agrees_with_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(10000) * np.exp2(rng.integers(-12, 8, 10000))).astype(np.float32)
    x = np.clip(x, -448, 448)
    expected = x.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    np.testing.assert_array_equal(float32_to_e4m3(x), expected)
    np.testing.assert_array_equal(e4m3_to_float32(ALL_CODES[:0x7F]),
                                  ALL_CODES[:0x7F].view(ml_dtypes.float8_e4m3fn).astype(np.float32))


def test_agrees_with_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(10000) * np.exp2(rng.integers(-12, 8, 10000))).astype(np.float32)
    x = np.clip(x, -448, 448)
    expected = torch.from_numpy(x).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    np.testing.assert_array_equal(float32_to_e4m3(x), expected)
    decoded = torch.from_numpy(_finite_codes()).view(torch.float8_e4m3fn).float().numpy()
    np.testing.assert_array_equal(e4m3_to_float32(_finite_codes()), decoded)

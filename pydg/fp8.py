"""An exact codec for E4M3 (float8_e4m3fn) on numpy and CuPy arrays.

E4M3 as Hopper's tensor cores read it: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits.
There are no infinities; 0x7F and 0xFF are NaN; the largest finite magnitude is 448 (0x7E);
subnormals (exponent field 0) are multiples of 2^-9.

Both functions are vectorised over any shape and use only operations that numpy and CuPy share,
so CuPy arrays are converted on their own device (the array's module is used as `xp`).
"""
from __future__ import annotations

import types
from typing import Any

E4M3_MAX = 448.0
E4M3_NAN = 0x7F
_E4M3_MAX_CODE = 0x7E
# float32 bit patterns: 2^-6 is E4M3's smallest normal; anything above 0x7F800000 is a NaN.
_F32_MIN_E4M3_NORMAL_BITS = 121 << 23
_F32_INF_BITS = 0x7F800000
# float32 has 23 mantissa bits and E4M3 keeps 3: 20 are rounded away.
_DROPPED_BITS = 20
# Re-biasing the float32 exponent (127) to E4M3's (7), in units of the 3-bit-mantissa code.
_REBIAS = (127 - 7) << 3


def array_module(x: Any) -> types.ModuleType:
    """numpy or cupy, whichever owns `x` (each is imported only when first needed: `import pydg`
    stays light)."""
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    import numpy

    return numpy


def e4m3_to_float32(codes: Any) -> Any:
    """Decode raw E4M3 bytes.

    codes: uint8 or int8 array (numpy or CuPy), any shape, each element one E4M3 byte.
    Returns a float32 array of the same shape and library; 0x7F/0xFF decode to NaN, 0x80 to -0.0.
    """
    xp = array_module(codes)
    codes = xp.asarray(codes)
    if codes.dtype not in (xp.uint8, xp.int8):
        raise TypeError(f"codes: expected dtype uint8 or int8 (raw E4M3 bytes), got {codes.dtype}")
    # Viewing int8 as uint8 keeps the bits; astype would sign-extend them.
    c = codes.view(xp.uint8).astype(xp.int32)
    exponent = (c >> 3) & 0xF
    mantissa = c & 0x7
    subnormal = exponent == 0
    # value = significand * 2^power, with the implicit leading 1 (= 8 in units of 2^-3) for normals.
    significand = xp.where(subnormal, mantissa, mantissa + 8).astype(xp.float32)
    power = xp.where(subnormal, -9, exponent - 10).astype(xp.int32)
    magnitude = xp.ldexp(significand, power).astype(xp.float32, copy=False)
    value = xp.where((c & 0x80) != 0, -magnitude, magnitude)
    return xp.where((c & 0x7F) == E4M3_NAN, xp.float32(xp.nan), value).astype(xp.float32, copy=False)


def float32_to_e4m3(x: Any) -> Any:
    """Encode to raw E4M3 bytes, rounding to nearest with ties to even.

    x: float array (numpy or CuPy), any shape; other float dtypes are first converted to float32
    (float64 inputs are therefore rounded twice: pass float32 when that matters).
    Returns a uint8 array of the same shape and library.

    Magnitudes that round beyond 448 (including infinities) saturate to +-448 (0x7E/0xFE). This
    differs from torch's cast, which gives NaN there; pydg's quantizers scale every block into
    [-448, 448] first, so they never produce such values. NaN encodes as 0x7F; -0.0 as 0x80.
    """
    xp = array_module(x)
    x = xp.ascontiguousarray(xp.asarray(x, dtype=xp.float32))
    # int64 so that adding the rounding bias and re-biasing can neither overflow nor wrap.
    bits = x.view(xp.uint32).astype(xp.int64)
    sign = (bits >> 31) << 7
    magnitude_bits = bits & 0x7FFFFFFF
    code = xp.where(magnitude_bits >= _F32_MIN_E4M3_NORMAL_BITS,
                    _encode_normal(xp, magnitude_bits), _encode_subnormal(xp, x, magnitude_bits))
    code = code | sign
    code = xp.where(magnitude_bits > _F32_INF_BITS, E4M3_NAN, code)
    return code.astype(xp.uint8)


def _encode_normal(xp: types.ModuleType, magnitude_bits: Any) -> Any:
    """Codes (sign not included) for magnitudes >= 2^-6, from their float32 bits (int64).

    Rounding the float32 bit pattern to 3 mantissa bits in the integer domain is exact: adding
    half an E4M3 ulp minus one, plus the kept lowest bit, rounds to nearest-even, and a mantissa
    carry correctly bumps the exponent. Results past 0x7E (448) saturate.
    """
    half_minus_one = (1 << (_DROPPED_BITS - 1)) - 1
    kept_lsb = (magnitude_bits >> _DROPPED_BITS) & 1
    rounded = (magnitude_bits + half_minus_one + kept_lsb) >> _DROPPED_BITS
    return xp.minimum(rounded - _REBIAS, _E4M3_MAX_CODE)


def _encode_subnormal(xp: types.ModuleType, x: Any, magnitude_bits: Any) -> Any:
    """Codes (sign not included) for magnitudes < 2^-6: multiples of 2^-9, found with rint.

    |x| * 2^9 is exact in float32 and rint rounds half to even, giving 0..8; 8 is exactly the code
    of 2^-6, so rounding up into the normal range needs no special case. Large, infinite and NaN
    elements (handled by the other branches) are zeroed first so that the cast stays defined.
    """
    small = xp.where(magnitude_bits < _F32_MIN_E4M3_NORMAL_BITS, xp.abs(x), xp.float32(0))
    return xp.rint(small * xp.float32(512)).astype(xp.int64)

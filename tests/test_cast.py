"""The FP8 cast kernels without a GPU: every variant compiles cleanly, the launch plans, the layout
rules for GPU inputs, the host path of the masked cast, and the division sequence the kernels use."""
from __future__ import annotations

import math
import random
import re
import struct
from fractions import Fraction

import numpy as np
import pytest

import pydg
from pydg.arrays import ArrayInfo
from pydg.driver.nvrtc import compile_cubin
from pydg.kernels import cast
from pydg.quantize import _group_stride, _kernel_can_read, per_token_cast_to_fp8, per_token_cast_to_fp8_masked

VARIANTS = [cast.CastKernel(g, d) for g in cast.GRANULARITIES for d in cast.INPUT_TYPES]


@pytest.mark.parametrize("kernel", VARIANTS, ids=lambda k: f"{k.granularity}-{k.input_dtype}")
def test_variant_compiles_without_spills(kernel, tmp_path):
    compiled = compile_cubin(cast.sources()[cast.ENTRY], cast.ENTRY, cast.options(kernel))
    assert compiled.cubin[:4] == b"\x7fELF"
    report = compiled.ptxas
    assert report.spill_stores == 0 and report.spill_loads == 0 and report.stack_frame == 0, compiled.log
    # The CTAs per SM that cast.py plans for (cast.cu's launch bounds) fit in the 64K registers,
    # which are allocated per warp in multiples of 256 (8 per thread).
    assert -(-report.registers // 8) * 8 * cast.THREADS * kernel.ctas_per_sm <= 65536, report
    sass = _sass(compiled.cubin, tmp_path)
    if sass is not None:
        assert "F2FP.SATFINITE.E4M3.F32.PACK_AB" in sass
        assert "LDG.E.NA.128.CONSTANT" in sass and "STG.E.128" in sass
        assert not re.search(r"\b(LDL|STL)\b", sass)


def _sass(cubin: bytes, tmp_path) -> str | None:
    from test_kernels import _sass as disassemble

    path = tmp_path / "cast.cubin"
    path.write_bytes(cubin)
    return disassemble(path)


def test_compile_goes_through_the_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    kernel = cast.CastKernel("per_token", "bfloat16")
    monkeypatch.setattr(cast, "_compiled", {})
    first = cast.compile_cast(kernel)
    assert not first.from_disk_cache and first.ptxas.spill_stores == 0
    monkeypatch.setattr(cast, "_compiled", {})
    second = cast.compile_cast(kernel)
    assert second.from_disk_cache and second.cubin == first.cubin and second.key == first.key
    assert cast.compile_cast(kernel) is second


def test_cache_keys_differ_per_variant_and_ignore_the_install_path():
    keys = {cast.cache_key(k) for k in VARIANTS}
    assert len(keys) == len(VARIANTS)
    assert all(not opt.startswith("--include-path") for opt in cast.content_options(VARIANTS[0]))


def test_kernel_variant_arguments():
    with pytest.raises(ValueError, match="granularity"):
        cast.CastKernel("per_row", "float32")
    with pytest.raises(TypeError, match="input dtype"):
        cast.CastKernel("per_token", "int8")
    assert cast.CastKernel("per_block", "float16").defines() == {"PYDG_CAST_INPUT": 2, "PYDG_CAST_PER_BLOCK": 1,
                                                                 "PYDG_CAST_CTAS_PER_SM": 3}
    # float32 needs more registers per row than 3 CTAs per SM leave (it would spill).
    assert cast.CastKernel("per_block", "float32").ctas_per_sm == 2
    assert cast.CastKernel("per_token", "bfloat16").ctas_per_sm == 3


# ---- plans ----------------------------------------------------------------------------------------

def test_per_token_plan_is_one_resident_wave_at_most():
    big = cast.plan_per_token("bfloat16", 1, 8192, 7168, 7168 * 2, 0, num_sms=132)
    assert big.grid == (132 * 3, 1, 1) and big.block == (256, 1, 1)
    assert big.scale_storage_shape == (1, 56, 8192) and big.k_blocks == 56
    small = cast.plan_per_token("float32", 1, 3, 400, 1600, 0, num_sms=132)
    # 3 rows of ceil(400 / 512) = 1 warp-sized piece each: one CTA of 8 warps.
    assert small.grid == (1, 1, 1) and small.scale_storage_shape == (1, 4, 4)
    masked = cast.plan_per_token("bfloat16", 4, 37, 2048, 4096, 37 * 4096, num_sms=132, masked=True)
    assert masked.grid == (ceil(4 * 37 * 4, 8), 1, 1) and masked.masked
    assert masked.scale_storage_shape == (4, 16, 40)
    assert cast.plan_per_token("float32", 1, 0, 128, 512, 0, num_sms=132).is_empty


def ceil(a: int, b: int) -> int:
    return -(-a // b)


def test_per_block_plan_is_one_cta_per_block():
    plan = cast.plan_per_block("float32", 3, 264, 400, 1600, 264 * 1600)
    assert plan.grid == (4, 3, 3) and plan.scale_storage_shape == (3, 3, 4)
    assert cast.plan_per_block("bfloat16", 1, 0, 128, 256, 0).is_empty


def test_plan_limits():
    with pytest.raises(ValueError, match="multiple of 16"):
        cast.plan_per_token("float32", 1, 4, 24, 96, 0, num_sms=132)
    with pytest.raises(ValueError, match="pieces of 512"):
        cast.plan_per_token("bfloat16", 1, 2**31, 512, 1024, 0, num_sms=132)
    with pytest.raises(ValueError, match="65535"):
        cast.plan_per_block("bfloat16", 1, 65536 * 128, 128, 256, 0)
    with pytest.raises(ValueError, match="65535"):
        cast.plan_per_block("bfloat16", 70000, 128, 128, 256, 256 * 128)


# ---- layouts the kernels read in place (anything else is copied first) ----------------------------

def _info(shape, strides, ptr=0x10000, dtype="bfloat16") -> ArrayInfo:
    return ArrayInfo(ptr, tuple(shape), tuple(strides), dtype, 0, "torch")


def test_contiguous_and_row_sliced_inputs_are_read_in_place():
    assert _kernel_can_read(_info((4, 256), (256, 1)), 2)
    assert _kernel_can_read(_info((4, 128), (256, 1)), 2)  # x[:, :128] of a (4, 256) bf16 matrix
    assert _kernel_can_read(_info((3, 5, 64), (5 * 64, 64, 1)), 2)
    assert _kernel_can_read(_info((2, 3, 5, 64), (15 * 64, 5 * 64, 64, 1)), 2)
    assert _kernel_can_read(_info((1, 5, 64), (7, 64, 1)), 2)  # a size-1 dimension's stride is never used
    assert _kernel_can_read(_info((0, 64), (3, 1), ptr=0x10001), 2)


def test_other_layouts_are_copied():
    assert not _kernel_can_read(_info((4, 256), (1, 4)), 2)             # transposed
    assert not _kernel_can_read(_info((4, 256), (256, 1), ptr=0x10008), 2)  # 8-byte aligned start
    assert not _kernel_can_read(_info((4, 16), (20, 1)), 2)            # 40-byte rows
    assert not _kernel_can_read(_info((2, 3, 5, 64), (5 * 64, 15 * 64, 64, 1)), 2)  # leading dims swapped
    assert not _kernel_can_read(_info((4, 64), (-64, 1)), 2)           # negative (CuPy) strides


def test_group_stride_collapses_the_leading_dimensions():
    assert _group_stride((4, 256), (256, 1)) == 0
    assert _group_stride((3, 5, 64), (400, 64, 1)) == 400
    assert _group_stride((2, 3, 5, 64), (1200, 400, 64, 1)) == 400
    assert _group_stride((2, 1, 5, 64), (1200, 7, 64, 1)) == 1200


# ---- the masked cast on the host -------------------------------------------------------------------

def test_masked_cast_on_the_host_gives_the_gemm_layout():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6, 272)).astype(np.float32)
    codes, scales = per_token_cast_to_fp8_masked(x, np.array([6, 2, 0], dtype=np.int32))
    plain_codes, plain_scales = per_token_cast_to_fp8(x)
    np.testing.assert_array_equal(codes, plain_codes)
    np.testing.assert_array_equal(scales, plain_scales)
    assert scales.shape == (3, 6, 3)
    assert tuple(s // 4 for s in scales.strides) == (8 * 3, 1, 8)
    assert pydg.per_token_cast_to_fp8_masked is per_token_cast_to_fp8_masked


def test_masked_cast_arguments():
    x = np.zeros((2, 4, 128), dtype=np.float32)
    with pytest.raises(ValueError, match="rank 3"):
        per_token_cast_to_fp8_masked(np.zeros((2, 2, 4, 128), dtype=np.float32), np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="rank at least 3"):
        per_token_cast_to_fp8_masked(np.zeros((4, 128), dtype=np.float32), np.zeros(2, np.int32))
    with pytest.raises(TypeError, match="masked_m: expected dtype int32, got int64"):
        per_token_cast_to_fp8_masked(x, np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"masked_m: expected shape \(2,\), got \(3,\)"):
        per_token_cast_to_fp8_masked(x, np.zeros(3, np.int32))
    with pytest.raises(TypeError, match="masked_m"):
        per_token_cast_to_fp8_masked(x, [4, 4])
    with pytest.raises(ValueError, match="multiple of 16"):
        per_token_cast_to_fp8_masked(np.zeros((2, 4, 24), dtype=np.float32), np.zeros(2, np.int32))


# ---- the kernels' division, checked in exact arithmetic ------------------------------------------
# cast.cuh divides by a block's scale with one reciprocal and two fma corrections instead of a full
# division per element. Here the same sequence runs with exact rounding (rationals), against the
# correctly rounded quotient, on quotients near E4M3's rounding midpoints where one ulp matters.

def _rn32(value: Fraction) -> float:
    """value rounded to the nearest float32, ties to even (no overflow in these tests)."""
    if value == 0:
        return 0.0
    magnitude = abs(value)
    exponent = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    if Fraction(2) ** exponent > magnitude:
        exponent -= 1
    ulp = Fraction(2) ** (max(exponent, -126) - 23)
    rounded = float(round(magnitude / ulp) * ulp)
    return rounded if value > 0 else -rounded


def _fma(a: float, b: float, c: float) -> float:
    return _rn32(Fraction(a) * Fraction(b) + Fraction(c))


def _kernel_quotient(x: float, scale: float) -> float:
    inverse = _rn32(1 / Fraction(scale))                    # rcp.rn.f32
    q0 = _rn32(Fraction(x) * Fraction(inverse))             # mul.rn.f32
    q1 = _fma(_fma(-scale, q0, x), inverse, q0)
    q2 = _fma(_fma(-scale, q1, x), inverse, q1)
    return math.copysign(q2, x)                             # copysign.f32


def _f32(value: float) -> float:
    return float(np.float32(value))


def _nudge(value: float, ulps: int) -> float:
    bits = struct.unpack("<i", struct.pack("<f", value))[0]
    return struct.unpack("<f", struct.pack("<i", bits + ulps))[0]


def test_the_kernels_division_is_correctly_rounded():
    rng = random.Random(3)
    # E4M3's rounding midpoints, normal and subnormal: where a one-ulp error changes a code.
    midpoints = [(m + 8.5) * 2.0 ** (e - 10) for e in range(1, 16) for m in range(8)]
    midpoints += [(m + 0.5) * 2.0**-9 for m in range(8)]
    for i in range(2500):
        amax = _f32(rng.uniform(1, 2) * 2.0 ** rng.randint(-40, 120))
        scale = _rn32(Fraction(max(amax, _f32(1e-4))) / 448)
        if i % 4 == 0:
            x = _f32(rng.uniform(-1, 1) * amax)
        else:
            target = rng.choice(midpoints) * rng.choice((1, -1))
            x = _nudge(_rn32(Fraction(target) * Fraction(scale)), rng.randint(-2, 2))
        assert _kernel_quotient(x, scale) == _rn32(Fraction(x) / Fraction(scale)), (x, scale)
    assert str(_kernel_quotient(-0.0, 1e-3)) == "-0.0"


# ---- the plan of a GPU input, with the device described by a stand-in ------------------------------

def test_gpu_plan_of_a_signature(monkeypatch):
    from pydg import quantize
    from pydg.driver import cuda

    hopper = cuda.DeviceInfo(0, "NVIDIA H100 80GB HBM3", (9, 0), 132, 232448)
    monkeypatch.setattr(cuda, "device_info", lambda ordinal: hopper)
    quantize._gpu_plan.cache_clear()
    plan = quantize._gpu_plan("per_token", "bfloat16", (4, 300, 2064), (300 * 2064, 2064, 1), 0, True)
    assert (plan.num_groups, plan.rows, plan.k) == (4, 300, 2064) and plan.masked
    assert plan.row_stride_bytes == 2064 * 2 and plan.group_stride_bytes == 300 * 2064 * 2
    assert plan.grid == (132 * 3, 1, 1) and plan.scale_storage_shape == (4, 17, 300)  # 6000 warp units
    plan = quantize._gpu_plan("per_block", "float32", (7168, 2048), (4096, 1), 0, False)
    assert plan.grid == (16, 56, 1) and plan.row_stride_bytes == 4096 * 4 and plan.group_stride_bytes == 0

    ampere = cuda.DeviceInfo(0, "NVIDIA A100-SXM4-80GB", (8, 0), 108, 166912)
    monkeypatch.setattr(cuda, "device_info", lambda ordinal: ampere)
    quantize._gpu_plan.cache_clear()
    with pytest.raises(ValueError, match=r"x: expected an array on an sm_90 GPU .* \(sm_80\)"):
        quantize._gpu_plan("per_token", "float32", (4, 128), (128, 1), 0, False)
    quantize._gpu_plan.cache_clear()


class _RecordedLaunch:
    """What cast.set_arguments writes into: driver.launch's config structure and parameter buffers
    (a KernelLaunch needs the driver library)."""

    def __init__(self, params: tuple[str, ...]):
        from pydg.driver.launch import PARAM_TYPES, LaunchConfig

        self.config = LaunchConfig()
        self.values = [PARAM_TYPES[kind]() for kind in params]

    def set_value(self, index: int, value: int) -> None:
        self.values[index].value = value


def test_launch_arguments_follow_the_kernel_signature():
    plan = cast.plan_per_token("bfloat16", 4, 300, 2064, 4128, 300 * 4128, num_sms=132, masked=True)
    launch = _RecordedLaunch(cast.PARAMS["per_token"])
    cast.set_arguments(launch, plan, 0x1000, 0x2000, 0x3000, 0x4000)
    assert tuple(launch.config.grid) == plan.grid
    assert [v.value for v in launch.values] == [0x1000, 0x2000, 0x3000, 0x4000, 300, 4, 2064, 4128, 300 * 4128]

    plan = cast.plan_per_block("float32", 3, 264, 400, 1600, 264 * 1600)
    launch = _RecordedLaunch(cast.PARAMS["per_block"])
    cast.set_arguments(launch, plan, 0x1000, 0x2000, 0x3000, 0)
    assert tuple(launch.config.grid) == (4, 3, 3)
    assert [v.value for v in launch.values] == [0x1000, 0x2000, 0x3000, 264, 400, 1600, 264 * 1600]


def test_cache_entry_says_what_it_holds(tmp_path, monkeypatch):
    from pydg.driver import cache

    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cast, "_compiled", {})
    cast.compile_cast(cast.CastKernel("per_block", "float32"))
    (entry,) = cache.entries()
    assert entry.valid and entry.kernel["name"] == "pydg_per_block_cast" and entry.kernel["mode"] == "per_block"

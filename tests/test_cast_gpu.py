"""The FP8 cast kernels on an sm_90 GPU: bit for bit against pydg.quantize's numpy path (the spec),
every output element written, the layouts the GEMMs take, streams, CUDA graphs, and GEMM round trips."""
from __future__ import annotations

import numpy as np
import pytest

import pydg
from pydg import quantize, reference
from gpu_util import DIFF_LIMIT, calc_diff, dequantize, nan_like, torch_module

pytestmark = pytest.mark.gpu

PER_TOKEN_SHAPES = [(1, 16), (1, 7168), (2, 48), (3, 112), (5, 144), (7, 400), (64, 128), (127, 528),
                    (129, 2064), (256, 512), (1000, 1536), (4097, 272), (5000, 2048), (4096, 7168)]
PER_BLOCK_SHAPES = [(8, 16), (128, 128), (136, 272), (264, 400), (1000, 2064), (4104, 7168), (7168, 2048)]
DTYPES = ("bfloat16", "float32", "float16")


@pytest.fixture
def poisoned(monkeypatch):
    """Every output the casts allocate starts as all-ones bytes (NaN as E4M3 and as float32), so an
    element the kernel leaves unwritten cannot match the reference by chance."""
    original = quantize._empty

    def empty(x, library, shape, kind):
        out = original(x, library, shape, kind)
        if library == "torch":
            out.view(torch_module().uint8).fill_(0xFF)
        else:
            out.view(np.uint8).fill(0xFF)
        return out

    monkeypatch.setattr(quantize, "_empty", empty)


def _input(torch, shape, dtype: str, seed: int = 0, spread: int = 8):
    """Normal data whose rows differ in magnitude by up to 2^spread either way, in `dtype` on the GPU."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(*shape, device="cuda", generator=gen)
    x = x * torch.exp2(torch.randint(-spread, spread + 1, (*shape[:-1], 1), device="cuda", generator=gen).float())
    return x.to(getattr(torch, dtype))


def _host(x) -> np.ndarray:
    """The input's values as float32 numpy (bfloat16/float16 widen exactly)."""
    return reference.to_numpy(x).astype(np.float32)


def _canonical_codes(codes: np.ndarray) -> np.ndarray:
    """E4M3 bytes with every NaN (0x7F, 0xFF) written as 0x7F: the sign of a NaN carries nothing."""
    return np.where((codes & 0x7F) == 0x7F, np.uint8(0x7F), codes)


def _assert_bits_equal(codes, scales, expected_codes, expected_scales):
    got_codes = reference.to_numpy(codes)
    assert got_codes.dtype == np.uint8 and got_codes.shape == expected_codes.shape
    np.testing.assert_array_equal(_canonical_codes(got_codes), _canonical_codes(expected_codes))
    got_scales = reference.to_numpy(scales)
    assert got_scales.shape == expected_scales.shape
    # Bitwise on finite scales; NaN where the reference has NaN (assert_array_equal matches NaNs).
    np.testing.assert_array_equal(got_scales, expected_scales)


def _assert_tma_aligned(scales):
    m = scales.shape[-2]
    assert scales.stride() == (1, -(-m // 4) * 4) and scales.data_ptr() % 16 == 0


# ---- bit for bit against the numpy spec -------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k", PER_TOKEN_SHAPES)
def test_per_token_matches_the_spec(m, k, dtype, poisoned):
    torch = torch_module()
    x = _input(torch, (m, k), dtype, seed=m + k)
    codes, scales = pydg.per_token_cast_to_fp8(x)
    assert codes.dtype == torch.float8_e4m3fn and codes.is_contiguous() and scales.dtype == torch.float32
    _assert_tma_aligned(scales)
    assert pydg.get_col_major_tma_aligned_tensor(scales) is scales
    expected_codes, expected_scales = pydg.per_token_cast_to_fp8(_host(x))
    _assert_bits_equal(codes, scales, expected_codes, expected_scales)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", PER_BLOCK_SHAPES)
def test_per_block_matches_the_spec(n, k, dtype, poisoned):
    torch = torch_module()
    x = _input(torch, (n, k), dtype, seed=n * k)
    codes, scales = pydg.per_block_cast_to_fp8(x)
    assert codes.dtype == torch.float8_e4m3fn and codes.is_contiguous() and scales.is_contiguous()
    expected_codes, expected_scales = pydg.per_block_cast_to_fp8(_host(x))
    _assert_bits_equal(codes, scales, expected_codes, expected_scales)


def _special_values(torch, rows: int, k: int):
    """Blocks (128 wide) of zeros, -0, NaN, Inf, -Inf next to finite values, float32 extremes,
    subnormals, and values whose quotients sit on E4M3 rounding midpoints."""
    x = torch.randn(rows, k, device="cuda", dtype=torch.float64)
    x[0, :128] = 0.0
    x[1, :128] = -0.0
    x[2, 5] = float("nan")
    x[3, 130] = float("inf")
    x[4, 7] = float("-inf")
    x[4, 9] = float("nan")
    x[5, :128] *= 3.0e38 / 4
    x[6, :128] *= 1e-40
    x[7, :128] *= 1e-6
    # In a block whose amax is 448 (scale exactly 1): every E4M3 rounding midpoint below 448, normal
    # and subnormal, so that ties go to even.
    midpoints = [(mm + 8.5) * 2.0 ** (e - 10) for e in range(1, 15) for mm in range(8)]
    midpoints += [(mm + 0.5) * 2.0**-9 for mm in range(8)]
    signs = [1.0 if i % 2 == 0 else -1.0 for i in range(len(midpoints))]
    x[8, :120] = torch.tensor([v * s for v, s in zip(midpoints, signs)], device="cuda", dtype=torch.float64)
    x[8, 120] = 448.0
    x[8, 121:128] = x[8, 121:128].clamp(-400, 400)
    return x.float()


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values(dtype, poisoned):
    torch = torch_module()
    x = _special_values(torch, 16, 272).to(getattr(torch, dtype))
    host = _host(x)
    for cast in (pydg.per_token_cast_to_fp8, pydg.per_block_cast_to_fp8):
        codes, scales = cast(x)
        expected_codes, expected_scales = cast(host)
        _assert_bits_equal(codes, scales, expected_codes, expected_scales)
    codes, scales = pydg.per_token_cast_to_fp8(x)
    raw = reference.to_numpy(codes)
    assert (raw[0, :128] == 0x00).all() and (raw[1, :128] == 0x80).all(), "-0 keeps its sign"
    assert np.isnan(reference.to_numpy(scales)[2, 0]) and np.isinf(reference.to_numpy(scales)[3, 1])


# ---- layouts ------------------------------------------------------------------------------------------

def test_leading_dimensions(poisoned):
    torch = torch_module()
    x = _input(torch, (3, 37, 400), "bfloat16", seed=1)
    codes, scales = pydg.per_token_cast_to_fp8(x)
    assert scales.shape == (3, 37, 4) and scales.stride() == (40 * 4, 1, 40)
    _assert_bits_equal(codes, scales, *pydg.per_token_cast_to_fp8(_host(x)))
    x4 = _input(torch, (2, 3, 5, 144), "float32", seed=2)
    codes, scales = pydg.per_token_cast_to_fp8(x4)
    assert scales.shape == (2, 3, 5, 2) and scales.stride() == (3 * 16, 16, 1, 8)
    _assert_bits_equal(codes, scales, *pydg.per_token_cast_to_fp8(_host(x4)))
    w = _input(torch, (3, 264, 400), "bfloat16", seed=3)
    _assert_bits_equal(*pydg.per_block_cast_to_fp8(w), *pydg.per_block_cast_to_fp8(_host(w)))


def test_strided_inputs_give_the_same_bits(poisoned):
    torch = torch_module()
    wide = _input(torch, (296, 1024), "bfloat16", seed=4)
    sliced = wide[:, :528]                       # rows 2048 bytes apart: read in place
    transposed = _input(torch, (528, 296), "bfloat16", seed=5).T  # copied first
    offset = wide.view(-1)[8:8 + 296 * 528].view(296, 528)  # 16-byte aligned but not 32: read in place
    odd = wide.view(-1)[4:4 + 296 * 528].view(296, 528)     # 8-byte aligned: copied first
    for x in (sliced, transposed, offset, odd):
        for cast in (pydg.per_token_cast_to_fp8, pydg.per_block_cast_to_fp8):
            _assert_bits_equal(*cast(x), *cast(_host(x)))


def test_empty_inputs():
    torch = torch_module()
    codes, scales = pydg.per_token_cast_to_fp8(torch.empty(0, 256, device="cuda", dtype=torch.bfloat16))
    assert codes.shape == (0, 256) and scales.shape == (0, 2)
    codes, scales = pydg.per_block_cast_to_fp8(torch.empty(0, 256, device="cuda"))
    assert codes.shape == (0, 256) and scales.shape == (0, 2)


# ---- masked (decoding) layout -------------------------------------------------------------------------

def test_masked_casts_only_the_valid_rows(poisoned):
    torch = torch_module()
    x = _input(torch, (5, 300, 2064), "bfloat16", seed=6)
    masked = [300, 17, 0, 1000, -3]
    masked_m = torch.tensor(masked, device="cuda", dtype=torch.int32)
    codes, scales = pydg.per_token_cast_to_fp8_masked(x, masked_m)
    assert scales.shape == (5, 300, 17) and scales.stride() == (300 * 17, 1, 300)
    expected_codes, expected_scales = pydg.per_token_cast_to_fp8(_host(x))
    got_codes, got_scales = reference.to_numpy(codes), reference.to_numpy(scales)
    for g, rows in enumerate(masked):
        rows = min(max(rows, 0), 300)
        np.testing.assert_array_equal(_canonical_codes(got_codes[g, :rows]), expected_codes[g, :rows])
        np.testing.assert_array_equal(got_scales[g, :rows], expected_scales[g, :rows])
        assert (got_codes[g, rows:] == 0xFF).all(), f"group {g}: rows past masked_m were written"
        assert np.isnan(got_scales[g, rows:]).all()


def test_masked_argument_checks():
    torch = torch_module()
    x = torch.zeros(2, 4, 128, device="cuda")
    with pytest.raises(TypeError, match="masked_m: expected dtype int32"):
        pydg.per_token_cast_to_fp8_masked(x, torch.zeros(2, device="cuda", dtype=torch.int64))
    with pytest.raises(ValueError, match=r"masked_m: expected shape \(2,\)"):
        pydg.per_token_cast_to_fp8_masked(x, torch.zeros(3, device="cuda", dtype=torch.int32))
    with pytest.raises(ValueError, match="masked_m: expected an array on x's GPU"):
        pydg.per_token_cast_to_fp8_masked(x, torch.zeros(2, dtype=torch.int32))


# ---- streams and CUDA graphs ---------------------------------------------------------------------------

def test_runs_on_the_current_stream():
    torch = torch_module()
    x = torch.zeros(1024, 2048, device="cuda", dtype=torch.bfloat16)
    values = _input(torch, (1024, 2048), "bfloat16", seed=7)
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(50_000_000)  # the copy and the cast queue up behind this on `stream`
        x.copy_(values)
        codes, scales = pydg.per_token_cast_to_fp8(x)
    stream.synchronize()
    _assert_bits_equal(codes, scales, *pydg.per_token_cast_to_fp8(_host(values)))


def test_masked_cast_in_a_cuda_graph():
    torch = torch_module()
    x = _input(torch, (4, 256, 1536), "bfloat16", seed=8)
    masked_m = torch.tensor([256, 10, 0, 100], device="cuda", dtype=torch.int32)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        pydg.per_token_cast_to_fp8_masked(x, masked_m)  # compiles and loads outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        codes, scales = pydg.per_token_cast_to_fp8_masked(x, masked_m)
    new_x = _input(torch, (4, 256, 1536), "bfloat16", seed=9)
    x.copy_(new_x)
    masked_m.copy_(torch.tensor([3, 256, 200, 0], device="cuda", dtype=torch.int32))
    graph.replay()
    torch.cuda.synchronize()
    expected_codes, expected_scales = pydg.per_token_cast_to_fp8(_host(new_x))
    got_codes, got_scales = reference.to_numpy(codes), reference.to_numpy(scales)
    for g, rows in enumerate((3, 256, 200, 0)):
        np.testing.assert_array_equal(_canonical_codes(got_codes[g, :rows]), expected_codes[g, :rows])
        np.testing.assert_array_equal(got_scales[g, :rows], expected_scales[g, :rows])


# ---- CuPy --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ("float32", "float16", "float64"))
def test_cupy_matches_the_spec(dtype, poisoned):
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng(10)
    host = (rng.standard_normal((300, 400)) * np.exp2(rng.integers(-8, 9, (300, 1)))).astype(dtype)
    x = cupy.asarray(host)
    codes, scales = pydg.per_token_cast_to_fp8(x)
    assert isinstance(codes, cupy.ndarray) and codes.dtype == cupy.uint8
    assert scales.strides == (4, 300 * 4)
    _assert_bits_equal(codes, scales, *pydg.per_token_cast_to_fp8(host))
    codes, scales = pydg.per_block_cast_to_fp8(x[:296])
    _assert_bits_equal(codes, scales, *pydg.per_block_cast_to_fp8(host[:296]))


# ---- into the GEMMs --------------------------------------------------------------------------------

@pytest.mark.parametrize("m,n,k", [(1, 2112, 7168), (128, 4096, 7168), (4096, 7168, 2048), (300, 520, 1040)])
def test_gemm_round_trip(m, n, k):
    torch = torch_module()
    x = _input(torch, (m, k), "bfloat16", seed=11)
    w = _input(torch, (n, k), "bfloat16", seed=12, spread=0)  # one magnitude per 128-row block
    a, sa = pydg.per_token_cast_to_fp8(x)
    b, sb = pydg.per_block_cast_to_fp8(w)
    out = nan_like(torch, (m, n))
    pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)
    torch.cuda.synchronize()
    ref = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
    assert calc_diff(torch, out, ref) <= DIFF_LIMIT
    # The quantisation itself, against the unquantised product: E4M3 keeps 4 significant bits, which
    # gives about 7e-4 on normal data; a wrong scale gives about 1.
    assert calc_diff(torch, out, x.double() @ w.double().T) <= 2e-3


def test_grouped_gemm_round_trips():
    torch = torch_module()
    groups, m_max, n, k = 4, 256, 4096, 7168
    x = _input(torch, (groups, m_max, k), "bfloat16", seed=13)
    w = _input(torch, (groups, n, k), "bfloat16", seed=14, spread=0)
    b, sb = pydg.per_block_cast_to_fp8(w)
    b_ref = dequantize(torch, b, sb, True)
    masked = [256, 1, 0, 130]
    masked_m = torch.tensor(masked, device="cuda", dtype=torch.int32)
    a, sa = pydg.per_token_cast_to_fp8_masked(x, masked_m)
    out = nan_like(torch, (groups, m_max, n))
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, sa), (b, sb), out, masked_m, expected_m=128)
    torch.cuda.synchronize()
    a_ref = dequantize(torch, a, sa, False)
    for g, rows in enumerate(masked):
        if rows:
            assert calc_diff(torch, out[g, :rows], a_ref[g, :rows] @ b_ref[g].T) <= DIFF_LIMIT

    # Contiguous layout: the experts' rows stacked, each segment padded to the alignment.
    align = pydg.get_m_alignment_for_contiguous_layout()
    a, sa = pydg.per_token_cast_to_fp8(x.reshape(groups * m_max, k))
    m_indices = torch.arange(groups, device="cuda", dtype=torch.int32).repeat_interleave(m_max)
    assert m_max % align == 0
    out = nan_like(torch, (groups * m_max, n))
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (b, sb), out, m_indices)
    torch.cuda.synchronize()
    a_ref = dequantize(torch, a, sa, False)
    for g in range(groups):
        rows = slice(g * m_max, (g + 1) * m_max)
        assert calc_diff(torch, out[rows], a_ref[rows] @ b_ref[g].T) <= DIFF_LIMIT

"""The dense GEMM on an sm_90 GPU against the float64 product of the dequantized inputs."""
import random

import numpy as np
import pytest

import pydg
from pydg import reference
from gpu_util import DIFF_LIMIT, calc_diff, dequantize, nan_like, quantized_pair, torch_module

pytestmark = pytest.mark.gpu

DEEPSEEK = [(m, n, k) for m in (64, 128, 4096) for (n, k) in
            ((2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048))]


def _random_shapes(count=60, seed=7):
    rng = random.Random(seed)
    shapes = []
    for i in range(count):
        m = rng.choice([1, 2, 3, 7, 37, 64, 65, 127, 128, 129, 300, 1000, 2500, 4096, 6000, 8192, rng.randint(1, 8192)])
        n = 8 * rng.randint(1, 2600) if i % 3 else rng.choice([8, 16, 24, 120, 136, 2056, 7176, 18432])
        k = 16 * rng.randint(1, 1100) if i % 4 else rng.choice([16, 48, 112, 144, 2064, 7168, 18432])
        shapes.append((m, n, k))
    return shapes


def _run_and_check(torch, m, n, k, gen=None):
    a, sa = quantized_pair(torch, m, k, per_block=False, gen=gen)
    b, sb = quantized_pair(torch, n, k, per_block=True, gen=gen)
    out = nan_like(torch, (m, n))
    pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)
    torch.cuda.synchronize()
    assert not torch.isnan(out).any(), "unwritten (NaN-poisoned) outputs remain"
    ref = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
    diff = calc_diff(torch, out, ref)
    assert diff <= DIFF_LIMIT, f"M={m} N={n} K={k}: calc_diff {diff:.3g}"
    return a, sa, b, sb, out


@pytest.mark.parametrize("m,n,k", DEEPSEEK)
def test_deepseek_shapes(m, n, k):
    _run_and_check(torch_module(), m, n, k)


@pytest.mark.parametrize("m,n,k", _random_shapes())
def test_random_shapes(m, n, k):
    _run_and_check(torch_module(), m, n, k)


def test_matches_the_numpy_spec():
    """pydg.reference (the executable spec, numpy) agrees with the GPU result."""
    torch = torch_module()
    a, sa, b, sb, out = _run_and_check(torch, 200, 264, 400)
    spec = reference.gemm_reference(reference.to_numpy(a), reference.to_numpy(sa), reference.to_numpy(b),
                                    reference.to_numpy(sb))
    assert reference.calc_diff(out.double().cpu().numpy(), spec) <= DIFF_LIMIT


def test_raw_uint8_fp8_bytes_give_the_same_result():
    torch = torch_module()
    a, sa, b, sb, out = _run_and_check(torch, 129, 256, 512)
    out2 = nan_like(torch, out.shape)
    pydg.gemm_fp8_fp8_bf16_nt((a.view(torch.uint8), sa), (b.view(torch.uint8), sb), out2)
    torch.cuda.synchronize()
    assert torch.equal(out, out2)


def test_m_zero_returns_without_writing():
    torch = torch_module()
    a = torch.empty(0, 256, device="cuda", dtype=torch.float8_e4m3fn)
    sa = torch.empty(0, 2, device="cuda", dtype=torch.float32)
    _, _, b, sb, _ = _run_and_check(torch, 8, 64, 256)
    out = torch.empty(0, 64, device="cuda", dtype=torch.bfloat16)
    pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)
    torch.cuda.synchronize()


def test_non_default_stream_is_used():
    torch = torch_module()
    m, n, k = 256, 512, 1024
    a, sa = quantized_pair(torch, m, k, per_block=False)
    b, sb = quantized_pair(torch, n, k, per_block=True)
    out = nan_like(torch, (m, n))
    pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)  # compile and load now, not while `stream` sleeps
    out.fill_(float("nan"))
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(200_000_000)  # keeps `stream` busy long enough to see the ordering
        pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)
    observer = torch.cuda.Stream()
    with torch.cuda.stream(observer):
        seen_early = out.clone()  # runs while `stream` still sleeps, unless the GEMM went elsewhere
    torch.cuda.synchronize()
    assert torch.isnan(seen_early).all(), "the GEMM did not wait behind its stream's earlier work"
    ref = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
    assert calc_diff(torch, out, ref) <= DIFF_LIMIT


def test_cupy_arrays():
    cupy = pytest.importorskip("cupy")
    torch = torch_module()
    m, n, k = 300, 392, 656
    a, sa = quantized_pair(torch, m, k, per_block=False)
    b, sb = quantized_pair(torch, n, k, per_block=True)
    ref = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
    ca = cupy.asarray(a.view(torch.uint8))
    cb = cupy.asarray(b.view(torch.uint8))
    csa = pydg.get_col_major_tma_aligned_tensor(cupy.asarray(sa))
    csb = cupy.asarray(sb)
    cout = cupy.full((m, n), 0x7FC0, dtype=cupy.uint16)  # bf16 NaN bits
    pydg.gemm_fp8_fp8_bf16_nt((ca, csa), (cb, csb), cout)
    cupy.cuda.get_current_stream().synchronize()
    out = torch.as_tensor(cout, device="cuda").view(torch.bfloat16)
    assert not torch.isnan(out).any()
    assert calc_diff(torch, out, ref) <= DIFF_LIMIT


def test_nan_and_inf_propagate_to_affected_outputs_only():
    torch = torch_module()
    m, n, k = 128, 256, 512
    a, sa = quantized_pair(torch, m, k, per_block=False)
    b, sb = quantized_pair(torch, n, k, per_block=True)
    a_bytes = a.view(torch.uint8).clone()
    a_bytes[5, 17] = 0x7F  # E4M3 NaN
    out = nan_like(torch, (m, n))
    pydg.gemm_fp8_fp8_bf16_nt((a_bytes, sa), (b, sb), out)
    sb_inf = sb.clone()
    sb_inf[1, 0] = float("inf")
    out_inf = nan_like(torch, (m, n))
    pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb_inf), out_inf)
    torch.cuda.synchronize()
    assert torch.isnan(out[5]).all()
    rest = torch.cat([out[:5], out[6:]])
    assert not torch.isnan(rest).any()
    affected = out_inf[:, 128:256]
    assert (~torch.isfinite(affected)).all() and torch.isfinite(out_inf[:, :128]).all()


def test_bad_inputs_raise_before_launch():
    torch = torch_module()
    m, n, k = 64, 128, 256
    a, sa = quantized_pair(torch, m, k, per_block=False)
    b, sb = quantized_pair(torch, n, k, per_block=True)
    out = nan_like(torch, (m, n))
    with pytest.raises(ValueError, match="lhs scales"):
        pydg.gemm_fp8_fp8_bf16_nt((a, sa.contiguous()), (b, sb), out)  # row-major scales
    with pytest.raises(ValueError, match="host memory"):
        pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b.cpu(), sb), out)
    with pytest.raises(TypeError, match="out"):
        pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out.float())
    with pytest.raises(ValueError, match="rhs data"):
        pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b[:, :128], sb), out)
    big = torch.empty(m * k + 8, device="cuda", dtype=torch.uint8)
    misaligned = big[8:].view(m, k)  # 8-byte offset: TMA needs 16
    with pytest.raises(ValueError, match="lhs data.*aligned"):
        pydg.gemm_fp8_fp8_bf16_nt((misaligned, sa), (b, sb), out)
    torch.cuda.synchronize()
    assert torch.isnan(out).all(), "a rejected call wrote to out"


def test_np_reference_is_not_trivial():
    """Guards the guard: a wrong scale shows far above the limit."""
    torch = torch_module()
    a, sa, b, sb, out = _run_and_check(torch, 128, 256, 512)
    wrong = dequantize(torch, a, sa * 1.05, False) @ dequantize(torch, b, sb, True).T
    assert calc_diff(torch, out, wrong) > 10 * DIFF_LIMIT
    assert np.isfinite(calc_diff(torch, out, wrong))

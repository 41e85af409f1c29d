"""Overlapped promotion (the next 128 of K's wgmma issued before the current one is promoted), the
default of tiles up to 128x128, on an sm_90 GPU: every K-block tail of its 4-block chunks, in all
three layouts, and bit-equality with the one-accumulator loop."""
import random
from dataclasses import replace

import pytest

import pydg
from pydg.scheduler.heuristics import choose_plan, ranked_plans
from gpu_util import DIFF_LIMIT, calc_diff, dequantize, launch_plan, nan_like, quantized_pair, torch_module
from test_grouped_gpu import _check_masked, _contiguous_inputs, _masked_inputs

pytestmark = pytest.mark.gpu


# K = 128 .. 1024 covers chunk-free runs and each tail; 7168 is the DeepSeek size. N = 112 * 9 is
# unaligned to B's 128-row scale blocks (a straddling tile width there runs the one-accumulator loop).
@pytest.mark.parametrize("m,n,k", [(64, 256, 128), (64, 7168, 384), (128, 4096, 640), (200, 7168, 768),
                                   (300, 112 * 9, 896), (1000, 4096, 1024), (64, 2112, 7168),
                                   (777, 1536, 7168)])
def test_dense(m, n, k):
    torch = torch_module()
    plan = pydg.plan_gemm(m, n, k)
    assert plan.overlap_promotion == plan.plan.allows_overlap
    a, sa = quantized_pair(torch, m, k, per_block=False)
    b, sb = quantized_pair(torch, n, k, per_block=True)
    out = nan_like(torch, (m, n))
    pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)
    torch.cuda.synchronize()
    reference = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
    assert not out.isnan().any()
    assert calc_diff(torch, out, reference) <= DIFF_LIMIT


def _best_overlapped(mode, m, n, k, groups, expected_m=None):
    """The heuristic's best plan among those that overlap promotion (its own choice may be wider)."""
    return next(p for p in ranked_plans(mode, m, n, k, groups, pydg.get_num_sms(), expected_m) if p.overlap_promotion)


@pytest.mark.parametrize("groups,k", [(4, 7168), (8, 896), (3, 640)])
def test_contiguous(groups, k):
    torch = torch_module()
    rng = random.Random(groups + k)
    sizes = [rng.choice([0, 1, 128, 300, 1000]) for _ in range(groups)]
    n = 4096
    a, sa, b, sb, b_ref, m_indices = _contiguous_inputs(torch, sizes, n, k)
    plan = _best_overlapped("contiguous", a.shape[0], n, k, groups)
    out = nan_like(torch, (a.shape[0], n))
    launch_plan(torch, plan, (a, sa, b, sb, out, m_indices))
    torch.cuda.synchronize()
    a_ref, idx = dequantize(torch, a, sa, False), m_indices.long()
    for g in range(groups):
        rows = (idx == g).nonzero().squeeze(1)
        if rows.numel():
            got = out[rows]
            assert not got.isnan().any()
            assert calc_diff(torch, got, a_ref[rows] @ b_ref[g].T) <= DIFF_LIMIT
    assert out[(idx < 0).nonzero().squeeze(1)[-1]].isnan().all()  # the trailing padding block


@pytest.mark.parametrize("groups,m_max,k", [(4, 192, 896), (2, 128, 7168), (8, 64, 384)])
def test_masked(groups, m_max, k):
    torch = torch_module()
    n = 4096
    rng = random.Random(groups * m_max + k)
    masked = [m_max, 0, *(rng.randint(0, m_max) for _ in range(groups - 2))]
    plan = _best_overlapped("masked", m_max, n, k, groups, expected_m=max(1, sum(masked) // groups))
    a, sa, b, sb, b_ref = _masked_inputs(torch, groups, m_max, n, k)
    out = nan_like(torch, (groups, m_max, n))
    masked_m = torch.tensor(masked, device="cuda", dtype=torch.int32)
    launch_plan(torch, plan, (a, sa, b, sb, out, masked_m))
    torch.cuda.synchronize()
    _check_masked(torch, a, sa, b_ref, out, masked)


def test_same_bits_as_the_one_accumulator_loop():
    """Promotion adds the same products in the same order either way: bitwise-equal outputs."""
    torch = torch_module()
    m, n, k = 128, 4096, 1024
    a, sa = quantized_pair(torch, m, k, per_block=False)
    b, sb = quantized_pair(torch, n, k, per_block=True)
    overlapped = choose_plan("dense", m, n, k, 1, pydg.get_num_sms())
    assert overlapped.overlap_promotion
    outs = []
    for plan in (overlapped, replace(overlapped, overlap_promotion=False)):
        outs.append(nan_like(torch, (m, n)))
        launch_plan(torch, plan, (a, sa, b, sb, outs[-1]))
    torch.cuda.synchronize()
    assert not outs[0].isnan().any()
    assert calc_diff(torch, outs[0], dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T) <= DIFF_LIMIT
    assert torch.equal(outs[0], outs[1])

"""Every tile width the heuristic can choose, on an sm_90 GPU. A tile's columns pass into B's next
128-row scale block at a column that depends on where the tile starts, and the kernel compiles one
copy of its k-loop per crossing point (fp8_gemm.cuh, kSplit): N spans eight tiles and a partial one,
so that every start offset modulo 128 occurs, and B's scale blocks differ by powers of two, so that
a column promoted with a neighbouring block's scale is far outside the accuracy limit."""
from dataclasses import replace

import pytest

import pydg
from pydg.scheduler.heuristics import BLOCK_NS, candidate_plans
from gpu_util import DIFF_LIMIT, calc_diff, dequantize, launch_plan, nan_like, quantized_pair, torch_module

pytestmark = pytest.mark.gpu

M, K = 300, 640  # M ends inside a block; K: the overlapped loop's chunk of four k-blocks and a tail of one


def _b_with_distinct_block_scales(torch, n: int):
    x = torch.randn(n, K, device="cuda", dtype=torch.float32)
    # Blocks 4x apart in magnitude (a block's amax varies by less than 1.5x between random draws).
    x = x * torch.exp2(2.0 * (torch.arange(n, device="cuda") // 128 % 3) - 2).unsqueeze(1)
    b, sb = pydg.per_block_cast_to_fp8(x)
    ratios = sb[1:, 0] / sb[:-1, 0]
    assert bool(((ratios > 2) | (ratios < 1 / 2)).all())  # neighbouring blocks are told apart
    return b, sb


@pytest.mark.parametrize("block_n", BLOCK_NS)
def test_every_tile_of_this_width(block_n):
    torch = torch_module()
    n = 8 * block_n + 16
    plans = {}
    for plan in candidate_plans("dense", M, n, K, 1, pydg.get_num_sms()):
        if plan.block_n == block_n and plan.cluster_size == 1:
            plans.setdefault(plan.block_m, plan)
    # Tiles that overlap promotion by default are run with the one-accumulator loop too.
    variants = [*plans.values(), *(replace(p, overlap_promotion=False) for p in plans.values() if p.overlap_promotion)]
    assert {64, 128} <= set(plans)
    a, sa = quantized_pair(torch, M, K, per_block=False)
    b, sb = _b_with_distinct_block_scales(torch, n)
    reference = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
    for plan in variants:
        out = nan_like(torch, (M, n))
        launch_plan(torch, plan, (a, sa, b, sb, out))
        torch.cuda.synchronize()
        assert not out.isnan().any(), plan.summary()
        assert calc_diff(torch, out, reference) <= DIFF_LIMIT, plan.summary()


@pytest.mark.parametrize("m", [1, 15, 16, 17, 40, 47])
def test_short_a_loads_only_its_rows(m):
    """A dense A of fewer rows than a 64-row tile loads M rounded up to 16 (GemmPlan.a_rows); wgmma
    reads the rest of its slot as stale bytes. A GEMM of NaN inputs runs first on every SM, so the
    stale rows hold NaN: the output rows they feed are past M and must never be stored, and the
    rows before M must equal those of the full 64-row box bit for bit. `out` is the first M rows of
    a NaN buffer whose later rows must stay NaN."""
    torch = torch_module()
    n, k = 2048 + 16, 640
    a, sa = quantized_pair(torch, m, k, per_block=False)
    b, sb = quantized_pair(torch, n, k, per_block=True)
    reference = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
    plans = [p for p in candidate_plans("dense", m, n, k, 1, pydg.get_num_sms()) if p.cluster_size == 1]
    short = [p for p in plans if p.a_rows]
    assert short and all(p.a_rows == (m + 15) // 16 * 16 for p in short)
    # An overlapped width and a one-accumulator width that straddles B's scale blocks.
    chosen = [next(p for p in short if p.block_n == 16), next(p for p in short if p.block_n == 112)]
    poison_a = torch.full((4096, k), 0x7F, dtype=torch.uint8, device="cuda").view(torch.float8_e4m3fn)
    poison_sa = torch.full((k // 128, 4096), float("nan"), device="cuda").t()
    for plan in chosen:
        results = []
        for variant in (plan, replace(plan, a_rows=0)):
            pydg.gemm_fp8_fp8_bf16_nt((poison_a, poison_sa), (b, sb), nan_like(torch, (4096, n)))
            buffer = nan_like(torch, (m + 64, n))
            launch_plan(torch, variant, (a, sa, b, sb, buffer[:m]))
            torch.cuda.synchronize()
            assert not buffer[:m].isnan().any(), variant.summary()
            assert buffer[m:].isnan().all(), variant.summary()
            assert calc_diff(torch, buffer[:m], reference) <= DIFF_LIMIT, variant.summary()
            results.append(buffer[:m])
        assert torch.equal(results[0], results[1]), plan.summary()

"""Every tile width the heuristic can choose, on an sm_90 GPU. A tile's columns pass into B's next
128-row scale block at a column that depends on where the tile starts, and the kernel compiles one
copy of its k-loop per crossing point (fp8_gemm.cuh, kSplit): N spans eight tiles and a partial one,
so that every start offset modulo 128 occurs, and B's scale blocks differ by powers of two, so that
a column promoted with a neighbouring block's scale is far outside the accuracy limit."""
from dataclasses import replace

import pytest

import pydg
from pydg.scheduler import heuristics
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
def test_every_tile_of_this_width(block_n, monkeypatch):
    torch = torch_module()
    n = 8 * block_n + 16
    monkeypatch.setattr(heuristics, "WIDE_TILES", True)  # the wide tiles too, candidates once timed
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



def _tail_plans(m: int, n: int, k: int):
    """The heuristic's plan and, per block height and cluster form, the first candidate (two widths
    for 64-row tiles: an overlapped and a straddling one-accumulator loop)."""
    plans = {}
    for plan in candidate_plans("dense", m, n, k, 1, pydg.get_num_sms()):
        key = (plan.block_m, plan.cluster_size, plan.multicast, plan.block_n in (16, 112))
        plans.setdefault(key, plan)
    return list(plans.values())


@pytest.mark.parametrize("m", [1, 15, 17, 47, 300, 1000])
def test_partial_last_block_loads_only_its_rows(m):
    """Where a dense M ends inside its last block of rows, that block loads the rows left rounded up
    to 16 (GemmPlan.tail_rows); wgmma reads the rest of its slots as stale bytes. A GEMM of NaN
    inputs runs first on every SM, so that the stale rows hold NaN: the output rows they feed are
    past M and must never be stored, and rows before M must equal, bit for bit, those of the same
    plan on A padded to whole blocks (which loads whole boxes). `out` is the first M rows of a NaN
    buffer whose later rows must stay NaN."""
    torch = torch_module()
    n, k = 2048 + 16, 640
    b, sb = quantized_pair(torch, n, k, per_block=True)
    plans = _tail_plans(m, n, k)
    assert all(p.tail_rows for p in plans) and {p.block_m for p in plans} >= ({64} if m < 128 else {64, 128, 256})
    full_rows = max(-(-m // p.block_m) * p.block_m for p in plans)
    a_full, sa_full = quantized_pair(torch, full_rows, k, per_block=False)
    a, sa = a_full[:m], pydg.get_col_major_tma_aligned_tensor(sa_full[:m].contiguous())
    reference = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
    poison_a = torch.full((4096, k), 0x7F, dtype=torch.uint8, device="cuda").view(torch.float8_e4m3fn)
    poison_sa = torch.full((k // 128, 4096), float("nan"), device="cuda").t()
    for plan in plans:
        pydg.gemm_fp8_fp8_bf16_nt((poison_a, poison_sa), (b, sb), nan_like(torch, (4096, n)))
        buffer = nan_like(torch, (m + 256, n))
        launch_plan(torch, plan, (a, sa, b, sb, buffer[:m]))
        whole = nan_like(torch, (full_rows, n))
        launch_plan(torch, replace(plan, m=full_rows), (a_full, sa_full, b, sb, whole))
        torch.cuda.synchronize()
        assert not buffer[:m].isnan().any(), plan.summary()
        assert buffer[m:].isnan().all(), plan.summary()
        assert calc_diff(torch, buffer[:m], reference) <= DIFF_LIMIT, plan.summary()
        assert torch.equal(buffer[:m], whole[:m]), plan.summary()

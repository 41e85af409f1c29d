"""The MoE grouped GEMMs (contiguous and masked layouts) on an sm_90 GPU."""
import random

import pytest

import pydg
from gpu_util import DIFF_LIMIT, calc_diff, dequantize, launch_plan, nan_like, quantized_pair, torch_module

pytestmark = pytest.mark.gpu


def _experts(torch, groups, n, k, gen=None):
    b, sb = quantized_pair(torch, n, k, per_block=True, lead=(groups,), gen=gen)
    return b, sb, dequantize(torch, b, sb, True)


def _contiguous_inputs(torch, sizes, n, k):
    align = pydg.get_m_alignment_for_contiguous_layout()
    m_indices = []
    for g, size in enumerate(sizes):
        padded = pydg.ceil_div(size, align) * align
        m_indices += [g] * size + [-1] * (padded - size)
    m_indices += [-1] * align  # one block of pure padding at the end
    m_sum = len(m_indices)
    a, sa = quantized_pair(torch, m_sum, k, per_block=False)
    b, sb, b_ref = _experts(torch, len(sizes), n, k)
    return a, sa, b, sb, b_ref, torch.tensor(m_indices, device="cuda", dtype=torch.int32)


@pytest.mark.parametrize("groups", [1, 2, 4, 8, 16, 32])
def test_contiguous_random_tokens_per_expert(groups):
    torch = torch_module()
    rng = random.Random(groups)
    sizes = [rng.choice([0, 1, 37, 128, 200, rng.randint(0, 700)]) for _ in range(groups)]
    n, k = rng.choice([(4096, 7168), (7168, 2048), (520, 1040), (256, 128)])
    a, sa, b, sb, b_ref, m_indices = _contiguous_inputs(torch, sizes, n, k)
    out = nan_like(torch, (a.shape[0], n))
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (b, sb), out, m_indices)
    torch.cuda.synchronize()
    a_ref = dequantize(torch, a, sa, False)
    idx = m_indices.long()
    valid = idx >= 0
    assert valid.sum() == sum(sizes)
    if valid.any():
        rows = valid.nonzero().squeeze(1)
        ref = torch.empty(a.shape[0], n, device="cuda", dtype=torch.float64)
        for g in range(groups):
            mine = idx == g
            ref[mine] = a_ref[mine] @ b_ref[g].T
        ref, got = ref[rows], out[rows]
        assert not torch.isnan(got).any(), "rows of experts left unwritten"
        assert calc_diff(torch, got, ref) <= DIFF_LIMIT
    _check_padding_blocks_poisoned(torch, out, idx)


def test_contiguous_long_k_default_plan_starts_tiles_early():
    """The default plan of a long-K contiguous call (several waves of 128x192 tiles in pairs sharing B,
    the next tile started early) over experts of random sizes, empty ones and padding blocks included."""
    torch = torch_module()
    rng = random.Random(4096)
    sizes = [rng.choice([0, 1, 127, 640, rng.randint(1, 1500)]) for _ in range(8)] + [1024, 0]
    n, k = 4096, 4096
    a, sa, b, sb, b_ref, m_indices = _contiguous_inputs(torch, sizes, n, k)
    plan = pydg.describe_gemm(a.shape[0], n, k, mode="contiguous", num_groups=len(sizes), compile=False).plan
    assert plan.early_start and plan.num_tiles > 2 * plan.num_sms, plan.summary()
    out = nan_like(torch, (a.shape[0], n))
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (b, sb), out, m_indices)
    torch.cuda.synchronize()
    a_ref = dequantize(torch, a, sa, False)
    idx = m_indices.long()
    for g, size in enumerate(sizes):
        mine = idx == g
        assert int(mine.sum()) == size
        if size:
            got = out[mine]
            assert not torch.isnan(got).any(), f"expert {g}: rows left unwritten"
            assert calc_diff(torch, got, a_ref[mine] @ b_ref[g].T) <= DIFF_LIMIT, f"expert {g}"
    _check_padding_blocks_poisoned(torch, out, idx)


def _check_padding_blocks_poisoned(torch, out, idx) -> None:
    """Blocks made only of padding are skipped: their rows keep the poison. Padding rows beside an
    expert's rows in one block are written, since the block is one tile."""
    block = pydg.get_m_alignment_for_contiguous_layout()
    for start in range(0, out.shape[0], block):
        if (idx[start:start + block] < 0).all():
            assert torch.isnan(out[start:start + block]).all(), f"padding block at row {start} was written"


@pytest.mark.parametrize("block_n,k", [(64, 896), (128, 896), (192, 896), (192, 4096)])
def test_contiguous_pairs_sharing_b_where_experts_change(block_n, k):
    """A cluster pair that multicasts B holds blocks 2i and 2i + 1 of rows. Where their experts differ
    each CTA loads its own B; a padding block beside a real one idles (its pipeline turns over with
    no math and it writes nothing); a pair of padding blocks is skipped. K = 896: 7 k-blocks, so the
    pair's stage counters wrap unevenly across tiles; K = 4096 at 128x192: the heuristic's plan starts
    each next tile early (heuristics.with_early_start), beside idle and skipped ones."""
    from pydg.scheduler.heuristics import ranked_plans

    torch = torch_module()
    groups, n = 4, 2048
    # (expert of the block, its valid rows), blocks of 128 rows, in pairs: (0, 0) share B; (0, 1) do
    # not; (padding, 2); (padding, expert 7: out of range, skipped); (3, 3); (3, padding).
    blocks = [(0, 128), (0, 128), (0, 40), (1, 1), (-1, 0), (2, 128), (-1, 0), (7, 128), (3, 128), (3, 128),
              (3, 77), (-1, 0)]
    m_indices = []
    for expert, rows in blocks:
        m_indices += [expert] * rows + [-1] * (128 - rows)
    m_sum = len(m_indices)
    plan = next(p for p in ranked_plans("contiguous", m_sum, n, k, groups, pydg.get_num_sms())
                if p.multicast == "b" and p.block_m == 128 and p.block_n == block_n)
    assert plan.early_start == (k == 4096), plan.summary()
    a, sa = quantized_pair(torch, m_sum, k, per_block=False)
    b, sb, b_ref = _experts(torch, groups, n, k)
    idx = torch.tensor(m_indices, device="cuda", dtype=torch.int32)
    out = nan_like(torch, (m_sum, n))
    launch_plan(torch, plan, (a, sa, b, sb, out, idx))
    torch.cuda.synchronize()
    a_ref = dequantize(torch, a, sa, False)
    for i, (expert, rows) in enumerate(blocks):
        got = out[i * 128:(i + 1) * 128]
        if not 0 <= expert < groups:
            assert torch.isnan(got).all(), f"block {i} of padding was written ({plan.summary()})"
            continue
        ref = a_ref[i * 128:i * 128 + rows] @ b_ref[expert].T
        assert not torch.isnan(got[:rows]).any(), f"block {i} left unwritten ({plan.summary()})"
        assert calc_diff(torch, got[:rows], ref) <= DIFF_LIMIT, f"block {i} ({plan.summary()})"


def _masked_inputs(torch, groups, m_max, n, k):
    a, sa = quantized_pair(torch, m_max, k, per_block=False, lead=(groups,))
    b, sb, b_ref = _experts(torch, groups, n, k)
    return a, sa, b, sb, b_ref


def _check_masked(torch, a, sa, b_ref, out, masked):
    a_ref = dequantize(torch, a, sa, False)
    m_max = a.shape[1]
    for g, rows in enumerate(masked):
        rows = min(max(rows, 0), m_max)
        assert torch.isnan(out[g, rows:]).all(), f"group {g}: rows past masked_m were written"
        if rows:
            got = out[g, :rows]
            assert not torch.isnan(got).any(), f"group {g}: valid rows left unwritten"
            assert calc_diff(torch, got, a_ref[g, :rows] @ b_ref[g].T) <= DIFF_LIMIT


@pytest.mark.parametrize("groups,m_max", [(1, 64), (2, 4096), (4, 300), (8, 1024), (16, 128), (4, 2048)])
def test_masked_random_rows(groups, m_max):
    torch = torch_module()
    rng = random.Random(groups * 7 + m_max)
    n, k = rng.choice([(4096, 7168), (7168, 2048), (392, 656), (256, 128)])
    a, sa, b, sb, b_ref = _masked_inputs(torch, groups, m_max, n, k)
    masked = [rng.randint(0, m_max) for _ in range(groups)]
    masked[0] = m_max
    if groups > 1:
        masked[1] = 0
    out = nan_like(torch, (groups, m_max, n))
    masked_m = torch.tensor(masked, device="cuda", dtype=torch.int32)
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, sa), (b, sb), out, masked_m, expected_m=max(1, sum(masked) // groups))
    torch.cuda.synchronize()
    _check_masked(torch, a, sa, b_ref, out, masked)


def test_masked_values_out_of_range_are_clamped():
    torch = torch_module()
    groups, m_max, n, k = 4, 200, 256, 384
    a, sa, b, sb, b_ref = _masked_inputs(torch, groups, m_max, n, k)
    masked = [-3, m_max + 1000, 2**31 - 1, 17]
    out = nan_like(torch, (groups, m_max, n))
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, sa), (b, sb), out,
                                               torch.tensor(masked, device="cuda", dtype=torch.int32), 100)
    torch.cuda.synchronize()
    _check_masked(torch, a, sa, b_ref, out, masked)


def test_masked_call_replays_in_a_cuda_graph_with_new_values():
    torch = torch_module()
    groups, m_max, n, k = 4, 256, 512, 1024
    a, sa, b, sb, b_ref = _masked_inputs(torch, groups, m_max, n, k)
    masked_m = torch.tensor([256, 10, 0, 130], device="cuda", dtype=torch.int32)
    out = nan_like(torch, (groups, m_max, n))
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # warm-up: compile and load outside the capture
        pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, sa), (b, sb), out, masked_m, 128)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, sa), (b, sb), out, masked_m, 128)
    # New data and new row counts, written in place; the replay must see both.
    new_a, new_sa = quantized_pair(torch, m_max, k, per_block=False, lead=(groups,))
    a.copy_(new_a)
    sa.copy_(new_sa)
    new_masked = [3, 256, 129, 0]
    masked_m.copy_(torch.tensor(new_masked, device="cuda", dtype=torch.int32))
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    _check_masked(torch, a, sa, b_ref, out, new_masked)


def test_masked_agrees_with_per_group_dense_calls():
    """The grouping mode changes which tiles run, not what a tile computes."""
    torch = torch_module()
    groups, m_max, n, k = 2, 512, 2048, 1024
    a, sa, b, sb, b_ref = _masked_inputs(torch, groups, m_max, n, k)
    out = nan_like(torch, (groups, m_max, n))
    masked_m = torch.full((groups,), m_max, device="cuda", dtype=torch.int32)
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, sa), (b, sb), out, masked_m, m_max)
    for g in range(groups):
        dense_out = nan_like(torch, (m_max, n))
        pydg.gemm_fp8_fp8_bf16_nt((a[g], pydg.get_col_major_tma_aligned_tensor(sa[g])), (b[g], sb[g]), dense_out)
        torch.cuda.synchronize()
        assert calc_diff(torch, dense_out, out[g]) < 1e-6


def test_grouped_bad_inputs():
    torch = torch_module()
    a, sa, b, sb, b_ref, m_indices = _contiguous_inputs(torch, [128, 64], 256, 256)
    out = nan_like(torch, (a.shape[0], 256))
    with pytest.raises(TypeError, match="m_indices"):
        pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (b, sb), out, m_indices.long())
    with pytest.raises(ValueError, match="m_indices"):
        pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (b, sb), out, m_indices[:-1])
    with pytest.raises(ValueError, match="rhs scales"):
        pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (b, sb[:1]), out, m_indices)
    ma, msa, mb, msb, _ = _masked_inputs(torch, 2, 64, 256, 256)
    mout = nan_like(torch, (2, 64, 256))
    with pytest.raises(ValueError, match="masked_m"):
        pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((ma, msa), (mb, msb), mout,
                                                   torch.zeros(3, device="cuda", dtype=torch.int32), 64)
    with pytest.raises(TypeError, match="expected_m"):
        pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((ma, msa), (mb, msb), mout,
                                                   torch.zeros(2, device="cuda", dtype=torch.int32), 6.5)
    with pytest.raises(ValueError, match="rhs data"):
        pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((ma, msa), (mb[:1], msb[:1]), mout,
                                                   torch.zeros(2, device="cuda", dtype=torch.int32), 64)
    torch.cuda.synchronize()
    assert torch.isnan(out).all() and torch.isnan(mout).all()

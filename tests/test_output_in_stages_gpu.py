"""The output tile staged in the A slots of the tile's last stages (GemmPlan.output_in_stages), on an
sm_90 GPU. Those stages stay held until the TMA store has read them and are handed back while the
next tile's first MMAs run: a wrong hand-back deadlocks the pipeline or lets the producer overwrite
an output chunk before it is stored. Each plan runs with the fewest stages that allow it (one more
than it holds: the tightest ring) and with as many as fit, in several waves of tiles (every CTA
stages more than one tile), and must match the same plan with an output area of its own bit for
bit, with `out` poisoned first."""
import random
from dataclasses import replace

import pytest

import pydg
from pydg.scheduler.heuristics import candidate_plans
from pydg.scheduler.plan import MAX_SMEM_BYTES, smem_bytes
from gpu_util import DIFF_LIMIT, calc_diff, dequantize, launch_plan, nan_like, quantized_pair, torch_module
from test_grouped_gpu import _check_masked, _contiguous_inputs, _masked_inputs

pytestmark = pytest.mark.gpu


def _staged(plan, stages):
    return replace(plan, overlap_promotion=False, output_in_stages=True, num_stages=stages)


def _variants(plan):
    """The plan staging its output with the fewest and the most stages, beside the plan with its own
    output area (the reference for bit-equality)."""
    own = replace(plan, overlap_promotion=False)
    assert own.allows_output_in_stages, own.summary()
    fewest = most = own.block_n // 64 + 1
    while smem_bytes(own.block_m, own.block_n, most + 1, own.k, True) <= MAX_SMEM_BYTES:
        most += 1
    return own, [_staged(own, fewest), _staged(own, most)]


def _first(mode, m, n, k, groups, block_m, block_n, cluster, multicast, expected_m=None):
    """The heuristic's candidate of this tile, in the cluster form asked for (validated)."""
    for plan in candidate_plans(mode, m, n, k, groups, pydg.get_num_sms(), expected_m=expected_m):
        if (plan.block_m, plan.block_n, plan.cluster_size) == (block_m, block_n, 1):
            if cluster > 1:
                plan = replace(plan, cluster_size=cluster, multicast=multicast, inner_axis="m" if multicast == "b" else "n",
                               num_sms=plan.num_sms - plan.num_sms % 2)
            plan.validate()
            return plan
    raise AssertionError(f"no {block_m}x{block_n} plan for {mode} {m}x{n}x{k}")


# (M, N, K, block_m, block_n, cluster, multicast): several waves of tiles; K = 2 k-blocks is the
# fewest a 128-wide tile can hold its output in; M = 1000 and 777 end inside a block (tail maps).
DENSE = [
    (4096, 2048, 256, 256, 128, 1, "none"),
    (4096, 4096, 1024, 256, 128, 2, "a"),
    (1000, 8192, 896, 256, 128, 2, "b"),
    (777, 6144, 640, 128, 192, 1, "none"),
    (2048, 6144, 384, 128, 192, 2, "b"),
    (1000, 4096, 512, 128, 128, 2, "a"),
    (300, 8192, 128, 64, 64, 1, "none"),
    (128, 16384, 768, 64, 128, 1, "none"),
]


@pytest.mark.parametrize("m,n,k,block_m,block_n,cluster,multicast", DENSE)
def test_dense(m, n, k, block_m, block_n, cluster, multicast):
    torch = torch_module()
    plan = _first("dense", m, n, k, 1, block_m, block_n, cluster, multicast)
    own, staged = _variants(plan)
    a, sa = quantized_pair(torch, m, k, per_block=False)
    b, sb = quantized_pair(torch, n, k, per_block=True)
    reference = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
    expected = nan_like(torch, (m, n))
    launch_plan(torch, own, (a, sa, b, sb, expected))
    for variant in staged:
        buffer = nan_like(torch, (m + 64, n))
        launch_plan(torch, variant, (a, sa, b, sb, buffer[:m]))
        torch.cuda.synchronize()
        assert variant.num_tiles > variant.num_sms, variant.summary()
        assert not buffer[:m].isnan().any(), variant.summary()
        assert buffer[m:].isnan().all(), variant.summary()
        assert calc_diff(torch, buffer[:m], reference) <= DIFF_LIMIT, variant.summary()
        assert torch.equal(buffer[:m], expected), variant.summary()


@pytest.mark.parametrize("groups,m_max,block_n", [(4, 256, 128), (8, 1024, 128), (3, 768, 64)])
def test_masked_rows_past_masked_m_stay_unwritten(groups, m_max, block_n):
    """Groups ending inside a tile store their valid rows from the math threads, reading the held
    stages; empty and full groups beside them."""
    torch = torch_module()
    rng = random.Random(groups * m_max)
    n, k = 4096, 1024
    masked = [m_max, 0] + [rng.randint(1, m_max) for _ in range(groups - 2)]
    a, sa, b, sb, b_ref = _masked_inputs(torch, groups, m_max, n, k)
    masked_m = torch.tensor(masked, device="cuda", dtype=torch.int32)
    plan = _first("masked", m_max, n, k, groups, 256, block_n, 1, "none", expected_m=m_max)
    own, staged = _variants(plan)
    expected = nan_like(torch, (groups, m_max, n))
    launch_plan(torch, own, (a, sa, b, sb, expected, masked_m))
    for variant in staged:
        out = nan_like(torch, (groups, m_max, n))
        launch_plan(torch, variant, (a, sa, b, sb, out, masked_m))
        torch.cuda.synchronize()
        _check_masked(torch, a, sa, b_ref, out, masked)
        assert torch.equal(out.nan_to_num(), expected.nan_to_num()), variant.summary()


@pytest.mark.parametrize("block_m,block_n", [(128, 192), (128, 128)])
def test_contiguous_pairs_with_padding_blocks(block_m, block_n):
    """Pairs sharing B where one CTA's block is padding (an idle tile, which hands back the held
    stages before it waits out its own) and experts of 0 and 1 rows."""
    torch = torch_module()
    sizes = [0, 1, 128, 300, 1000, 1, 0, 330]  # 17 blocks and the padding block: pairs of blocks
    n, k = 4096, 896
    a, sa, b, sb, b_ref, m_indices = _contiguous_inputs(torch, sizes, n, k)
    plan = _first("contiguous", a.shape[0], n, k, 8, block_m, block_n, 2, "b")
    own, staged = _variants(plan)
    expected = nan_like(torch, (a.shape[0], n))
    launch_plan(torch, own, (a, sa, b, sb, expected, m_indices))
    a_ref, idx = dequantize(torch, a, sa, False), m_indices.long()
    for variant in staged:
        out = nan_like(torch, (a.shape[0], n))
        launch_plan(torch, variant, (a, sa, b, sb, out, m_indices))
        torch.cuda.synchronize()
        for g in range(8):
            rows = (idx == g).nonzero().squeeze(1)
            if rows.numel():
                assert not out[rows].isnan().any(), variant.summary()
                assert calc_diff(torch, out[rows], a_ref[rows] @ b_ref[g].T) <= DIFF_LIMIT, variant.summary()
        assert torch.equal(out.nan_to_num(), expected.nan_to_num()), variant.summary()
        assert torch.equal(out.isnan(), expected.isnan()), variant.summary()

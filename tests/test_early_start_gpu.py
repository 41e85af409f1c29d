"""The early start (GemmPlan.early_start) on an sm_90 GPU: the epilogue issues the next tile's first
wgmma before its stmatrix stores, and that tile's k-loop then begins at its second sub-block or
k-block. A wrong stage, phase or hand-back there deadlocks the ring or promotes a stale product.
Each case runs in several waves of tiles (every CTA starts tiles early more than once), in the
forms that change the epilogue: 256-row tiles (two sub-blocks), 128- and 64-row ones (one), the
output staged in held stages (one k-block per tile included), cluster pairs sharing A or B with idle
padding tiles, masked groups ending inside a tile; and must match the plan without it bit for bit
(the products are added in the same order), with `out` poisoned first."""
import random
from dataclasses import replace

import pytest

from gpu_util import DIFF_LIMIT, calc_diff, dequantize, launch_plan, nan_like, quantized_pair, torch_module
from test_grouped_gpu import _check_masked, _check_padding_blocks_poisoned, _contiguous_inputs, _masked_inputs
from test_output_in_stages_gpu import _first, _staged

pytestmark = pytest.mark.gpu


def _pairs(plan, staged: bool):
    """(plan without the early start, the same plan with it); `staged`: the output in held stages,
    with the fewest stages that allow it (the tightest ring)."""
    own = replace(plan, overlap_promotion=False)
    if staged:
        own = _staged(own, own.block_n // 64 + 1)
    own.validate()
    early = replace(own, early_start=True)
    early.validate()
    return own, early


# (M, N, K, block_m, block_n, cluster, multicast, staged). K = 128: one k-block per tile (the 64-row
# staged case hands back the held stages from the epilogue); 512 and 384 leave the ring at a different
# stage after each tile; M = 2000, 1777 and 300 end inside a block (tail maps).
DENSE = [
    (4096, 8192, 512, 256, 128, 2, "a", False),
    (4096, 4096, 1024, 256, 128, 2, "a", True),
    (2000, 8192, 384, 256, 128, 2, "b", False),
    (4096, 4096, 256, 256, 128, 1, "none", True),
    (2048, 7168, 640, 256, 112, 1, "none", False),
    (1777, 6144, 640, 128, 192, 1, "none", False),
    (2048, 6144, 384, 128, 176, 2, "b", False),
    (2000, 4096, 512, 128, 128, 2, "a", True),
    (300, 8192, 128, 64, 64, 1, "none", True),
    (512, 8192, 128, 128, 112, 1, "none", False),
    (512, 7168, 896, 64, 112, 1, "none", False),
]


@pytest.mark.parametrize("m,n,k,block_m,block_n,cluster,multicast,staged", DENSE)
def test_dense(m, n, k, block_m, block_n, cluster, multicast, staged):
    own, early = _pairs(_first("dense", m, n, k, 1, block_m, block_n, cluster, multicast), staged)
    assert early.num_tiles > 1.5 * early.num_sms, early.summary()
    dense_matches_own(own, early, m, n, k)


def dense_matches_own(own, other, m: int, n: int, k: int) -> None:
    """`other` (`own` with an option on): right against the reference, nothing written past the
    output's rows, and bit for bit `own`'s."""
    torch = torch_module()
    a, sa = quantized_pair(torch, m, k, per_block=False)
    b, sb = quantized_pair(torch, n, k, per_block=True)
    expected = nan_like(torch, (m, n))
    launch_plan(torch, own, (a, sa, b, sb, expected))
    buffer = nan_like(torch, (m + 64, n))
    launch_plan(torch, other, (a, sa, b, sb, buffer[:m]))
    torch.cuda.synchronize()
    reference = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
    assert not buffer[:m].isnan().any(), other.summary()
    assert buffer[m:].isnan().all(), other.summary()
    assert calc_diff(torch, buffer[:m], reference) <= DIFF_LIMIT, other.summary()
    assert torch.equal(buffer[:m], expected), other.summary()


def masked_matches_own(own, other, groups: int, m_max: int, n: int, k: int, seed: int) -> None:
    """`other` (`own` with an option on) on masked groups that are full, empty, of one row and random:
    right against the reference, rows past a group's count left poisoned, and bit for bit `own`'s."""
    torch = torch_module()
    rng = random.Random(seed)
    masked = [m_max, 0, 1] + [rng.randint(1, m_max) for _ in range(groups - 3)]
    a, sa, b, sb, b_ref = _masked_inputs(torch, groups, m_max, n, k)
    masked_m = torch.tensor(masked, device="cuda", dtype=torch.int32)
    expected = nan_like(torch, (groups, m_max, n))
    launch_plan(torch, own, (a, sa, b, sb, expected, masked_m))
    out = nan_like(torch, (groups, m_max, n))
    launch_plan(torch, other, (a, sa, b, sb, out, masked_m))
    torch.cuda.synchronize()
    _check_masked(torch, a, sa, b_ref, out, masked)
    assert torch.equal(out.nan_to_num(), expected.nan_to_num()), other.summary()
    assert torch.equal(out.isnan(), expected.isnan()), other.summary()


# Experts of 0, 1 and up to 2000 rows: 36 blocks of 64 rows with the trailing padding one.
EXPERT_SIZES = [0, 1, 128, 300, 1000, 1, 0, 330, 2000, 64, 128]


def contiguous_matches_own(plans_for, n: int, k: int) -> None:
    """`plans_for(rows)` = (own, other), the plan without and with an option for the concatenated rows
    of EXPERT_SIZES: `other` right against the reference, padding rows left poisoned, bit for bit `own`'s."""
    torch = torch_module()
    a, sa, b, sb, b_ref, m_indices = _contiguous_inputs(torch, EXPERT_SIZES, n, k)
    own, other = plans_for(a.shape[0])
    expected = nan_like(torch, (a.shape[0], n))
    launch_plan(torch, own, (a, sa, b, sb, expected, m_indices))
    out = nan_like(torch, (a.shape[0], n))
    launch_plan(torch, other, (a, sa, b, sb, out, m_indices))
    torch.cuda.synchronize()
    a_ref, idx = dequantize(torch, a, sa, False), m_indices.long()
    for g in range(len(EXPERT_SIZES)):
        rows = (idx == g).nonzero().squeeze(1)
        if rows.numel():
            assert not out[rows].isnan().any(), other.summary()
            assert calc_diff(torch, out[rows], a_ref[rows] @ b_ref[g].T) <= DIFF_LIMIT, other.summary()
    _check_padding_blocks_poisoned(torch, out, idx)
    assert torch.equal(out.isnan(), expected.isnan()), other.summary()
    assert torch.equal(out.nan_to_num(), expected.nan_to_num()), other.summary()


@pytest.mark.parametrize("groups,m_max,block_m,block_n,staged",
                         [(4, 256, 256, 112, False), (8, 1024, 256, 128, True), (4, 768, 128, 192, False),
                          (6, 512, 64, 112, False)])
def test_masked(groups, m_max, block_m, block_n, staged):
    """Groups that end inside a tile (stored from the math threads), empty and full groups: the next
    tile is often another group's."""
    n, k = 7168, 640
    own, early = _pairs(_first("masked", m_max, n, k, groups, block_m, block_n, 1, "none", expected_m=m_max), staged)
    masked_matches_own(own, early, groups, m_max, n, k, seed=groups * m_max + block_n)


@pytest.mark.parametrize("block_m,block_n,multicast,staged",
                         [(128, 192, "b", False), (128, 128, "b", True), (128, 128, "a", False), (64, 176, "b", False)])
def test_contiguous_with_padding_blocks(block_m, block_n, multicast, staged):
    """Padding blocks are skipped, and in pairs sharing B one CTA's block may be padding (an idle
    tile: no early start into it, and the tile after it loads its scales itself)."""
    n, k = 4096, 768
    contiguous_matches_own(lambda rows: _pairs(_first("contiguous", rows, n, k, len(EXPERT_SIZES), block_m, block_n,
                                                      2, multicast), staged), n, k)

"""The early start (GemmPlan.early_start) on an sm_90 GPU: the epilogue issues the next tile's first
wgmma before its stmatrix stores, and that tile's k-loop then begins at its second sub-block or
k-block. A wrong stage, phase or hand-back there deadlocks the ring or promotes a stale product.
Each case runs in several waves of tiles (every CTA starts tiles early more than once), in the
forms that change the epilogue: 256-row tiles (two sub-blocks), 128- and 64-row ones (one), the
output staged in held stages (one k-block per tile included), cluster pairs sharing A or B with idle
padding tiles, masked groups ending inside a tile; and must match the plan without it bit for bit
(the products are added in the same order), with `out` poisoned first."""
from dataclasses import replace

import pytest

from test_output_in_stages_gpu import _staged
from variant_checks import EXPERT_SIZES, candidate, contiguous_matches_own, dense_matches_own, masked_matches_own

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
    own, early = _pairs(candidate("dense", m, n, k, 1, block_m, block_n, cluster, multicast), staged)
    assert early.num_tiles > 1.5 * early.num_sms, early.summary()
    dense_matches_own(own, early, m, n, k)


@pytest.mark.parametrize("groups,m_max,block_m,block_n,staged",
                         [(4, 256, 256, 112, False), (8, 1024, 256, 128, True), (4, 768, 128, 192, False),
                          (6, 512, 64, 112, False)])
def test_masked(groups, m_max, block_m, block_n, staged):
    """Groups that end inside a tile (stored from the math threads), empty and full groups: the next
    tile is often another group's."""
    n, k = 7168, 640
    own, early = _pairs(candidate("masked", m_max, n, k, groups, block_m, block_n, 1, "none", expected_m=m_max), staged)
    masked_matches_own(own, early, groups, m_max, n, k, seed=groups * m_max + block_n)


@pytest.mark.parametrize("block_m,block_n,multicast,staged",
                         [(128, 192, "b", False), (128, 128, "b", True), (128, 128, "a", False), (64, 176, "b", False)])
def test_contiguous_with_padding_blocks(block_m, block_n, multicast, staged):
    """Padding blocks are skipped, and in pairs sharing B one CTA's block may be padding (an idle
    tile: no early start into it, and the tile after it loads its scales itself)."""
    n, k = 4096, 768
    contiguous_matches_own(lambda rows: _pairs(candidate("contiguous", rows, n, k, len(EXPERT_SIZES), block_m, block_n,
                                                      2, multicast), staged), n, k)

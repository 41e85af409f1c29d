"""B prefetched into L2 ahead of the ring (GemmPlan.prefetch_b) on an sm_90 GPU. A prefetch writes no
shared memory and signals no barrier, so the results must match the plan without it bit for bit;
what can go wrong is the producer's second walk (one tile ahead) leaving step with its first, or a
prefetch of a box the tensor map does not hold. The cases run several tiles per CTA, in the forms
that change what is prefetched: pairs sharing A or B (one CTA prefetches a shared B), dense rows ending
inside a block, masked groups ending inside a tile or empty, contiguous padding blocks and idle tiles,
a distance equal to the tile's k-blocks (every prefetch is of the next tile), and the early start."""
from dataclasses import replace

import pytest

from variant_checks import EXPERT_SIZES, candidate, contiguous_matches_own, dense_matches_own, masked_matches_own

pytestmark = pytest.mark.gpu


def _pair(plan, distance: int, early: bool = False):
    """(the plan without the prefetch, the same plan with it)."""
    own = replace(plan, overlap_promotion=plan.overlap_promotion and not early, early_start=early)
    own.validate()
    ahead = replace(own, prefetch_b=distance)
    ahead.validate()
    return own, ahead


# (M, N, K, block_m, block_n, cluster, multicast, distance, early)
DENSE = [
    (4096, 8192, 1024, 256, 128, 2, "a", 6, False),
    (2000, 8192, 512, 256, 128, 2, "b", 4, False),
    (4096, 4096, 1024, 256, 128, 2, "a", 3, True),
    (1777, 6144, 640, 128, 192, 1, "none", 5, False),
    (512, 7168, 896, 64, 112, 1, "none", 7, False),
    (300, 8192, 128, 64, 64, 1, "none", 1, False),
]


@pytest.mark.parametrize("m,n,k,block_m,block_n,cluster,multicast,distance,early", DENSE)
def test_dense(m, n, k, block_m, block_n, cluster, multicast, distance, early):
    own, ahead = _pair(candidate("dense", m, n, k, 1, block_m, block_n, cluster, multicast), distance, early)
    assert ahead.num_tiles > 1.5 * ahead.num_sms, ahead.summary()
    dense_matches_own(own, ahead, m, n, k)


@pytest.mark.parametrize("groups,m_max,block_m,block_n,distance",
                         [(4, 256, 256, 112, 5), (6, 512, 64, 112, 3), (5, 384, 128, 128, 5)])
def test_masked(groups, m_max, block_m, block_n, distance):
    """The next tile is often another group's, or past an empty group."""
    n, k = 7168, 640
    own, ahead = _pair(candidate("masked", m_max, n, k, groups, block_m, block_n, 1, "none", expected_m=m_max), distance)
    masked_matches_own(own, ahead, groups, m_max, n, k, seed=groups * m_max + block_n)


@pytest.mark.parametrize("block_m,block_n,multicast,distance",
                         [(128, 192, "b", 6), (128, 128, "a", 2), (64, 176, "b", 6)])
def test_contiguous_with_padding_blocks(block_m, block_n, multicast, distance):
    """Padding blocks are skipped (nothing prefetched for them), and in pairs sharing B one CTA's block
    may be padding (an idle tile) or the two blocks' experts may differ (each CTA loads its own B)."""
    n, k = 4096, 768
    contiguous_matches_own(lambda rows: _pair(candidate("contiguous", rows, n, k, len(EXPERT_SIZES), block_m, block_n,
                                                     2, multicast), distance), n, k)

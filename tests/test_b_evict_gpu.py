"""B's loads marked evict-first in L2 (GemmPlan.b_evict_first) on an sm_90 GPU. A cache policy changes
where L2 keeps lines, never what a load returns: every form of B's load (alone, in pairs sharing A, the
multicast of pairs sharing B, a contiguous pair's own B) must give the unhinted plan's bits."""
from dataclasses import replace

import pytest

from variant_checks import EXPERT_SIZES, candidate, contiguous_matches_own, dense_matches_own, masked_matches_own

pytestmark = pytest.mark.gpu


def _pair(plan):
    """(the plan without the hint, the same plan with it)."""
    own, hinted = replace(plan, b_evict_first=False), replace(plan, b_evict_first=True)
    hinted.validate()
    return own, hinted


# (M, N, K, block_m, block_n, cluster, multicast): small M in one wave (where the heuristic sets the
# hint) and several waves of tiles in each cluster form; M = 37 and 1000 end inside a block.
DENSE = [
    (37, 7168, 2048, 64, 64, 1, "none"),
    (300, 7168, 1024, 128, 176, 1, "none"),
    (1000, 8192, 512, 128, 192, 2, "b"),
    (2048, 8192, 640, 256, 128, 2, "a"),
]


@pytest.mark.parametrize("m,n,k,block_m,block_n,cluster,multicast", DENSE)
def test_dense(m, n, k, block_m, block_n, cluster, multicast):
    own, hinted = _pair(candidate("dense", m, n, k, 1, block_m, block_n, cluster, multicast))
    dense_matches_own(own, hinted, m, n, k)


def test_masked():
    groups, m_max, n, k = 5, 256, 7168, 640
    own, hinted = _pair(candidate("masked", m_max, n, k, groups, 256, 112, 1, "none", expected_m=m_max))
    masked_matches_own(own, hinted, groups, m_max, n, k, seed=7)


@pytest.mark.parametrize("block_m,block_n,multicast", [(128, 192, "b"), (64, 128, "a")])
def test_contiguous_with_padding_blocks(block_m, block_n, multicast):
    n, k = 4096, 768
    contiguous_matches_own(lambda rows: _pair(candidate("contiguous", rows, n, k, len(EXPERT_SIZES), block_m, block_n, 2, multicast)),
                           n, k)

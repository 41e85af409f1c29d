"""The split tail (GemmPlan.split_tail) on an sm_90 GPU: the partial last wave's 256-row tiles run as
two 128-row halves on twice as many CTAs, each half one sub-block of each math warpgroup, stored from
the math threads. A half that writes the other half's rows, a wrong sub-block offset in the stage, or
a walk that loses a half shows as a wrong or NaN element. Each case must match the plan without the
split bit for bit (a half adds the same products in the same order), with `out` poisoned first and
nothing written past M. Grids are narrowed so that the tail is small or large against them."""
from dataclasses import replace

import pytest

from variant_checks import candidate, dense_matches_own

pytestmark = pytest.mark.gpu

# (M, N, K, block_n, cluster, multicast, SMs). M = 1600 and 1800 end inside the tail's last block (one
# half with 64 or 8 rows, the other with none); 2000 ends in a block of pairs sharing B; K = 128 is one
# k-block per tile, 384 and 640 leave the ring at another stage after each tile; 256x112 straddles B's
# scale blocks (one k-loop copy per split column, each with its half loop). Halves fewer than the grid
# (each CTA takes at most one) and more (some take two).
CASES = [
    (4096, 32768, 512, 128, 2, "a", 132),
    (4096, 8192, 512, 128, 2, "a", 132),
    (2000, 8192, 384, 128, 2, "b", 132),
    (1600, 4096, 640, 128, 1, "none", 50),
    (1800, 4096, 256, 128, 2, "b", 42),
    (1024, 8192, 128, 128, 2, "a", 40),
    (2048, 7168, 640, 112, 1, "none", 60),
    (6000, 7168, 1024, 128, 2, "a", 132),
]


@pytest.mark.parametrize("m,n,k,block_n,cluster,multicast,num_sms", CASES)
def test_split_tail_matches_whole_tiles(m, n, k, block_n, cluster, multicast, num_sms):
    own = replace(candidate("dense", m, n, k, 1, 256, block_n, cluster, multicast), num_sms=num_sms,
                  overlap_promotion=False, output_in_stages=False, split_tail=False)
    split = replace(own, split_tail=True)
    split.validate()
    assert split.split_tail_tiles > 0, split.summary()
    dense_matches_own(own, split, m, n, k)

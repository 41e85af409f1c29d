"""The output tile staged in the A slots of the tile's last stages (GemmPlan.output_in_stages), on an
sm_90 GPU. Those stages stay held until the TMA store has read them and are handed back while the
next tile's first MMAs run: a wrong hand-back deadlocks the pipeline or lets the producer overwrite
an output chunk before it is stored. Each plan runs with the fewest stages that allow it (one more
than it holds: the tightest ring) and with as many as fit, in several waves of tiles (every CTA
stages more than one tile), and must match the same plan with an output area of its own bit for
bit, with `out` poisoned first."""
from dataclasses import replace

import pytest

from pydg.scheduler.plan import MAX_SMEM_BYTES, smem_bytes
from variant_checks import candidate, contiguous_matches_own, dense_matches_own, masked_matches_own

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
    own, staged = _variants(candidate("dense", m, n, k, 1, block_m, block_n, cluster, multicast))
    for variant in staged:
        assert variant.num_tiles > variant.num_sms, variant.summary()
        dense_matches_own(own, variant, m, n, k)


@pytest.mark.parametrize("groups,m_max,block_n", [(4, 256, 128), (8, 1024, 128), (3, 768, 64)])
def test_masked_rows_past_masked_m_stay_unwritten(groups, m_max, block_n):
    """Groups ending inside a tile store their valid rows from the math threads, reading the held
    stages; empty and full groups beside them."""
    n, k = 4096, 1024
    own, staged = _variants(candidate("masked", m_max, n, k, groups, 256, block_n, 1, "none", expected_m=m_max))
    for variant in staged:
        masked_matches_own(own, variant, groups, m_max, n, k, seed=groups * m_max)


@pytest.mark.parametrize("block_m,block_n", [(128, 192), (128, 128)])
def test_contiguous_pairs_with_padding_blocks(block_m, block_n):
    """Pairs sharing B where one CTA's block is padding (an idle tile, which hands back the held
    stages before it waits out its own) and experts of 0 and 1 rows."""
    sizes = [0, 1, 128, 300, 1000, 1, 0, 330]  # 17 blocks and the padding block: pairs of blocks
    n, k = 4096, 896
    for index in range(2):
        def plans_for(rows):
            own, staged = _variants(candidate("contiguous", rows, n, k, len(sizes), block_m, block_n, 2, "b"))
            return own, staged[index]
        contiguous_matches_own(plans_for, n, k, sizes)

"""The persistent tile walk covers every tile exactly once; pairs share what they multicast."""
import collections
import json
import pathlib
import random
from dataclasses import replace

import pytest

from pydg.scheduler import candidate_plans, choose_plan
from pydg.scheduler.heuristics import (B_EVICT_FIRST_MAX_BYTES, B_EVICT_FIRST_MAX_READERS, EARLY_START_MIN_K_BLOCKS,
                                      ranked_plans,
                                      rolled_k_loop, tiles_seconds, with_b_evict_first)
from pydg.scheduler.plan import MAX_SMEM_BYTES, GemmPlan, b_scale_blocks_per_tile, smem_bytes
from pydg.scheduler.tiles import cta_tiles, fast_div, fast_divisor, raster_divisors
from pydg.describe import default_operands, describe_gemm
from pydg.kernels import source
from pydg.kernels.fp8_gemm import tensor_map_specs
from pydg.utils import ceil_div


def _walk(plan: GemmPlan, grouping=()):
    return {cta: list(cta_tiles(plan, cta, grouping)) for cta in range(plan.num_sms)}


def _check_pairs(plan: GemmPlan, walks):
    if plan.cluster_size == 1:
        return
    for cta in range(0, plan.num_sms, 2):
        first, second = walks[cta], walks[cta + 1]
        assert len(first) == len(second)  # the pair's pipelines advance together
        for t0, t1 in zip(first, second):
            assert t0.skip == t1.skip and t0.own_b == t1.own_b
            assert not (t0.idle and t1.idle)
            if plan.multicast == "a":
                assert t0.m_block == t1.m_block and t0.rows == t1.rows and t0.group == t1.group
            else:
                assert t0.n_block == t1.n_block and (t0.m_block, t1.m_block) == (t0.m_block, t0.m_block + 1)
                # The multicast B is one expert's: shared only where both blocks are that expert's.
                assert t0.own_b or (t0.group == t1.group and not t0.idle and not t1.idle)


def _random_dense_shapes(count, seed):
    rng = random.Random(seed)
    for _ in range(count):
        yield rng.randint(1, 9000), 8 * rng.randint(1, 3000), 16 * rng.randint(1, 1200)


@pytest.mark.parametrize("m,n,k", [(64, 2112, 7168), (4096, 7168, 16384), (4096, 32768, 512), (1, 256, 128)]
                         + list(_random_dense_shapes(12, 1)))
def test_dense_walk_covers_each_tile_once(m, n, k):
    for plan in candidate_plans("dense", m, n, k, 1, 132):
        walks = _walk(plan)
        tiles = [(t.m_block, t.n_block) for ts in walks.values() for t in ts]
        assert len(tiles) == len(set(tiles)) == plan.num_m_blocks * plan.num_n_blocks
        _check_pairs(plan, walks)



def _rows_covered(plan: GemmPlan, walks) -> collections.Counter:
    """How often each (row, n_block) of the output is written: whole tiles write their block's rows up
    to M, half tiles their `rows` from the half's first row."""
    covered = collections.Counter()
    for tiles in walks.values():
        for t in tiles:
            first = t.m_block * plan.block_m + (t.half - 1) * (plan.block_m // 2 if t.half else 0)
            rows = t.rows if t.half else min(plan.block_m, plan.m - t.m_block * plan.block_m)
            covered.update((first + r, t.n_block) for r in range(rows))
    return covered


@pytest.mark.parametrize("m,n,k,num_sms", [(4096, 32768, 512, 132), (4096, 24576, 1536, 132), (6000, 7168, 2048, 132),
                                           (1600, 4096, 640, 50), (1800, 4096, 256, 42), (1024, 8192, 128, 40),
                                           (4096, 8192, 512, 132), (2000, 8192, 384, 131)]
                         + [(*s, 132) for s in _random_dense_shapes(6, 7)])
def test_split_tail_walk_writes_every_row_once(m, n, k, num_sms):
    """The split tail's halves (GemmPlan.split_tail): every output row of every tile is written exactly
    once, pairs take the same half of their two tiles, the whole waves are untouched, and where the
    halves fit in one wave (the heuristic's condition) no CTA takes more than one."""
    checked = 0
    for plan in candidate_plans("dense", m, n, k, 1, num_sms):
        if plan.block_m != 256 or plan.block_n not in (112, 128):
            continue
        plan = replace(plan, split_tail=True, output_in_stages=False, num_stages=3)
        plan.validate()
        walks = _walk(plan)
        covered = _rows_covered(plan, walks)
        assert len(covered) == m * plan.num_n_blocks and set(covered.values()) == {1}, plan.summary()
        _check_pairs(plan, walks)
        halves = [t for ts in walks.values() for t in ts if t.half]
        assert len(halves) == 2 * plan.split_tail_tiles == 2 * (plan.num_tiles % plan.num_sms)
        whole = {cta: [t for t in ts if not t.half] for cta, ts in walks.items()}
        assert whole == {cta: ts[:len(whole[cta])] for cta, ts in walks.items()}  # halves come last
        assert {len(ts) for ts in whole.values()} == {plan.num_tiles // plan.num_sms}
        if 2 * plan.split_tail_tiles <= plan.num_sms:
            assert all(sum(t.half > 0 for t in ts) <= 1 for ts in walks.values())
        checked += 1
    assert checked


def test_split_tail_is_chosen_where_the_halves_fit_one_wave(monkeypatch):
    """With heuristics.SPLIT_TAIL on, the heuristic splits the partial last wave of dense 256-row plans
    when its halves fit in one wave; it is off until a GPU has tested and timed it. The option has its
    own compile-time value, cache key and summary, and excludes the early start, the output in stages
    and other layouts or tile heights."""
    from pydg.scheduler import heuristics

    assert not heuristics.SPLIT_TAIL and not choose_plan("dense", 4096, 32768, 512, 1, 132).split_tail
    monkeypatch.setattr(heuristics, "SPLIT_TAIL", True)
    plan = choose_plan("dense", 4096, 32768, 512, 1, 132)
    assert plan.split_tail and plan.split_tail_tiles == 4096 % 132 == 4, plan.summary()
    assert plan.defines()["PYDG_SPLIT_TAIL"] == "true" and "last 4 tiles split in halves" in plan.summary()
    whole = replace(plan, split_tail=False)
    assert source.cache_key(plan) != source.cache_key(whole) and whole.split_tail_tiles == 0
    assert tiles_seconds(plan) < tiles_seconds(whole)
    described = describe_gemm(4096, 32768, 512, num_sms=132, compile=False)
    assert described.split_tail_tiles == 4 and "split tail: the last 4 run as two 128-row halves" in repr(described)
    for shape in ((4096, 7168, 16384), (4096, 4096, 7168), (64, 7168, 2048), (4096, 2112, 7168)):
        chosen = choose_plan("dense", *shape, 1, 132)
        rest = chosen.num_tiles % chosen.num_sms
        assert not chosen.split_tail and (chosen.block_m != 256 or rest == 0 or 2 * rest > chosen.num_sms), chosen.summary()
    for mode, m, n, k, groups, expected in (("masked", 1024, 4096, 7168, 4, 256), ("contiguous", 32768, 4096, 7168, 8, None)):
        assert not any(p.split_tail for p in ranked_plans(mode, m, n, k, groups, 132, expected_m=expected))
    for bad in (replace(plan, early_start=True), replace(plan, output_in_stages=True, num_stages=4),
                replace(plan, block_m=128), replace(plan, mode="contiguous")):
        with pytest.raises(ValueError, match="split tail"):
            bad.validate()


def test_wide_tiles_are_candidates_only_when_switched_on(monkeypatch):
    """208-wide tiles (64 and 128 rows) compile without spills (tests/test_kernels.py) but are candidates
    only with heuristics.WIDE_TILES, off until a GPU has timed them; wider ones, and 208 at 256 rows,
    never."""
    from pydg.scheduler import heuristics

    shape = ("dense", 300, 26640, 2176, 1, 132)
    assert not heuristics.WIDE_TILES
    assert max(p.block_n for p in candidate_plans(*shape)) == 192
    narrow = choose_plan(*shape)
    monkeypatch.setattr(heuristics, "WIDE_TILES", True)
    widths = {(p.block_m, p.block_n) for p in candidate_plans(*shape)}
    assert {(64, 208), (128, 208)} <= widths and max(bn for _, bn in widths) == 208
    assert not any(bm == 256 and bn > 128 for bm, bn in widths)
    wide = choose_plan(*shape)
    assert (wide.block_m, wide.block_n) == (128, 208) and wide.num_stages == 4, wide.summary()
    assert tiles_seconds(wide) < tiles_seconds(narrow)
    # The benchmark's shapes keep their plans either way (test_default_plans_are_the_ones_last_benchmarked).
    for m, n, k in ((64, 7168, 16384), (4096, 7168, 2048), (128, 24576, 1536)):
        monkeypatch.setattr(heuristics, "WIDE_TILES", False)
        before = choose_plan("dense", m, n, k, 1, 132)
        monkeypatch.setattr(heuristics, "WIDE_TILES", True)
        assert choose_plan("dense", m, n, k, 1, 132) == before


def test_fast_division_is_exact_for_every_32_bit_dividend():
    # scheduler.cuh's FastDiv: the multiplier's rounding leaves the quotient at most one short, at
    # the ends of the range too, and for divisors from 1 to 2**32 - 1.
    rng = random.Random(4)
    divisors = [1, 2, 3, 7, 16, 127, 128, 129, 255, 256, 4095, 65537, 2**31 - 1, 2**31, 2**32 - 1]
    divisors += [rng.randint(1, 2**32 - 1) for _ in range(200)] + [rng.randint(1, 4096) for _ in range(200)]
    for d in divisors:
        dividends = [0, 1, d - 1, d, d + 1, 2**32 - 1, 2**32 - 2, (2**32 - 1) // d * d, (2**32 - 1) // d * d - 1]
        dividends += [rng.randint(0, 2**32 - 1) for _ in range(50)] + [rng.randint(0, 10 * d) for _ in range(50)]
        for n in dividends:
            if 0 <= n < 2**32:
                assert fast_div(n, fast_divisor(d)) == n // d, (n, d)


def test_raster_divisors_describe_the_grid():
    # Eight 32-bit words, in RasterDivisors' order: what the kernel walks the grid with.
    plan = choose_plan("dense", 4096, 32768, 512, 1, 132)
    words = raster_divisors(plan)
    assert len(words) == 8 and all(0 <= w < 2**32 for w in words)
    inner, outer = (plan.num_m_blocks, plan.num_n_blocks) if plan.inner_axis == "m" else \
        (plan.num_n_blocks, plan.num_m_blocks)
    assert words[0] == plan.band * outer and words[2] == plan.band
    assert words[6] == (inner - 1) // plan.band and words[4] == inner - words[6] * plan.band
    assert words[7] == plan.num_m_blocks * plan.num_n_blocks
    for d, m in (words[0:2], words[2:4], words[4:6]):
        assert m == (2**32 - 1) // d


def test_contiguous_walk_skips_padding_blocks_and_covers_the_rest():
    rng = random.Random(2)
    pairs_b = False
    for groups in (1, 2, 4, 8, 16, 32):
        sizes = [rng.choice([0, 1, 5, 128, 300, 1000]) for _ in range(groups)]
        m_indices = []
        for g, size in enumerate(sizes):
            padded = ceil_div(size, 128) * 128
            m_indices += [g] * size + [-1] * (padded - size)
        m_indices += [-1] * 128  # a trailing all-padding block
        m = len(m_indices)
        for plan in candidate_plans("contiguous", m, 512, 256, groups, 132):
            walks = _walk(plan, m_indices)
            work = [(t.m_block, t.n_block) for ts in walks.values() for t in ts if not t.skip and not t.idle]
            expected = {(mb, nb) for mb in range(plan.num_m_blocks) for nb in range(plan.num_n_blocks)
                        if m_indices[mb * plan.block_m] >= 0}
            assert len(work) == len(set(work)) and set(work) == expected
            for ts in walks.values():
                for t in ts:
                    if not t.skip and not t.idle:
                        assert t.group == m_indices[t.m_block * plan.block_m]
                    # An idle block is padding beside the pair's real one; a pair of padding skips.
                    if t.idle or t.skip:
                        assert m_indices[t.m_block * plan.block_m] < 0
            _check_pairs(plan, walks)
            pairs_b |= plan.multicast == "b"
    assert pairs_b  # the walk of contiguous pairs sharing B was checked


def test_contiguous_pairs_sharing_b_split_where_experts_change():
    # Blocks of 128 rows, in pairs: (0, 0) share B; (0, 1) load B each; (padding, 2): the padding block
    # idles beside expert 2's; (padding, out-of-range expert) is skipped; (3, 3) share; (3, padding).
    experts = [0, 0, 0, 1, -1, 2, -1, 7, 3, 3, 3, -1]
    m_indices = [e for e in experts for _ in range(128)]
    plan = next(p for p in candidate_plans("contiguous", len(m_indices), 1024, 512, 4, 132)
                if p.multicast == "b" and p.block_m == 128)
    walks = _walk(plan, m_indices)
    _check_pairs(plan, walks)
    kinds = {}
    for t in (t for ts in walks.values() for t in ts):
        kinds.setdefault(t.m_block, set()).add((t.skip, t.idle, t.own_b))
    shared, own, idle, skip = (False, False, False), (False, False, True), (False, True, True), (True, False, False)
    assert kinds == {0: {shared}, 1: {shared}, 2: {own}, 3: {own}, 4: {idle}, 5: {own}, 6: {skip}, 7: {skip},
                     8: {shared}, 9: {shared}, 10: {own}, 11: {idle}}


def test_masked_walk_covers_valid_rows_once_including_empty_and_one_row_groups():
    rng = random.Random(3)
    for groups in (1, 2, 4, 8, 16):
        m_max = rng.choice([64, 100, 256, 1024])
        masked = [rng.choice([0, 1, m_max, rng.randint(0, m_max)]) for _ in range(groups)]
        masked += [-5, m_max + 77]  # clamped by the kernel
        groups += 2
        for plan in candidate_plans("masked", m_max, 1024, 512, groups, 132, expected_m=max(1, m_max // 2)):
            walks = _walk(plan, masked)
            rows = set()
            for ts in walks.values():
                for t in ts:
                    valid = min(max(masked[t.group], 0), m_max)
                    first = t.m_block * plan.block_m
                    assert 0 < t.rows <= plan.block_m and first + t.rows <= valid
                    rows |= {(t.group, first + r, t.n_block) for r in range(t.rows)}
            expected = {(g, r, nb) for g in range(groups) for r in range(min(max(masked[g], 0), m_max))
                        for nb in range(plan.num_n_blocks)}
            assert rows == expected
            _check_pairs(plan, walks)


@pytest.mark.parametrize("mode", ["dense", "contiguous", "masked"])
def test_chosen_plans_are_valid_and_fit(mode):
    for m, n, k in _random_dense_shapes(40, 4):
        groups = 1 if mode == "dense" else 4
        m = ceil_div(m, 128) * 128 if mode == "contiguous" else m
        plan = choose_plan(mode, m, n, k, groups, 132, expected_m=m)
        plan.validate()
        assert plan.smem_bytes <= MAX_SMEM_BYTES
        assert plan.num_stages >= 3
        assert 1 <= plan.num_sms <= 132


def test_small_m_fills_the_machine_with_narrow_tiles():
    plan = choose_plan("dense", 64, 2112, 7168, 1, 132)
    assert plan.block_m == 64 and plan.num_tiles >= 120


@pytest.mark.parametrize("m,n,k", [(64, 2112, 7168), (128, 2112, 7168), (64, 32768, 512), (128, 32768, 512),
                                   (511, 7168, 2048)])
def test_small_m_runs_without_cluster_pairs(m, n, k):
    # Measured: single CTAs beat multicast pairs on these shapes (MULTICAST_MIN_ROWS). Below that many
    # rows the only pairs considered have at least two waves of tiles over two or more row blocks.
    assert choose_plan("dense", m, n, k, 1, 132).cluster_size == 1
    for plan in candidate_plans("dense", m, n, k, 1, 132):
        if plan.cluster_size > 1:
            assert plan.num_tiles >= 2 * plan.num_sms and plan.num_m_blocks >= 2, plan.summary()
    assert any(p.multicast == "a" for p in candidate_plans("dense", 512, n, k, 1, 132))


@pytest.mark.parametrize("m,n,k", [(300, 18432, 7168), (300, 18432, 18432)])
def test_pairs_below_512_rows_with_waves_of_tiles(m, n, k):
    # Plan sweep 2026-11-23 (a088a2f): 128x144 pairs sharing A 97.7 us against 115.3 us unpaired at
    # 300 x 18432 x 7168, 234.0 against 293.7 at x 18432 (cuBLAS: 95.2 and 226 us).
    plan = choose_plan("dense", m, n, k, 1, 132)
    assert (plan.block_m, plan.block_n, plan.cluster_size, plan.multicast) == (128, 144, 2, "a")


@pytest.mark.parametrize("m,n,k", [(2500, 7168, 7168)])
def test_wide_tiles_unrolled_carry_no_straddle_penalty(m, n, k):
    # Plan sweep 2026-11-23 (a088a2f): 128x192 pairs sharing B 195.4 us, 256x112 200.4, 256x128 215.
    # The 192-wide loop is unrolled (2 split copies), so its straddling costs nothing (rolled_k_loop).
    plan = choose_plan("dense", m, n, k, 1, 132)
    assert (plan.block_m, plan.block_n, plan.cluster_size, plan.multicast) == (128, 192, 2, "b")
    assert not rolled_k_loop(192) and not rolled_k_loop(160) and rolled_k_loop(176) and rolled_k_loop(144)


@pytest.mark.parametrize("m,n,k,tile", [
    (128, 4096, 7168, (64, 64)),     # scripts/ab_plans.py 2026-11-23: 20.4 us against 21.1 for pairs sharing B
    (128, 7168, 16384, (64, 112)),   # 56.2 against 56.9
    (128, 7168, 2048, (64, 112)),    # 13.6 against 14.0
    (300, 2048, 7168, (64, 80)),     # 18.8 against 20.8 walking n inner
    (1000, 2048, 7168, (128, 128)),  # 27.2 against 28.9 for pairs sharing B (128 tiles on 132 SMs)
])
def test_small_m_single_ctas_walk_m_inner(m, n, k, tile):
    # The CTAs that read the same tile of B run side by side (SINGLE_INNER_AXIS).
    plan = choose_plan("dense", m, n, k, 1, 132)
    assert (plan.block_m, plan.block_n, plan.cluster_size, plan.inner_axis) == (*tile, 1, "m")
    tiles = [tile for cta in range(plan.num_sms) for tile in cta_tiles(plan, cta)]
    assert (tiles[0].m_block, tiles[0].n_block, tiles[1].m_block, tiles[1].n_block) == (0, 0, 1, 0)
    assert all(p.inner_axis == "m" for p in candidate_plans("dense", m, n, k, 1, 132) if p.cluster_size == 1)


@pytest.mark.parametrize("m,n,k,tile,multicast", [
    (4096, 4096, 7168, (256, 128), "a"),   # 180.1 against 181.7 (DeepGEMM 2.8 pairs the same way)
    (4096, 7168, 16384, (256, 128), "a"),  # 695 against 713; sharing B 716
])
def test_pairs_where_the_sweeps_found_them_faster(m, n, k, tile, multicast):
    plan = choose_plan("dense", m, n, k, 1, 132)
    assert (plan.block_m, plan.block_n) == tile
    assert plan.cluster_size == 2 and plan.multicast == multicast


@pytest.mark.parametrize("groups,m", [(1, 1024), (2, 512)])
def test_masked_ties_go_to_single_ctas(groups, m):
    # Plan sweep 2026-11-23: 256x128 pairs sharing A 33.3 us against 31.8 us for single CTAs; 256x112
    # single CTAs 31.0 (1 x 1024) and 33.6 against 34.1 (2 x 512).
    plan = choose_plan("masked", m, 7168, 2048, groups, 132, expected_m=m)
    assert (plan.block_m, plan.block_n, plan.cluster_size) == (256, 112, 1)
    paired = choose_plan("contiguous", 4 * 8192, 4096, 7168, 4, 132)
    assert paired.cluster_size == 2


def test_plan_validation_rejects_illegal_multicast():
    plan = choose_plan("dense", 4096, 4096, 4096, 1, 132)
    with pytest.raises(ValueError, match="multicast b"):
        replace(plan, cluster_size=2, multicast="b", inner_axis="n").validate()
    with pytest.raises(ValueError, match="block_m"):
        replace(plan, block_m=96).validate()
    with pytest.raises(ValueError, match="multicast without a cluster"):
        replace(plan, cluster_size=1, multicast="a").validate()


def test_plan_reads_as_documentation():
    plan = choose_plan("dense", 4096, 7168, 2048, 1, 132)
    text = plan.summary()
    assert f"{plan.block_m}x{plan.block_n}x128" in text and "stages" in text and "SMs" in text
    assert "GemmPlan(" in repr(plan)


def test_b_scale_blocks_per_tile():
    # Tiles start at multiples of block_n: a 176-wide one starting at column 112 of a scale block
    # spans three blocks; a 192-wide one starts at 0 or 64 and spans two.
    assert [b_scale_blocks_per_tile(n) for n in (16, 64, 128, 144, 160, 176, 192, 256)] == [1, 1, 1, 2, 2, 3, 2, 2]


def test_smem_holds_the_tiles_b_scales():
    # B's scales of a whole tile (every 128 of K) live in shared memory: longer K, more bytes.
    assert smem_bytes(256, 128, 3, 16384) - smem_bytes(256, 128, 3, 2048) == (128 - 16) * 4
    assert smem_bytes(128, 176, 4, 7168) - smem_bytes(128, 176, 4, 128) == 3 * 56 * 4 - 16  # 16-byte rounded



@pytest.mark.parametrize("m,block_m,rows", [(1, 64, 16), (16, 64, 16), (17, 64, 32), (37, 64, 48), (63, 64, 0),
                                            (64, 64, 0), (300, 64, 48), (300, 128, 48), (1000, 256, 240), (1010, 256, 0),
                                            (6000, 256, 112), (4097, 256, 16)])
def test_partial_last_block_loads_the_rows_left_rounded_to_16(m, block_m, rows):
    plan = next(p for p in candidate_plans("dense", m, 2048, 7168, 1, 132) if p.block_m == block_m)
    assert plan.tail_rows == rows
    assert ("last block loads" in plan.summary()) == bool(rows)
    # The kernel's parameters: A's and its scales' tail maps come last, with boxes of those rows.
    specs = tensor_map_specs(plan, default_operands("dense", m, 2048, 7168, 1))
    assert len(specs) == (6 if rows else 4)
    if rows:
        assert specs[4].box_dims == (128, rows, 1) and specs[5].box_dims == (rows, 1, 1)
        assert specs[4].global_dims == specs[0].global_dims and specs[5].global_dims == specs[2].global_dims


def test_grouped_layouts_load_whole_boxes():
    # A masked group's rows are known only to the GPU; a contiguous M_sum is whole blocks.
    assert all(not p.tail_rows for p in candidate_plans("masked", 32, 2048, 7168, 2, 132, expected_m=8))
    assert all(not p.tail_rows for p in candidate_plans("contiguous", 8192 + 64, 2048, 7168, 4, 132))


@pytest.mark.parametrize("mode,m,n,k,groups,expected_m,staged", [
    ("dense", 1024, 4096, 7168, 1, None, True), ("masked", 512, 4096, 7168, 2, 512, True),
    ("masked", 256, 4096, 7168, 4, 256, True), ("masked", 1024, 4096, 7168, 1, 1024, True),
    ("dense", 4096, 7168, 16384, 1, None, False), ("dense", 4096, 4096, 7168, 1, None, False),
    ("dense", 4096, 7168, 2048, 1, None, False), ("dense", 4096, 32768, 512, 1, None, False),
    ("contiguous", 32768, 4096, 7168, 4, None, False)])
def test_long_256_row_tiles_stage_their_output_in_a_fourth_stage(mode, m, n, k, groups, expected_m, staged):
    """Only where the tiles fit in one wave: a CTA's next tile would start with two loaded stages."""
    plan = choose_plan(mode, m, n, k, groups, 132, expected_m=expected_m)
    assert plan.output_in_stages == staged
    if staged:
        assert (plan.block_m, plan.block_n, plan.num_stages, plan.held_stages) == (256, 128, 4, 2)
        assert not plan.overlap_promotion and plan.num_k_blocks >= 32
        assert plan.smem_bytes == smem_bytes(256, 128, 4, k) - 256 * 128 * 2 <= MAX_SMEM_BYTES
        assert "output staged in 2 stages" in plan.summary()
    else:
        assert plan.held_stages == 0 and "output staged" not in plan.summary()


def test_output_in_stages_needs_chunks_k_blocks_and_a_free_stage():
    base = choose_plan("dense", 1024, 4096, 7168, 1, 132)
    assert base.output_in_stages
    base.validate()
    for bad in (replace(base, block_n=112),                                  # no 64-column chunks
                replace(base, num_stages=2),                                 # every stage held
                replace(base, k=128),                                        # one k-block, two chunks
                replace(base, block_m=128, overlap_promotion=True)):         # overlapped loop
        with pytest.raises(ValueError, match="output in stages"):
            bad.validate()
    assert replace(base, num_stages=3).held_stages == 2
    assert replace(base, output_in_stages=False).held_stages == 0


def test_early_start_is_chosen_for_long_contiguous_tiles_only_and_needs_the_one_accumulator_loop():
    """GemmPlan.early_start: a kernel option (its own compile-time value and cache key) that the
    heuristic takes where the H100 timed it faster: the contiguous layout at long K (heuristics.
    EARLY_START_MIN_K_BLOCKS); dense and masked shapes and short K keep it off, and the overlapped
    loop cannot take it."""
    for mode, m, n, k, groups in (("dense", 4096, 32768, 512, 1), ("dense", 64, 7168, 2048, 1),
                                  ("dense", 2500, 7168, 7168, 1), ("dense", 4096, 7168, 16384, 1),
                                  ("masked", 256, 4096, 7168, 4), ("contiguous", 32768, 7168, 2048, 4),
                                  ("contiguous", 8192, 2048, 7168, 4)):
        plan = choose_plan(mode, m, n, k, groups, 132)
        assert not plan.early_start and plan.defines()["PYDG_EARLY_START"] == "false", plan.summary()
        assert plan.allows_early_start == (not plan.overlap_promotion)
    for m, k in ((32768, 7168), (32768, 4096), (8192, 128 * EARLY_START_MIN_K_BLOCKS)):
        plan = choose_plan("contiguous", m, 4096, k, 4, 132)
        assert plan.early_start and plan.defines()["PYDG_EARLY_START"] == "true", plan.summary()
        plan.validate()
    short = choose_plan("contiguous", 8192, 4096, 128 * (EARLY_START_MIN_K_BLOCKS - 1), 4, 132)
    assert short.allows_early_start and not short.early_start
    assert all(p.early_start == p.allows_early_start for p in ranked_plans("contiguous", 32768, 4096, 7168, 4, 132))
    base = choose_plan("dense", 4096, 32768, 512, 1, 132)
    early = replace(base, early_start=True, split_tail=False)
    early.validate()
    assert early.defines()["PYDG_EARLY_START"] == "true" and "started early" in early.summary()
    assert source.cache_key(early) != source.cache_key(base)
    overlapped = choose_plan("dense", 64, 7168, 2048, 1, 132)
    assert overlapped.overlap_promotion
    with pytest.raises(ValueError, match="early start"):
        replace(overlapped, early_start=True).validate()


@pytest.mark.parametrize("block_n", range(16, 257, 16))
def test_output_is_stored_in_swizzled_chunks_of_every_width(block_n):
    # OutputTile (fp8_gemm.cuh): the widest of 64, 32 and 16 columns that divides the tile's width,
    # each chunk one TMA store whose box is exactly one swizzle span wide (no row-major staging).
    plan = replace(choose_plan("dense", 256, 4096, 1024, 1, 132), block_m=64, block_n=block_n, num_stages=3,
                   cluster_size=1, multicast="none", overlap_promotion=False, output_in_stages=False)
    cols = plan.output_chunk_cols
    assert cols == (64 if block_n % 64 == 0 else 32 if block_n % 32 == 0 else 16)
    assert block_n % cols == 0 and plan.output_swizzle == f"{cols * 2}B"
    out = tensor_map_specs(plan, default_operands("dense", plan.m, plan.n, plan.k, 1))[3]
    assert out.box_dims == (cols, 64, 1) and out.swizzle == plan.output_swizzle
    out.validate()


def _measured_b_readers(plan: GemmPlan, grouping=()) -> int:
    """The most tiles of the walk that read one box of B (group, column block), skipped tiles not
    counted."""
    readers = collections.Counter(
        (tile.group, tile.n_block) for tiles in _walk(plan, grouping).values() for tile in tiles if not tile.skip)
    return max(readers.values(), default=0)


def test_b_readers_are_the_walks():
    rng = random.Random(11)
    checked = {"dense": 0, "masked": 0, "contiguous": 0}
    while min(checked.values()) < 40:
        mode = rng.choice(list(checked))
        block_m = rng.choice((64, 128) if mode == "contiguous" else (64, 128, 256))
        groups = rng.randint(1, 4) if mode != "dense" else 1
        m = rng.randint(1, 2000) if mode != "contiguous" else groups * rng.randint(1, 8) * 128
        plan = GemmPlan(mode=mode, m=m, n=rng.randint(16, 3000), k=256, num_groups=groups, block_m=block_m,
                        block_n=rng.choice((16, 64, 112, 128)), num_stages=3, cluster_size=1, multicast="none",
                        inner_axis=rng.choice("mn"), band=rng.choice((1, 2, 3, 16)), num_sms=rng.choice((8, 132)),
                        expected_m=m)
        if plan.mode != "masked" and rng.random() < 0.5 and plan.num_n_blocks % 2 == 0:
            plan = replace(plan, cluster_size=2, multicast="a", inner_axis="n", band=plan.band * 2 % 32 or 2)
        plan.validate()
        if plan.num_tiles * plan.num_groups > 3000:
            continue
        if mode == "dense":
            assert _measured_b_readers(plan) == plan.b_readers, plan.summary()
        elif mode == "masked":  # every group at the hint's rows
            assert _measured_b_readers(plan, [m] * groups) == plan.b_readers, plan.summary()
        else:  # experts in whole blocks of rows, some padding: the plan's figure bounds the walk's
            per_block = [rng.choice([-1] + list(range(groups))) for _ in range(plan.num_m_blocks)]
            m_indices = [e for e in sorted(per_block, key=lambda e: (e < 0, e)) for _ in range(block_m)]
            assert _measured_b_readers(plan, m_indices) <= plan.b_readers, plan.summary()
        checked[mode] += 1


@pytest.mark.parametrize("mode,m,n,k,groups,expected_m,evict_first", [
    ("dense", 64, 7168, 16384, 1, None, True), ("dense", 128, 24576, 1536, 1, None, True),
    ("dense", 300, 7168, 7168, 1, None, True), ("dense", 64, 32768, 512, 1, None, True),
    ("dense", 300, 18432, 2048, 1, None, True), ("dense", 1000, 7168, 7168, 1, None, True),
    ("masked", 256, 7168, 2048, 4, 256, True), ("masked", 512, 7168, 2048, 2, 512, True),
    ("masked", 1024, 4096, 7168, 1, 1024, True), ("dense", 1000, 18432, 2048, 1, None, False),
    ("dense", 1000, 2048, 2048, 1, None, False), ("dense", 1, 18432, 18432, 1, None, False),
    ("dense", 4096, 32768, 512, 1, None, False), ("dense", 4096, 7168, 16384, 1, None, False),
    ("contiguous", 4 * 8192, 4096, 7168, 4, None, False)])
def test_b_loads_evict_first_where_few_tiles_read_each_box(mode, m, n, k, groups, expected_m, evict_first):
    plan = choose_plan(mode, m, n, k, groups, 132, expected_m=expected_m)
    assert plan.b_evict_first == evict_first
    assert plan.defines()["PYDG_B_EVICT_FIRST"] == ("true" if evict_first else "false")
    assert ("B evict-first in L2" in plan.summary()) == evict_first
    for ranked in ranked_plans(mode, m, n, k, groups, 132, expected_m=expected_m)[:5]:
        few = ranked.b_readers <= B_EVICT_FIRST_MAX_READERS
        assert ranked.b_evict_first == (few and ranked.b_bytes <= B_EVICT_FIRST_MAX_BYTES)


def test_b_evict_first_limits_bound_the_hint():
    plan = choose_plan("dense", 1, 7168, 7168, 1, 132)
    assert plan.b_readers == 1 and plan.b_evict_first
    assert not with_b_evict_first(replace(plan, m=plan.block_m * (B_EVICT_FIRST_MAX_READERS + 1))).b_evict_first
    assert with_b_evict_first(replace(plan, m=plan.block_m * B_EVICT_FIRST_MAX_READERS)).b_evict_first
    over = B_EVICT_FIRST_MAX_BYTES // (plan.n * plan.k) + 1
    grouped = replace(plan, mode="masked", num_groups=over, expected_m=1)
    assert grouped.b_bytes > B_EVICT_FIRST_MAX_BYTES and not with_b_evict_first(grouped).b_evict_first


# The plans whose speed the last committed H100 benchmark measured (README, bench/NOTES.md): a change of
# heuristics that moves one of them needs a new benchmark before its figures mean anything, and then
# the files named here move to that run's.
RESULTS = pathlib.Path(__file__).resolve().parents[1] / "bench" / "results"
BENCHED = [RESULTS / name for name in ("h100_2026-12-08_dense_grouped_host_7017598.json",
                                       "h100_2026-12-07d_shapes_025d4cb.json")]


def _benched_plans(paths):
    for path in paths:
        data = json.loads(path.read_text())
        sms = data["metadata"]["sms"]
        for r in data["records"]:
            if r.get("section") in ("dense", "shapes") and "m" in r:
                yield (r["m"], r["n"], r["k"], "dense", 1, None, sms), r["plan"]
            elif r.get("section") == "contiguous":
                yield (r["groups"] * r["m_per_group"], r["n"], r["k"], "contiguous", r["groups"], None, sms), r["plan"]
            elif r.get("section") == "masked":
                yield (r["m_max"], r["n"], r["k"], "masked", r["groups"], r["m_per_group"], sms), r["plan"]


BENCHED_PLANS = list(_benched_plans(BENCHED))


def test_benchmark_files_hold_every_section():
    modes = [args[3] for args in dict(BENCHED_PLANS)]
    assert (modes.count("dense"), modes.count("contiguous"), modes.count("masked")) == (18 + 54, 4, 6)


@pytest.mark.parametrize("args, benched", BENCHED_PLANS,
                         ids=[f"{a[3]}-{a[4]}g-{a[0]}x{a[1]}x{a[2]}" for a, _ in BENCHED_PLANS])
def test_default_plans_are_the_ones_last_benchmarked(args, benched):
    m, n, k, mode, groups, expected_m, sms = args
    plan = describe_gemm(m, n, k, mode=mode, num_groups=groups, expected_m=expected_m, num_sms=sms, compile=False).plan
    assert plan.summary() == benched

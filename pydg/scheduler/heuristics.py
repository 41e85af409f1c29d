"""Choosing block sizes, stages, cluster and rasterisation for a shape: plain functions, no GPU.

The model: a CTA runs its tiles one after another, so the kernel takes (waves) x (time of one tile),
and a tile takes the longer of its tensor-core time and the time to feed its operands from L2
(an SM's share of L2 bandwidth; the operand a cluster pair multicasts counts half). The whole
kernel can also not beat reading A and B and writing D once from device memory.
"""
from __future__ import annotations

import math
from dataclasses import replace

from pydg.scheduler.plan import BLOCK_K, CONTIGUOUS_BLOCK_M_LIMIT, MAX_SMEM_BYTES, GemmPlan, smem_bytes
from pydg.utils import ceil_div

# Constants fitted to plan sweeps on an H100 SXM (scripts/plan_sweep.py, 2026-11-23); only their
# ratios steer choices.
TENSOR_FLOPS_PER_SM = 13.5e12  # a 256x128 tile's main loop runs at 0.8 of this (1430 TFLOPS)
L2_BYTES_PER_SM = 70e9
DRAM_BYTES = 3.0e12
TILE_OVERHEAD_S = 0.1e-6       # scheduling and pipeline restart of one tile
EPILOGUE_S_PER_BYTE = 20e-12   # the part of the output's staging that the next tile cannot hide
# Tensor-core efficiency by tile height: one math warpgroup (64 rows) has no second warpgroup to
# overlap its promotion with; two (128 rows) do; 256 rows also halve the shared-memory reads of B.
BLOCK_M_EFFICIENCY = {64: 0.70, 128: 0.885, 256: 1.0}
# Widths whose k-loop stays rolled (rolled_k_loop: 7-8 split copies, e.g. 112, 144, 176): unrolling
# made 128x176 2.7% faster (scripts/ab_kernels.py, 2026-11-23). Unrolled straddling widths (160, 192)
# pay nothing: 2500 x 7168 x 7168 at 128x192 in pairs sharing B ran 195.4 us against 215 for 256x128.
STRADDLE_EFFICIENCY = 0.97
# Widths not a multiple of 64: a wgmma N that is not a power of two, and an output staged in 32- or
# 16-column chunks (OutputTile). Fitted while those widths staged row-major, with bank conflicts;
# with the chunks swizzled they still hold: without this and the epilogue's 1.5x, 7 benchmark shapes
# would move to 256x112 or 128x176 tiles, 1.04-1.09x slower (H100, 2026-11-23).
UNSWIZZLED_EFFICIENCY = 0.97

BLOCK_NS = tuple(range(16, 209, 16))
# Each math thread holds two accumulators of block_n / 2 floats (wgmma's and the promoted FP32 sum);
# past these widths ptxas spills (tests/test_kernels.py checks every variant): 64x224 in contiguous
# pairs sharing B, 64x240 and 64x256 at the one warpgroup's 248 registers, 128x224 at two warpgroups'
# 232 (NVRTC 12.9, 2026-12-08).
# A 256-row tile keeps two promoted sums per thread (its two 64-row sub-blocks) beside wgmma's.
MAX_BLOCK_N = {64: 208, 128: 208, 256: 128}
# Widths from WIDE_BLOCK_N on (64x208, 128x208) are candidates only with WIDE_TILES: they compile
# without spills and the model ranks them first on some shapes (of 400 random dense shapes in one draw,
# about 30; none of the 82 benchmark shapes), sometimes only by a tie (memory-bound M = 1 to 128, where
# the tie goes to the bigger tile, with fewer stages in flight and fewer CTAs), but no GPU has run or
# timed them yet (gpu_check.sh pending wide).
WIDE_BLOCK_N = 208
WIDE_TILES = False
# Narrow tiles need many stages in flight to cover L2 latency (small-M shapes stream B).
MAX_STAGES = 16
MIN_STAGES = 3
# 256-row tiles stage their output in the A slots of their last stages (GemmPlan.output_in_stages)
# where a tile runs at least this many k-blocks and the tiles fit in one wave: the freed 64 KB buy a
# fourth stage, but a CTA's next tile starts with two stages loaded instead of three. Same-run H100
# timings (scripts/ab_plans.py), 256x128, staged against not:
# - 2026-11-23 (cd5a7e5): 4096 x 7168 x 16384 0.989x the time, 4096 x 4096 x 7168 0.988x, masked
#   1 x 1024 and 2 x 512 x 4096 x 7168 0.96x, 4 x 256 0.994x; K = 2048 1.007x, 1536 1.03x, 512 1.11x.
# - 2026-12-06 (535221f, after the epilogue gained a barrier for staged tiles and the math warps began
#   walking a tile ahead): 4096 x 7168 x 16384 and 4096 x 4096 x 7168 1.009x (several tiles per CTA);
#   masked 4 x 256 and 1 x 1024 x 4096 x 7168 0.992x and 0.995x, 1024 x 4096 x 7168 0.997x (one
#   tile per CTA). In the bench of 2bf00e0, staged multi-wave shapes trailed DeepGEMM (which runs
#   3 stages and an output area) by a median 0.5%, the unstaged 256x128 ones led it by 0.3%.
# 128x192 tiles (three of five stages held) ran 1.02-1.03x in the contiguous layout at K = 2048 and 7168.
OUTPUT_IN_STAGES_MIN_K_BLOCKS = 32
BAND = 16
# Cluster pairs below this many rows lost to single CTAs in every plan sweep (2026-11-23: 64 and 128
# x 2112 x 7168 and x 32768 x 512, by 3-7%): A is a few hot L2 lines that every CTA reads anyway, and
# a pair advances at the pace of its slower CTA. Those shapes run one wave of tiles. The exception:
# two or more waves of tiles over two or more row blocks, where L2 feeds the SMs: 300 x 18432 x 7168
# at 128x144 in pairs sharing A 97.7 against 115.3 us (x 18432: 234.0 against 293.7).
# Pairs of row blocks sharing B in one wave that leaves a few SMs idle (128 tiles on 132) won at
# 128 x 4096 x 7168 and 128 x 7168 x 16384 against single CTAs walking n inner, but lose to single
# CTAs walking m inner (SINGLE_INNER_AXIS; scripts/ab_plans.py, 2026-11-23): 20.4 against 21.1 us,
# 56.2 against 56.9; 128 x 7168 x 2048 13.6 against 14.0; 1000 x 2048 x 7168 (128x128) 27.2 against
# 28.9 and x 2048 12.0 against 12.7. Pairs therefore need a full wave.
# Pairs sharing A on the one-wave small-M shapes (scripts/ab_plans.py --toggle pairA, H100, 2026-12-07)
# ran 0.988-1.003x the time at M = 64 x 7168 x 16384 / 2048 and x 24576 x 1536, 1.03-1.11x elsewhere:
# halving A's L2 reads is not what these shapes wait on.
MULTICAST_MIN_ROWS = 512
# Single CTAs walk their tiles m inner, as DeepGEMM's do: the CTAs that read the same tile of B (the
# operand streamed from device memory when M is small) then have consecutive indices and run side by
# side; why that pays more than n inner, whose CTAs also all run at once, is not measured yet.
# Same-run H100 timings against n inner (scripts/ab_plans.py --toggle inner, 2026-11-23):
# 300 x 2048 x 2048 / 7168 / 18432 0.917x / 0.900x / 0.976x the time, 300 x 7168
# x 7168 / 18432 0.981x / 0.945x, 128 x 2112 x 7168 0.987x, masked 1 x 1024 and 2 x 512 x 7168 x 2048
# 0.977x and 0.969x; within 1.5% the other way at 300 x 7168 x 2048 (1.011x) and masked 1 x 1024 and
# 2 x 512 x 4096 x 7168 (1.014x, 1.007x). With one row block both walks are the same.
SINGLE_INNER_AXIS = "m"
# B's loads marked evict-first in L2 (GemmPlan.b_evict_first) where at most this many tiles read each
# box of B (GemmPlan.b_readers) and B is at most B_EVICT_FIRST_MAX_BYTES. Measured, not derived:
# same-run plan A/Bs on the H100 (scripts/ab_plans.py --toggle evictB), time with the hint against
# without, 2026-12-07 (bench/results/h100_2026-12-07c_ab_evict_b_7adbf95.txt and
# h100_2026-12-07d_ab_evict_b_bc24410.txt):
# - 1 or 2 readers: 2-9% faster (64 / 128 x 32768 x 512, 128 x 4096 x 7168, 64 x 7168 x 16384,
#   1 x 7168 x 18432, 1 x 18432 x 7168, masked 2 x 512).
# - 3 or 4 readers: 0 to 16% faster, whether the readers follow each other in the walk (m inner:
#   300 x 7168 x 7168 / 2048 / 18432, 6-16%) or lie a band apart (n inner: 300 x 18432 x 2048 / 7168,
#   1000 x 7168 x 7168, 3-6%; 1000 x 7168 x 2048 / 18432, even).
# - 5 to 8 readers: mostly slower (1000 x 2048 x 2048 8%, 1000 x 18432 x 2048 4.6%, 300 x 2048 x 18432
#   2.3%, 1000 x 2048 x 7168 1.6%; 1000 x 18432 x 7168 and 300 x 2048 x 7168 even), once faster
#   (1000 x 2048 x 18432, 3%); 32 readers (4096 x 32768 x 512, B read again by later waves): 0.78x
#   the speed (scripts/ab_kernels.py, with A's loads also marked evict-last).
B_EVICT_FIRST_MAX_READERS = 4
# 1 and 37 x 18432 x 18432 (340 MB of B, one reader) ran 5% slower with the hint, where 117-132 MB of B
# (the shapes above) ran faster; 300 x 18432 x 18432 (three readers) ran 1% faster. The limit lies
# between the two sizes measured; why the largest B loses is not known.
B_EVICT_FIRST_MAX_BYTES = 256 << 20
# The early start (GemmPlan.early_start) in the contiguous layout where a tile runs at least this many
# k-blocks. Same-run H100 timings, three rounds of scripts/ab_plans.py --toggle early (bench/results/
# h100_2026-12-07h_pending_early3_9d44eee.log), time with it against without, 128x192 tiles in pairs
# sharing B: contiguous 4 x 8192 and 8 x 4096 x 4096 x 7168 (56 k-blocks) 0.987-0.995x in every round;
# at K = 2048 (16 k-blocks) 1.004-1.014x. Dense shapes with the same tile and K lost by 0.2-0.7%
# (2500 x 7168 x 7168, 1000 x 18432 x 7168), the 256x128 dense laggards by 0.1-3.4% (one round,
# h100_2026-12-07g_pending_early_88b36d2.log), masked 4 x 256 was even: it stays off there. Nor is it
# the tiles per CTA: dense 256x128 at K = 7168 with 6.8, 13.6, 27 and 31 of them lost 0.0-0.6% in three
# rounds each (h100_2026-12-08_pending_earlyw_0a39315.log).
# Where it begins (h100_2026-12-07h_pending_earlyk_1b6bc6a.log, three rounds): without it 1.002-1.004x
# the time at K = 4096, 1.006-1.009x at 5120, 1.005-1.014x at N = 2048 and 7168 (K = 4096 and 7168);
# at K = 3072 (24 k-blocks) it ran 0.996-0.999x, too close to call.
EARLY_START_MIN_K_BLOCKS = 32
# The split tail (GemmPlan.split_tail) where the dense 256-row plan chosen ends in a partial wave of at
# most half the CTAs: its tiles' halves then fill at most one wave, about half a tile's time instead
# of a whole one. Of the 72 dense shapes benchmarked, 8 qualify: 4096 x 32768 x 512 (4 tiles after 31
# waves), 4096 x 24576 x 1536 (36 after 23) and six with M = 6000 (24 after 10 or 26). Off until a GPU
# has run its tests (tests/test_split_tail_gpu.py) and timed it (gpu_check.sh pending split): the
# session that wrote it (2026-12-08) was lent none. (Stream-K, which shared the last waves out as runs
# of k-blocks, and split-K for small M were timed slower than the plans chosen on every shape, H100,
# 2026-12-06/07: handing FP32 partials between CTAs cost more than the idle SMs. Both were removed;
# bench/NOTES.md has the numbers.)
SPLIT_TAIL = False


def max_stages(block_m: int, block_n: int, k: int, smem_limit: int = MAX_SMEM_BYTES,
               output_in_stages: bool = False) -> int:
    stages = MAX_STAGES
    while stages > 0 and smem_bytes(block_m, block_n, stages, k, output_in_stages) > smem_limit:
        stages -= 1
    return stages


def with_output_in_stages(plan: GemmPlan, smem_limit: int = MAX_SMEM_BYTES) -> GemmPlan:
    """The plan with its output staged in its stages where that pays (OUTPUT_IN_STAGES_MIN_K_BLOCKS):
    long 256-row tiles, one per CTA."""
    if (plan.block_m != 256 or plan.num_k_blocks < OUTPUT_IN_STAGES_MIN_K_BLOCKS or plan.num_tiles > plan.num_sms
            or not plan.allows_output_in_stages):
        return plan
    stages = max_stages(plan.block_m, plan.block_n, plan.k, smem_limit, output_in_stages=True)
    if stages <= max(plan.num_stages, plan.block_n // 64):
        return plan
    return replace(plan, output_in_stages=True, num_stages=stages)


def rolled_k_loop(block_n: int) -> bool:
    """Whether the kernel keeps the one-accumulator k-loop rolled for this width: it compiles one loop
    copy per start column modulo 128 (128 / gcd(block_n, 128) of them) and unrolls only up to 4 copies
    (fp8_gemm.cuh kUnroll: compile time)."""
    return 128 % block_n != 0 and 128 // math.gcd(block_n, 128) > 4


def tile_seconds(block_m: int, block_n: int, k: int, multicast: str) -> float:
    k_padded = ceil_div(k, BLOCK_K) * BLOCK_K
    # Narrow tiles read more of A from shared memory per MMA: efficiency grows with block_n.
    efficiency = block_n / (block_n + 32) * BLOCK_M_EFFICIENCY[block_m]
    if rolled_k_loop(block_n):
        efficiency *= STRADDLE_EFFICIENCY
    swizzled = block_n % 64 == 0
    if not swizzled:
        efficiency *= UNSWIZZLED_EFFICIENCY
    compute = 2 * block_m * block_n * k_padded / (TENSOR_FLOPS_PER_SM * efficiency)
    a_bytes = block_m * k_padded * (0.5 if multicast == "a" else 1.0)
    b_bytes = block_n * k_padded * (0.5 if multicast == "b" else 1.0)
    feed = (a_bytes + b_bytes) / L2_BYTES_PER_SM
    epilogue = block_m * block_n * 2 * EPILOGUE_S_PER_BYTE * (1.0 if swizzled else 1.5)
    return max(compute, feed) + TILE_OVERHEAD_S + epilogue


def tiles_seconds(plan: GemmPlan) -> float:
    """The SMs' time: whole waves of tiles; with the split tail, the whole waves and the halves."""
    tile = tile_seconds(plan.block_m, plan.block_n, plan.k, plan.multicast)
    if plan.split_tail_tiles:
        # The halves: one sub-block of each warpgroup, the work of a 128-row tile.
        halves = ceil_div(2 * plan.split_tail_tiles, plan.num_sms)
        half = tile_seconds(plan.block_m // 2, plan.block_n, plan.k, plan.multicast)
        return plan.num_tiles // plan.num_sms * tile + halves * half
    waves = ceil_div(max(plan.num_tiles, 1), plan.num_sms)
    return waves * tile


def estimate_seconds(plan: GemmPlan) -> float:
    rows = plan.m if plan.mode != "masked" else plan.expected_m
    groups_a = plan.num_groups if plan.mode == "masked" else 1
    dram = (groups_a * rows * plan.k + plan.num_groups * plan.n * plan.k + groups_a * rows * plan.n * 2) / DRAM_BYTES
    return max(tiles_seconds(plan), dram)


def _cluster_options(plan: GemmPlan, rows: int):
    """(cluster_size, multicast, inner_axis) choices that are legal for the plan's tile and can pay."""
    yield 1, "none", SINGLE_INNER_AXIS
    if plan.num_sms % 2:
        return
    many_waves = plan.num_tiles >= 2 * plan.num_sms and plan.num_m_blocks >= 2
    if (rows >= MULTICAST_MIN_ROWS or many_waves) and plan.num_tiles >= plan.num_sms:
        if plan.mode != "masked" and plan.num_m_blocks % 2 == 0:
            yield 2, "b", "m"
        if plan.num_n_blocks % 2 == 0:
            yield 2, "a", "n"


def candidate_plans(mode: str, m: int, n: int, k: int, num_groups: int, num_sms: int,
                    expected_m: int | None = None, smem_limit: int = MAX_SMEM_BYTES):
    """Every plan the heuristic considers for the shape, each one valid."""
    expected = m if expected_m is None else max(1, min(expected_m, m))
    rows = expected if mode == "masked" else m
    block_ms = [64] if rows <= 64 else [64, 128]
    if rows > 128 and (mode != "contiguous" or CONTIGUOUS_BLOCK_M_LIMIT >= 256):
        block_ms.append(256)
    for block_m in block_ms:
        for block_n in BLOCK_NS:
            if block_n > max(16, ceil_div(n, 16) * 16) or block_n > MAX_BLOCK_N[block_m]:
                continue
            if block_n >= WIDE_BLOCK_N and not WIDE_TILES:
                continue
            stages = max_stages(block_m, block_n, k, smem_limit)
            if stages < MIN_STAGES:
                continue
            base = GemmPlan(mode=mode, m=m, n=n, k=k, num_groups=num_groups, block_m=block_m, block_n=block_n,
                            num_stages=stages, cluster_size=1, multicast="none", inner_axis=SINGLE_INNER_AXIS,
                            band=BAND,
                            num_sms=num_sms - num_sms % 2 if num_sms > 1 else 1, expected_m=expected)
            for cluster_size, multicast, inner in _cluster_options(base, rows):
                plan = replace(base, cluster_size=cluster_size, multicast=multicast, inner_axis=inner,
                               overlap_promotion=base.allows_overlap)
                plan = with_output_in_stages(plan, smem_limit)
                if cluster_size == 1:
                    plan = replace(plan, num_sms=num_sms)
                plan.validate()
                yield plan


def l2_bytes_per_tile(plan: GemmPlan) -> float:
    """Bytes of A and B one tile reads from L2; the operand a pair multicasts counts half."""
    k_padded = ceil_div(plan.k, BLOCK_K) * BLOCK_K
    return k_padded * (plan.block_m * (0.5 if plan.multicast == "a" else 1.0)
                       + plan.block_n * (0.5 if plan.multicast == "b" else 1.0))


def _rank(plan: GemmPlan) -> tuple:
    # Memory-bound shapes tie on the first term: the shorter tile work then still wins. Compute-bound
    # tiles tie on both; of one tile, the plan that reads less from L2 then wins: multicasting the
    # larger operand, as the sweeps found (4096 x 7168 x 16384 at 256x128: pairs sharing A 695 us,
    # sharing B 716, none 713; 4096 x 2112 x 7168 at 128x176: 99.4, 100.5 and 101.4). Not in the
    # masked layout, whose pairs lost there (1 x 1024 x 7168 x 2048 at 256x128: 33.3 against 31.8 us).
    tie = plan.cluster_size if plan.mode == "masked" else l2_bytes_per_tile(plan)
    return (round(estimate_seconds(plan) * 1e9), round(tiles_seconds(plan) * 1e9), -plan.block_m * plan.block_n, tie)


def fit_grid(plan: GemmPlan) -> GemmPlan:
    """Fewer CTAs than SMs when there are fewer tiles: idle CTAs would only cost launch time."""
    if plan.mode != "masked" and plan.num_tiles < plan.num_sms:
        return replace(plan, num_sms=max(plan.cluster_size, plan.num_tiles + plan.num_tiles % plan.cluster_size))
    return plan


def with_b_evict_first(plan: GemmPlan) -> GemmPlan:
    """The plan with B's loads marked evict-first in L2 where few tiles read each box of B and B is
    not too big (B_EVICT_FIRST_MAX_READERS, B_EVICT_FIRST_MAX_BYTES)."""
    hint = plan.b_readers <= B_EVICT_FIRST_MAX_READERS and plan.b_bytes <= B_EVICT_FIRST_MAX_BYTES
    return replace(plan, b_evict_first=hint)


def with_early_start(plan: GemmPlan) -> GemmPlan:
    """The plan with the next tile's first wgmma issued before the epilogue's stores where that was
    timed faster: the contiguous layout at EARLY_START_MIN_K_BLOCKS or more, one-accumulator loop."""
    early = (plan.mode == "contiguous" and plan.num_k_blocks >= EARLY_START_MIN_K_BLOCKS
             and plan.allows_early_start)
    return replace(plan, early_start=early)


def with_split_tail(plan: GemmPlan) -> GemmPlan:
    """The plan with its partial last wave's tiles split in halves where the kernel allows it and the
    halves fit in one wave (SPLIT_TAIL)."""
    rest = plan.partial_wave_tiles
    split = SPLIT_TAIL and plan.allows_split_tail and 0 < rest and 2 * rest <= plan.num_sms
    return replace(plan, split_tail=split)


def finished(plan: GemmPlan) -> GemmPlan:
    """A ranked candidate as it is launched: grid fitted, then the options timed per layout and shape."""
    return with_split_tail(with_early_start(with_b_evict_first(fit_grid(plan))))


def ranked_plans(mode: str, m: int, n: int, k: int, num_groups: int, num_sms: int,
                 expected_m: int | None = None, smem_limit: int = MAX_SMEM_BYTES) -> list[GemmPlan]:
    """Every candidate, best first by the model, each finished as it would be launched (grid fitted,
    B's hint, early start; autotuning times the first few of these)."""
    plans = sorted(candidate_plans(mode, m, n, k, num_groups, num_sms, expected_m, smem_limit), key=_rank)
    if not plans:
        raise ValueError(f"no kernel plan fits {mode} m={m} n={n} k={k} in {smem_limit} bytes of shared memory")
    return [finished(plan) for plan in plans]


def choose_plan(mode: str, m: int, n: int, k: int, num_groups: int, num_sms: int,
                expected_m: int | None = None, smem_limit: int = MAX_SMEM_BYTES) -> GemmPlan:
    """The plan with the smallest estimated time; ties go to less tile work, bigger tiles, no cluster."""
    best = min(candidate_plans(mode, m, n, k, num_groups, num_sms, expected_m, smem_limit), key=_rank, default=None)
    if best is None:
        raise ValueError(f"no kernel plan fits {mode} m={m} n={n} k={k} in {smem_limit} bytes of shared memory")
    return finished(best)

"""The kernel's persistent tile walk (scheduler.cuh) in Python, for tests and for inspection."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

from pydg.scheduler.plan import GemmPlan
from pydg.utils import ceil_div


@dataclass(frozen=True)
class Tile:
    m_block: int
    n_block: int
    group: int
    rows: int    # rows the kernel may write
    skip: bool   # contiguous padding block: no work, nothing written
    # Contiguous pairs sharing B (scheduler.cuh): a padding block beside the peer's real one turns
    # the pipeline over with no loads or math (idle); blocks of different experts load B each.
    idle: bool = False
    own_b: bool = False
    # Split tail: 0 for a whole tile, 1 + s for sub-block s's half (rows s * block_m / 2 on).
    half: int = 0


def fast_divisor(d: int) -> tuple[int, int]:
    """scheduler.cuh's FastDiv of d: d and the multiplier m = (2**32 - 1) // d."""
    d = max(d, 1)
    return d, 0xFFFFFFFF // d


def fast_div(n: int, divisor: tuple[int, int]) -> int:
    """n // d as FastDiv::div computes it: the high word of n * m is n // d or one less."""
    d, m = divisor
    q = (n * m) >> 32
    return q + 1 if n - q * d >= d else q


def raster_divisors(plan: GemmPlan) -> tuple[int, ...]:
    """The kernel's RasterDivisors parameter (scheduler.cuh) for a dense or contiguous grid, as eight
    words: tiles per band, the band's width and the last band's width (each as d and multiplier),
    the last band's index and the number of tiles. (Masked launches carry them unused.)"""
    inner_count, outer_count = _axes(plan, plan.num_m_blocks)
    last_band = (inner_count - 1) // plan.band if inner_count else 0
    return (*fast_divisor(plan.band * outer_count), *fast_divisor(plan.band),
            *fast_divisor(inner_count - last_band * plan.band), last_band, plan.num_m_blocks * plan.num_n_blocks)


def _axes(plan: GemmPlan, num_m_blocks: int) -> tuple[int, int]:
    """Blocks of the raster's inner and outer axes."""
    if plan.inner_axis == "m":
        return num_m_blocks, plan.num_n_blocks
    return plan.num_n_blocks, num_m_blocks


def _place(plan: GemmPlan, band_idx: int, local: int, outer: int, width: int) -> tuple[int, int]:
    inner = band_idx * plan.band + local - outer * width
    return (inner, outer) if plan.inner_axis == "m" else (outer, inner)


def raster(plan: GemmPlan, index: int, divisors: tuple[int, ...]) -> tuple[int, int]:
    """(m_block, n_block) of tile `index` of a dense or contiguous grid, with the kernel's divisions
    (`divisors`: raster_divisors(plan))."""
    band_tiles, band_width, last_width, last_band = divisors[0:2], divisors[2:4], divisors[4:6], divisors[6]
    band_idx = fast_div(index, band_tiles)
    local = index - band_idx * band_tiles[0]
    width = last_width if band_idx == last_band else band_width
    return _place(plan, band_idx, local, fast_div(local, width), width[0])


def raster_group(plan: GemmPlan, index: int, num_m_blocks: int) -> tuple[int, int]:
    """The same walk within a masked group of num_m_blocks blocks of rows (plain divisions)."""
    inner_count, outer_count = _axes(plan, num_m_blocks)
    band_tiles = plan.band * outer_count
    band_idx = index // band_tiles
    local = index - band_idx * band_tiles
    width = min(plan.band, inner_count - band_idx * plan.band)
    return _place(plan, band_idx, local, local // width, width)


def cta_tiles(plan: GemmPlan, cta: int, grouping: Sequence[int] = ()) -> Iterator[Tile]:
    """The tiles CTA `cta` processes, in order. `grouping` is m_indices (contiguous) or masked_m."""
    index = cta
    if plan.mode == "masked":
        group, first_tile = 0, 0
        while group < plan.num_groups:
            valid = min(max(int(grouping[group]), 0), plan.m)
            num_m_blocks = ceil_div(valid, plan.block_m)
            tiles = num_m_blocks * plan.num_n_blocks
            if index < first_tile + tiles:
                m_block, n_block = raster_group(plan, index - first_tile, num_m_blocks)
                yield Tile(m_block, n_block, group, min(plan.block_m, valid - m_block * plan.block_m), False)
                index += plan.num_sms
            else:
                first_tile += tiles
                group += 1
        return
    divisors = raster_divisors(plan)
    split_first = plan.num_tiles - plan.split_tail_tiles
    while index < split_first:
        m_block, n_block = raster(plan, index, divisors)
        if plan.mode != "contiguous":
            yield Tile(m_block, n_block, 0, plan.block_m, False)
        else:
            expert = _block_expert(plan, grouping, m_block)
            group = max(expert, 0)
            if plan.multicast == "b":
                peer = _block_expert(plan, grouping, m_block ^ 1)
                yield Tile(m_block, n_block, group, plan.block_m, expert < 0 and peer < 0,
                           idle=expert < 0 <= peer, own_b=expert != peer)
            else:
                yield Tile(m_block, n_block, group, plan.block_m, expert < 0)
        index += plan.num_sms
    while plan.split_tail and index < split_first + 2 * plan.split_tail_tiles:
        yield _half_tile(plan, index - split_first, split_first, divisors)
        index += plan.num_sms


def _half_tile(plan: GemmPlan, unit: int, split_first: int, divisors: tuple[int, ...]) -> Tile:
    """Half unit `unit` of the split tail (TileScheduler::next past split_first): a cluster's CTAs
    take the same half of the pair's two tiles."""
    cluster_unit, rank = divmod(unit, plan.cluster_size)
    half = 1 + cluster_unit % 2
    m_block, n_block = raster(plan, split_first + cluster_unit // 2 * plan.cluster_size + rank, divisors)
    first_row = m_block * plan.block_m + (half - 1) * (plan.block_m // 2)
    rows = max(0, min(plan.block_m // 2, plan.m - first_row))
    return Tile(m_block, n_block, 0, rows, False, half=half)


def _block_expert(plan: GemmPlan, m_indices: Sequence[int], m_block: int) -> int:
    expert = int(m_indices[m_block * plan.block_m])
    return -1 if expert < 0 or expert >= plan.num_groups else expert

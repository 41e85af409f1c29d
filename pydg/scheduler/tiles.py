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


def raster(plan: GemmPlan, index: int, num_m_blocks: int) -> tuple[int, int]:
    inner_count = num_m_blocks if plan.inner_axis == "m" else plan.num_n_blocks
    outer_count = plan.num_n_blocks if plan.inner_axis == "m" else num_m_blocks
    band_tiles = plan.band * outer_count
    band_idx = index // band_tiles
    first = band_idx * plan.band
    width = min(plan.band, inner_count - first)
    local = index - band_idx * band_tiles
    inner, outer = first + local % width, local // width
    return (inner, outer) if plan.inner_axis == "m" else (outer, inner)


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
                m_block, n_block = raster(plan, index - first_tile, num_m_blocks)
                yield Tile(m_block, n_block, group, min(plan.block_m, valid - m_block * plan.block_m), False)
                index += plan.num_sms
            else:
                first_tile += tiles
                group += 1
        return
    total = plan.num_m_blocks * plan.num_n_blocks
    while index < total:
        m_block, n_block = raster(plan, index, plan.num_m_blocks)
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


def _block_expert(plan: GemmPlan, m_indices: Sequence[int], m_block: int) -> int:
    expert = int(m_indices[m_block * plan.block_m])
    return -1 if expert < 0 or expert >= plan.num_groups else expert

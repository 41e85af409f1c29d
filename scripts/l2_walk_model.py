"""How many bytes the heuristic's plan of a shape would read from device memory if L2 were one LRU
cache of --l2-mb megabytes: a CPU model of the tile walk, not a measurement. The default, 25, is one
of the H100's two 25 MB partitions, not the whole 50: against ncu's DRAM bytes (H100, 2026-12-07,
bench/NOTES.md) 25 MB gives 1307 MB for contiguous 8 x 4096 x 4096 x 7168 (measured 1240) and 570 for
4096 x 7168 x 16384 (measured 580), where 50 MB gave 715 and 570.
The CTAs step together, one tile each, and within a tile one k-block each: every k-block touches A's
box and B's box (a pair sharing B by multicast touches B once), every tile then writes its output
tile into L2. It ignores L2's sectors, the scales and timing; it says whether two walks move
different bytes, which ncu's DRAM counters then confirm or not.
usage: python scripts/l2_walk_model.py [--l2-mb N] SHAPE [SHAPE ...]
SHAPE: M,N,K (dense), contiguous:G,M,N,K or masked:G,M,N,K (M rows per group, every group full)."""
import sys
from collections import OrderedDict
from dataclasses import dataclass

from pydg.scheduler import choose_plan
from pydg.scheduler.plan import GemmPlan
from pydg.scheduler.tiles import cta_tiles


@dataclass(frozen=True)
class Shape:
    mode: str
    groups: int
    m_per_group: int
    n: int
    k: int

    @property
    def label(self) -> str:
        dims = f"{self.m_per_group},{self.n},{self.k}"
        return dims if self.mode == "dense" else f"{self.mode}:{self.groups},{dims}"


def parse_shape(text: str) -> Shape:
    mode, _, dims = text.rpartition(":")
    values = [int(v) for v in dims.split(",")]
    if not mode:
        return Shape("dense", 1, *values)
    return Shape(mode, *values)


def plan_and_grouping(shape: Shape, num_sms: int = 132) -> tuple[GemmPlan, list[int]]:
    if shape.mode == "contiguous":
        m = shape.groups * shape.m_per_group
        plan = choose_plan("contiguous", m, shape.n, shape.k, shape.groups, num_sms)
        return plan, [g for g in range(shape.groups) for _ in range(shape.m_per_group)]
    if shape.mode == "masked":
        plan = choose_plan("masked", shape.m_per_group, shape.n, shape.k, shape.groups, num_sms,
                           expected_m=shape.m_per_group)
        return plan, [shape.m_per_group] * shape.groups
    return choose_plan("dense", shape.m_per_group, shape.n, shape.k, 1, num_sms), []


class LruCache:
    def __init__(self, capacity: int):
        self.capacity, self.used, self.missed = capacity, 0, 0
        self.lines: OrderedDict = OrderedDict()

    def touch(self, key: tuple, size: int, read: bool = True) -> None:
        if key in self.lines:
            self.lines.move_to_end(key)
            return
        if read:
            self.missed += size
        self.lines[key] = size
        self.used += size
        while self.used > self.capacity:
            self.used -= self.lines.popitem(last=False)[1]


def device_reads(plan: GemmPlan, grouping: list[int], l2_bytes: int) -> int:
    """Bytes of A and B the walk misses in the model's L2."""
    walks = [list(cta_tiles(plan, cta, grouping)) for cta in range(plan.num_sms)]
    a_box, b_box = plan.block_m * plan.block_k, plan.block_n * plan.block_k
    out_tile = plan.block_m * plan.block_n * 2
    cache, written = LruCache(l2_bytes), 0
    for step in range(max(len(walk) for walk in walks)):
        active = [(cta, walk[step]) for cta, walk in enumerate(walks)
                  if step < len(walk) and not walk[step].skip and not walk[step].idle]
        for kb in range(plan.num_k_blocks):
            for cta, tile in active:
                a_group = tile.group if plan.mode == "masked" else 0
                cache.touch(("A", a_group, tile.m_block, kb), a_box)
                if plan.multicast == "b" and not tile.own_b and cta % 2 == 1:
                    continue  # the pair's first CTA loads B for both
                cache.touch(("B", tile.group, tile.n_block, kb), b_box)
        for _ in active:
            written += 1
            cache.touch(("D", written), out_tile, read=False)
    return cache.missed


def main(argv: list[str]) -> None:
    l2_mb = 25
    if argv[:1] == ["--l2-mb"]:
        l2_mb, argv = int(argv[1]), argv[2:]
    if not argv:
        sys.exit(__doc__)
    for text in argv:
        shape = parse_shape(text)
        plan, grouping = plan_and_grouping(shape)
        reads = device_reads(plan, grouping, l2_mb << 20)
        once = shape.groups * (shape.m_per_group + shape.n) * shape.k
        print(f"{shape.label:>28}  {reads / 1e6:8.0f} MB read ({reads / once:.2f}x A and B once)  | {plan.summary()}")


if __name__ == "__main__":
    main(sys.argv[1:])

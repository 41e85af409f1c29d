"""What one GEMM call will do on the GPU, as a plain object that needs no GPU to build or read."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from pydg.layout import CONTIGUOUS_M_ALIGNMENT
from pydg.utils import align, ceil_div

BLOCK_K = 128            # one scale block of K per pipeline stage
MAX_SMEM_BYTES = 232448  # Hopper's opt-in shared memory per block (227 KiB)
MODES = ("dense", "contiguous", "masked")
BLOCK_MS = (64, 128, 256)
# A contiguous-layout block of rows must belong to one expert: no taller than the segment alignment.
CONTIGUOUS_BLOCK_M_LIMIT = CONTIGUOUS_M_ALIGNMENT
MODE_IDS = {"dense": 0, "contiguous": 1, "masked": 2}


def b_scale_blocks_per_tile(block_n: int) -> int:
    """How many of B's 128-row scale blocks one tile's columns can span: tiles start at multiples of
    block_n, so at multiples of gcd(block_n, 128) within a block (a 176-wide tile spans up to three)."""
    latest_start = 128 - math.gcd(block_n, 128)
    return ceil_div(latest_start + block_n, 128)


def smem_bytes(block_m: int, block_n: int, num_stages: int, k: int, output_in_stages: bool = False) -> int:
    """Shared memory of the kernel: output tile (none where it is staged in the A slots of the
    stages), then per stage A, B and A's scales, then B's scales of the whole tile (every 128 of K),
    then barriers. Mirrors SmemLayout in fp8_gemm.cuh (which asserts that it fits in this)."""
    output = 0 if output_in_stages else block_m * block_n * 2
    stage = block_m * BLOCK_K + block_n * BLOCK_K + block_m * 4
    b_scales = ceil_div(b_scale_blocks_per_tile(block_n) * ceil_div(k, BLOCK_K) * 4, 16) * 16
    return output + num_stages * stage + b_scales + 2 * num_stages * 8


@dataclass(frozen=True)
class GemmPlan:
    """The launch plan of one GEMM shape.

    m is the rows of A per group: M (dense), M_sum (contiguous) or M_max (masked).
    multicast: which operand a cluster pair loads once for both CTAs ("a", "b" or "none").
    inner_axis/band: tiles are walked in bands of `band` blocks of the inner axis (see
    scheduler.cuh); a pair is two consecutive tiles, which share the outer axis' block.
    overlap_promotion: each warpgroup issues the next 128 of K's wgmma before it promotes the
    current one, into a second accumulator set. The heuristic sets it wherever the tile allows it
    (block_m <= 128, block_n a divisor of 128). Timed against the one-accumulator loop on the
    H100 in one process (scripts/plan_sweep.py --plain): 0-3% faster on tiles 64 or more wide,
    within +-1.5% on narrower ones.
    output_in_stages: the output tile is staged for its TMA store in the A slots of the tile's last
    block_n / 64 stages (held until the store has read them) rather than in an area of its own,
    which leaves room for more stages (see allows_output_in_stages).
    early_start: the epilogue issues the next tile's first wgmma before its stmatrix stores and
    waits for it after them, so the tensor cores work through the stores (one-accumulator loop
    only, see allows_early_start). The heuristic takes it in the contiguous layout at long K, where
    it was timed faster (heuristics.with_early_start).
    b_evict_first: B's loads carry an L2 evict-first policy (heuristics.with_b_evict_first sets it
    where few tiles read each box of B, b_readers, and B is not too big, b_bytes).
    split_tail: dense 256-row tiles only. The tiles of the partial last wave (split_tail_tiles) run as
    two 128-row halves each, on twice as many CTAs, which would otherwise idle through that wave: the
    last wave then takes about half a tile's time. A half tile is one sub-block of each warpgroup,
    stored from the math threads (see allows_split_tail).
    """

    mode: str
    m: int
    n: int
    k: int
    num_groups: int
    block_m: int
    block_n: int
    num_stages: int
    cluster_size: int
    multicast: str
    inner_axis: str
    band: int
    num_sms: int
    expected_m: int
    block_k: int = field(default=BLOCK_K)
    overlap_promotion: bool = False
    output_in_stages: bool = False
    early_start: bool = False
    b_evict_first: bool = False
    split_tail: bool = False

    @property
    def num_math_groups(self) -> int:
        """Math warpgroups: one per 64 rows, at most two (a 256-row tile gives each two sub-blocks)."""
        return 1 if self.block_m == 64 else 2

    @property
    def allows_overlap(self) -> bool:
        """Whether overlapped promotion fits: one 64-row sub-block per warpgroup (block_m <= 128) and
        a width that divides 128, which also keeps its three accumulator fragments of block_n / 2
        floats per thread within the registers. Other widths straddle B's scale blocks and get one
        copy of their k-loop per split column: copies of the overlapped loop took up to 4.4 s each to
        compile (64x112, 2-core machine), past the 3 s a kernel may take, where the one-accumulator
        loop's take 0.7 s."""
        return self.block_m <= 128 and 128 % self.block_n == 0

    @property
    def held_stages(self) -> int:
        """Stages that stage the output with output_in_stages: one per 64-column chunk, each chunk
        (block_m rows of 128 bytes) the size of a stage's A slot."""
        return self.block_n // 64 if self.output_in_stages else 0

    @property
    def allows_output_in_stages(self) -> bool:
        """The output tile fits in A slots (64-column chunks), the tile has a k-block per chunk, and
        the one-accumulator loop runs (fp8_gemm.cuh's static_assert; overlapped promotion releases its
        stages in a loop of its own). Whether the freed area buys a stage is the caller's question:
        the stages must exceed the chunks, so the next tile can start while the store reads them."""
        return self.block_n % 64 == 0 and self.num_k_blocks >= self.block_n // 64 and not self.overlap_promotion

    @property
    def allows_early_start(self) -> bool:
        """The early start runs in the one-accumulator loop; the overlapped one keeps both
        accumulator sets in flight across k-blocks (fp8_gemm.cuh's static_assert)."""
        return not self.overlap_promotion

    @property
    def partial_wave_tiles(self) -> int:
        """Tiles of the walk's last wave when it is partial (0 when the waves are whole)."""
        return self.num_tiles % self.num_sms

    @property
    def allows_split_tail(self) -> bool:
        """Half tiles are the two sub-blocks of a 256-row dense tile, in the one-accumulator loop with the
        output in its own area and without the early start (fp8_gemm.cuh's static_assert)."""
        return (self.mode == "dense" and self.block_m == 256
                and not (self.overlap_promotion or self.output_in_stages or self.early_start))

    @property
    def split_tail_tiles(self) -> int:
        """Tiles run as halves: those of the partial last wave (the kernel's split_first onwards)."""
        return self.partial_wave_tiles if self.split_tail else 0

    @property
    def tail_rows(self) -> int:
        """Rows of A (and of its scales) that the last block of rows loads per stage when a dense M
        ends inside it: the rows left, rounded up to 16 (0: no such block). A whole box would be
        mostly TMA's zero fill, which costs the H100 time (fp8_gemm.cuh computes the same)."""
        rest = self.m % self.block_m
        rows = align(rest, 16)
        return rows if self.mode == "dense" and rest and rows < self.block_m else 0

    @property
    def output_chunk_cols(self) -> int:
        """Columns of D per TMA store: the output tile is staged as chunks of 64, 32 or 16 columns,
        the widest that divides block_n (OutputTile in fp8_gemm.cuh)."""
        return next(cols for cols in (64, 32, 16) if self.block_n % cols == 0)

    @property
    def output_swizzle(self) -> str:
        """The output chunks' swizzle: their row size (128, 64 or 32 bytes)."""
        return f"{self.output_chunk_cols * 2}B"

    @property
    def threads(self) -> int:
        return (self.num_math_groups + 1) * 128

    @property
    def smem_bytes(self) -> int:
        return smem_bytes(self.block_m, self.block_n, self.num_stages, self.k, self.output_in_stages)

    @property
    def num_m_blocks(self) -> int:
        return ceil_div(self.m, self.block_m)

    @property
    def num_n_blocks(self) -> int:
        return ceil_div(self.n, self.block_n)

    @property
    def num_k_blocks(self) -> int:
        return ceil_div(self.k, self.block_k)

    @property
    def num_tiles(self) -> int:
        """Tiles the walk covers (masked: the hint's estimate, the kernel reads masked_m itself)."""
        if self.mode == "masked":
            return self.num_groups * ceil_div(self.expected_m, self.block_m) * self.num_n_blocks
        return self.num_m_blocks * self.num_n_blocks

    @property
    def b_readers(self) -> int:
        """Tiles that read one box of B (one group's block of columns): the row blocks of a group.
        Masked groups count the hint's rows; contiguous experts are taken as one (their sizes are the
        GPU's to read), an upper bound."""
        rows = self.expected_m if self.mode == "masked" else self.m
        return ceil_div(rows, self.block_m)

    @property
    def b_bytes(self) -> int:
        """Bytes of B (E4M3) the GEMM reads, all groups."""
        return self.num_groups * self.n * self.k

    @property
    def grid(self) -> tuple[int, int, int]:
        return (self.num_sms, 1, 1)

    @property
    def block(self) -> tuple[int, int, int]:
        return (self.threads, 1, 1)

    @property
    def waves(self) -> float:
        return self.num_tiles / self.num_sms

    def defines(self) -> dict[str, str]:
        """The kernel's compile-time values (fp8_gemm.cu's -D options)."""
        return {
            "PYDG_MODE": str(MODE_IDS[self.mode]),
            "PYDG_BLOCK_M": str(self.block_m),
            "PYDG_BLOCK_N": str(self.block_n),
            "PYDG_NUM_STAGES": str(self.num_stages),
            "PYDG_SHAPE_N": str(self.n),
            "PYDG_SHAPE_K": str(self.k),
            "PYDG_CLUSTER_SIZE": str(self.cluster_size),
            "PYDG_MULTICAST": {"none": "0", "a": "1", "b": "2"}[self.multicast],
            "PYDG_INNER_IS_M": "true" if self.inner_axis == "m" else "false",
            "PYDG_OVERLAP_PROMOTION": "true" if self.overlap_promotion else "false",
            "PYDG_OUTPUT_IN_STAGES": "true" if self.output_in_stages else "false",
            "PYDG_EARLY_START": "true" if self.early_start else "false",
            "PYDG_B_EVICT_FIRST": "true" if self.b_evict_first else "false",
            "PYDG_SPLIT_TAIL": "true" if self.split_tail else "false",
            "PYDG_SMEM_BYTES": str(self.smem_bytes),
        }

    def summary(self) -> str:
        cluster = f"cluster {self.cluster_size} (multicast {self.multicast})" if self.cluster_size > 1 else "no cluster"
        return (f"{self.mode} block {self.block_m}x{self.block_n}x{self.block_k}, {self.num_stages} stages, "
                f"{cluster}, {self.num_sms} SMs, {self.num_tiles} tiles ({self.waves:.2f} waves), "
                f"raster {self.inner_axis}-inner band {self.band}, {self.smem_bytes} B smem"
                + (", overlapped promotion" if self.overlap_promotion else "")
                + (f", output staged in {self.held_stages} stages" if self.output_in_stages else "")
                + (", next tile started early" if self.early_start else "")
                + (", B evict-first in L2" if self.b_evict_first else "")
                + (f", last {self.split_tail_tiles} tiles split in halves" if self.split_tail else "")
                + (f", last block loads {self.tail_rows} rows of A" if self.tail_rows else ""))

    def validate(self) -> None:
        """Internal consistency; heuristics only emit plans that pass (tests check every one)."""
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode {self.mode!r}")
        if self.block_m not in BLOCK_MS:
            problems.append(f"block_m {self.block_m}")
        if self.block_m > CONTIGUOUS_BLOCK_M_LIMIT and self.mode == "contiguous":
            problems.append(f"block_m {self.block_m} > the contiguous layout's alignment {CONTIGUOUS_BLOCK_M_LIMIT}")
        if self.block_n % 16 or not 16 <= self.block_n <= 256:
            problems.append(f"block_n {self.block_n}")
        if self.smem_bytes > MAX_SMEM_BYTES:
            problems.append(f"smem {self.smem_bytes} > {MAX_SMEM_BYTES}")
        if self.cluster_size not in (1, 2):
            problems.append(f"cluster_size {self.cluster_size}")
        if self.cluster_size == 2:
            if self.num_sms % 2:
                problems.append("odd grid with a cluster of 2")
            if self.band % 2:
                problems.append("odd band with a cluster of 2")
            if self.multicast == "a" and (self.inner_axis != "n" or self.num_n_blocks % 2):
                problems.append("multicast a needs n inner and an even number of n blocks")
            # Pairs sharing B hold m blocks 2i and 2i + 1 (scheduler.cuh): the masked layout's
            # blocks per group follow masked_m, which only the GPU reads.
            if self.multicast == "b" and (self.inner_axis != "m" or self.num_m_blocks % 2 or self.mode == "masked"):
                problems.append("multicast b needs dense or contiguous, m inner and an even number of m blocks")
        elif self.multicast != "none":
            problems.append("multicast without a cluster")
        if self.overlap_promotion and not self.allows_overlap:
            problems.append("overlapped promotion needs block_m <= 128 and a block_n that divides 128")
        if self.output_in_stages and not (self.allows_output_in_stages and self.num_stages > self.held_stages):
            problems.append("output in stages needs block_n a multiple of 64, a k-block and a stage per 64 columns "
                            "and one stage more, and no overlapped promotion")
        if self.early_start and not self.allows_early_start:
            problems.append("early start needs the one-accumulator loop (no overlapped promotion)")
        if self.split_tail and not self.allows_split_tail:
            problems.append("split tail needs dense 256-row tiles, the one-accumulator loop, the output in its own "
                            "area and no early start")
        if problems:
            raise ValueError("invalid plan: " + "; ".join(problems))

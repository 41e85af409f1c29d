"""The Python side of fp8_gemm.cu: its tensor maps, its parameters, and a prepared launcher."""
from __future__ import annotations

from dataclasses import dataclass

from pydg.arrays import ArrayInfo
from pydg.scheduler.plan import BLOCK_K, GemmPlan
from pydg.scheduler.tiles import raster_divisors
from pydg.tma.spec import TensorMapSpec
from pydg.utils import align, ceil_div

# Parameter slots of pydg_fp8_gemm (fp8_gemm.cu).
(MAP_A, MAP_B, MAP_SA, MAP_D, MAP_A_TAIL, MAP_SA_TAIL, PTR_SB, PTR_D, PTR_GROUPING, SHAPE_M, NUM_GROUPS,
 BAND, RASTER) = range(13)
# Each map's slot and the pointer (index into the pointers of a call) it is encoded from.
MAP_POINTERS = ((MAP_A, 0), (MAP_SA, 1), (MAP_B, 2), (MAP_D, 4), (MAP_A_TAIL, 0), (MAP_SA_TAIL, 1))


@dataclass(frozen=True)
class GemmOperands:
    """The five arrays (and the grouping vector) of a call, as ArrayInfo."""
    a: ArrayInfo
    sa: ArrayInfo
    b: ArrayInfo
    sb: ArrayInfo
    out: ArrayInfo
    grouping: ArrayInfo | None = None


def _row_bytes(info: ArrayInfo, itemsize: int, default: int) -> int:
    """Bytes between rows (dimension -2); a dimension of one row may carry any stride, so use `default`."""
    return info.strides[-2] * itemsize if info.shape[-2] > 1 else default


def tensor_map_specs(plan: GemmPlan, ops: GemmOperands) -> tuple[TensorMapSpec, ...]:
    """A, B, A's scales and D as 3-D maps (innermost first); the third dimension is the group
    (1 where the operand is not grouped). Addresses are the operands' current pointers. Where a
    dense M ends inside its last block of rows (plan.tail_rows), A and its scales again, with boxes
    of that block's rows: the kernel's parameters in slot order."""
    m, n, k = plan.m, plan.n, plan.k
    k_blocks = ceil_div(k, BLOCK_K)
    groups_a = plan.num_groups if plan.mode == "masked" else 1
    groups_b = 1 if plan.mode == "dense" else plan.num_groups

    a_row = _row_bytes(ops.a, 1, k)
    a_group = ops.a.strides[0] if groups_a > 1 else a_row * m
    b_row = _row_bytes(ops.b, 1, k)
    b_group = ops.b.strides[0] if groups_b > 1 else b_row * n
    m_aligned = align(m, 4)

    def lhs(name: str, rows: int) -> TensorMapSpec:
        return TensorMapSpec(name, "uint8", ops.a.ptr, (k, m, groups_a), (a_row, a_group), (BLOCK_K, rows, 1),
                             swizzle="128B")

    def lhs_scales(name: str, rows: int) -> TensorMapSpec:
        return TensorMapSpec(name, "float32", ops.sa.ptr, (m, k_blocks, groups_a),
                             (m_aligned * 4, m_aligned * k_blocks * 4), (rows, 1, 1), l2_promotion="none")

    rows = plan.tail_rows
    tail = (lhs("lhs data tail", rows), lhs_scales("lhs scales tail", rows)) if rows else ()
    return (
        lhs("lhs data", plan.block_m),
        TensorMapSpec("rhs data", "uint8", ops.b.ptr, (k, n, groups_b), (b_row, b_group), (BLOCK_K, plan.block_n, 1),
                      swizzle="128B"),
        lhs_scales("lhs scales", plan.block_m),
        # Stored in chunks of output_chunk_cols columns, swizzled as the kernel's OutputTile wrote them.
        TensorMapSpec("out", "bfloat16", ops.out.ptr, (n, m, groups_a), (n * 2, m * n * 2),
                      (plan.output_chunk_cols, plan.block_m, 1), swizzle=plan.output_swizzle,
                      l2_promotion="none"),
    ) + tail


class GemmLauncher:
    """Everything about one shape that does not depend on the data: plan, function, launch config,
    tensor-map templates. A call patches pointers (re-encoding a map only when its pointer moved)."""

    def __init__(self, plan: GemmPlan, ops: GemmOperands, device: int):
        from pydg.driver.launch import KernelLaunch
        from pydg.driver.module import get_function
        from pydg.kernels.source import KERNEL_NAME, PARAMS, compile_plan

        self.plan = plan
        self.kernel = compile_plan(plan)
        func = get_function(device, self.kernel.key, self.kernel.cubin, KERNEL_NAME, plan.smem_bytes)
        self.launch = KernelLaunch(func, plan.grid, plan.block, plan.smem_bytes, plan.cluster_size, PARAMS)
        self.launch.set_value(SHAPE_M, plan.m)
        self.launch.set_value(NUM_GROUPS, plan.num_groups)
        self.launch.set_value(BAND, plan.band)
        self.launch.set_words(RASTER, raster_divisors(plan))
        self.specs = tensor_map_specs(plan, ops)
        for spec in self.specs:
            spec.validate()
        # Without a partial last block of rows the kernel never reads the tail slots: they get
        # copies of A's maps rather than encodes of their own.
        self._copies = {} if plan.tail_rows else {MAP_A: MAP_A_TAIL, MAP_SA: MAP_SA_TAIL}
        self._encoded = [None] * len(self.specs)  # keeps each CUtensorMap alive while its bytes are in use
        self.pointers: tuple[int, ...] = ()  # those the parameters hold now

    def set_pointers(self, pointers: tuple[int, ...]) -> None:
        """pointers: a, sa, b, sb, out, grouping (0 for the dense GEMM)."""
        from pydg.tma.encode import encode

        previous = self.pointers or (None,) * 6
        for slot, arg in MAP_POINTERS[:len(self.specs)]:
            if pointers[arg] != previous[arg]:
                self._encoded[slot] = encode(self.specs[slot].with_address(pointers[arg]))
                self.launch.set_tensor_map(slot, self._encoded[slot].getPtr())
                if slot in self._copies:
                    self.launch.set_tensor_map(self._copies[slot], self._encoded[slot].getPtr())
        self.launch.set_value(PTR_SB, pointers[3])
        self.launch.set_value(PTR_D, pointers[4])
        self.launch.set_value(PTR_GROUPING, pointers[5])
        self.pointers = pointers

    def __call__(self, pointers: tuple[int, ...], stream: int) -> None:
        if pointers != self.pointers:
            self.set_pointers(pointers)
        self.launch.launch(stream)

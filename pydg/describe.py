"""What a call of a given shape will do, as plain objects, on any machine (a GPU is not needed)."""
from __future__ import annotations

from dataclasses import dataclass

from pydg.arrays import ArrayInfo
from pydg.kernels.fp8_gemm import GemmOperands, tensor_map_specs
from pydg.scheduler.heuristics import choose_plan
from pydg.scheduler.plan import GemmPlan
from pydg.tma.spec import TensorMapSpec
from pydg.utils import align, ceil_div


@dataclass(frozen=True)
class CallDescription:
    plan: GemmPlan
    tensor_maps: tuple[TensorMapSpec, ...]  # with placeholder address 0 until a call supplies pointers
    cache_key: str | None
    registers: int | None
    spill_bytes: int | None
    stack_frame_bytes: int | None

    def summary(self) -> str:
        lines = [self.plan.summary()]
        if self.registers is not None:
            lines.append(f"kernel {self.cache_key}: {self.registers} registers, {self.spill_bytes} B spilled, "
                         f"{self.stack_frame_bytes} B stack")
        for spec in self.tensor_maps:
            lines.append(f"  tma {spec.name}: {spec.dtype} dims {spec.global_dims} box {spec.box_dims} "
                         f"swizzle {spec.swizzle}")
        return "\n".join(lines)


def _contiguous(shape: tuple[int, ...], dtype: str) -> ArrayInfo:
    strides, step = [], 1
    for d in reversed(shape):
        strides.insert(0, step)
        step *= d
    return ArrayInfo(0, shape, tuple(strides), dtype, 0, "none")


def default_operands(mode: str, m: int, n: int, k: int, num_groups: int) -> GemmOperands:
    """Operands in the layouts the API documents, at address 0, for describing a shape."""
    kb = ceil_div(k, 128)
    grouped_a = mode == "masked"
    lead = (num_groups,) if grouped_a else ()
    lead_b = (num_groups,) if mode != "dense" else ()
    ma = align(m, 4)
    sa_strides = ((ma * kb,) if grouped_a else ()) + (1, ma)
    return GemmOperands(
        a=_contiguous(lead + (m, k), "uint8"),
        sa=ArrayInfo(0, lead + (m, kb), sa_strides, "float32", 0, "none"),
        b=_contiguous(lead_b + (n, k), "uint8"),
        sb=_contiguous(lead_b + (ceil_div(n, 128), kb), "float32"),
        out=_contiguous(lead + (m, n), "bfloat16"),
    )


def describe_gemm(m: int, n: int, k: int, *, mode: str = "dense", num_groups: int = 1,
                  expected_m: int | None = None, num_sms: int | None = None,
                  compile: bool = True) -> CallDescription:
    """The plan, tensor maps and (with compile=True, through NVRTC) the kernel's ptxas report for a
    call of this shape. m is M (dense), M_sum (contiguous) or M_max (masked)."""
    from pydg.gemm import get_num_sms

    plan = choose_plan(mode, m, n, k, num_groups, num_sms or get_num_sms(), expected_m=expected_m)
    maps = tensor_map_specs(plan, default_operands(mode, m, n, k, num_groups))
    key = registers = spills = stack = None
    if compile:
        from pydg.kernels.source import compile_plan

        kernel = compile_plan(plan)
        key, registers = kernel.key, kernel.ptxas.registers
        spills, stack = kernel.ptxas.spill_stores + kernel.ptxas.spill_loads, kernel.ptxas.stack_frame
    return CallDescription(plan, maps, key, registers, spills, stack)

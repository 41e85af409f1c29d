"""What a call of a given shape will do, as plain objects, on any machine (a GPU is not needed).

`plan_gemm`, `plan_m_grouped_contiguous` and `plan_m_grouped_masked` take the sizes of the
matching GEMM function and return a `CallPlan`: the scheduler's choice (block sizes, stages,
cluster and multicast, SMs, waves), the launch dimensions, the four tensor maps' encode parameters
(at address 0: a call supplies the pointers), the kernel's cache key and, where the kernel has been
compiled (in this process or in the disk cache; `compile=True` compiles it), ptxas's report.
Without a GPU the SM count is the `num_sms` argument, else `pydg.get_num_sms()` (132 without a GPU).
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

from pydg import log
from pydg.arrays import ArrayInfo
from pydg.kernels.fp8_gemm import GemmOperands, tensor_map_specs
from pydg.scheduler.heuristics import choose_plan
from pydg.scheduler.plan import GemmPlan
from pydg.tma.spec import TensorMapSpec
from pydg.utils import align, ceil_div
from pydg.validate import check_expected_m


@dataclass(frozen=True)
class KernelReport:
    """ptxas's report of a compiled kernel."""
    registers: int          # per thread
    spill_stores: int       # bytes
    spill_loads: int        # bytes
    stack_frame_bytes: int
    static_smem_bytes: int  # the tiles live in dynamic shared memory (CallPlan.smem_bytes)
    from_disk_cache: bool   # False: compiled by NVRTC in this process

    @property
    def spill_bytes(self) -> int:
        return self.spill_stores + self.spill_loads


@dataclass(frozen=True, repr=False)
class CallPlan:
    """What one call will do. `repr` (and `summary()`) prints it as a short readable report."""
    mode: str                      # "dense", "contiguous" or "masked"
    m: int                         # M (dense), M_sum (contiguous) or M_max (masked)
    n: int
    k: int
    num_groups: int
    expected_m: int | None         # masked only: the hint the tile estimate uses
    block_m: int
    block_n: int
    block_k: int
    num_stages: int
    overlap_promotion: bool        # the next 128 of K's wgmma is issued before this one is promoted
    tail_rows: int                 # rows of A the last block loads when a dense M ends inside it (0: none)
    output_held_stages: int        # stages whose A slots stage the output tile (0: an area of its own)
    cluster_size: int
    multicast: str                 # which operand a cluster pair loads once for both: "a", "b", "none"
    inner_axis: str                # tiles walk along this axis inside a band ("m" or "n")
    band: int
    sms_available: int | None      # what the plan was made for (None: not known to the caller)
    sms_used: int                  # persistent CTAs launched
    num_tiles: int                 # masked: estimated from expected_m (the kernel reads masked_m)
    waves: float                   # num_tiles / sms_used
    last_wave_utilisation: float   # share of the CTAs busy in the last wave
    split_tail_tiles: int          # the last tiles, each run as two 128-row halves on two CTAs (0: none)
    smem_bytes: int                # dynamic shared memory per CTA
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    cluster: tuple[int, int, int]
    tensor_maps: tuple[TensorMapSpec, ...]
    cache_key: str
    kernel: KernelReport | None    # None until the kernel is compiled (or found in the disk cache)
    plan: GemmPlan                 # the scheduler's object, as the kernel launch uses it

    # Names kept from describe_gemm's first result type.
    @property
    def registers(self) -> int | None:
        return None if self.kernel is None else self.kernel.registers

    @property
    def spill_bytes(self) -> int | None:
        return None if self.kernel is None else self.kernel.spill_bytes

    @property
    def stack_frame_bytes(self) -> int | None:
        return None if self.kernel is None else self.kernel.stack_frame_bytes

    def to_dict(self) -> dict:
        """Plain JSON-able values (for `pydg plan --json`)."""
        return asdict(self)

    def summary(self) -> str:
        groups = "" if self.mode == "dense" else f", {self.num_groups} groups"
        rows = {"dense": "M", "contiguous": "M_sum", "masked": "M_max"}[self.mode]
        hint = f", expected_m {self.expected_m}" if self.mode == "masked" else ""
        cluster = (f"{self.cluster_size} CTAs, multicast {self.multicast} "
                   f"({'A' if self.multicast == 'a' else 'B'} loaded once per pair)"
                   if self.cluster_size > 1 else "none (1 CTA)")
        sms = f"{self.sms_used} used" + (f" of {self.sms_available}" if self.sms_available is not None else "")
        estimated = " (estimated from expected_m)" if self.mode == "masked" else ""
        lines = [
            f"CallPlan: {self.mode} GEMM {rows}={self.m} N={self.n} K={self.k}{groups}{hint}",
            f"  block         {self.block_m} x {self.block_n} x {self.block_k} (M x N x K), {self.num_stages} stages, "
            f"{'overlapped promotion, ' if self.overlap_promotion else ''}"
            f"{f'last block loads {self.tail_rows} rows of A, ' if self.tail_rows else ''}"
            f"{f'output staged in {self.output_held_stages} stages, ' if self.output_held_stages else ''}"
            f"{self.block[0]} threads",
            f"  cluster       {cluster}",
            f"  raster        {self.inner_axis}-inner, bands of {self.band} blocks",
            f"  SMs           {sms}",
            f"  tiles         {self.num_tiles}{estimated}: {self.waves:.2f} waves, last wave "
            f"{self.last_wave_utilisation:.0%} busy"
            + (f"; split tail: the last {self.split_tail_tiles} run as two 128-row halves each"
               if self.split_tail_tiles else ""),
            f"  shared memory {self.smem_bytes} B dynamic per CTA",
            f"  launch        grid {self.grid} block {self.block} cluster {self.cluster}",
            "  tensor maps   (cuTensorMapEncodeTiled arguments, innermost dimension first)",
        ]
        lines += [f"    {_tensor_map_line(spec)}" for spec in self.tensor_maps]
        lines.append(f"  kernel        {self.cache_key}: " + _kernel_text(self.kernel))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


def _tensor_map_line(spec: TensorMapSpec) -> str:
    return (f"{spec.name:<17} {spec.dtype:<8} dims {spec.global_dims} strides {spec.global_strides} B "
            f"box {spec.box_dims} elem strides {spec.strides_or_ones()} swizzle {spec.swizzle} "
            f"interleave {spec.interleave} L2 {spec.l2_promotion} OOB {spec.oob_fill} "
            f"address {spec.global_address:#x}")


def _kernel_text(kernel: KernelReport | None) -> str:
    if kernel is None:
        return "not compiled yet (compile=True, or `pydg compile`, compiles it)"
    origin = "from the disk cache" if kernel.from_disk_cache else "compiled by NVRTC"
    return (f"{kernel.registers} registers, {kernel.spill_stores} B spill stores, {kernel.spill_loads} B spill loads, "
            f"{kernel.stack_frame_bytes} B stack, {kernel.static_smem_bytes} B static smem ({origin})")


# ---- building a CallPlan ---------------------------------------------------------------------

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


def call_plan(plan: GemmPlan, tensor_maps: tuple[TensorMapSpec, ...], kernel=None,
              sms_available: int | None = None) -> CallPlan:
    """The CallPlan of a scheduler plan; `kernel` is a kernels.source.CompiledKernel or None."""
    from pydg.kernels.source import cache_key

    tiles, sms = plan.num_tiles, plan.num_sms
    last = tiles % sms
    report = None
    if kernel is not None:
        p = kernel.ptxas
        report = KernelReport(p.registers, p.spill_stores, p.spill_loads, p.stack_frame, p.static_smem_bytes,
                              kernel.from_disk_cache)
    return CallPlan(
        mode=plan.mode, m=plan.m, n=plan.n, k=plan.k, num_groups=plan.num_groups,
        expected_m=plan.expected_m if plan.mode == "masked" else None,
        block_m=plan.block_m, block_n=plan.block_n, block_k=plan.block_k, num_stages=plan.num_stages,
        overlap_promotion=plan.overlap_promotion, tail_rows=plan.tail_rows,
        output_held_stages=plan.held_stages,
        cluster_size=plan.cluster_size, multicast=plan.multicast, inner_axis=plan.inner_axis, band=plan.band,
        sms_available=sms_available, sms_used=sms, num_tiles=tiles, waves=tiles / sms,
        last_wave_utilisation=(last / sms if last else 1.0) if tiles else 0.0,
        split_tail_tiles=plan.split_tail_tiles,
        smem_bytes=plan.smem_bytes, grid=tuple(plan.grid), block=tuple(plan.block), cluster=(plan.cluster_size, 1, 1),
        tensor_maps=tuple(tensor_maps), cache_key=kernel.key if kernel is not None else cache_key(plan),
        kernel=report, plan=plan,
    )


def _positive(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def _check_sizes(m, n, k, rows: str) -> None:
    _positive(m, rows)
    _positive(n, "n")
    _positive(k, "k")
    # The rules the GEMM functions apply to their arrays: TMA needs 16-byte row pitches.
    if n % 8:
        raise ValueError(f"n: expected a multiple of 8 (16-byte rows of the BF16 output), got {n}")
    if k % 16:
        raise ValueError(f"k: expected a multiple of 16 (16-byte rows of the E4M3 inputs), got {k}")


def _plan(mode: str, m: int, n: int, k: int, num_groups: int, expected_m: int | None, num_sms: int | None,
          compile: bool) -> CallPlan:
    if num_sms is None:
        from pydg.gemm import get_num_sms

        num_sms = get_num_sms()
    _positive(num_sms, "num_sms")
    plan = choose_plan(mode, m, n, k, num_groups, num_sms, expected_m=expected_m)
    maps = tensor_map_specs(plan, default_operands(mode, m, n, k, num_groups))
    from pydg.kernels.source import compile_plan, lookup

    kernel = compile_plan(plan) if compile else lookup(plan)
    return call_plan(plan, maps, kernel, sms_available=num_sms)


def plan_gemm(m: int, n: int, k: int, *, num_sms: int | None = None, compile: bool = False) -> CallPlan:
    """The plan of `gemm_fp8_fp8_bf16_nt` for A (m, k), B (n, k). compile=True compiles the
    kernel with NVRTC (no GPU needed) so that the plan carries ptxas's report."""
    _check_sizes(m, n, k, "m")
    return _plan("dense", m, n, k, 1, None, num_sms, compile)


def plan_m_grouped_contiguous(m_sum: int, n: int, k: int, num_groups: int, *, num_sms: int | None = None,
                              compile: bool = False) -> CallPlan:
    """The plan of `m_grouped_gemm_fp8_fp8_bf16_nt_contiguous` for A (m_sum, k), B (num_groups, n, k)."""
    _check_sizes(m_sum, n, k, "m_sum")
    _positive(num_groups, "num_groups")
    return _plan("contiguous", m_sum, n, k, num_groups, None, num_sms, compile)


def plan_m_grouped_masked(m_max: int, n: int, k: int, num_groups: int, expected_m: int | None = None, *,
                          num_sms: int | None = None, compile: bool = False) -> CallPlan:
    """The plan of `m_grouped_gemm_fp8_fp8_bf16_nt_masked` for A (num_groups, m_max, k),
    B (num_groups, n, k) and the host hint `expected_m` (default m_max)."""
    _check_sizes(m_max, n, k, "m_max")
    _positive(num_groups, "num_groups")
    expected_m = m_max if expected_m is None else check_expected_m(expected_m)  # as the GEMM checks it
    return _plan("masked", m_max, n, k, num_groups, expected_m, num_sms, compile)


def describe_gemm(m: int, n: int, k: int, *, mode: str = "dense", num_groups: int = 1,
                  expected_m: int | None = None, num_sms: int | None = None, compile: bool = True) -> CallPlan:
    """The three plan_* functions behind one signature (m is M, M_sum or M_max as `mode` says);
    compiles by default."""
    if mode == "dense":
        return plan_gemm(m, n, k, num_sms=num_sms, compile=compile)
    if mode == "contiguous":
        return plan_m_grouped_contiguous(m, n, k, num_groups, num_sms=num_sms, compile=compile)
    if mode == "masked":
        return plan_m_grouped_masked(m, n, k, num_groups, expected_m, num_sms=num_sms, compile=compile)
    raise ValueError(f"mode: expected 'dense', 'contiguous' or 'masked', got {mode!r}")


CallDescription = CallPlan  # the first name of the result type

# ---- PYDG_PRINT_CONFIGS ----------------------------------------------------------------------

_printed_lock = threading.Lock()
_printed: set[GemmPlan] = set()


def report_new_shape(plan: GemmPlan, tensor_maps: tuple[TensorMapSpec, ...], kernel=None) -> None:
    """Called by the GEMM functions when a call signature is first seen: with PYDG_PRINT_CONFIGS=1
    print each plan once per process (logger `pydg.plan`; stderr unless logging is configured)."""
    if not log.enabled(log.PRINT_CONFIGS):
        return
    with _printed_lock:
        if plan in _printed:
            return
        _printed.add(plan)
    log.report(log.PRINT_CONFIGS, log.plan_logger, "%s", call_plan(plan, tensor_maps, kernel).summary())

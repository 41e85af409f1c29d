"""Times candidate plans of a few shapes side by side (CUDA events around one launch, L2 flushed):
what the heuristic should pick.
usage: python scripts/plan_sweep.py [--all] [--plain] [--in-stages] [--inner] SHAPE [SHAPE ...]
SHAPE: M,N,K (dense), contiguous:G,M,N,K or masked:G,M,N,K (M rows per group; masked: every group full)
--all: every candidate, not the model's top 10; --plain: each plan with overlapped promotion is timed
again with the one-accumulator loop; --in-stages: each plan whose output tile can be staged in its
stages' A slots is timed again the other way (toggled_output); --inner: each plan without
multicast is timed again with the tile walk's other inner axis (toggled_inner).
Every plan's output is compared with pydg's own call first (calc_diff printed)."""
import sys
from dataclasses import replace

import torch

import pydg
from pydg.arrays import array_info
from pydg.kernels.fp8_gemm import GemmLauncher, GemmOperands
from pydg.scheduler import heuristics
from pydg.scheduler.heuristics import candidate_plans, choose_plan, estimate_seconds, max_stages

sys.path.insert(0, "tests")
from gpu_util import calc_diff, nan_like, quantized_pair  # noqa: E402
from shapes import shape_of  # noqa: E402

FLUSH = torch.empty(256 * 1024 * 1024 // 4, dtype=torch.int32, device="cuda")


def event_us(fn) -> float:
    """One call of fn after an L2 flush, timed with CUDA events."""
    FLUSH.zero_()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3


def time_us(fn, iters=20):
    times = sorted(event_us(fn) for _ in range(iters))
    return times[len(times) // 2]


def problem(spec: str):
    """(mode, plan arguments, arrays, pydg's own call) of a SHAPE argument."""
    mode, args = shape_of(spec)
    m, n, k, groups, _ = args
    if mode == "dense":
        a, sa = quantized_pair(torch, m, k, per_block=False)
        b, sb = quantized_pair(torch, n, k, per_block=True)
        out = nan_like(torch, (m, n))
        return mode, args, (a, sa, b, sb, out), lambda: pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)
    b, sb = quantized_pair(torch, n, k, per_block=True, lead=(groups,))
    if mode == "contiguous":
        a, sa = quantized_pair(torch, m, k, per_block=False)
        grouping = torch.arange(groups, device="cuda", dtype=torch.int32).repeat_interleave(m // groups)
        out = nan_like(torch, (m, n))
        call = lambda: pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (b, sb), out, grouping)  # noqa: E731
        return mode, args, (a, sa, b, sb, out, grouping), call
    a, sa = quantized_pair(torch, m, k, per_block=False, lead=(groups,))
    grouping = torch.full((groups,), m, device="cuda", dtype=torch.int32)
    out = nan_like(torch, (groups, m, n))
    call = lambda: pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, sa), (b, sb), out, grouping, expected_m=m)  # noqa: E731
    return mode, args, (a, sa, b, sb, out, grouping), call


def launch_inputs(arrays):
    """(operands, pointers, stream) with which a GemmLauncher runs on `arrays` (a, sa, b, sb, out[, grouping])."""
    names = ("a", "sa", "b", "sb", "out", "grouping")
    ops = GemmOperands(*(array_info(x, name) for x, name in zip(arrays, names)))
    pointers = tuple(x.data_ptr() for x in arrays) + ((0,) if len(arrays) == 5 else ())
    return ops, pointers, torch.cuda.current_stream().cuda_stream


def with_reference(spec: str):
    """(mode, plan arguments, arrays, pydg's own output, operands, pointers, stream) of a SHAPE
    argument: what a comparison of launchers on it needs. The caller must hold on to `arrays` while
    it launches: the pointers are theirs."""
    mode, dims, arrays, call = problem(spec)
    call()
    return (mode, dims, arrays, arrays[4].clone(), *launch_inputs(arrays))


def alternate(runs, labels, out, reference, pointers, stream, iters: int) -> list[float]:
    """Checks each of `runs` (launchers) against `reference` (calc_diff and bit-equality printed after
    its label), then times them in turn, each after an L2 flush, `iters` times: their median us."""
    for run, label in zip(runs, labels):
        out.fill_(float("nan"))
        run(pointers, stream)
        torch.cuda.synchronize()
        same = torch.equal(out.nan_to_num(), reference.nan_to_num()) and torch.equal(out.isnan(), reference.isnan())
        print(f"{label}: diff-vs-call {calc_diff(torch, out, reference):.2g}, same bits: {same}")
    times = [[] for _ in runs]
    for _ in range(iters):
        for t, run in zip(times, runs):
            t.append(event_us(lambda: run(pointers, stream)))
    return [sorted(t)[len(t) // 2] for t in times]


def toggled_output(plan):
    """The plan with its output staged the other way: in its stages' A slots (one-accumulator loop) or
    in an area of its own, with as many stages as then fit; None where the tile cannot or it would
    leave the ring without a free stage."""
    staged = not plan.output_in_stages
    other = replace(plan, overlap_promotion=plan.overlap_promotion and not staged, output_in_stages=staged,
                    split_tail=plan.split_tail and not staged)
    if staged and not other.allows_output_in_stages:
        return None
    stages = max_stages(plan.block_m, plan.block_n, plan.k, output_in_stages=staged)
    return replace(other, num_stages=stages) if stages > other.held_stages else None


def toggled_early(plan):
    """The plan with the next tile's first wgmma issued before its epilogue or not (GemmPlan.early_start);
    None where the overlapped loop runs."""
    if not plan.allows_early_start:
        return None
    return replace(plan, early_start=not plan.early_start, split_tail=plan.split_tail and plan.early_start)


def toggled_split(plan):
    """The plan with its partial last wave's tiles split in halves or not (GemmPlan.split_tail); None where
    the kernel cannot split them or the last wave is full."""
    if plan.partial_wave_tiles == 0 or not plan.allows_split_tail:
        return None
    return replace(plan, split_tail=not plan.split_tail)


def toggled_wide(plan):
    """The plan the heuristic chooses for the plan's shape with the 208-wide tiles among its candidates
    (heuristics.WIDE_TILES), where that is another plan; None elsewhere."""
    was, heuristics.WIDE_TILES = heuristics.WIDE_TILES, True
    try:
        wide = choose_plan(plan.mode, plan.m, plan.n, plan.k, plan.num_groups, pydg.get_num_sms(),
                           expected_m=plan.expected_m)
    finally:
        heuristics.WIDE_TILES = was
    return wide if wide != plan else None


def toggled_inner(plan):
    """The plan walking its tiles with the other axis inner; None where multicast fixes the axis."""
    if plan.multicast != "none":
        return None
    return replace(plan, inner_axis="m" if plan.inner_axis == "n" else "n")


def toggled_pair_a(plan):
    """A single-CTA plan run in cluster pairs that span N and multicast A (MULTICAST_MIN_ROWS keeps
    small M out of pairs); None where the plan is paired already or its column blocks are odd."""
    if plan.cluster_size != 1 or plan.num_n_blocks % 2:
        return None
    paired = replace(plan, cluster_size=2, multicast="a", inner_axis="n", num_sms=plan.num_sms + plan.num_sms % 2)
    paired.validate()
    return paired


def toggled_b_evict_first(plan):
    """The plan with B's loads marked evict-first in L2 or not (GemmPlan.b_evict_first)."""
    return replace(plan, b_evict_first=not plan.b_evict_first)


def sweep(spec: str, every=False, plain=False, in_stages=False, inner=False):
    mode, (m, n, k, groups, expected), arrays, reference, ops, pointers, stream = with_reference(spec)
    out = arrays[4]
    chosen = choose_plan(mode, m, n, k, groups, 132, expected_m=expected)
    plans = sorted(candidate_plans(mode, m, n, k, groups, 132, expected_m=expected), key=estimate_seconds)
    plans = plans if every else plans[:10]
    single = replace(chosen, cluster_size=1, multicast="none", inner_axis="n")
    # The chosen tile alone and in each kind of pair (those the shape does not allow are skipped).
    pairs = [replace(chosen, cluster_size=2, multicast=cast, inner_axis=axis, num_sms=chosen.num_sms + chosen.num_sms % 2)
             for cast, axis in (("none", "n"), ("a", "n"), ("b", "m"))]
    plans = [chosen, single, *pairs] + plans
    if plain:
        plans += [replace(plan, overlap_promotion=False) for plan in plans if plan.overlap_promotion]
    if in_stages:
        plans += [other for other in map(toggled_output, plans) if other is not None]
    if inner:
        plans += [other for other in map(toggled_inner, plans) if other is not None]
    results = []
    flops = 2 * (groups * m if mode == "masked" else m) * n * k  # contiguous: m is already M_sum
    for plan in plans:
        try:
            plan.validate()
        except ValueError as err:
            print(f"{spec} skipped: {err}")
            continue
        launcher = GemmLauncher(plan, ops, 0)
        out.fill_(float("nan"))
        launcher(pointers, stream)
        torch.cuda.synchronize()
        diff = calc_diff(torch, out, reference)
        us = time_us(lambda: launcher(pointers, stream))
        results.append((us, plan))
        print(f"{spec} {us:8.1f} us {flops / us / 1e6:7.0f} TFLOPS diff-vs-call {diff:.2g} "
              f"model {estimate_seconds(plan) * 1e6:7.1f} us | {plan.summary()}", flush=True)
    ranked = sorted(results, key=lambda r: r[0])
    chosen_us = results[0][0]
    print(f"BEST {spec}: {ranked[0][0]:.1f} us {ranked[0][1].summary()} | chosen {chosen_us:.1f} us "
          f"({ranked[0][0] / chosen_us:.3f}x)")
    for us, plan in ranked[1:4]:
        print(f"  next {us:.1f} us {plan.summary()}")
    print(flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    for arg in args:
        if not arg.startswith("--"):
            sweep(arg, every="--all" in args, plain="--plain" in args, in_stages="--in-stages" in args,
                  inner="--inner" in args)

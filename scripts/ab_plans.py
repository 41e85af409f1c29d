"""Times the heuristic's plan of each shape against the same tile with its output staged the other
way (GemmPlan.output_in_stages toggled, as many stages as then fit: plan_sweep.toggled_output), in
one process: CUDA events around one launch, L2 flushed, the plans alternating so that clock drift
hits all; medians of --iters. Where the chosen tile cannot stage its output (a width not a multiple
of 64), the best candidate that can is timed both ways beside it.
usage: python scripts/ab_plans.py [--iters N] SHAPE [SHAPE ...]   (SHAPE as in scripts/plan_sweep.py)"""
import sys

import torch

from pydg.kernels.fp8_gemm import GemmLauncher
from pydg.scheduler.heuristics import ranked_plans

from plan_sweep import event_us, launch_inputs, problem, toggled_output  # noqa: E402  (scripts/ on sys.path)

sys.path.insert(0, "tests")
from gpu_util import calc_diff  # noqa: E402


def compare(spec: str, iters: int) -> None:
    mode, (m, n, k, groups, expected), arrays, call = problem(spec)
    out = arrays[4]
    call()
    reference = out.clone()
    ops, pointers, stream = launch_inputs(arrays)
    ranked = ranked_plans(mode, m, n, k, groups, torch.cuda.get_device_properties(0).multi_processor_count,
                          expected_m=expected)
    plans = [ranked[0]]
    if toggled_output(ranked[0]) is None:
        eligible = next((p for p in ranked if toggled_output(p) is not None), None)
        plans += [eligible] if eligible is not None else []
    plans += [s for s in map(toggled_output, list(plans)) if s is not None]
    launchers = [GemmLauncher(plan, ops, 0) for plan in plans]
    flops = 2 * (groups * m if mode == "masked" else m) * n * k
    for plan, run in zip(plans, launchers):
        out.fill_(float("nan"))
        run(pointers, stream)
        torch.cuda.synchronize()
        same = torch.equal(out.nan_to_num(), reference.nan_to_num()) and torch.equal(out.isnan(), reference.isnan())
        print(f"{spec} check diff-vs-call {calc_diff(torch, out, reference):.2g} same bits {same} | {plan.summary()}")
    times = [[] for _ in plans]
    for _ in range(iters):
        for t, run in zip(times, launchers):
            t.append(event_us(lambda: run(pointers, stream)))
    medians = [sorted(t)[len(t) // 2] for t in times]
    for plan, us in zip(plans, medians):
        print(f"{spec} {us:8.1f} us {flops / us / 1e6:7.0f} TFLOPS ({us / medians[0]:.3f}x chosen) | {plan.summary()}")
    print(flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    iters = 30
    if "--iters" in args:
        i = args.index("--iters")
        iters = int(args[i + 1])
        del args[i:i + 2]
    for arg in args:
        compare(arg, iters)

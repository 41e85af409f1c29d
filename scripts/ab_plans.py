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

from plan_sweep import alternate, toggled_output, with_reference  # noqa: E402  (scripts/ on sys.path)


def compare(spec: str, iters: int) -> None:
    mode, (m, n, k, groups, expected), arrays, reference, ops, pointers, stream = with_reference(spec)
    ranked = ranked_plans(mode, m, n, k, groups, torch.cuda.get_device_properties(0).multi_processor_count,
                          expected_m=expected)
    plans = [ranked[0]]
    if toggled_output(ranked[0]) is None:
        eligible = next((p for p in ranked if toggled_output(p) is not None), None)
        plans += [eligible] if eligible is not None else []
    plans += [s for s in map(toggled_output, list(plans)) if s is not None]
    runs = [GemmLauncher(plan, ops, 0) for plan in plans]
    labels = [f"{spec} check | {plan.summary()}" for plan in plans]
    medians = alternate(runs, labels, arrays[4], reference, pointers, stream, iters)
    flops = 2 * (groups * m if mode == "masked" else m) * n * k
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

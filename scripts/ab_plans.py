"""Times the heuristic's plan of each shape against the same plan toggled one way, in one process:
CUDA events around one launch, L2 flushed, the plans alternating so that clock drift hits all;
medians of --iters. Where the chosen plan cannot be toggled, the best candidate that can is timed
both ways beside it.
--toggle output (default): the output staged the other way (GemmPlan.output_in_stages toggled, as
many stages as then fit: plan_sweep.toggled_output). --toggle inner: the tile walk's other inner
axis (plans without multicast: plan_sweep.toggled_inner). --toggle early: the next tile's first wgmma
issued before the epilogue's stores or not (GemmPlan.early_start: plan_sweep.toggled_early).
usage: python scripts/ab_plans.py [--iters N] [--toggle output|inner|early] SHAPE [SHAPE ...]
(SHAPE as in scripts/plan_sweep.py)"""
import sys

import torch

from pydg.kernels.fp8_gemm import GemmLauncher
from pydg.scheduler.heuristics import ranked_plans

from plan_sweep import alternate, toggled_early, toggled_inner, toggled_output, with_reference  # noqa: E402  (scripts/ on sys.path)

TOGGLES = {"output": toggled_output, "inner": toggled_inner, "early": toggled_early}


def compare(spec: str, iters: int, toggled=toggled_output) -> None:
    mode, (m, n, k, groups, expected), arrays, reference, ops, pointers, stream = with_reference(spec)
    ranked = ranked_plans(mode, m, n, k, groups, torch.cuda.get_device_properties(0).multi_processor_count,
                          expected_m=expected)
    plans = [ranked[0]]
    if toggled(ranked[0]) is None:
        eligible = next((p for p in ranked if toggled(p) is not None), None)
        plans += [eligible] if eligible is not None else []
    plans += [s for s in map(toggled, list(plans)) if s is not None]
    runs = [GemmLauncher(plan, ops, 0) for plan in plans]
    labels = [f"{spec} check | {plan.summary()}" for plan in plans]
    medians = alternate(runs, labels, arrays[4], reference, pointers, stream, iters)
    flops = 2 * (groups * m if mode == "masked" else m) * n * k
    for plan, us in zip(plans, medians):
        print(f"{spec} {us:8.1f} us {flops / us / 1e6:7.0f} TFLOPS ({us / medians[0]:.3f}x chosen) | {plan.summary()}")
    print(flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    options = {"--iters": "30", "--toggle": "output"}
    for name in options:
        if name in args:
            i = args.index(name)
            options[name] = args[i + 1]
            del args[i:i + 2]
    for arg in args:
        compare(arg, int(options["--iters"]), TOGGLES[options["--toggle"]])

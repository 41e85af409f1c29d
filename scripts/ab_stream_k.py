"""Times stream-K (GemmPlan.stream_k) against whole tiles, in one process (scripts/ab_plans.py's method:
CUDA events around one launch, L2 flushed, the plans alternating; medians of --iters). Per shape: the
best plan without stream-K (what the heuristic chose before it), the heuristic's plan, and the
stream-K form of the first where the heuristic chose another tile.
usage: python scripts/ab_stream_k.py [--iters N] SHAPE [SHAPE ...]   (dense SHAPEs: M,N,K)"""
import sys

import torch

from pydg.scheduler.heuristics import ranked_plans, with_stream_k

from ab_plans import compare, precompile  # noqa: E402  (scripts/ is on sys.path when run as a script)
from plan_sweep import shape_of  # noqa: E402


def plans_of(spec: str) -> list:
    mode, (m, n, k, groups, expected) = shape_of(spec)
    ranked = ranked_plans(mode, m, n, k, groups, torch.cuda.get_device_properties(0).multi_processor_count,
                          expected_m=expected)
    whole = next(p for p in ranked if not p.stream_k)
    plans = [whole]
    for plan in (ranked[0], with_stream_k(whole)):
        if plan is not None and plan not in plans:
            plans.append(plan)
    return plans


if __name__ == "__main__":
    args = sys.argv[1:]
    iters = 30
    if "--iters" in args:
        i = args.index("--iters")
        iters = int(args[i + 1])
        del args[i:i + 2]
    plans = {arg: plans_of(arg) for arg in args}
    precompile([plan for shape_plans in plans.values() for plan in shape_plans])
    for arg in args:
        compare(arg, iters, plans[arg])

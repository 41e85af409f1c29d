"""Times stream-K (GemmPlan.stream_k, an option the heuristic does not take) against whole tiles, in one
process (scripts/ab_plans.py's method: CUDA events around one launch, L2 flushed, the plans alternating;
medians of --iters). Per shape: the heuristic's plan, its stream-K form, and the stream-K form of
another tile where the model ranks one above that.
usage: python scripts/ab_stream_k.py [--iters N] SHAPE [SHAPE ...]   (dense SHAPEs: M,N,K)"""
import sys

import torch

from pydg.scheduler.heuristics import estimate_seconds, ranked_plans, with_stream_k

from ab_plans import parse_options, time_all  # noqa: E402  (scripts/ is on sys.path when run as a script)
from shapes import shape_of  # noqa: E402


def plans_of(spec: str) -> list:
    mode, (m, n, k, groups, expected) = shape_of(spec)
    ranked = ranked_plans(mode, m, n, k, groups, torch.cuda.get_device_properties(0).multi_processor_count,
                          expected_m=expected)
    shared = [p for p in map(with_stream_k, ranked) if p is not None]
    plans = [ranked[0]]
    for plan in (with_stream_k(ranked[0]), min(shared, key=estimate_seconds, default=None)):
        if plan is not None and plan not in plans:
            plans.append(plan)
    return plans


if __name__ == "__main__":
    args = sys.argv[1:]
    options = parse_options(args, {"--iters": "30"})
    time_all({arg: plans_of(arg) for arg in args}, int(options["--iters"]))

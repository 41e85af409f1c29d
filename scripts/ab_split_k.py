"""Times stream-K's share-out as a split-K for shapes with fewer tiles than SMs (small M), against the
heuristic's plan, in one process (scripts/ab_plans.py's method: CUDA events around one launch, L2
flushed, the plans alternating; medians of --iters). With fewer tiles than SMs every tile is shared
out, so each CTA runs num_tiles x k-blocks / SMs k-blocks: a 64x64 tile of 64 x 2112 x 7168 (33 tiles)
is split four ways, and 112 tiles of 64x64 (64 x 7168 x 16384, which leaves 20 SMs idle) keep all 132
busy. The question: whether a shorter k-loop per CTA, and less of A read from L2 per
CTA, pays for the hand-over of the FP32 partials.
usage: python scripts/ab_split_k.py [--iters N] [--widths 32,64,...] SHAPE [SHAPE ...]   (dense M,N,K)"""
import sys

import torch

from pydg.scheduler import heuristics
from pydg.scheduler.heuristics import ranked_plans, with_split_k

from ab_plans import parse_options, time_all  # noqa: E402  (scripts/ is on sys.path when run as a script)
from shapes import shape_of  # noqa: E402


def model_split(mode: str, m: int, n: int, k: int, groups: int, num_sms: int, expected) -> object:
    """The plan the heuristic would choose with heuristics.SPLIT_K on."""
    saved = heuristics.SPLIT_K
    heuristics.SPLIT_K = True
    try:
        return heuristics.choose_plan(mode, m, n, k, groups, num_sms, expected_m=expected)
    finally:
        heuristics.SPLIT_K = saved


def print_fit(spec: str, plans: list, medians: list[float]) -> None:
    """For each stream-K plan timed: the hand-over time its measurement implies and the
    STREAM_K_BYTES_PER_S that would give the model that hand-over. The implied hand-over is the measured
    time less the model's tile work without hand-over, scaled by measured / model of the chosen
    (unsplit) plan, so that the tile model's own error does not land in the fit."""
    chosen = plans[0]
    scale = 1.0 if chosen.stream_k else medians[0] * 1e-6 / heuristics.estimate_seconds(chosen)
    print(f"{spec} fit | the chosen plan ran {scale:.2f}x the model's time")
    for plan, us in zip(plans, medians):
        if not plan.stream_k:
            continue
        hand_over = heuristics.hand_over_seconds(plan)
        implied = us * 1e-6 - scale * (heuristics.tiles_seconds(plan) - hand_over)
        paid = implied - heuristics.TILE_OVERHEAD_S
        rate = f"{heuristics.hand_over_bytes(plan) / paid / 1e9:.0f} GB/s" if paid > 0 else "none (no slower than its scaled tile work)"
        print(f"{spec} fit | {plan.summary()}: model hand-over {hand_over * 1e6:.1f} us, measured implies "
              f"{implied * 1e6:.1f} us: STREAM_K_BYTES_PER_S {rate}")


def split_plans(spec: str, widths: list[int]) -> list:
    """The chosen plan, the model's pick with SPLIT_K on, then each single-CTA tile of the given widths
    (and the chosen width) shared out over all SMs, where it has fewer tiles than SMs (so the grid keeps
    every SM busy)."""
    mode, (m, n, k, groups, expected) = shape_of(spec)
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    ranked = ranked_plans(mode, m, n, k, groups, num_sms, expected_m=expected)
    plans = [ranked[0]]
    pick = model_split(mode, m, n, k, groups, num_sms, expected)
    if pick != ranked[0]:
        plans.append(pick)
    for block_m in (64, 128):
        if block_m > 64 and m <= 64:
            continue
        for width in sorted(set(widths) | {ranked[0].block_n}):
            base = next((p for p in ranked if (p.block_m, p.block_n, p.cluster_size, p.stream_k) == (block_m, width, 1, False)),
                        None)
            if base is None:
                continue
            shared = with_split_k(base, num_sms)
            if shared is not None and shared not in plans:
                plans.append(shared)
    return plans


if __name__ == "__main__":
    args = sys.argv[1:]
    options = parse_options(args, {"--iters": "30", "--widths": "32,64,96,128"})
    widths = [int(w) for w in options["--widths"].split(",")]
    plans = {arg: split_plans(arg, widths) for arg in args}
    for spec, medians in time_all(plans, int(options["--iters"])).items():
        print_fit(spec, plans[spec], medians)

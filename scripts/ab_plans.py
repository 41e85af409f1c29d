"""Times the heuristic's plan of each shape against the same plan toggled one way, in one process:
CUDA events around one launch, L2 flushed, the plans alternating so that clock drift hits all;
medians of --iters. Where the chosen plan cannot be toggled, the best candidate that can is timed
both ways beside it.
--toggle output (default): the output staged the other way (GemmPlan.output_in_stages toggled, as
many stages as then fit: plan_sweep.toggled_output). --toggle inner: the tile walk's other inner
axis (plans without multicast: plan_sweep.toggled_inner). --toggle early: the next tile's first wgmma
issued before the epilogue's stores or not (GemmPlan.early_start: plan_sweep.toggled_early).
--toggle pairA: a single-CTA plan in cluster pairs multicasting A (plan_sweep.toggled_pair_a).
--toggle bandW: the tile walk in bands of W blocks of its inner axis instead of the plan's (GemmPlan.band).
--toggle evictB: B's loads marked evict-first in L2 or not (GemmPlan.b_evict_first).
--toggle split: the partial last wave's tiles split in halves or not (GemmPlan.split_tail).
--toggle wide: the plan chosen with the 208-wide tiles among the candidates (heuristics.WIDE_TILES).
Several toggles, comma-separated, time each toggled plan beside the chosen one in one alternation (no
stand-in candidate there); "+" joins toggles into one: --toggle early,split,early+evictB.
usage: python scripts/ab_plans.py [--iters N] [--toggle output|inner|early|pairA|evictB|split|wide|bandW[+...][,...]] SHAPE [SHAPE ...]
(SHAPE as in scripts/plan_sweep.py)"""
import concurrent.futures
import os
import sys
from dataclasses import replace

import torch

from pydg.kernels.fp8_gemm import GemmLauncher
from pydg.scheduler.heuristics import estimate_seconds, ranked_plans
from pydg.kernels.source import compile_plan

from plan_sweep import (alternate, toggled_b_evict_first, toggled_early, toggled_inner, toggled_output,  # noqa: E402
                        toggled_pair_a, toggled_split, toggled_wide, with_reference)  # (scripts/ is on sys.path when run as a script)
from shapes import shape_of  # noqa: E402

TOGGLES = {"output": toggled_output, "inner": toggled_inner, "early": toggled_early, "pairA": toggled_pair_a,
           "evictB": toggled_b_evict_first, "split": toggled_split, "wide": toggled_wide}


def toggle_of(name: str):
    """The toggle a name gives: one of TOGGLES, bandW, or several of those joined by "+", applied in
    turn (None where one of them does not apply)."""
    if "+" in name:
        parts = [toggle_of(part) for part in name.split("+")]

        def joined(plan):
            for part in parts:
                plan = part(plan) if plan is not None else None
            return plan
        return joined
    if name.startswith("band"):
        width = int(name[len("band"):])
        return lambda plan: replace(plan, band=width) if width != plan.band else None
    return TOGGLES[name]


def plans_of(spec: str, toggles) -> list:
    """The chosen plan of a SHAPE and its toggled forms (with a stand-in candidate where a single toggle
    does not apply to the chosen plan)."""
    mode, (m, n, k, groups, expected) = shape_of(spec)
    ranked = ranked_plans(mode, m, n, k, groups, torch.cuda.get_device_properties(0).multi_processor_count,
                          expected_m=expected)
    plans = [ranked[0]]
    if len(toggles) == 1:
        toggled = toggles[0]
        if toggled(ranked[0]) is None:
            eligible = next((p for p in ranked if toggled(p) is not None), None)
            plans += [eligible] if eligible is not None else []
        plans += [s for s in map(toggled, list(plans)) if s is not None]
    else:
        variants = [toggled(ranked[0]) for toggled in toggles]
        plans += [p for p in variants if p is not None and p not in plans]
    return plans


def precompile(plans) -> None:
    """Every plan's kernel compiled in parallel threads (NVRTC releases the GIL: two compile in the time
    of one on two cores), so the launchers find them compiled."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(compile_plan, plans))


def compare(spec: str, iters: int, plans) -> list[float]:
    """The plans' median times in us, printed beside the heuristic's estimate of each."""
    mode, (m, n, k, groups, expected), arrays, reference, ops, pointers, stream = with_reference(spec)
    runs = [GemmLauncher(plan, ops, 0) for plan in plans]
    labels = [f"{spec} check | {plan.summary()}" for plan in plans]
    medians = alternate(runs, labels, arrays[4], reference, pointers, stream, iters)
    flops = 2 * (groups * m if mode == "masked" else m) * n * k
    for plan, us in zip(plans, medians):
        print(f"{spec} {us:8.1f} us {flops / us / 1e6:7.0f} TFLOPS ({us / medians[0]:.3f}x chosen, "
              f"model {estimate_seconds(plan) * 1e6:.1f} us) | {plan.summary()}")
    print(flush=True)
    return medians


def time_all(plans: dict, iters: int) -> dict[str, list[float]]:
    """Each shape's plans (SHAPE -> plans, the chosen first) compiled, then timed side by side; the
    medians (SHAPE -> us, in the plans' order)."""
    precompile([plan for shape_plans in plans.values() for plan in shape_plans])
    return {spec: compare(spec, iters, shape_plans) for spec, shape_plans in plans.items()}


def parse_options(args: list[str], defaults: dict[str, str]) -> dict[str, str]:
    """The defaults with each "--name value" pair of args applied; the pairs are taken out of args."""
    options = dict(defaults)
    for name in options:
        if name in args:
            i = args.index(name)
            options[name] = args[i + 1]
            del args[i:i + 2]
    return options


if __name__ == "__main__":
    args = sys.argv[1:]
    options = parse_options(args, {"--iters": "30", "--toggle": "output"})
    toggles = [toggle_of(name) for name in options["--toggle"].split(",")]
    time_all({arg: plans_of(arg, toggles) for arg in args}, int(options["--iters"]))

"""Times the package's kernel sources against an edited copy, on the same plans, in one process
(CUDA events around one launch, L2 flushed; each pair alternates so that clock drift hits both):
how a kernel change is measured before it lands.
usage: python scripts/ab_kernels.py DIR SHAPE [SHAPE ...]
DIR: a folder holding the edited .cu/.cuh files (a copy of pydg/kernels with the change);
SHAPE: as in scripts/plan_sweep.py (M,N,K, contiguous:G,M,N,K or masked:G,M,N,K); the heuristic's
plan of each shape runs from both sources, PYDG_AB_ITERS (30) pairs each. Each output is compared with
pydg's own call (same bits expected unless the change alters the arithmetic)."""
import concurrent.futures
import os
import pathlib
import sys

import torch

from pydg.kernels import source
from pydg.kernels.source import compile_plan
from pydg.kernels.fp8_gemm import GemmLauncher
from pydg.scheduler.heuristics import choose_plan

from plan_sweep import alternate, with_reference  # noqa: E402  (scripts/ is on sys.path when run as a script)
from shapes import shape_of  # noqa: E402

PACKAGE_DIR = source.KERNEL_DIR


def use_sources(folder: pathlib.Path) -> None:
    """Point the compiler at another kernel folder (the cache key hashes the text, so the two
    sources never share a cached cubin)."""
    source.KERNEL_DIR = folder
    source.sources.cache_clear()


def launcher(folder: pathlib.Path, plan, ops) -> GemmLauncher:
    use_sources(folder)
    try:
        return GemmLauncher(plan, ops, 0)
    finally:
        use_sources(PACKAGE_DIR)


def plan_of(spec: str):
    mode, (m, n, k, groups, expected) = shape_of(spec)
    return choose_plan(mode, m, n, k, groups, torch.cuda.get_device_properties(0).multi_processor_count,
                       expected_m=expected)


def precompile(folders, plans) -> None:
    """Every plan compiled from each folder's sources in parallel threads (NVRTC releases the GIL), one
    folder at a time since the source folder is the module's; the launchers then find them compiled."""
    for folder in folders:
        use_sources(folder)
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
                list(pool.map(compile_plan, plans))
        finally:
            use_sources(PACKAGE_DIR)


def compare(folder: pathlib.Path, spec: str, plan, iters: int = int(os.environ.get("PYDG_AB_ITERS", "30"))) -> None:
    arrays, reference, ops, pointers, stream = with_reference(spec)[2:]
    runs = [launcher(PACKAGE_DIR, plan, ops), launcher(folder, plan, ops)]
    labels = [f"{spec} package", f"{spec} edited"]
    package, edited = alternate(runs, labels, arrays[4], reference, pointers, stream, iters)
    print(f"{spec}: package {package:.1f} us, edited {edited:.1f} us ({package / edited:.3f}x) | {plan.summary()}",
          flush=True)


if __name__ == "__main__":
    folder = pathlib.Path(sys.argv[1]).resolve()
    plans = {spec: plan_of(spec) for spec in sys.argv[2:]}
    precompile([PACKAGE_DIR, folder], list(plans.values()))
    for spec, plan in plans.items():
        compare(folder, spec, plan)

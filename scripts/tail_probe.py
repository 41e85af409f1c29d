"""Does a partial last block of rows cost more than its rows? Each pair (M, M_full) runs one plan
(the heuristic's for M) on M rows and on M_full rows (M rounded up to the block), CUDA events
around one launch with L2 flushed, medians of 30.
usage: python scripts/tail_probe.py M,N,K [M,N,K ...]"""
import sys
from dataclasses import replace

import torch

from plan_sweep import event_us, launch_inputs, problem  # noqa: E402
from pydg.kernels.fp8_gemm import GemmLauncher
from pydg.scheduler.heuristics import choose_plan
from pydg.utils import align


def median_us(fn, iters=30):
    times = sorted(event_us(fn) for _ in range(iters))
    return times[len(times) // 2]


def probe(spec: str) -> None:
    m, n, k = map(int, spec.split(","))
    plan = choose_plan("dense", m, n, k, 1, 132)
    row = []
    for rows in (m, align(m, plan.block_m)):
        _, _, arrays, call = problem(f"{rows},{n},{k}")
        ops, pointers, stream = launch_inputs(arrays)
        launcher = GemmLauncher(replace(plan, m=rows), ops, 0)
        launcher(pointers, stream)
        torch.cuda.synchronize()
        row.append((rows, median_us(lambda: launcher(pointers, stream))))
    (m0, t0), (m1, t1) = row
    print(f"{spec}: M={m0} {t0:.1f} us, M={m1} {t1:.1f} us ({t0 / t1:.3f}x) | {plan.summary()}", flush=True)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        probe(arg)

"""Times candidate plans of a few shapes side by side (CUDA events, L2 flushed): what the heuristic
should pick. usage: python scripts/plan_sweep.py [--all] [--plain] M,N,K [M,N,K ...]
(--all: every candidate, not the model's top 10; --plain: each plan with overlapped promotion is
timed again with the one-accumulator loop)"""
import sys
from dataclasses import replace

import torch

import pydg
from pydg.arrays import array_info
from pydg.kernels.fp8_gemm import GemmLauncher, GemmOperands
from pydg.scheduler.heuristics import candidate_plans, choose_plan, estimate_seconds

sys.path.insert(0, "tests")
from gpu_util import calc_diff, dequantize, nan_like, quantized_pair  # noqa: E402

FLUSH = torch.empty(256 * 1024 * 1024 // 4, dtype=torch.int32, device="cuda")


def time_us(fn, iters=20):
    times = []
    for _ in range(iters):
        FLUSH.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    times.sort()
    return times[len(times) // 2]


def sweep(m, n, k, every=False, plain=False):
    a, sa = quantized_pair(torch, m, k, per_block=False)
    b, sb = quantized_pair(torch, n, k, per_block=True)
    out = nan_like(torch, (m, n))
    ref = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
    ops = GemmOperands(*(array_info(x, "x") for x in (a, sa, b, sb, out)))
    pointers = (a.data_ptr(), sa.data_ptr(), b.data_ptr(), sb.data_ptr(), out.data_ptr(), 0)
    stream = torch.cuda.current_stream().cuda_stream
    chosen = choose_plan("dense", m, n, k, 1, 132)
    plans = sorted(candidate_plans("dense", m, n, k, 1, 132), key=estimate_seconds)
    plans = plans if every else plans[:10]
    extra = [replace(chosen, cluster_size=1, multicast="none", inner_axis="n"),
             replace(chosen, cluster_size=2, multicast="none")]
    plans = [chosen] + extra + plans
    if plain:
        plans += [replace(plan, overlap_promotion=False) for plan in plans if plan.overlap_promotion]
    results = []
    for plan in plans:
        launcher = GemmLauncher(plan, ops, 0)
        out.fill_(float("nan"))
        launcher(pointers, stream)
        torch.cuda.synchronize()
        diff = calc_diff(torch, out, ref)
        us = time_us(lambda: launcher(pointers, stream))
        results.append((us, plan))
        print(f"{m}x{n}x{k} {us:8.1f} us {2*m*n*k/us/1e6:7.0f} TFLOPS diff {diff:.2g} "
              f"model {estimate_seconds(plan)*1e6:7.1f} us | {plan.summary()}", flush=True)
    ranked = sorted(results, key=lambda r: r[0])
    chosen_us = results[0][0]
    print(f"BEST {m}x{n}x{k}: {ranked[0][0]:.1f} us {ranked[0][1].summary()} | chosen {chosen_us:.1f} us "
          f"({ranked[0][0] / chosen_us:.3f}x)")
    for us, plan in ranked[1:4]:
        print(f"  next {us:.1f} us {plan.summary()}")
    print(flush=True)


if __name__ == "__main__":
    flags = {"--all", "--plain"}
    for arg in sys.argv[1:]:
        if arg not in flags:
            sweep(*map(int, arg.split(",")), every="--all" in sys.argv, plain="--plain" in sys.argv)

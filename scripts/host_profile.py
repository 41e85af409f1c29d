"""Host time per call of a tiny dense GEMM (1 x 256 x 128) on the GPU, and where it goes.

    PYTHONPATH=$PWD python scripts/host_profile.py

Prints the wall time per call of 3 x 2000 back-to-back calls after 200 warm-up calls, the cost of
torch's Python-level current-stream lookup for comparison, and a cProfile of 2000 more calls.
"""
import cProfile
import pstats
import sys
import time

import torch

import pydg

sys.path.insert(0, "tests")
from gpu_util import quantized_pair  # noqa: E402

M, N, K = 1, 256, 128
CALLS = 2000


def main() -> None:
    a, sa = quantized_pair(torch, M, K, per_block=False)
    b, sb = quantized_pair(torch, N, K, per_block=True)
    out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    gemm = pydg.gemm_fp8_fp8_bf16_nt
    for _ in range(200):
        gemm((a, sa), (b, sb), out)
    torch.cuda.synchronize()
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(CALLS):
            gemm((a, sa), (b, sb), out)
        print(f"pydg: {(time.perf_counter() - started) / CALLS * 1e6:.1f} us per call")
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(CALLS):
        torch.cuda.current_stream().cuda_stream
    print(f"torch.cuda.current_stream().cuda_stream: {(time.perf_counter() - started) / CALLS * 1e6:.1f} us")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(CALLS):
        gemm((a, sa), (b, sb), out)
    profile.disable()
    torch.cuda.synchronize()
    pstats.Stats(profile).sort_stats("tottime").print_stats(14)


if __name__ == "__main__":
    main()

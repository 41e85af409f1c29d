"""Runs one dense GEMM shape a few times with pydg or DeepGEMM, for a profiler to catch a warm launch.
usage: python scripts/profile_shape.py M N K [pydg|deepgemm] [repeats]"""
import sys

import torch

import pydg

m, n, k = map(int, sys.argv[1:4])
which = sys.argv[4] if len(sys.argv) > 4 else "pydg"
repeats = int(sys.argv[5]) if len(sys.argv) > 5 else 3

a, sa = pydg.per_token_cast_to_fp8(torch.randn(m, k, device="cuda"))
b, sb = pydg.per_block_cast_to_fp8(torch.randn(n, k, device="cuda"))
out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
if which == "pydg":
    lhs = (a, pydg.get_col_major_tma_aligned_tensor(sa))
    call = lambda: pydg.gemm_fp8_fp8_bf16_nt(lhs, (b, sb), out)  # noqa: E731
else:
    import deep_gemm

    lhs = (a, deep_gemm.get_mn_major_tma_aligned_tensor(sa))
    call = lambda: deep_gemm.fp8_gemm_nt(lhs, (b, sb), out)  # noqa: E731
for _ in range(repeats):
    call()
torch.cuda.synchronize()
print(which, m, n, k, "done")

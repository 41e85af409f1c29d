"""One dense GEMM shape, called a few times: the target for ncu or nsys.
usage: ncu --kernel-name pydg_fp8_gemm --launch-skip 2 --launch-count 1 python scripts/profile_shape.py M,N,K
(with --deepgemm, DeepGEMM's kernel runs too, on the same inputs, when it can be imported)"""
import sys

import torch

import pydg

sys.path.insert(0, "tests")
from gpu_util import nan_like, quantized_pair  # noqa: E402


def main(m: int, n: int, k: int, deepgemm: bool) -> None:
    a, sa = quantized_pair(torch, m, k, per_block=False)
    b, sb = quantized_pair(torch, n, k, per_block=True)
    out = nan_like(torch, (m, n))
    print(pydg.plan_gemm(m, n, k).plan.summary())
    for _ in range(4):
        pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)
    if deepgemm:
        import deep_gemm

        sa_dg = deep_gemm.get_mn_major_tma_aligned_tensor(sa)  # as pydg's benchmark hands it over
        for _ in range(4):
            deep_gemm.fp8_gemm_nt((a, sa_dg), (b, sb), out)
    torch.cuda.synchronize()


if __name__ == "__main__":
    shape = next(arg for arg in sys.argv[1:] if not arg.startswith("--"))
    main(*map(int, shape.split(",")), deepgemm="--deepgemm" in sys.argv)

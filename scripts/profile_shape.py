"""One GEMM shape, called a few times: the target for ncu or nsys.
usage: ncu --kernel-name pydg_fp8_gemm --launch-skip 2 --launch-count 1 python scripts/profile_shape.py SHAPE
SHAPE: as in scripts/plan_sweep.py (M,N,K, contiguous:G,M,N,K or masked:G,M,N,K).
With --deepgemm, DeepGEMM's kernel for the same layout runs too, on the same inputs, when it can be
imported."""
import sys

import torch

from plan_sweep import problem  # noqa: E402  (scripts/ is on sys.path when run as a script)


def deepgemm_call(mode: str, arrays, expected):
    import deep_gemm

    a, sa, b, sb, out = arrays[:5]
    sa_dg = deep_gemm.get_mn_major_tma_aligned_tensor(sa)  # as pydg's benchmark hands it over
    if mode == "dense":
        return lambda: deep_gemm.fp8_gemm_nt((a, sa_dg), (b, sb), out)
    if mode == "contiguous":
        return lambda: deep_gemm.m_grouped_fp8_gemm_nt_contiguous((a, sa_dg), (b, sb), out, arrays[5])
    return lambda: deep_gemm.m_grouped_fp8_gemm_nt_masked((a, sa_dg), (b, sb), out, arrays[5], expected)


def main(spec: str, deepgemm: bool) -> None:
    mode, (m, n, k, groups, expected), arrays, call = problem(spec)
    import pydg.scheduler.heuristics as heuristics

    print(heuristics.choose_plan(mode, m, n, k, groups, torch.cuda.get_device_properties(0).multi_processor_count,
                                 expected_m=expected).summary())
    calls = [call] + ([deepgemm_call(mode, arrays, expected)] if deepgemm else [])
    for run in calls:
        for _ in range(4):
            run()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main(next(arg for arg in sys.argv[1:] if not arg.startswith("--")), deepgemm="--deepgemm" in sys.argv)

"""The default job of `python -m pydg`: one GEMM run on random data and checked against float64.

Needs an sm_90 GPU and torch (else CuPy) to make arrays with; pydg/cli.py decides when to call it.
"""
from __future__ import annotations

DIFF_LIMIT = 1e-5      # CONTRACT.md's accuracy bound (calc_diff against the float64 reference)
TIMED_CALLS = 10


def run_once(m: int, n: int, k: int) -> bool:
    """Run the GEMM once on random data with torch, else CuPy; True if the result is right."""
    try:
        import torch  # noqa: F401
    except ImportError:
        torch = None
    if torch is not None:
        return _report(*_run_torch(m, n, k), m, n, k, "torch")
    try:
        import cupy  # noqa: F401
    except ImportError:
        print("Neither torch nor CuPy is installed: nothing to make GPU arrays with, so planned and compiled only.")
        return True
    return _report(*_run_cupy(m, n, k), m, n, k, "CuPy")


def _report(diff: float, us_per_call: float, m: int, n: int, k: int, library: str) -> bool:
    ok = diff <= DIFF_LIMIT
    print(f"\nRan on random {library} data: calc_diff {diff:.2e} against the float64 reference "
          f"(limit {DIFF_LIMIT:g}): {'OK' if ok else 'WRONG RESULT'}")
    print(f"Rough time: {us_per_call:.1f} us per call ({2 * m * n * k / us_per_call / 1e6:.0f} TFLOPS), "
          f"mean of {TIMED_CALLS} back-to-back calls by CUDA events, L2 warm "
          f"(`python -m pydg bench` measures properly)")
    return ok


def _run_torch(m: int, n: int, k: int) -> tuple[float, float]:
    import torch

    import pydg
    from pydg.bench import calc_diff, dequantize_blocks, dequantize_rows

    a, sa = pydg.per_token_cast_to_fp8(torch.randn(m, k, device="cuda"))
    b, sb = pydg.per_block_cast_to_fp8(torch.randn(n, k, device="cuda"))
    out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    lhs, rhs = (a, pydg.get_col_major_tma_aligned_tensor(sa)), (b, sb)
    pydg.gemm_fp8_fp8_bf16_nt(lhs, rhs, out)
    torch.cuda.synchronize()
    diff = calc_diff(torch, out, dequantize_rows(torch, a, sa) @ dequantize_blocks(torch, b, sb).t())

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(TIMED_CALLS):
        pydg.gemm_fp8_fp8_bf16_nt(lhs, rhs, out)
    end.record()
    torch.cuda.synchronize()
    return diff, start.elapsed_time(end) * 1e3 / TIMED_CALLS


def _run_cupy(m: int, n: int, k: int) -> tuple[float, float]:
    import cupy

    import pydg
    from pydg.fp8 import e4m3_to_float32

    # CuPy has no FP8 or BF16 types: pydg takes E4M3 as raw uint8 and writes BF16 as raw uint16.
    a, sa = pydg.per_token_cast_to_fp8(cupy.random.standard_normal((m, k), dtype=cupy.float32))
    b, sb = pydg.per_block_cast_to_fp8(cupy.random.standard_normal((n, k), dtype=cupy.float32))
    out = cupy.full((m, n), 0x7FC0, dtype=cupy.uint16)  # BF16 NaN: unwritten elements fail the check
    lhs, rhs = (a, pydg.get_col_major_tma_aligned_tensor(sa)), (b, sb)
    pydg.gemm_fp8_fp8_bf16_nt(lhs, rhs, out)
    cupy.cuda.get_current_stream().synchronize()

    a64 = e4m3_to_float32(a).astype(cupy.float64) * cupy.repeat(sa.astype(cupy.float64), 128, axis=1)[:, :k]
    sb_full = cupy.repeat(cupy.repeat(sb.astype(cupy.float64), 128, axis=0)[:n], 128, axis=1)[:, :k]
    reference = a64 @ (e4m3_to_float32(b).astype(cupy.float64) * sb_full).T
    result = (out.astype(cupy.uint32) << 16).view(cupy.float32).astype(cupy.float64)
    denominator = float((result * result + reference * reference).sum())
    diff = 0.0 if denominator == 0 else 1.0 - 2.0 * float((result * reference).sum()) / denominator

    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(TIMED_CALLS):
        pydg.gemm_fp8_fp8_bf16_nt(lhs, rhs, out)
    end.record()
    end.synchronize()
    return diff, cupy.cuda.get_elapsed_time(start, end) * 1e3 / TIMED_CALLS

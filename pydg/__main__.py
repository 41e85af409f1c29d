"""`python -m pydg`: what pydg is, what it would run for a shape, and (on a Hopper GPU) one checked run.

`python -m pydg [--m M --n N --k K]` plans and compiles the dense GEMM for that shape (NVRTC needs no
GPU) and prints the plan and ptxas's report; with an sm_90 GPU it also runs the GEMM once on random
data (torch if importable, else CuPy) and checks it against a float64 reference.
`python -m pydg bench ...` runs the benchmark (see `python -m pydg bench --help`).
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from typing import Any, Sequence

DIFF_LIMIT = 1e-5      # CONTRACT.md's accuracy bound (calc_diff against the float64 reference)
DEFAULT_SHAPE = (4096, 7168, 2048)
NUM_SMS_WITHOUT_GPU = 132  # plan as for an H100 SXM where no GPU can be asked
TIMED_CALLS = 10
NO_HOPPER = "No Hopper (sm_90) GPU found: compiled and planned only."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pydg",
        description="Plan, compile and (on an sm_90 GPU) run and check one FP8 GEMM. "
                    "`python -m pydg bench --help` for the benchmark.")
    m, n, k = DEFAULT_SHAPE
    parser.add_argument("--m", type=int, default=m, help=f"rows of A and D (default {m})")
    parser.add_argument("--n", type=int, default=n, help=f"rows of B, columns of D (default {n})")
    parser.add_argument("--k", type=int, default=k, help=f"the reduction dimension (default {k})")
    return parser


def first_device() -> tuple[Any | None, str]:
    """(device 0's info, or None; a line saying what was found).

    Never raises: a machine without a driver is an ordinary case here, not an error."""
    try:
        from pydg.driver.cuda import device_count, device_info

        if device_count() == 0:
            return None, "no CUDA device"
        info = device_info(0)
    except Exception as err:  # no driver library, no GPU, a broken install: all mean "plan only"
        return None, f"no usable CUDA driver ({type(err).__name__})"
    major, minor = info.compute_capability
    name = " ".join(info.name.replace("\x00", " ").split())  # the driver pads names
    return info, f"{name} (sm_{major}{minor}, {info.num_sms} SMs)"


def nvrtc_version() -> str:
    try:
        from pydg.driver import nvrtc

        return ".".join(map(str, nvrtc.version()))
    except Exception as err:  # reported: describe_gemm below will say more if compiling fails
        return f"unavailable ({type(err).__name__}: {err})"


def describe(m: int, n: int, k: int, have_device: bool) -> bool:
    """Print the plan and the kernel's ptxas report; False if planning or compiling failed."""
    import pydg

    started = time.perf_counter()
    try:
        # Without a device, pydg cannot ask for the SM count: plan for an H100 SXM.
        description = pydg.describe_gemm(m, n, k, num_sms=None if have_device else NUM_SMS_WITHOUT_GPU)
    except Exception as err:  # shown to the user as what it is; the exit status says it failed
        print(f"planning/compiling {m}x{n}x{k} failed: {type(err).__name__}: {err}")
        return False
    print(f"\nGEMM M={m} N={n} K={k} (dense, FP8 E4M3 in, BF16 out); planned and compiled in "
          f"{time.perf_counter() - started:.2f} s:")
    print(description.summary())
    return True


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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from pydg.bench import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    import pydg

    print(f"pydg {pydg.__version__}: FP8 GEMMs with DeepSeek's fine-grained scaling for NVIDIA Hopper, "
          "in pure Python over the CUDA driver (kernels compiled at run time by NVRTC).")
    print(f"NVRTC {nvrtc_version()}")
    device, found = first_device()
    print(f"GPU: {found}")
    if not describe(args.m, args.n, args.k, have_device=device is not None):
        return 1
    if device is None or device.compute_capability != (9, 0):
        print(f"\n{NO_HOPPER}")
        return 0
    try:
        return 0 if run_once(args.m, args.n, args.k) else 1
    except Exception as err:  # the user sees what failed and where, and a failing exit status
        print(f"\nRunning the GEMM failed: {type(err).__name__}: {err}")
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())

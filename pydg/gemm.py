"""The public GEMM functions: unpack, validate (once per shape), plan, launch."""
from __future__ import annotations

import threading

from pydg import validate
from pydg.arrays import array_info, current_stream
from pydg.errors import CudaError
from pydg.kernels.fp8_gemm import GemmLauncher, GemmOperands

_lock = threading.Lock()
_launchers: dict[tuple, GemmLauncher | None] = {}  # None: a shape with nothing to compute (M == 0)
_num_sms: int | None = None

_POINTER_NAMES = ("lhs data", "lhs scales", "rhs data", "rhs scales", "out")
_POINTER_ALIGNMENTS = (16, 16, 16, 4, 16)


def set_num_sms(num_sms: int) -> None:
    """Use at most `num_sms` SMs (e.g. to leave some to a communication kernel)."""
    global _num_sms
    if not isinstance(num_sms, int) or isinstance(num_sms, bool) or num_sms < 1:
        raise ValueError(f"num_sms: expected a positive int, got {num_sms!r}")
    device_sms = _device_sms()
    if device_sms is not None and num_sms > device_sms:
        raise ValueError(f"num_sms: expected at most the device's {device_sms} SMs, got {num_sms}")
    _num_sms = num_sms


def get_num_sms() -> int:
    """The SMs pydg plans for: set_num_sms's value, else the current device's count (132 on an
    H100 SXM; that figure is also used where no GPU is present, for plans made on a CPU)."""
    if _num_sms is not None:
        return _num_sms
    return _device_sms() or 132


def _device_sms() -> int | None:
    from pydg.driver.cuda import device_count, device_info

    return device_info(0).num_sms if device_count() > 0 else None


def _check_arch(device: int) -> None:
    from pydg.driver.cuda import device_info

    info = device_info(device)
    if info.compute_capability != (9, 0):
        major, minor = info.compute_capability
        raise ValueError(f"device: expected an sm_90 GPU (H100/H200) for the arrays' device cuda:{device}, "
                         f"got {info.name} (sm_{major}{minor})")


def _launcher(mode: str, ops: GemmOperands, check, hint) -> GemmLauncher | None:
    from pydg.scheduler.heuristics import choose_plan

    problem = check()
    if problem.m == 0 or problem.n == 0:
        return None
    _check_arch(problem.device)
    num_sms = min(get_num_sms(), _device_sms_of(problem.device))
    plan = choose_plan(mode, problem.m, problem.n, problem.k, problem.num_groups, num_sms, expected_m=hint)
    return GemmLauncher(plan, ops, problem.device)


def _device_sms_of(device: int) -> int:
    from pydg.driver.cuda import device_info

    return device_info(device).num_sms


def _run(mode: str, ops: GemmOperands, check, hint=None) -> None:
    key = (mode, hint, _num_sms, ops.a.signature, ops.sa.signature, ops.b.signature, ops.sb.signature,
           ops.out.signature, ops.grouping.signature if ops.grouping is not None else None)
    try:
        launcher = _launchers[key]
    except KeyError:
        with _lock:
            launcher = _launchers[key] = _launcher(mode, ops, check, hint)
    pointers = (ops.a, ops.sa, ops.b, ops.sb, ops.out)
    validate.check_pointers(pointers, _POINTER_NAMES, _POINTER_ALIGNMENTS)
    if launcher is None:
        return
    device = ops.out.device
    stream = current_stream(ops.out.library, device)
    try:
        launcher(ops, stream)
    except CudaError as err:
        if err.name != "CUDA_ERROR_INVALID_CONTEXT":
            raise
        # A thread on which no library has used the device yet: bind its primary context once.
        from pydg.driver.cuda import make_current

        make_current(device)
        launcher(ops, stream)


def gemm_fp8_fp8_bf16_nt(lhs, rhs, out) -> None:
    """D = (A * sa) @ (B * sb)^T in FP32, written to `out` as BF16.

    lhs: (a, sa): a is (M, K) E4M3 (float8_e4m3fn, or raw uint8/int8 bytes), rows contiguous;
         sa is float32 (M, ceil(K/128)), TMA-aligned column-major (element (m, kb) at
         m + kb * align(M, 4); get_col_major_tma_aligned_tensor makes it).
    rhs: (b, sb): b is (N, K) E4M3, rows contiguous; sb is float32 (ceil(N/128), ceil(K/128)),
         contiguous, one scale per 128 x 128 block.
    out: (M, N) bfloat16, contiguous (CuPy: raw 16-bit words).
    N must be a multiple of 8 and K of 16. Runs on the caller's current stream; never syncs.
    """
    a, sa, b, sb = validate.unpack(lhs, rhs)
    ops = GemmOperands(array_info(a, "lhs data"), array_info(sa, "lhs scales"), array_info(b, "rhs data"),
                       array_info(sb, "rhs scales"), array_info(out, "out"))
    _run("dense", ops, lambda: validate.check_dense(ops.a, ops.sa, ops.b, ops.sb, ops.out))


def m_grouped_gemm_fp8_fp8_bf16_nt_contiguous(lhs, rhs, out, m_indices) -> None:
    """MoE grouped GEMM, contiguous layout: out[i] = A[i] @ B[m_indices[i]]^T (with scales).

    lhs: (a, sa): a is (M_sum, K), the rows of all experts concatenated, each expert's segment
         starting at a multiple of get_m_alignment_for_contiguous_layout(); sa as for the dense GEMM.
    rhs: (b, sb): b is (G, N, K); sb is (G, ceil(N/128), ceil(K/128)) float32, contiguous.
    out: (M_sum, N) bfloat16. m_indices: int32 (M_sum,) on the GPU, row i's expert, -1 for padding;
         blocks of padding rows are skipped and not written.
    """
    a, sa, b, sb = validate.unpack(lhs, rhs)
    ops = GemmOperands(array_info(a, "lhs data"), array_info(sa, "lhs scales"), array_info(b, "rhs data"),
                       array_info(sb, "rhs scales"), array_info(out, "out"), array_info(m_indices, "m_indices"))
    _run("contiguous", ops,
         lambda: validate.check_contiguous(ops.a, ops.sa, ops.b, ops.sb, ops.out, ops.grouping))


def m_grouped_gemm_fp8_fp8_bf16_nt_masked(lhs, rhs, out, masked_m, expected_m: int) -> None:
    """MoE grouped GEMM, masked layout (decoding): out[g, :masked_m[g]] = A[g] @ B[g]^T.

    lhs: (a, sa): a is (G, M_max, K); sa is (G, M_max, ceil(K/128)) float32, each group's matrix
         TMA-aligned column-major (get_col_major_tma_aligned_tensor).
    rhs: (b, sb): b is (G, N, K); sb is (G, ceil(N/128), ceil(K/128)).
    out: (G, M_max, N) bfloat16; rows at or past masked_m[g] are not written.
    masked_m: int32 (G,) on the GPU, read only by the kernel (values are clamped to [0, M_max]), so
         the call can be captured in a CUDA graph. expected_m: host-side hint of the typical rows.
    """
    validate.check_expected_m(expected_m)
    a, sa, b, sb = validate.unpack(lhs, rhs)
    ops = GemmOperands(array_info(a, "lhs data"), array_info(sa, "lhs scales"), array_info(b, "rhs data"),
                       array_info(sb, "rhs scales"), array_info(out, "out"), array_info(masked_m, "masked_m"))
    _run("masked", ops,
         lambda: validate.check_masked(ops.a, ops.sa, ops.b, ops.sb, ops.out, ops.grouping),
         hint=expected_m)

"""The public GEMM functions: unpack, validate (once per shape), plan, launch."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from pydg import autotune, validate
from pydg.arrays import array_info, stream_getter
from pydg.errors import CudaError
from pydg.describe import report_new_shape
from pydg.kernels.fp8_gemm import GemmLauncher, GemmOperands
from pydg.scheduler.plan import GemmPlan

_num_sms: int | None = None


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


def _check_arch(device: int, name: str) -> None:
    """The kernels are sm_90a code: wgmma and setmaxnreg exist on compute capability 9.0 only."""
    from pydg.driver.cuda import device_info

    info = device_info(device)
    if info.compute_capability != (9, 0):
        major, minor = info.compute_capability
        raise ValueError(f"{name}: expected arrays on an sm_90 GPU (H100/H200), got cuda:{device}, "
                         f"{info.name} (sm_{major}{minor})")


def _launch_context(device: int) -> int:
    """With several GPUs, the handle of the device's primary context, which a call must make
    current when the caller's thread has another; 0 with one GPU (its context is the only one)."""
    from pydg.driver.cuda import device_count, primary_context

    return int(primary_context(device)) if device_count() > 1 else 0


def _device_sms_of(device: int) -> int:
    from pydg.driver.cuda import device_info

    return device_info(device).num_sms


# ---- the per-call path -------------------------------------------------------------------------
# A call reads each array's signature (shape, strides, dtype, device) and pointer; everything else
# was decided at the first call with that signature and is kept in a _Prepared.

def _cupy_reader(x):
    return (x.shape, x.strides, x.dtype, x.device.id), x.data.ptr


# torch.Tensor, once torch has been seen: its signature is read inline in _run, the commonest case
# and the one whose per-call time is measured (the attribute reads are most of it).
_torch_tensor: type | None = None
_READERS: dict[type, object] = {}


def _reader(kind: type):
    """A fast signature reader for arrays of this type, or False (validated on every call)."""
    global _torch_tensor
    reader = _READERS.get(kind)
    if reader is None:
        library = kind.__module__.split(".", 1)[0]
        if kind.__module__ == "torch" and kind.__name__ == "Tensor":
            _torch_tensor = kind
        reader = {"torch": _torch_signature, "cupy": _cupy_reader}.get(library, False)
        _READERS[kind] = reader
    return reader


def _torch_signature(x):
    return (x.shape, x.stride(), x.dtype, x.get_device()), x.data_ptr()


@dataclass(frozen=True, slots=True)
class _Prepared:
    launcher: GemmLauncher | None  # None: nothing to compute (M == 0)
    device: int
    context: int  # several GPUs: the device's primary context, to launch in (0: one GPU, no switch)
    stream: Callable[[], int]  # the caller's current stream on `device` (torch's or CuPy's)


# The per-signature cache is per thread. A launcher patches the call's pointers into parameter
# buffers it owns and then launches, so two threads sharing one could launch each other's pointers;
# one cache per thread keeps the hit path free of locks. What is expensive (compiled kernels, loaded
# modules) is shared by all threads. Each thread keeps at most MAX_PREPARED signatures (shape,
# strides, dtypes, device, expected_m, SMs); past that the oldest is dropped (README "Guarantees").
MAX_PREPARED = 1024


class _ThreadCache(threading.local):
    def __init__(self) -> None:
        self.prepared: dict[tuple, _Prepared] = {}


_cache = _ThreadCache()


def _remember(key: tuple, prepared: _Prepared) -> None:
    """Insert with oldest-first eviction: a hit does no bookkeeping, and a dropped signature that is
    still in use is prepared again (milliseconds: its kernel stays compiled and loaded)."""
    cache = _cache.prepared
    while len(cache) >= MAX_PREPARED:
        del cache[next(iter(cache))]
    cache[key] = prepared


def _prepare(mode: str, arrays: tuple, names: tuple[str, ...], hint) -> tuple[_Prepared, tuple[int, ...]]:
    """First call with these signatures (or arrays without a fast reader): validate, plan, compile."""
    from pydg.scheduler.heuristics import choose_plan

    infos = tuple(array_info(x, name) for x, name in zip(arrays, names))
    ops = GemmOperands(*infos[:5], infos[5] if len(infos) > 5 else None)
    if mode == "dense":
        problem = validate.check_dense(*infos)
    elif mode == "contiguous":
        problem = validate.check_contiguous(*infos)
    else:
        problem = validate.check_masked(*infos)
    validate.check_pointers(infos, names, _ALIGNMENTS)
    _check_arch(problem.device, names[0])
    launcher = None
    if problem.m > 0:
        num_sms = min(get_num_sms(), _device_sms_of(problem.device))
        plan = choose_plan(mode, problem.m, problem.n, problem.k, problem.num_groups, num_sms, expected_m=hint)
        if autotune.enabled():
            plan = _autotuned(plan, problem, num_sms, hint, ops, infos)
        validate.check_tile_count(plan)
        # Threads that need the same new kernel wait inside compile_plan for one compilation.
        launcher = GemmLauncher(plan, ops, problem.device)
        # PYDG_PRINT_CONFIGS=1 prints each new plan once (pydg/describe.py).
        report_new_shape(plan, launcher.specs, launcher.kernel)
    prepared = _Prepared(launcher, problem.device, _launch_context(problem.device),
                         stream_getter(infos[4].library, problem.device))
    return prepared, tuple(info.ptr for info in infos) + ((0,) if len(infos) == 5 else ())


def _autotuned(plan: GemmPlan, problem, num_sms: int, hint, ops: GemmOperands, infos: tuple) -> GemmPlan:
    """PYDG_AUTOTUNE: the fastest of the model's best plans, timed on this call's arrays and stream
    (pydg/autotune.py), or the model's plan while the stream is being captured into a graph."""
    from pydg.driver.cuda import device_info, pop_context, push_context
    from pydg.scheduler.heuristics import ranked_plans

    push_context(problem.device)  # events and launches need the arrays' device's context
    try:
        stream = stream_getter(infos[4].library, problem.device)()
        if autotune.stream_is_capturing(stream):
            return plan
        ranked = ranked_plans(plan.mode, problem.m, problem.n, problem.k, problem.num_groups, num_sms,
                              expected_m=hint)
        plans = autotune.candidates([plan, *ranked])
        pointers = tuple(info.ptr for info in infos) + ((0,) if len(infos) == 5 else ())

        def time_plan(candidate) -> float:
            validate.check_tile_count(candidate)
            launcher = GemmLauncher(candidate, ops, problem.device)
            return autotune.time_launches(lambda: launcher(pointers, stream), stream)

        return autotune.best_plan(plans, device_info(problem.device).name, time_plan)
    finally:
        pop_context()


def _arrays(a, sa, b, sb, out, grouping) -> tuple:
    return (a, sa, b, sb, out) if grouping is None else (a, sa, b, sb, out, grouping)


def _signature(mode: str, arrays: tuple, hint) -> tuple[tuple | None, tuple[int, ...]]:
    """(cache key, pointers) of a call; the key is None where an array has no fast reader (such a
    call is validated every time). Pointers are a, sa, b, sb, out and the grouping vector (0 for
    the dense GEMM)."""
    key = [mode, hint, _num_sms]
    pointers = []
    for x in arrays:
        reader = _reader(type(x))
        if not reader:
            return None, ()
        signature, pointer = reader(x)
        key += signature
        pointers.append(pointer)
    if len(pointers) == 5:
        pointers.append(0)
    return tuple(key), tuple(pointers)


def _run(mode: str, names: tuple[str, ...], hint, lhs, rhs, out, grouping=None) -> None:
    if type(lhs) is tuple and type(rhs) is tuple and len(lhs) == 2 == len(rhs):
        a, sa = lhs
        b, sb = rhs
    else:
        a, sa, b, sb = validate.unpack(lhs, rhs)
    # All torch tensors (the commonest call, and the one whose per-call time is measured): the
    # signature read inline, one attribute at a time, into one tuple. Each torch attribute read is a
    # C call of 0.1-0.3 us, 4-5 us for the five tensors, about as much as the driver's launch
    # (scripts/host_profile.py), so nothing here is read twice.
    tensor = _torch_tensor
    if (type(a) is tensor and type(sa) is tensor and type(b) is tensor and type(sb) is tensor
            and type(out) is tensor and (grouping is None or type(grouping) is tensor)):
        key = (mode, hint, _num_sms,
               a.shape, a.stride(), a.dtype, a.get_device(), sa.shape, sa.stride(), sa.dtype, sa.get_device(),
               b.shape, b.stride(), b.dtype, b.get_device(), sb.shape, sb.stride(), sb.dtype, sb.get_device(),
               out.shape, out.stride(), out.dtype, out.get_device())
        if grouping is None:
            pointers = (a.data_ptr(), sa.data_ptr(), b.data_ptr(), sb.data_ptr(), out.data_ptr(), 0)
        else:
            key += (grouping.shape, grouping.stride(), grouping.dtype, grouping.get_device())
            pointers = (a.data_ptr(), sa.data_ptr(), b.data_ptr(), sb.data_ptr(), out.data_ptr(), grouping.data_ptr())
    else:
        key, pointers = _signature(mode, _arrays(a, sa, b, sb, out, grouping), hint)
    prepared = _cache.prepared.get(key) if key is not None else None
    if prepared is None:
        prepared, pointers = _prepare(mode, _arrays(a, sa, b, sb, out, grouping), names, hint)
        if key is not None:
            _remember(key, prepared)
    launcher = prepared.launcher
    # The pointers of the launcher's last launch passed this check already.
    if launcher is None or pointers != launcher.pointers:
        # TMA reads a, sa, b and writes out: 16-byte aligned; sb and the grouping vector: 4-byte loads.
        if (pointers[0] | pointers[1] | pointers[2] | pointers[4]) % 16 or (pointers[3] | pointers[5]) % 4:
            arrays = _arrays(a, sa, b, sb, out, grouping)
            validate.check_pointers(tuple(array_info(x, n) for x, n in zip(arrays, names)), names, _ALIGNMENTS)
        if launcher is None:
            return
        launcher.set_pointers(pointers)
    stream = prepared.stream()
    if prepared.context:
        _launch_in_device_context(launcher, pointers, stream, prepared)
        return
    try:
        launcher.launch.launch(stream)
    except CudaError as err:
        if err.name != "CUDA_ERROR_INVALID_CONTEXT":
            raise
        # A thread on which no library has used the device yet: bind its primary context once.
        from pydg.driver.cuda import make_current

        make_current(prepared.device)
        launcher.launch.launch(stream)


def _launch_in_device_context(launcher: GemmLauncher, pointers: tuple[int, ...], stream: int,
                              prepared: _Prepared) -> None:
    """With several GPUs the thread's current context may be another device's (torch keeps its
    current device's): then the kernel is launched with the arrays' device's primary context pushed,
    and the caller's context is current again afterwards."""
    from pydg.driver.cuda import current_context, pop_context, push_context

    if current_context() == prepared.context:
        launcher(pointers, stream)
        return
    push_context(prepared.device)
    try:
        launcher(pointers, stream)
    finally:
        pop_context()


_NAMES = ("lhs data", "lhs scales", "rhs data", "rhs scales", "out")
_CONTIGUOUS_NAMES = (*_NAMES, "m_indices")
_MASKED_NAMES = (*_NAMES, "masked_m")
# TMA reads a, sa, b and writes out (16-byte aligned); sb and m_indices/masked_m are read with
# 4-byte loads.
_ALIGNMENTS = (16, 16, 16, 4, 16, 4)


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
    _run("dense", _NAMES, None, lhs, rhs, out)


def m_grouped_gemm_fp8_fp8_bf16_nt_contiguous(lhs, rhs, out, m_indices) -> None:
    """MoE grouped GEMM, contiguous layout: out[i] = A[i] @ B[m_indices[i]]^T (with scales).

    lhs: (a, sa): a is (M_sum, K), the rows of all experts concatenated, each expert's segment
         starting at a multiple of get_m_alignment_for_contiguous_layout(); sa as for the dense GEMM.
    rhs: (b, sb): b is (G, N, K); sb is (G, ceil(N/128), ceil(K/128)) float32, contiguous.
    out: (M_sum, N) bfloat16. m_indices: int32 (M_sum,) on the GPU, row i's expert, -1 for padding;
         the kernel reads the entry of each block's first row (blocks of 64 or 128 rows, inside
         one aligned segment): a block whose first entry is -1 or any other value outside [0, G)
         is skipped and not written; otherwise all its rows use that expert (padding rows that
         share a block with an expert's rows are written too).
    """
    _run("contiguous", _CONTIGUOUS_NAMES, None, lhs, rhs, out, m_indices)


def m_grouped_gemm_fp8_fp8_bf16_nt_masked(lhs, rhs, out, masked_m, expected_m: int) -> None:
    """MoE grouped GEMM, masked layout (decoding): out[g, :masked_m[g]] = A[g] @ B[g]^T.

    lhs: (a, sa): a is (G, M_max, K); sa is (G, M_max, ceil(K/128)) float32, each group's matrix
         TMA-aligned column-major (get_col_major_tma_aligned_tensor).
    rhs: (b, sb): b is (G, N, K); sb is (G, ceil(N/128), ceil(K/128)).
    out: (G, M_max, N) bfloat16; rows at or past masked_m[g] are not written.
    masked_m: int32 (G,) on the GPU, read only by the kernel (values are clamped to [0, M_max]), so
         the call can be captured in a CUDA graph. expected_m: a positive int, the host-side hint
         of the typical rows per group (for the heuristics only).
    """
    _run("masked", _MASKED_NAMES, validate.check_expected_m(expected_m), lhs, rhs, out, masked_m)

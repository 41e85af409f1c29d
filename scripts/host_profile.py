"""Host time per call of a tiny dense GEMM (1 x 256 x 128) on the GPU, and where it goes.

    PYTHONPATH=$PWD python scripts/host_profile.py [OLD_GEMM_PY]

Prints the wall time per call of 3 x 2000 back-to-back calls after 200 warm-up calls; then the parts
of a call timed alone: reading the five tensors' signatures and pointers, the stream lookup, the
prepared launch (ctypes cuLaunchKernelEx) and, for comparison, cuLaunchKernel with the same
arguments and torch's Python-level current-stream lookup; then a cProfile of 2000 more calls.
OLD_GEMM_PY: another version of pydg/gemm.py (e.g. a commit's), timed in turn with this one.
"""
import cProfile
import ctypes
import importlib.util
import pstats
import sys
import time

import torch

import pydg
from pydg import gemm as gemm_module
from pydg.kernels import cast

sys.path.insert(0, "tests")
from gpu_util import quantized_pair  # noqa: E402

M, N, K = 1, 256, 128
CALLS = 2000


def per_call_us(fn, calls: int = CALLS) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - started
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def load_gemm(path: str):
    spec = importlib.util.spec_from_file_location("old_gemm", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def legacy_launch(launch):
    """cuLaunchKernel (no cluster attribute) with the prepared launch's function and parameters."""
    function = ctypes.CDLL("libcuda.so.1").cuLaunchKernel
    config = launch.config
    u32 = [ctypes.c_uint(v) for v in (*config.grid, *config.block, config.shared_mem_bytes)]
    args = (launch._func_ptr, *u32, ctypes.c_void_p(config.stream), launch._params_ptr, None)
    return lambda: function(*args)


def main() -> None:
    a, sa = quantized_pair(torch, M, K, per_block=False)
    b, sb = quantized_pair(torch, N, K, per_block=True)
    out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    calls = {"pydg": lambda: pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)}
    if len(sys.argv) > 1:
        old = load_gemm(sys.argv[1])
        calls[f"pydg with {sys.argv[1]}"] = lambda: old.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)
    for fn in calls.values():
        for _ in range(200):
            fn()
    torch.cuda.synchronize()
    for _ in range(3):
        for label, fn in calls.items():
            print(f"{label}: {per_call_us(fn):.1f} us per call")

    (prepared,) = gemm_module._cache.prepared.values()
    launcher = prepared.launcher
    stream = prepared.stream()
    tensors = (a, sa, b, sb, out)
    parts = {
        "signatures and pointers of the 5 tensors": lambda: [
            (x.shape, x.stride(), x.dtype, x.get_device(), x.data_ptr()) for x in tensors],
        "stream lookup (prepared)": prepared.stream,
        "launch alone (ctypes cuLaunchKernelEx)": lambda: launcher.launch.launch(stream),
        "launcher (pointer check + launch)": lambda: launcher(launcher.pointers, stream),
        "torch.cuda.current_stream().cuda_stream": lambda: torch.cuda.current_stream().cuda_stream,
    }
    if launcher.plan.cluster_size == 1:
        parts["cuLaunchKernel, same arguments"] = legacy_launch(launcher.launch)
    # A kernel with 7 small parameters (48 bytes against the GEMM's 6 tensor maps, 804 bytes).
    x = torch.randn(128, 128, device="cuda")
    kept = pydg.per_block_cast_to_fp8(x)
    cast_launcher = next(run for run in cast._launchers.values() if run.kernel.granularity == "per_block")
    parts["launch alone, cast kernel (7 small parameters)"] = lambda: cast_launcher.launch.launch(stream)
    for label, fn in parts.items():
        print(f"{label}: {per_call_us(fn):.2f} us")
    del kept
    # Each kind of attribute read alone, for the five tensors: what a call's signature costs.
    T = torch.Tensor
    reads = {
        "x.shape": lambda: (a.shape, sa.shape, b.shape, sb.shape, out.shape),
        "x.size()": lambda: (a.size(), sa.size(), b.size(), sb.size(), out.size()),
        "x.stride()": lambda: (a.stride(), sa.stride(), b.stride(), sb.stride(), out.stride()),
        "Tensor.stride(x)": lambda: (T.stride(a), T.stride(sa), T.stride(b), T.stride(sb), T.stride(out)),
        "x.dtype": lambda: (a.dtype, sa.dtype, b.dtype, sb.dtype, out.dtype),
        "x.get_device()": lambda: (a.get_device(), sa.get_device(), b.get_device(), sb.get_device(), out.get_device()),
        "x.is_cuda": lambda: (a.is_cuda, sa.is_cuda, b.is_cuda, sb.is_cuda, out.is_cuda),
        "x.data_ptr()": lambda: (a.data_ptr(), sa.data_ptr(), b.data_ptr(), sb.data_ptr(), out.data_ptr()),
        "Tensor.data_ptr(x)": lambda: (T.data_ptr(a), T.data_ptr(sa), T.data_ptr(b), T.data_ptr(sb), T.data_ptr(out)),
        "x.is_contiguous()": lambda: (a.is_contiguous(), sa.is_contiguous(), b.is_contiguous(), sb.is_contiguous(),
                                      out.is_contiguous()),
        "type(x) is T": lambda: (type(a) is T, type(sa) is T, type(b) is T, type(sb) is T, type(out) is T),
        "nothing (a tuple of the 5)": lambda: (a, sa, b, sb, out),
    }
    for label, fn in reads.items():
        print(f"5 x {label}: {per_call_us(fn, 20000):.2f} us")

    profile = cProfile.Profile()
    profile.enable()
    for _ in range(CALLS):
        calls["pydg"]()
    profile.disable()
    torch.cuda.synchronize()
    pstats.Stats(profile).sort_stats("tottime").print_stats(14)


if __name__ == "__main__":
    main()

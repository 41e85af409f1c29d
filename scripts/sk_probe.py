"""Where stream-K's time goes: for each dense SHAPE (M,N,K), times side by side (scripts/ab_plans.py's
method) the best plan without stream-K, the stream-K plan's tile without stream-K, the stream-K plan,
the same kernel with no share-out (its parameters say so: the code's own cost), and with only the
partial last wave shared out; then runs the stream-K plan once with PYDG_SK_TRACE (math thread 0's
clock at each tile's k-loop start and end, after the owner's wait, at the end) and prints when the
CTAs reach the share-out, how long owners wait and when each CTA ends.
usage: python scripts/sk_probe.py SHAPE [SHAPE ...]"""
import ctypes
import statistics
import sys
from dataclasses import replace

import torch
from cuda.bindings import driver as cu

from pydg.driver import workspace
from pydg.kernels import source
from pydg.kernels.fp8_gemm import SK_FIRST, SK_UNITS, GemmLauncher
from pydg.scheduler.heuristics import ranked_plans, with_stream_k

from plan_sweep import alternate, with_reference  # noqa: E402  (scripts/ is on sys.path when run as a script)


class Patched:
    """A launcher whose share-out parameters are overridden."""

    def __init__(self, launcher, first, units):
        self.launcher, self.first, self.units = launcher, first, units

    def __call__(self, pointers, stream):
        if pointers != self.launcher.pointers:
            self.launcher.set_pointers(pointers)
        if stream != self.launcher.workspace_stream:
            self.launcher.bind_workspace(stream)
        self.launcher.launch.set_value(SK_FIRST, self.first)
        self.launcher.launch.set_value(SK_UNITS, self.units)
        self.launcher.launch.launch(stream)


def probe(spec: str) -> None:
    m, n, k = map(int, spec.split(","))
    mode, dims, arrays, reference, ops, pointers, stream = with_reference(spec)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    whole = ranked_plans("dense", m, n, k, 1, sms)[0]
    shared = with_stream_k(whole)
    same_tile = replace(shared, stream_k=False)
    plans = [whole, same_tile, shared]
    launchers = [GemmLauncher(p, ops, 0) for p in plans]
    full, rest = divmod(shared.num_tiles, shared.num_sms)
    sk = GemmLauncher(shared, ops, 0)
    runs = launchers + [Patched(sk, shared.num_tiles, 0),
                        Patched(sk, full * shared.num_sms, rest // shared.cluster_size * shared.num_k_blocks)]
    labels = [f"{spec} {what}" for what in ("whole", "same tile", "stream-K", "SK kernel, no share-out",
                                            "share-out of the last wave only")]
    medians = alternate(runs, labels, arrays[4], reference, pointers, stream, 20)
    for label, us in zip(labels, medians):
        print(f"{label:<50} {us:8.1f} us ({us / medians[0]:.3f}x whole)")
    print(f"  stream-K plan: {shared.summary()}")

    # The trace: compiled with -DPYDG_SK_TRACE (its own cache key), 16 words per CTA past the partials.
    plain_options = source.options
    source.options = lambda plan: plain_options(plan) + ["-DPYDG_SK_TRACE=1"]
    try:
        traced = GemmLauncher(shared, ops, 0)
    finally:
        source.options = plain_options
    offset = shared.workspace_bytes
    address = workspace.workspace(0, stream, offset + shared.num_sms * 128)
    err, = cu.cuMemsetD8Async(address + offset, 0, shared.num_sms * 128, cu.CUstream(stream))
    assert err == cu.CUresult.CUDA_SUCCESS
    traced(pointers, stream)
    torch.cuda.synchronize()
    words = (ctypes.c_uint64 * (shared.num_sms * 16))()
    err, = cu.cuMemcpyDtoH(words, address + offset, ctypes.sizeof(words))
    assert err == cu.CUresult.CUDA_SUCCESS
    rows = [list(words[c * 16:(c + 1) * 16]) for c in range(shared.num_sms)]
    t0 = min(r[0] for r in rows)
    us = lambda t: (t - t0) / 1e3  # noqa: E731
    ends = [us(r[15]) for r in rows]
    print(f"  trace: kernel {max(ends):.1f} us (CTA ends {min(ends):.1f}..{max(ends):.1f}, median {statistics.median(ends):.1f})")
    for c in list(range(0, 6)) + list(range(shared.num_sms - 4, shared.num_sms)):
        r = rows[c]
        count = r[13]
        tiles = []
        for i in range(max(0, count - 6), count):
            start, end = r[1 + i % 6 * 2], r[2 + i % 6 * 2]
            tiles.append(f"{us(start):.1f}-{us(end):.1f}")
        wait = f", owner's wait done {us(r[14]):.1f}" if r[14] else ""
        print(f"  cta {c:3d}: {count} tiles, last six k-loops {' '.join(tiles)}{wait}, end {us(r[15]):.1f}")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        probe(arg)
        print(flush=True)

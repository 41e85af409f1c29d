"""How fast can TMA stream a weight matrix in the small-M GEMM's access pattern, and does loading
each row of it in longer runs help?

The small-M GEMMs (M <= 128, masked 4 x 256) read B once: every CTA owns a slab of `rows` rows of B
and walks K in boxes of 128 bytes x rows, so device memory sees 128 bytes of each row at a time,
rows K bytes apart. This kernel does only that streaming (no MMA: the consumer hands each stage
back as soon as it lands), in these patterns (kMode):

  gemm   (0) the GEMM's pattern: box (128 B, rows) at k-chunk kc, one load per stage
  pairN  (0) N such loads (consecutive k-chunks of the same rows) issued back to back into N stages
  box3dN (1) one 3D box (128 B, rows, N k-chunks) over the view (128, N_rows, K / 128)
  wide   (2) one unswizzled box (256 B, rows): two k-chunks per row in one load
  seq    (3) each CTA reads its slab's bytes in address order (boxes of 8 KB contiguous): the ceiling

On the H200 (2026-12-04, bench/results/h200_2026-12-04_stream_probe.txt) all of them ran within 2%
of seq: the 128-byte pieces do not limit how fast B streams.

Prints one line per variant: microseconds (median of CUDA-event timings, L2 flushed before each)
and GB/s of B read. Needs torch and an sm_90 GPU. Usage: python scripts/stream_probe.py [K]
"""
from __future__ import annotations

import pathlib
import sys

import torch

from pydg.driver import nvrtc
from pydg.driver.launch import KernelLaunch
from pydg.driver.module import get_function
from pydg.tma.encode import encode
from pydg.tma.spec import TensorMapSpec

from plan_sweep import time_us  # noqa: E402  (scripts/ is on sys.path when run as a script)

PTX = (pathlib.Path(__file__).resolve().parents[1] / "pydg" / "kernels" / "ptx.cuh").read_text()

SOURCE = r"""
// Without a global that changes with it, NVRTC's -DPYDG_PTX_NONCE retry (see pydg/driver/nvrtc.py)
// would produce the same PTX again and ptxas would still skip its report.
#ifdef PYDG_PTX_NONCE
__device__ int pydg_ptx_nonce = PYDG_PTX_NONCE;
#endif
// kRows rows per slab; kChunks k-chunks of 128 B per load group; kGroups groups in the ring;
// kMode 0: kChunks 3D loads of one chunk each, back to back; 1: one 3D box of kChunks chunks;
// 2: one box of 2 chunks' bytes per row (unswizzled, kChunks == 2); 3: the slab in address order.
extern "C" __global__ void __launch_bounds__(128, 1)
stream_probe(const __grid_constant__ TmaMap map, uint32_t num_steps, uint32_t num_slabs) {
    constexpr uint32_t kSlot = kRows * 128;
    constexpr uint32_t kGroupBytes = kSlot * kChunks;
    extern __shared__ __align__(1024) uint8_t smem[];
    uint64_t* full = reinterpret_cast<uint64_t*>(smem + kGroups * kGroupBytes);
    uint64_t* empty = full + kGroups;
    if (threadIdx.x == 0) {
        for (uint32_t g = 0; g < kGroups; ++g) {
            mbar_init(&full[g], 1);
            mbar_init(&empty[g], 1);
        }
        fence_barrier_init();
    }
    __syncthreads();
    uint32_t g = 0, phase = 0;
    auto advance = [&]() { g = g + 1 == kGroups ? 0 : g + 1; phase ^= g == 0; };
    if (threadIdx.x == 0) {
        for (uint32_t slab = blockIdx.x; slab < num_slabs; slab += gridDim.x) {
            for (uint32_t step = 0; step < num_steps; ++step) {
                mbar_wait(&empty[g], phase ^ 1);
                mbar_arrive_expect_tx(&full[g], kGroupBytes);
                uint8_t* dst = smem + g * kGroupBytes;
                if (kMode == 3) {
                    // (128, rows of the whole matrix): the slab's bytes in address order.
                    for (uint32_t c = 0; c < kChunks; ++c)
                        tma_load_3d(&map, &full[g], dst + c * kSlot, 0,
                                    (slab * num_steps * kChunks + step * kChunks + c) * kRows, 0);
                } else if (kMode == 0) {
                    for (uint32_t c = 0; c < kChunks; ++c)
                        tma_load_3d(&map, &full[g], dst + c * kSlot, (step * kChunks + c) * 128, slab * kRows, 0);
                } else if (kMode == 1) {
                    tma_load_3d(&map, &full[g], dst, 0, slab * kRows, step * kChunks);
                } else {
                    tma_load_3d(&map, &full[g], dst, step * 256, slab * kRows, 0);
                }
                advance();
            }
        }
    } else if (threadIdx.x == 32) {
        for (uint32_t slab = blockIdx.x; slab < num_slabs; slab += gridDim.x) {
            for (uint32_t step = 0; step < num_steps; ++step) {
                mbar_wait(&full[g], phase);
                mbar_arrive(&empty[g]);
                advance();
            }
        }
    }
}
"""


def build(rows: int, chunks: int, groups: int, mode: int):
    options = [f"-DkRows={rows}u", f"-DkChunks={chunks}u", f"-DkGroups={groups}u", f"-DkMode={mode}u"]
    compiled = nvrtc.compile_cubin(PTX + SOURCE, "stream_probe.cu", options)
    smem = groups * chunks * rows * 128 + 2 * groups * 8
    func = get_function(torch.cuda.current_device(), f"probe-{rows}-{chunks}-{groups}-{mode}", compiled.cubin,
                        "stream_probe", smem)
    return func, smem


def run(name: str, b: torch.Tensor, rows: int, chunks: int, groups: int, mode: int, num_sms: int) -> None:
    n, k = b.shape
    if mode == 3:
        spec = TensorMapSpec("b", "uint8", b.data_ptr(), (128, n * k // 128, 1), (128, 128 * n * k // 128),
                             (128, rows, 1), swizzle="128B")
    elif mode == 1:
        spec = TensorMapSpec("b", "uint8", b.data_ptr(), (128, n, k // 128), (k, 128), (128, rows, chunks),
                             swizzle="128B")
    elif mode == 2:
        spec = TensorMapSpec("b", "uint8", b.data_ptr(), (k, n, 1), (k, n * k), (256, rows, 1), swizzle="none")
    else:
        spec = TensorMapSpec("b", "uint8", b.data_ptr(), (k, n, 1), (k, n * k), (128, rows, 1), swizzle="128B")
    try:
        tmap = encode(spec)
    except Exception as err:  # a layout the driver refuses is a result too
        print(f"{name:>10} rows {rows:3d}: encode refused: {err}")
        return
    func, smem = build(rows, chunks, groups, mode)
    slabs = n // rows
    steps = k // (128 * chunks)
    launch = KernelLaunch(func, (min(num_sms, slabs), 1, 1), (128, 1, 1), smem, 1, ("tensor_map", "u32", "u32"))
    launch.set_tensor_map(0, tmap.getPtr())
    launch.set_value(1, steps)
    launch.set_value(2, slabs)
    stream = torch.cuda.current_stream().cuda_stream
    us = time_us(lambda: launch.launch(stream))
    print(f"{name:>10} rows {rows:3d} in flight {groups * chunks * rows * 128 // 1024:4d} KB: "
          f"{us:8.1f} us {n * k / us / 1e3:7.0f} GB/s", flush=True)


def main() -> None:
    k = int(sys.argv[1]) if len(sys.argv) > 1 else 16384
    props = torch.cuda.get_device_properties(0)
    num_sms = props.multi_processor_count
    print(f"{props.name}, {num_sms} SMs, K = {k}")
    for rows in (64, 128):
        b = torch.randint(0, 255, (num_sms * rows, k), dtype=torch.uint8, device="cuda")
        copy = torch.empty_like(b)
        us = time_us(lambda: copy.copy_(b))
        print(f"{'copy':>10} rows {rows:3d}: {us:8.1f} us {2 * b.numel() / us / 1e3:7.0f} GB/s (read + write)")
        slots = 16 if rows == 64 else 8  # 128 KB in flight per SM, as a 64x64 tile's 13 stages
        run("seq", b, rows, 1, slots, 3, num_sms)
        run("gemm", b, rows, 1, slots, 0, num_sms)
        run("gemm/2", b, rows, 1, slots // 2, 0, num_sms)
        for chunks in (2, 4, 8):
            run(f"pair{chunks}", b, rows, chunks, slots // chunks, 0, num_sms)
            run(f"box3d{chunks}", b, rows, chunks, slots // chunks, 1, num_sms)
        run("wide", b, rows, 2, slots // 2, 2, num_sms)
        del b, copy


if __name__ == "__main__":
    main()

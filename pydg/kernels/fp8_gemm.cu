// The kernel entry point. Its compile-time values arrive as -D options from pydg/kernels/source.py.
#include "fp8_gemm.cuh"

#ifdef PYDG_PTX_NONCE
// NVRTC 13 skips ptxas (and its -v report) for PTX it has already assembled in this process; a
// global that only this compilation has makes the PTX new (see pydg/driver/nvrtc.py).
__device__ int pydg_ptx_nonce = PYDG_PTX_NONCE;
#endif

extern "C" __global__ void __launch_bounds__((PYDG_BLOCK_M == 64 ? 2 : 3) * 128, 1)
pydg_fp8_gemm(const __grid_constant__ TmaMap tma_a, const __grid_constant__ TmaMap tma_b,
              const __grid_constant__ TmaMap tma_sa, const __grid_constant__ TmaMap tma_d,
              const __grid_constant__ TmaMap tma_a_tail, const __grid_constant__ TmaMap tma_sa_tail,
              const float* scales_b, uint8_t* d, const int* grouping, uint32_t shape_m,
              uint32_t num_groups, uint32_t band, const __grid_constant__ RasterDivisors raster) {
    pydg::fp8_gemm<PYDG_MODE, PYDG_BLOCK_M, PYDG_BLOCK_N, PYDG_NUM_STAGES, PYDG_SHAPE_N, PYDG_SHAPE_K,
                   PYDG_CLUSTER_SIZE, PYDG_MULTICAST, PYDG_INNER_IS_M, PYDG_OVERLAP_PROMOTION,
                   PYDG_OUTPUT_IN_STAGES, PYDG_EARLY_START, PYDG_B_EVICT_FIRST,
                   PYDG_SPLIT_TAIL, PYDG_SMEM_BYTES>(
        tma_a, tma_b, tma_sa, tma_d, tma_a_tail, tma_sa_tail, scales_b, d, grouping, shape_m, num_groups, band,
        raster);
}

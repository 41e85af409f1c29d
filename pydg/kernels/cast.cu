// The cast kernels' entry points (pydg/kernels/cast.py). Compile-time values arrive as -D options:
// PYDG_CAST_INPUT (pydg_cast::InputType of the input elements), PYDG_CAST_PER_BLOCK (0: the
// per-token 1 x 128 cast, 1: the per-block 128 x 128 cast) and PYDG_CAST_CTAS_PER_SM (the launch
// bounds the grid is planned with). One kernel per compilation, so that ptxas's report is its own.
#include "cast.cuh"

#ifdef PYDG_PTX_NONCE
// NVRTC 13 skips ptxas (and its -v report) for PTX it has already assembled; a global that only this
// compilation has makes the PTX new (see pydg/driver/nvrtc.py).
__device__ int pydg_ptx_nonce = PYDG_PTX_NONCE;
#endif

#if PYDG_CAST_PER_BLOCK
extern "C" __global__ void __launch_bounds__(pydg_cast::kBlockThreads, PYDG_CAST_CTAS_PER_SM)
pydg_per_block_cast(const uint8_t* x, uint8_t* codes, float* scales, uint32_t n, uint32_t k,
                    uint64_t row_stride, uint64_t group_stride) {
    pydg_cast::per_block_cast<PYDG_CAST_INPUT>(x, codes, scales, n, k, row_stride, group_stride);
}
#else
extern "C" __global__ void __launch_bounds__(pydg_cast::kBlockThreads, PYDG_CAST_CTAS_PER_SM)
pydg_per_token_cast(const uint8_t* x, uint8_t* codes, float* scales, const int32_t* masked_m, uint32_t rows,
                    uint32_t num_groups, uint32_t k, uint64_t row_stride, uint64_t group_stride) {
    pydg_cast::per_token_cast<PYDG_CAST_INPUT>(x, codes, scales, masked_m, rows, num_groups, k, row_stride,
                                               group_stride);
}
#endif

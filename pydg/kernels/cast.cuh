// Casts of float data into pydg's FP8 recipe (pydg/quantize.py is the spec, bit for bit):
//   scale = max(amax, 1e-4) / 448, correctly rounded to float32 (amax is NaN if any element is)
//   code  = E4M3(x / scale): the float32 quotient correctly rounded, then rounded to nearest-even
//           into E4M3, saturating at +-448.
// Both quotients are correctly rounded (the scale's by div.rn.f32, the elements' by `quotient`), and
// -0, subnormals, Inf and NaN come out as in numpy.
//
// Work is cut into "vectors" of 16 consecutive elements of a row: one lane loads a vector with
// 16-byte loads and stores its 16 codes with one 16-byte store. Since K is a multiple of 16, a
// vector is wholly inside the row or wholly past it, and the 8 lanes of a 128-wide scale block are
// 8 neighbouring lanes of one warp.
#pragma once
#include "ptx.cuh"  // the integer types, DEVICE, Bytes16 and store_global_16

namespace pydg_cast {

constexpr uint32_t kBlock = 128;                    // the recipe's scaling granularity
constexpr uint32_t kVector = 16;                    // elements per lane and per 16-byte code store
constexpr uint32_t kLanesPerBlock = kBlock / kVector;  // 8 lanes share a per-token scale
constexpr uint32_t kWarpVectors = 32;               // one vector per lane
constexpr uint32_t kScaleAlignment = 4;             // floats per 16 bytes: TMA-aligned columns of A's scales
constexpr uint32_t kBlockThreads = 256;             // both kernels' CTAs
constexpr float kE4M3Max = 448.0f;
constexpr float kAmaxFloor = 1e-4f;
constexpr float kFloat32Max = 3.40282346638528859812e+38f;

// ---- PTX ----------------------------------------------------------------------------------------
// The input is read exactly once, through the read-only path and without allocating in L1.
DEVICE Bytes16 load_streaming_16(const uint8_t* src) {
    Bytes16 v;
    asm("ld.global.nc.L1::no_allocate.v4.b32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(src));
    return v;
}

DEVICE void store_f32(float* dst, float v) {
    asm volatile("st.global.f32 [%0], %1;" ::"l"(dst), "f"(v) : "memory");
}

DEVICE int32_t load_s32(const int32_t* src) {
    int32_t v;
    asm volatile("ld.global.s32 %0, [%1];" : "=r"(v) : "l"(src));
    return v;
}

// max(a, |b|) that returns NaN if either is NaN, as numpy's max does (fmaxf would drop the NaN and
// hide a poisoned block behind a finite scale).
DEVICE float max_abs_nan(float a, float b) {
    float r;
    asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(fabsf(b)));
    return r;
}

DEVICE float max_nan(float a, float b) {
    float r;
    asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}

// IEEE division and reciprocal, whatever -prec-div says: one ulp off changes an E4M3 code where
// the quotient sits on a rounding midpoint.
DEVICE float div_rn(float a, float b) {
    float r;
    asm("div.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}

DEVICE float rcp_rn(float a) {
    float r;
    asm("rcp.rn.f32 %0, %1;" : "=f"(r) : "f"(a));
    return r;
}

DEVICE float mul_rn(float a, float b) {
    float r;
    asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}

DEVICE float fma_rn(float a, float b, float c) {
    float r;
    asm("fma.rn.f32 %0, %1, %2, %3;" : "=f"(r) : "f"(a), "f"(b), "f"(c));
    return r;
}

// |magnitude| with the sign of `sign`.
DEVICE float copy_sign(float magnitude, float sign) {
    float r;
    asm("copysign.f32 %0, %1, %2;" : "=f"(r) : "f"(sign), "f"(magnitude));
    return r;
}

// Two codes in one 16-bit word, `lo` in the low byte (cvt puts its first source in the high byte).
DEVICE uint32_t pack_e4m3x2(float lo, float hi) {
    uint16_t packed;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(packed) : "f"(hi), "f"(lo));
    return packed;
}

DEVICE float f16_to_f32(uint16_t h) {
    float r;
    asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"(h));
    return r;
}

DEVICE float f64_to_f32(uint32_t lo, uint32_t hi) {
    double d;
    float r;
    asm("mov.b64 %0, {%1, %2};" : "=d"(d) : "r"(lo), "r"(hi));
    asm("cvt.rn.f32.f64 %0, %1;" : "=f"(r) : "d"(d));
    return r;
}

DEVICE float bits_to_f32(uint32_t bits) {
    return __uint_as_float(bits);
}

// ---- input element types: 16 elements of a vector to float32, exactly as numpy's astype does ----
enum InputType : uint32_t { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2, kFloat64 = 3 };

template <uint32_t kType> struct Input;

template <> struct Input<kFloat32> {
    static constexpr uint32_t kBytes = 4;
    static DEVICE void load(const uint8_t* src, float (&v)[kVector]) {
#pragma unroll
        for (uint32_t i = 0; i < 4; ++i) {
            const Bytes16 w = load_streaming_16(src + 16 * i);
            v[4 * i + 0] = bits_to_f32(w.x);
            v[4 * i + 1] = bits_to_f32(w.y);
            v[4 * i + 2] = bits_to_f32(w.z);
            v[4 * i + 3] = bits_to_f32(w.w);
        }
    }
};

// bfloat16 is the top half of a float32: widening is a shift. Little-endian: the lower address
// (the earlier element) is the low half of each word.
template <> struct Input<kBFloat16> {
    static constexpr uint32_t kBytes = 2;
    static DEVICE void load(const uint8_t* src, float (&v)[kVector]) {
#pragma unroll
        for (uint32_t i = 0; i < 2; ++i) {
            const Bytes16 w = load_streaming_16(src + 16 * i);
            const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
            for (uint32_t j = 0; j < 4; ++j) {
                v[8 * i + 2 * j + 0] = bits_to_f32(words[j] << 16);
                v[8 * i + 2 * j + 1] = bits_to_f32(words[j] & 0xFFFF0000u);
            }
        }
    }
};

template <> struct Input<kFloat16> {
    static constexpr uint32_t kBytes = 2;
    static DEVICE void load(const uint8_t* src, float (&v)[kVector]) {
#pragma unroll
        for (uint32_t i = 0; i < 2; ++i) {
            const Bytes16 w = load_streaming_16(src + 16 * i);
            const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
            for (uint32_t j = 0; j < 4; ++j) {
                v[8 * i + 2 * j + 0] = f16_to_f32(static_cast<uint16_t>(words[j] & 0xFFFFu));
                v[8 * i + 2 * j + 1] = f16_to_f32(static_cast<uint16_t>(words[j] >> 16));
            }
        }
    }
};

// float64 is rounded to float32 first (round to nearest even), as pydg.quantize does.
template <> struct Input<kFloat64> {
    static constexpr uint32_t kBytes = 8;
    static DEVICE void load(const uint8_t* src, float (&v)[kVector]) {
#pragma unroll
        for (uint32_t i = 0; i < 8; ++i) {
            const Bytes16 w = load_streaming_16(src + 16 * i);
            v[2 * i + 0] = f64_to_f32(w.x, w.y);
            v[2 * i + 1] = f64_to_f32(w.z, w.w);
        }
    }
};

// ---- the recipe -----------------------------------------------------------------------------------
DEVICE float vector_amax(const float (&v)[kVector]) {
    float amax = 0.0f;
#pragma unroll
    for (uint32_t i = 0; i < kVector; ++i)
        amax = max_abs_nan(amax, v[i]);
    return amax;
}

DEVICE float scale_from_amax(float amax) {
    return div_rn(max_nan(amax, kAmaxFloor), kE4M3Max);
}

// x / scale correctly rounded, for a finite scale in [1e-4 / 448, FLT_MAX / 448] and finite x (a block
// with an Inf or NaN has an Inf or NaN scale), from inverse = RN(1 / scale): a full division per
// element would cost a MUFU and a slow-path check. q0 = RN(x * inverse) is within 1.5 ulp; one
// correction with the residual x - scale * q0 (fma) makes it faithful, and a second one, whose
// residual is then exact, gives the correctly rounded quotient (Markstein's theorem). Residuals
// underflow only where |x / scale| < 2^-80, far below E4M3's smallest code (2^-9), where only the
// sign matters; copysign keeps it (0 - 0 in the corrections would turn -0 into +0).
DEVICE float quotient(float x, float scale, float inverse) {
    const float q0 = mul_rn(x, inverse);
    const float q1 = fma_rn(fma_rn(-scale, q0, x), inverse, q0);
    const float q2 = fma_rn(fma_rn(-scale, q1, x), inverse, q1);
    return copy_sign(q2, x);
}

// The 16 codes of a vector: E4M3(x / scale), `inverse` = rcp_rn(scale). An Inf or NaN scale (a block
// holding an Inf or a NaN) takes IEEE division, so that x / Inf = 0 and x / NaN = NaN as in numpy.
DEVICE Bytes16 vector_codes(const float (&v)[kVector], float scale, float inverse) {
    float q[kVector];
    if (scale <= kFloat32Max) {
#pragma unroll
        for (uint32_t i = 0; i < kVector; ++i)
            q[i] = quotient(v[i], scale, inverse);
    } else {
#pragma unroll
        for (uint32_t i = 0; i < kVector; ++i)
            q[i] = div_rn(v[i], scale);
    }
    uint32_t words[4];
#pragma unroll
    for (uint32_t i = 0; i < 4; ++i)
        words[i] = pack_e4m3x2(q[4 * i + 0], q[4 * i + 1]) | (pack_e4m3x2(q[4 * i + 2], q[4 * i + 3]) << 16);
    return Bytes16{words[0], words[1], words[2], words[3]};
}

// ---- per-token (1 x 128) cast ---------------------------------------------------------------------
// x: (G, M, K) with byte strides (group_stride, row_stride, element). codes: (G, M, K) contiguous.
// scales: (G, ceil(K/128), align(M, 4)) contiguous, i.e. (G, M, ceil(K/128)) TMA-aligned column-major.
// masked_m (optional, G int32 on the GPU): rows at or past masked_m[g] are neither read nor written.
//
// A warp takes "units" of 32 vectors (512 elements, four scale blocks) of one row, and the grid
// strides over the G * M * ceil(K/512) units, kUnitsInFlight at a time: their loads are all issued
// before the first is used, which doubles the bytes in flight per warp (the kernel is bound by
// memory latency x bandwidth, and 4 CTAs of 8 warps per SM are all the registers allow). Units are
// warp-uniform, so every shuffle is made by all 32 lanes; lanes past a row's end, past the last
// unit or in a masked row take part with amax 0 (the reference's zero padding) and store nothing.
constexpr uint32_t kUnitsInFlight = 2;

struct TokenUnit {
    uint32_t group, row, row_index, vector;  // row_index counts rows over all groups
    bool inside;                             // this lane has a vector to cast
};

DEVICE TokenUnit token_unit(uint32_t unit, uint32_t num_units, uint32_t units_per_row, uint32_t rows,
                            uint32_t vectors_per_row, const int32_t* masked_m) {
    TokenUnit u;
    u.row_index = unit / units_per_row;
    u.group = u.row_index / rows;
    u.row = u.row_index - u.group * rows;
    u.vector = (unit - u.row_index * units_per_row) * kWarpVectors + threadIdx.x % 32;
    u.inside = unit < num_units && u.vector < vectors_per_row;
    if (u.inside && masked_m != nullptr)
        u.inside = static_cast<int32_t>(u.row) < load_s32(masked_m + u.group);
    return u;
}

template <uint32_t kType>
DEVICE void per_token_cast(const uint8_t* x, uint8_t* codes, float* scales, const int32_t* masked_m,
                           uint32_t rows, uint32_t num_groups, uint32_t k, uint64_t row_stride,
                           uint64_t group_stride) {
    const uint32_t num_warps = gridDim.x * (blockDim.x / 32);
    const uint32_t vectors_per_row = k / kVector;
    const uint32_t units_per_row = (vectors_per_row + kWarpVectors - 1) / kWarpVectors;
    const uint32_t num_units = num_groups * rows * units_per_row;  // < 2^31: checked by the host
    const uint64_t blocks_per_row = (k + kBlock - 1) / kBlock;
    const uint64_t aligned_rows = (rows + kScaleAlignment - 1) / kScaleAlignment * kScaleAlignment;

    for (uint32_t first = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; first < num_units;
         first += kUnitsInFlight * num_warps) {
        TokenUnit units[kUnitsInFlight];
        float v[kUnitsInFlight][kVector];
#pragma unroll
        for (uint32_t i = 0; i < kUnitsInFlight; ++i) {
            units[i] = token_unit(first + i * num_warps, num_units, units_per_row, rows, vectors_per_row, masked_m);
            if (units[i].inside)
                Input<kType>::load(x + units[i].group * group_stride + units[i].row * row_stride +
                                       uint64_t(units[i].vector) * kVector * Input<kType>::kBytes, v[i]);
        }
#pragma unroll
        for (uint32_t i = 0; i < kUnitsInFlight; ++i) {
            const TokenUnit& u = units[i];
            float amax = u.inside ? vector_amax(v[i]) : 0.0f;
#pragma unroll
            for (uint32_t width = kLanesPerBlock / 2; width > 0; width /= 2)
                amax = max_nan(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, width));
            const float scale = scale_from_amax(amax);
            if (u.inside) {
                store_global_16(codes + uint64_t(u.row_index) * k + uint64_t(u.vector) * kVector,
                         vector_codes(v[i], scale, rcp_rn(scale)));
                if (u.vector % kLanesPerBlock == 0) {
                    const uint64_t block = u.vector / kLanesPerBlock;
                    store_f32(scales + (u.group * blocks_per_row + block) * aligned_rows + u.row, scale);
                }
            }
        }
    }
}

// ---- per-block (128 x 128) cast -------------------------------------------------------------------
// x: (G, N, K) with byte strides (group_stride, row_stride, element). codes: (G, N, K) contiguous.
// scales: (G, ceil(N/128), ceil(K/128)) contiguous. One CTA of 256 threads per block (grid x: K
// blocks, y: N blocks, z: groups); thread t holds vector t % 8 of rows t / 8 + 32 i, i < 4, in
// registers between the block's amax and its codes, so the input is read from memory once.
constexpr uint32_t kRowsPerPass = kBlockThreads / kLanesPerBlock;  // 32
constexpr uint32_t kPasses = kBlock / kRowsPerPass;                // 4

template <uint32_t kType>
DEVICE void per_block_cast(const uint8_t* x, uint8_t* codes, float* scales, uint32_t n, uint32_t k,
                           uint64_t row_stride, uint64_t group_stride) {
    __shared__ float warp_amax[kBlockThreads / 32];
    const uint32_t group = blockIdx.z;
    const uint32_t vector = blockIdx.x * kLanesPerBlock + threadIdx.x % kLanesPerBlock;
    const uint32_t first_row = blockIdx.y * kBlock + threadIdx.x / kLanesPerBlock;
    const bool column_inside = vector < k / kVector;
    const uint8_t* x_group = x + group * group_stride + uint64_t(vector) * kVector * Input<kType>::kBytes;

    float v[kPasses][kVector];
    float amax = 0.0f;
#pragma unroll
    for (uint32_t pass = 0; pass < kPasses; ++pass) {
        const uint32_t row = first_row + pass * kRowsPerPass;
        if (column_inside && row < n) {
            Input<kType>::load(x_group + row * row_stride, v[pass]);
            amax = max_nan(amax, vector_amax(v[pass]));
        }
    }
#pragma unroll
    for (uint32_t width = 16; width > 0; width /= 2)
        amax = max_nan(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, width));
    if (threadIdx.x % 32 == 0)
        warp_amax[threadIdx.x / 32] = amax;
    __syncthreads();
#pragma unroll
    for (uint32_t w = 0; w < kBlockThreads / 32; ++w)
        amax = max_nan(amax, warp_amax[w]);
    const float scale = scale_from_amax(amax);
    const float inverse = rcp_rn(scale);

    if (threadIdx.x == 0)
        store_f32(scales + (uint64_t(group) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x, scale);
    uint8_t* codes_group = codes + uint64_t(group) * n * k + uint64_t(vector) * kVector;
#pragma unroll
    for (uint32_t pass = 0; pass < kPasses; ++pass) {
        const uint32_t row = first_row + pass * kRowsPerPass;
        if (column_inside && row < n)
            store_global_16(codes_group + uint64_t(row) * k, vector_codes(v[pass], scale, inverse));
    }
}

}  // namespace pydg_cast

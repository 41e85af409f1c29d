// FP8 (E4M3) GEMM with fine-grained scaling on Hopper: D[M, N] (bf16) = (A * sa) @ (B * sb)^T.
// A: M x K, one FP32 scale per row per 128 of K; B: N x K, one FP32 scale per 128 x 128 block.
//
// One persistent kernel family for the dense GEMM and the two MoE layouts (kMode). Roles:
//   producer warpgroup : one thread walks the tiles and issues TMA loads into a ring of stages;
//   math warpgroups    : wgmma on each stage, FP32 promotion per 128 of K, epilogue via TMA store.
// Each stage has a "full" barrier (TMA bytes landed) and an "empty" barrier (every math warp of
// every CTA that reads the stage is done with it).
#pragma once
#include "ptx.cuh"
#include "scheduler.cuh"
#include "wgmma_fp8.cuh"

namespace pydg {

constexpr uint32_t kBlockK = 128;  // one scale block of K per stage
constexpr uint32_t kWgmmaK = 32;   // K of one FP8 wgmma
// Registers per thread after setmaxnreg: 128 producer threads give theirs to the math warpgroups
// (one math group: 128 x 248 + 128 x 40; two: 256 x 232 + 128 x 40; both within 64K).
constexpr uint32_t kProducerRegisters = 40;

template <uint32_t kBlockM, uint32_t kBlockN, uint32_t kNumStages, uint32_t kNumSbFloats, bool kOutputInStages>
struct SmemLayout {
    // Everything TMA writes with 128-byte swizzling must start on a 1024-byte boundary.
    // kOutputInStages: the output tile has no area of its own (see OutputTile).
    static constexpr uint32_t kDBytes = kOutputInStages ? 0 : kBlockM * kBlockN * 2;
    static constexpr uint32_t kABytes = kBlockM * kBlockK;
    static constexpr uint32_t kBBytes = kBlockN * kBlockK;
    static constexpr uint32_t kSaBytes = kBlockM * 4;
    // TMA bytes per stage when the first `a_rows` rows of A's and its scales' slots are loaded.
    static constexpr uint32_t stage_bytes(uint32_t a_rows) { return a_rows * (kBlockK + 4) + kBBytes; }
    static constexpr uint32_t kStageBytes = stage_bytes(kBlockM);
    static constexpr uint32_t kAOffset = kDBytes;
    static constexpr uint32_t kBOffset = kAOffset + kNumStages * kABytes;
    static constexpr uint32_t kSaOffset = kBOffset + kNumStages * kBBytes;
    // B's scales of the whole tile (every k-block of the up to 3 scale blocks its columns span).
    static constexpr uint32_t kSbOffset = kSaOffset + kNumStages * kSaBytes;
    static constexpr uint32_t kBarrierOffset = kSbOffset + (kNumSbFloats * 4 + 15) / 16 * 16;
    static constexpr uint32_t kTotalBytes = kBarrierOffset + 2 * kNumStages * 8;
    static_assert(kDBytes % 1024 == 0 && kABytes % 1024 == 0 && kBBytes % 1024 == 0, "swizzle alignment");
    static_assert(kSaBytes % 128 == 0, "TMA destination alignment");
};

// The output tile in shared memory, as column chunks of 64, 32 or 16 BF16 (the widest that divides
// the tile's width): rows of 128, 64 or 32 bytes, each chunk stored by one TMA store with the
// swizzle of its row size. The swizzle permutes the 16-byte pieces of a row by the row's position in
// a 1024-byte span (128-byte swizzle: row % 8; 64: (row / 2) % 4; 32: (row / 4) % 2), so the eight
// rows of one stmatrix land in eight different bank groups. A row-major tile of 160 columns (a
// 320-byte pitch) would put them in two: a 4-way conflict.
//
// A 64-column chunk (kBlockM rows of 128 bytes) is exactly the size of a stage's slot of A. With
// kOutputInStages, chunk c lives in the A slot of the stage that held the tile's k-block
// kNumKBlocks - kHeldStages + c: those stages are not handed back to the producer until the TMA
// store has read them (fp8_gemm's release_held). That frees the tile's own output area for one
// more stage (256x128: 4 stages instead of 3).
template <uint32_t kBlockM, uint32_t kBlockN>
struct OutputTile {
    static constexpr uint32_t kChunkCols = kBlockN % 64 == 0 ? 64 : kBlockN % 32 == 0 ? 32 : 16;
    static constexpr uint32_t kRowBytes = kChunkCols * 2;
    static constexpr uint32_t kChunkBytes = kBlockM * kRowBytes;
    static constexpr uint32_t kNumChunks = kBlockN / kChunkCols;
    static constexpr bool kChunksFitStages = kChunkCols == 64;
    static_assert(kChunkBytes % 1024 == 0, "each chunk starts a whole swizzle span");

    // Byte offset of the 8 columns (16 bytes) starting at `col` (a multiple of 8) of `row`, within
    // its chunk.
    DEVICE static uint32_t offset_in_chunk(uint32_t row, uint32_t col) {
        const uint32_t piece = (col % kChunkCols) / 8;
        const uint32_t span_row = row * kRowBytes / 128 % (kRowBytes / 16);
        return row * kRowBytes + (piece ^ span_row) * 16;
    }
};

// The scales one promotion applies: A's of the thread's two fragment rows, B's of the (up to 3)
// scale blocks the tile's columns span.
struct Scales {
    float a0, a1, b0, b1, b2;
};

// kOverlapPromotion's loop: k-blocks per chunk (the step sequence in fp8_gemm is written for 4).
constexpr uint32_t kOverlapChunk = 4;

constexpr uint32_t gcd(uint32_t a, uint32_t b) { return b == 0 ? a : gcd(b, a % b); }

// The ring's next stage; the parity of the barrier phase to wait for flips each time it wraps.
template <uint32_t kNumStages>
DEVICE void advance_stage(uint32_t& stage, uint32_t& phase) {
    stage = stage + 1 == kNumStages ? 0 : stage + 1;
    phase ^= stage == 0;
}

template <uint32_t kValue> struct Constant {
    static constexpr uint32_t value = kValue;
};

// f(Constant<value>{}) for a runtime value in {kStep, 2 kStep, ..., kLast}: f is compiled once per
// value, each copy with its value known to the compiler.
template <uint32_t kStep, uint32_t kLast, uint32_t kValue = kStep, typename F>
DEVICE void with_constant(uint32_t value, const F& f) {
    if constexpr (kValue >= kLast) {
        f(Constant<kLast>{});
    } else if (value == kValue) {
        f(Constant<kValue>{});
    } else {
        with_constant<kStep, kLast, kValue + kStep>(value, f);
    }
}

template <uint32_t kMode, uint32_t kBlockM, uint32_t kBlockN, uint32_t kNumStages, uint32_t kShapeN,
          uint32_t kShapeK, uint32_t kClusterSize, uint32_t kMulticast, bool kInnerIsM, bool kOverlapPromotion,
          bool kOutputInStages, bool kEarlyStart, bool kBEvictFirst,
          bool kSplitTail, uint32_t kSmemBytes>
DEVICE void fp8_gemm(const TmaMap& tma_a, const TmaMap& tma_b, const TmaMap& tma_sa, const TmaMap& tma_d,
                     const TmaMap& tma_a_tail, const TmaMap& tma_sa_tail,
                     const float* __restrict__ scales_b, uint8_t* d_ptr, const int* grouping, uint32_t shape_m,
                     uint32_t num_groups, uint32_t band, const RasterDivisors& raster) {
    // One math warpgroup per 64 rows up to two; a 256-row tile gives each warpgroup two 64-row
    // sub-blocks (rows g*64 and g*64 + 128), so each stage of B feeds four wgmma row blocks.
    constexpr uint32_t kNumMathGroups = kBlockM == 64 ? 1 : 2;
    constexpr uint32_t kNumSubBlocks = kBlockM / (64 * kNumMathGroups);
    constexpr uint32_t kNumMathThreads = kNumMathGroups * 128;
    constexpr uint32_t kNumKBlocks = (kShapeK + kBlockK - 1) / kBlockK;
    constexpr uint32_t kNumNBlocks = (kShapeN + kBlockN - 1) / kBlockN;
    constexpr uint32_t kNumSbRows = (kShapeN + 127) / 128;  // rows of B's scale blocks per group
    constexpr uint32_t kAccum = kBlockN / 2;                 // accumulators per thread per sub-block
    // Tiles start at multiples of kBlockN, so at multiples of kSplitStep within B's 128-row scale
    // blocks; the latest start, 128 - kSplitStep, decides how many blocks a tile can span (a 176-wide
    // tile three, a 192-wide one two).
    constexpr uint32_t kSplitStep = gcd(kBlockN, 128);
    constexpr uint32_t kNumSbPerTile = (128 - kSplitStep + kBlockN + 127) / 128;
    constexpr uint32_t kLastSplit = kBlockN < 128 ? kBlockN : 128;
    using Layout = SmemLayout<kBlockM, kBlockN, kNumStages, kNumSbPerTile * kNumKBlocks, kOutputInStages>;
    using Out = OutputTile<kBlockM, kBlockN>;
    // kOutputInStages: the tile's last kHeldStages stages stage its output (OutputTile). The
    // producer needs at least one other stage to start the next tile.
    constexpr uint32_t kHeldStages = kOutputInStages ? Out::kNumChunks : 0;
    static_assert(!kOutputInStages || (Out::kChunksFitStages && !kOverlapPromotion && kHeldStages < kNumStages &&
                                       kHeldStages <= kNumKBlocks), "output in stages");
    using Wgmma = WgmmaFp8<kBlockN>;
    static_assert(kBlockM == 64 || kBlockM == 128 || kBlockM == 256, "block_m");
    static_assert(kBlockN % 16 == 0 && kBlockN <= 256, "block_n");
    static_assert(kClusterSize == 1 || kClusterSize == 2, "cluster size");
    // kSmemBytes is what the launch gives (plan.py smem_bytes, which mirrors Layout).
    static_assert(Layout::kTotalBytes <= kSmemBytes, "the plan's shared memory is smaller than the layout");
    static_assert(!kOverlapPromotion || kNumSubBlocks == 1, "overlapped promotion: one sub-block per warpgroup");
    // Straddling widths would compile one overlapped loop per split column: slow to compile (plan.py).
    static_assert(!kOverlapPromotion || 128 % kBlockN == 0, "overlapped promotion: block_n divides 128");
    // It holds a stage while it waits for the next one, and its loop body is written for chunks of 4.
    static_assert(!kOverlapPromotion || (kNumStages >= 2 && kOverlapChunk == 4), "overlapped promotion");
    // The early start (see `started`) runs in the one-accumulator loop only: the overlapped one keeps
    // both accumulator sets in flight.
    static_assert(!kEarlyStart || !kOverlapPromotion, "early start: not with overlapped promotion");
    // The split tail's half tiles are a 256-row tile's sub-block 0 or 1 (rows 0-127 or 128-255 of the
    // block) in the one-accumulator loop, stored from the math threads (the TMA store's box is 256 rows).
    static_assert(!kSplitTail || (kMode == kDense && kNumSubBlocks == 2 && !kOverlapPromotion && !kOutputInStages &&
                                  !kEarlyStart), "split tail");
    // kMulticast: 0 = each CTA loads its own operands, 1 = the pair shares A, 2 = the pair shares B.
    constexpr bool kMulticastA = kClusterSize > 1 && kMulticast == 1;
    constexpr bool kMulticastB = kClusterSize > 1 && kMulticast == 2;
    constexpr uint32_t kSharing = kMulticastA || kMulticastB ? kClusterSize : 1;  // CTAs reading a stage

    extern __shared__ __align__(1024) uint8_t smem[];
    uint8_t* smem_d = smem;
    uint8_t* smem_a = smem + Layout::kAOffset;
    uint8_t* smem_b = smem + Layout::kBOffset;
    float* smem_sa = reinterpret_cast<float*>(smem + Layout::kSaOffset);
    float* smem_sb = reinterpret_cast<float*>(smem + Layout::kSbOffset);
    uint64_t* full = reinterpret_cast<uint64_t*>(smem + Layout::kBarrierOffset);
    uint64_t* empty = full + kNumStages;

    const uint32_t thread = threadIdx.x;
    const uint32_t warp = thread / 32, lane = thread % 32;
    const uint32_t cta_rank = kClusterSize > 1 ? cluster_cta_rank() : 0;

    if (thread == kNumMathThreads) {
        tma_prefetch_map(&tma_a);
        tma_prefetch_map(&tma_b);
        tma_prefetch_map(&tma_sa);
        tma_prefetch_map(&tma_d);
        tma_prefetch_map(&tma_a_tail);
        tma_prefetch_map(&tma_sa_tail);
        for (uint32_t s = 0; s < kNumStages; ++s) {
            // One arrival: the producer's expect_tx; the TMA bytes complete the phase.
            mbar_init(&full[s], 1);
            // One arrival per math warp of each CTA that reads the stage (the peer's too when the
            // stage holds a multicast operand).
            mbar_init(&empty[s], kSharing * kNumMathThreads / 32);
        }
        fence_barrier_init();
    }
    // The peer's TMA and arrivals may target this CTA's barriers as soon as it passes this point.
    if (kClusterSize > 1)
        cluster_sync();
    else
        __syncthreads();

    TileScheduler<kMode, kBlockM, kNumNBlocks, kInnerIsM, kMode == kContiguous && kMulticastB, kClusterSize, kSplitTail>
        scheduler(shape_m, num_groups, band, grouping, raster);
    Tile tile;

    if (thread >= kNumMathThreads) {
        // ---------------------------------------------------------------- producer
        registers_decrease<kProducerRegisters>();
        // One elected lane of the first producer warp (see elect_one).
        if (__shfl_sync(0xffffffff, warp, 0) == kNumMathThreads / 32 && elect_one()) {
            // A dense A that ends inside its last block of rows loads only that block's rows rounded
            // up to 16 (tma_a_tail, tma_sa_tail: boxes of that many rows). A full box would be mostly
            // TMA's zero fill, and the H100 pays for it: the one-wave 300 x 2048 x 18432 ran 46.3 us
            // against 39.7 for 320 rows, 1 x 2048 x 18432 39.3 us against 28.3 (plan.py tail_rows).
            // wgmma still reads the whole slot: the rows past the box hold stale bytes, which feed
            // only accumulator rows past M (wgmma's rows do not mix), and the TMA store clips those.
            const uint32_t tail_rows = kMode == kDense ? (shape_m % kBlockM + 15) / 16 * 16 : 0;
            const uint32_t tail_block = tail_rows != 0 && tail_rows < kBlockM ? shape_m / kBlockM : ~0u;
            uint32_t stage = 0, phase = 0;
            while (scheduler.next(tile)) {
                if (tile.skip)
                    continue;
                const bool tail = tile.m_block == tail_block;
                const TmaMap* map_a = tail ? &tma_a_tail : &tma_a;
                const TmaMap* map_sa = tail ? &tma_sa_tail : &tma_sa;
                const uint32_t stage_bytes = tail ? Layout::stage_bytes(tail_rows) : Layout::kStageBytes;
                const int m_row = tile.m_block * kBlockM;
                const int n_row = tile.n_block * kBlockN;
                const int group_a = kMode == kMasked ? tile.group : 0;
                const int group_b = kMode == kDense ? 0 : tile.group;
                for (uint32_t kb = 0; kb < kNumKBlocks; ++kb) {
                    mbar_wait(&empty[stage], phase ^ 1);
                    uint64_t* bar = &full[stage];
                    if (tile.idle) {
                        mbar_arrive(bar);  // a phase with no bytes: the pair's stages stay in step
                        advance_stage<kNumStages>(stage, phase);
                        continue;
                    }
                    mbar_arrive_expect_tx(bar, stage_bytes);
                    uint8_t* a_dst = smem_a + stage * Layout::kABytes;
                    uint8_t* b_dst = smem_b + stage * Layout::kBBytes;
                    float* sa_dst = smem_sa + stage * kBlockM;
                    const int k = kb * kBlockK;
                    // In a pair, rank 0 loads the shared operand into both CTAs; each loads its own other one.
                    if (kMulticastA) {
                        if (cta_rank == 0) {
                            tma_load_3d_multicast(map_a, bar, a_dst, k, m_row, group_a, 0x3);
                            tma_load_3d_multicast(map_sa, bar, sa_dst, m_row, kb, group_a, 0x3);
                        }
                    } else {
                        tma_load_3d(map_a, bar, a_dst, k, m_row, group_a);
                        tma_load_3d(map_sa, bar, sa_dst, m_row, kb, group_a);
                    }
                    // kBEvictFirst (GemmPlan.b_evict_first): few tiles read this box of B, so L2 may
                    // drop its lines first. Measured, not derived: faster where B streams from device
                    // memory, much slower where many later tiles read B again (B_EVICT_FIRST_MAX_READERS).
                    if (kMulticastB && !tile.own_b) {
                        if (cta_rank == 0)
                            tma_load_3d_multicast<kBEvictFirst>(&tma_b, bar, b_dst, k, n_row, group_b, 0x3);
                    } else {
                        tma_load_3d<kBEvictFirst>(&tma_b, bar, b_dst, k, n_row, group_b);
                    }
                    advance_stage<kNumStages>(stage, phase);
                }
            }
            // The peer CTA's math warps arrive on this CTA's empty barriers: wait until the last
            // uses of every stage have been released before the CTA may exit. (The other producer
            // threads exit at once rather than idle in a cluster barrier beside the math warps.)
            if (kSharing > 1) {
                for (uint32_t s = 0; s < kNumStages; ++s) {
                    mbar_wait(&empty[stage], phase ^ 1);
                    advance_stage<kNumStages>(stage, phase);
                }
            }
        }
    } else {
        // ---------------------------------------------------------------- math
        registers_increase<kNumMathGroups == 1 ? 248 : 232>();
        // Broadcast from lane 0 so that the compiler knows the value is the same in the whole warp:
        // the descriptor arithmetic below then stays in uniform registers, off the vector pipes.
        const uint32_t math_group = __shfl_sync(0xffffffff, thread / 128, 0);
        const uint32_t warp_in_group = warp % 4;
        // The two accumulator rows of this thread within a 64-row block (wgmma's m64 fragment layout).
        const uint32_t row0 = math_group * 64 + warp_in_group * 16 + lane / 4;
        const uint32_t row1 = row0 + 8;
        constexpr uint32_t kSubRows = 64 * kNumMathGroups;  // rows between a warpgroup's sub-blocks
        // Descriptors advance in 16-byte units: per stage, per sub-block and per 32 of K (32 bytes
        // inside a 128-byte swizzle row; the hardware applies the swizzle to the address).
        const uint64_t desc_a0 = wgmma_desc_sw128(smem_a + math_group * 64 * kBlockK);
        const uint64_t desc_b0 = wgmma_desc_sw128(smem_b);
        uint32_t stage = 0, phase = 0;
        float accum[kAccum], final_accum[kNumSubBlocks][kAccum];
        float accum_next[kAccum];  // kOverlapPromotion's second set (compiled away otherwise)

        // After the last MMAs that read a stage the stage is in registers: hand it back to the
        // producer(s).
        auto release = [&](uint32_t released) {
            if (kSharing == 1) {
                if (lane == 0)
                    mbar_arrive(&empty[released]);
            } else if (lane < kSharing) {
                mbar_arrive_cluster(&empty[released], lane);
            }
        };
        // The tile's last kHeldStages stages stay held for its output.
        auto release_unless_held = [&](uint32_t kb, uint32_t at) {
            if (!kOutputInStages || kb + kHeldStages < kNumKBlocks)
                release(at);
        };
        // kOutputInStages: the stages that hold the last tile's output (the first of kHeldStages) and
        // whether there is one. Thread 0 stored it; once its TMA stores have read the stages, it
        // hands them back for every math warp of the CTA. That happens while the next tile's first
        // MMAs run, so the producer's other stages cover the store's latency.
        uint32_t held_first = 0;
        bool holding = false;
        auto release_held = [&]() {
            if (thread == 0) {
                bulk_wait_read();
#pragma unroll
                for (uint32_t c = 0; c < kHeldStages; ++c) {
                    uint64_t* bar = &empty[(held_first + c) % kNumStages];
                    if (kSharing == 1) {
                        mbar_arrive(bar, kNumMathThreads / 32);
                    } else {
#pragma unroll
                        for (uint32_t rank = 0; rank < kSharing; ++rank)
                            mbar_arrive_cluster(bar, rank, kNumMathThreads / 32);
                    }
                }
            }
            holding = false;
        };

        // B's scales of a whole tile go into shared memory from the math threads: the k-loop reads
        // them before it waits for a stage, and the producer's stages carry TMA bytes only (one
        // arrival completes them). Each thread loads at most kSbPerThread of them.
        constexpr uint32_t kNumSb = kNumSbPerTile * kNumKBlocks;
        constexpr uint32_t kSbPerThread = (kNumSb + kNumMathThreads - 1) / kNumMathThreads;
        float sb_regs[kSbPerThread];
        auto load_b_scales = [&](const Tile& t) {
            const uint32_t n_block_first = t.n_block * kBlockN;
            const uint32_t group_b = kMode == kDense ? 0 : t.group;
            const float* sb_tile = scales_b + (static_cast<uint64_t>(group_b) * kNumSbRows + n_block_first / 128) * kNumKBlocks;
            const uint32_t sb_rows_left = kNumSbRows - 1 - n_block_first / 128;  // a tile near N's end spans fewer
#pragma unroll
            for (uint32_t r = 0; r < kSbPerThread; ++r) {
                const uint32_t i = r * kNumMathThreads + thread;
                if (i < kNumSb)
                    sb_regs[r] = sb_tile[min(i / kNumKBlocks, sb_rows_left) * kNumKBlocks + i % kNumKBlocks];
            }
        };
        auto store_b_scales = [&]() {
#pragma unroll
            for (uint32_t r = 0; r < kSbPerThread; ++r) {
                const uint32_t i = r * kNumMathThreads + thread;
                if (i < kNumSb)
                    smem_sb[i] = sb_regs[r];
            }
        };
        auto b_scale = [&](uint32_t j, uint32_t kb) { return smem_sb[j * kNumKBlocks + kb]; };
        // A promotion's scales: A's of the thread's two rows, B's of k-block kb.
        auto scales_of = [&](float a0, float a1, uint32_t kb) {
            return Scales{a0, a1, b_scale(0, kb), kNumSbPerTile > 1 ? b_scale(1, kb) : 0.0f,
                          kNumSbPerTile > 2 ? b_scale(2, kb) : 0.0f};
        };

        // The MMAs of sub-block `s` of stage `at` into `acc` (zeroed by the first), committed as
        // one wgmma group.
        auto issue = [&](float (&acc)[kAccum], uint32_t at, uint32_t s) {
#pragma unroll
            for (uint32_t i = 0; i < kAccum; ++i)
                fence_operand(acc[i]);
            wgmma_fence();
            const uint64_t desc_a = desc_a0 + at * (Layout::kABytes / 16) + s * (kSubRows * kBlockK / 16);
            const uint64_t desc_b = desc_b0 + at * (Layout::kBBytes / 16);
#pragma unroll
            for (uint32_t k = 0; k < kBlockK / kWgmmaK; ++k)
                Wgmma::mma(desc_a + k * (kWgmmaK / 16), desc_b + k * (kWgmmaK / 16), acc, k > 0);
            wgmma_commit();
#pragma unroll
            for (uint32_t i = 0; i < kAccum; ++i)
                fence_operand(acc[i]);
        };

        // The math threads walk the tiles one ahead of the one they compute: they take the next tile
        // and load its B scales during this one, and store those into shared memory between the
        // epilogue's two barriers (when no thread reads the old ones any more). The loads' latency
        // and the walk's arithmetic then overlap work instead of idling the tensor cores at every
        // tile start (H200, 4096x32768x512: 12% of the math warps' samples sat there, against
        // DeepGEMM's 5%). 256-row tiles issue the loads before their k-loop, which covers them
        // whole (H200, same run twice: 4096x7168x2048 2.2% faster, 4096x24576x1536 1.2-1.5%,
        // masked 4x256x7168x2048 0.7-1.3%, the rest within 0.3%); the others at the start of
        // the epilogue, where the stmatrix stores cover them (before the k-loop, the registers
        // held across it cost 128x176 3% and contiguous 128x192 2%).
        auto next_work = [&](Tile& t) {
            while (scheduler.next(t))
                if (!t.skip)
                    return true;
            return false;
        };
        bool has_tile = next_work(tile);
        bool scales_ready = false;  // B's scales of `tile` are in shared memory
        // kEarlyStart: the epilogue issues the next tile's first MMAs (k-block 0, sub-block 0, into
        // accum) among its stmatrix stores and waits for them after its TMA stores, so the tensor
        // cores work through the stores (64 KB per 256x128 tile, bound by the shared-memory pipe).
        // The wait comes before the tile loop's back edge: no wgmma is in flight across it.
        // `started`: that happened for `tile`; started_sa0/1 are A's scales of that sub-block, read
        // before its stage is released.
        bool started = false;
        float started_sa0 = 0.0f, started_sa1 = 0.0f;
        while (has_tile) {
            if (tile.idle) {
                // Padding beside the peer's real block: wait out each stage (the producer completes
                // it with no bytes) and release it to both CTAs, as for a real tile.
                if (kOutputInStages && holding)
                    release_held();
                for (uint32_t kb = 0; kb < kNumKBlocks; ++kb) {
                    mbar_wait(&full[stage], phase);
                    release(stage);
                    advance_stage<kNumStages>(stage, phase);
                }
                has_tile = next_work(tile);
                continue;
            }
            const uint32_t n_first = tile.n_block * kBlockN;
            Tile next_tile;
            bool has_next = false;
            if (!scales_ready) {
                // The first tile, or the first after idle ones. Every math thread has passed the
                // previous tile's epilogue barrier, so no k-loop still reads the old scales.
                load_b_scales(tile);
                store_b_scales();
                named_barrier_sync(2, kNumMathThreads);
            }
            if constexpr (kBlockM == 256) {
                has_next = next_work(next_tile);
                scales_ready = has_next && !next_tile.idle;
                if (scales_ready)
                    load_b_scales(next_tile);
            }
#pragma unroll
            for (uint32_t s = 0; s < kNumSubBlocks; ++s)
#pragma unroll
                for (uint32_t i = 0; i < kAccum; ++i)
                    final_accum[s][i] = 0.0f;

            const bool halved = kSplitTail && tile.half != 0;
            // kSplit: the tile's first column in B's next scale block, 128 - n_first % 128 (a multiple
            // of kSplitStep), or kBlockN if there is none. Each value gets its own copy of the k-loop
            // with kSplit known to the compiler: a runtime split costs a compare, a select and two
            // multiplies per 8-column chunk of every promotion, as many instructions as the FFMAs.
            // (The dispatch needs a generic lambda, so NVRTC runs with -default-device.)
            with_constant<kSplitStep, kLastSplit>(min(128 - n_first % 128, kBlockN), [&](auto split) {
                constexpr uint32_t kSplit = decltype(split)::value;
                // Two-level accumulation: the tensor cores' partial sum over one 128 of K is scaled
                // and added into FP32 registers, so FP8 products never accumulate across scales.
                auto promote = [&](const float (&acc)[kAccum], float (&fin)[kAccum], const Scales& sc) {
                    const float s00 = sc.a0 * sc.b0, s10 = sc.a1 * sc.b0;
                    const float s01 = sc.a0 * sc.b1, s11 = sc.a1 * sc.b1;
                    const float s02 = sc.a0 * sc.b2, s12 = sc.a1 * sc.b2;
#pragma unroll
                    for (uint32_t i = 0; i < kAccum / 4; ++i) {
                        // 8-column chunk i of the fragment: which of B's scale blocks its columns are in
                        // (known at compile time: no compare or select per chunk).
                        const uint32_t col = i * 8;
                        const bool second = col >= kSplit;
                        const bool third = col >= kSplit + 128;
                        const float scale0 = third ? s02 : (second ? s01 : s00);
                        const float scale1 = third ? s12 : (second ? s11 : s10);
                        fin[i * 4 + 0] += scale0 * acc[i * 4 + 0];
                        fin[i * 4 + 1] += scale0 * acc[i * 4 + 1];
                        fin[i * 4 + 2] += scale1 * acc[i * 4 + 2];
                        fin[i * 4 + 3] += scale1 * acc[i * 4 + 3];
                    }
                };
                if constexpr (kOverlapPromotion) {
                    // The scales of stage `at` (k-block kb_scale, promoted next), read before the stage
                    // is released.
                    uint32_t kb_scale = 0;
                    auto scales = [&](uint32_t at) {
                        const float* sa = smem_sa + at * kBlockM;
                        return scales_of(sa[row0], sa[row1], kb_scale++);
                    };
                    // Two accumulator sets: k-block kb + 1's MMAs are issued before k-block kb is
                    // promoted, so the tensor cores work on through the promotion's FFMAs.
                    auto first = [&](float (&acc)[kAccum]) {
                        mbar_wait(&full[stage], phase);
                        issue(acc, stage, 0);
                    };
                    // Promote `cur` (issued, stage `stage`) after issuing the next stage into `nxt`.
                    auto step = [&](float (&cur)[kAccum], float (&nxt)[kAccum]) {
                        const Scales sc = scales(stage);
                        const uint32_t current = stage;
                        advance_stage<kNumStages>(stage, phase);
                        mbar_wait(&full[stage], phase);
                        issue(nxt, stage, 0);
                        wgmma_wait<1>();  // cur's group is done, nxt's keeps the tensor cores busy
#pragma unroll
                        for (uint32_t i = 0; i < kAccum; ++i)
                            fence_operand(cur[i]);
                        release(current);
                        promote(cur, final_accum[0], sc);
                    };
                    auto last = [&](float (&cur)[kAccum]) {
                        const Scales sc = scales(stage);
                        wgmma_wait<0>();
#pragma unroll
                        for (uint32_t i = 0; i < kAccum; ++i)
                            fence_operand(cur[i]);
                        release(stage);
                        advance_stage<kNumStages>(stage, phase);
                        promote(cur, final_accum[0], sc);
                    };
                    // Chunks of kOverlapChunk k-blocks with nothing in flight at the loop's back edge:
                    // there ptxas cannot tell which group a wait retired, and would serialise every
                    // wgmma of the kernel (warning C7514). One promotion per chunk is not overlapped.
#pragma unroll 1
                    for (uint32_t kb = 0; kb + kOverlapChunk <= kNumKBlocks; kb += kOverlapChunk) {
                        first(accum);
                        step(accum, accum_next);
                        step(accum_next, accum);
                        step(accum, accum_next);
                        last(accum_next);
                    }
                    constexpr uint32_t kTail = kNumKBlocks % kOverlapChunk;
                    if constexpr (kTail > 0) {
                        first(accum);
                        if constexpr (kTail == 1) {
                            last(accum);
                        } else if constexpr (kTail == 2) {
                            step(accum, accum_next);
                            last(accum_next);
                        } else {
                            step(accum, accum_next);
                            step(accum_next, accum);
                            last(accum);
                        }
                    }
                } else {
                    // Two k-blocks per iteration: ptxas then issues the second block's full-barrier
                    // try-wait among the first block's promotion FFMAs instead of after them (H100:
                    // 256x128 tiles 1.2% faster, 128x176 2.7%; scripts/ab_kernels.py, 2026-11-23).
                    // Not where the dispatch above compiles 7 or 8 copies of this loop (widths 112, 144,
                    // 176): unrolled, they took 2 s to compile on a 2-core machine, 3 s on the lent one's.
                    constexpr uint32_t kUnroll = kLastSplit / kSplitStep <= 4 ? 2 : 1;
                    // Sub-blocks `first_sub` on of one k-block, from stage `at` with full-barrier parity
                    // `parity`.
                    auto k_block = [&](uint32_t kb, uint32_t at, uint32_t parity, uint32_t first_sub = 0) {
                        // B's scales first: they do not depend on the stage, so their loads are in flight
                        // while the thread waits for the TMA bytes.
                        const float b_scale0 = b_scale(0, kb);
                        const float b_scale1 = kNumSbPerTile > 1 ? b_scale(1, kb) : 0.0f;
                        const float b_scale2 = kNumSbPerTile > 2 ? b_scale(2, kb) : 0.0f;
                        mbar_wait(&full[at], parity);

#pragma unroll
                        for (uint32_t s = first_sub; s < kNumSubBlocks; ++s) {
                            const float a_scale0 = smem_sa[at * kBlockM + s * kSubRows + row0];
                            const float a_scale1 = smem_sa[at * kBlockM + s * kSubRows + row1];
                            issue(accum, at, s);
                            // The previous tile's held stages go back once this tile's first MMAs run.
                            if (kOutputInStages && s == first_sub && kb == 0 && holding)
                                release_held();
                            wgmma_wait<0>();
                            if (s + 1 == kNumSubBlocks)
                                release_unless_held(kb, at);
                            const Scales sc{a_scale0, a_scale1, b_scale0, b_scale1, b_scale2};
                            promote(accum, final_accum[s], sc);
                        }
                    };
                    if (halved) {
                        // The split tail's half tile: one sub-block (a runtime offset into the stage)
                        // into final_accum[0]. A few tiles per launch run this loop; it stays rolled.
                        const uint32_t sub = tile.half - 1;
#pragma unroll 1
                        for (uint32_t kb = 0; kb < kNumKBlocks; ++kb) {
                            const Scales sc = scales_of(0.0f, 0.0f, kb);
                            mbar_wait(&full[stage], phase);
                            const float a_scale0 = smem_sa[stage * kBlockM + sub * kSubRows + row0];
                            const float a_scale1 = smem_sa[stage * kBlockM + sub * kSubRows + row1];
                            issue(accum, stage, sub);
                            wgmma_wait<0>();
                            release(stage);
                            promote(accum, final_accum[0], Scales{a_scale0, a_scale1, sc.b0, sc.b1, sc.b2});
                            advance_stage<kNumStages>(stage, phase);
                        }
                        return;
                    }
                    // A tile started in the previous epilogue: its first sub-block's product waits in
                    // accum; promote it, then run the rest of k-block 0.
                    uint32_t kb_begin = 0;
                    if (started) {
                        promote(accum, final_accum[0], scales_of(started_sa0, started_sa1, 0));
                        if constexpr (kNumSubBlocks > 1) {
                            k_block(0, stage, phase, 1);
                        } else {
                            // The previous tile's held stages go back before k-block 1's wait: in a ring
                            // of one stage more than it holds, k-block 1's stage is the first of them.
                            if (kOutputInStages && holding)
                                release_held();
                            release_unless_held(0, stage);
                        }
                        advance_stage<kNumStages>(stage, phase);
                        kb_begin = 1;
                    }
                    if constexpr (kUnroll > 1 && kNumMathGroups == 2) {
                        // Whole turns of the ring from its stage 0: each k-block's stage is known at
                        // compile time there, so its barrier, scale and descriptor addresses fold into
                        // constants (128x192: 133 instructions per k-block instead of 149; H100,
                        // scripts/ab_kernels.py, 2026-11-23: contiguous 0.98-0.995x the time,
                        // 2500x7168x7168 0.983x, 4096x24576x1536 at 256x128 0.985-0.994x; 64x192 with its
                        // one warpgroup 1.035x, so not there). Where the k-blocks do not divide into
                        // turns, tiles start at other stages: the k-blocks before the ring's stage 0 and
                        // those after the last whole turn run with a runtime stage. (One loop copy per
                        // start stage instead made ptxas spill.) A tile started early begins one
                        // stage later, whatever the k-blocks.
                        uint32_t kb = kb_begin;
                        auto runtime_stages = [&](uint32_t end) {
#pragma unroll 1
                            for (; kb < end; ++kb) {
                                k_block(kb, stage, phase);
                                advance_stage<kNumStages>(stage, phase);
                            }
                        };
                        constexpr bool kRuntimeStart = kEarlyStart || kNumKBlocks % kNumStages != 0;
                        if constexpr (kRuntimeStart)
                            runtime_stages(min(kb + (kNumStages - stage) % kNumStages, kNumKBlocks));
#pragma unroll 1
                        for (; kb + kNumStages <= kNumKBlocks; kb += kNumStages) {
#pragma unroll
                            for (uint32_t at = 0; at < kNumStages; ++at)
                                k_block(kb + at, at, phase);
                            phase ^= 1;
                        }
                        if constexpr (kRuntimeStart)
                            runtime_stages(kNumKBlocks);
                    } else {
#pragma unroll kUnroll
                        for (uint32_t kb = kb_begin; kb < kNumKBlocks; ++kb) {
                            k_block(kb, stage, phase);
                            advance_stage<kNumStages>(stage, phase);
                        }
                    }
                }
            });

            // ------------------------------------------------------------ epilogue
            if constexpr (kBlockM != 256) {
                has_next = next_work(next_tile);
                scales_ready = has_next && !next_tile.idle;
                if (scales_ready)
                    load_b_scales(next_tile);
            }
            // Column chunk c of the output tile in shared memory (OutputTile).
            if constexpr (kOutputInStages) {
                // The stages of the last kHeldStages k-blocks: each warpgroup overwrites only its
                // own rows of A there, which only its own (finished) MMAs read.
                held_first = (stage + kNumStages - kHeldStages) % kNumStages;
            } else {
                // The previous tile's store may still be reading smem_d.
                bulk_wait_read();
            }
            started = kEarlyStart && scales_ready;
            // Every math thread is past its k-loop: B's scales may be overwritten below.
            named_barrier_sync(1, kNumMathThreads);
            auto chunk = [&](uint32_t c) {
                return kOutputInStages ? smem_a + (held_first + c) % kNumStages * Layout::kABytes
                                       : smem_d + c * Out::kChunkBytes;
            };
            const uint32_t matrix = lane / 8;
#pragma unroll
            for (uint32_t s = 0; s < kNumSubBlocks; ++s) {
                // A half tile's sum (final_accum[0]) goes to rows 0-127, where the store below reads it.
                if (halved && s > 0)
                    break;
                // The early start's MMAs take about half as long as a 256-row tile's stores: issued
                // after the first sub-block's stores, they still overlap the second's, and the
                // next tile's k-block 0 (loaded two or three k-blocks before this epilogue) has that
                // much longer to land. A 128- or 64-row tile's k-block takes as long as its stores.
                if (started && s + 1 == kNumSubBlocks) {
                    mbar_wait(&full[stage], phase);
                    started_sa0 = smem_sa[stage * kBlockM + row0];
                    started_sa1 = smem_sa[stage * kBlockM + row1];
                    issue(accum, stage, 0);
                }
                const uint32_t st_row = s * kSubRows + math_group * 64 + warp_in_group * 16 + lane % 8 + (matrix % 2) * 8;
#pragma unroll
                for (uint32_t c = 0; c < kBlockN / 16; ++c) {
                    const uint32_t st_col = c * 16 + (matrix / 2) * 8;
                    stmatrix_x4(chunk(st_col / Out::kChunkCols) + Out::offset_in_chunk(st_row, st_col),
                                pack_bf16x2(final_accum[s][c * 8 + 0], final_accum[s][c * 8 + 1]),
                                pack_bf16x2(final_accum[s][c * 8 + 2], final_accum[s][c * 8 + 3]),
                                pack_bf16x2(final_accum[s][c * 8 + 4], final_accum[s][c * 8 + 5]),
                                pack_bf16x2(final_accum[s][c * 8 + 6], final_accum[s][c * 8 + 7]));
                }
            }
            if (scales_ready)
                store_b_scales();
            fence_proxy_async_smem();
            named_barrier_sync(1, kNumMathThreads);

            const int m_row = tile.m_block * kBlockM + (halved ? (tile.half - 1) * kSubRows : 0);
            const int group_d = kMode == kMasked ? tile.group : 0;
            if (tile.rows == kBlockM) {
                // TMA clips rows past the tensor's end and columns past N.
                if (thread == 0) {
#pragma unroll
                    for (uint32_t c = 0; c < Out::kNumChunks; ++c)
                        tma_store_3d(&tma_d, chunk(c), n_first + c * Out::kChunkCols, m_row, group_d);
                    bulk_commit();
                }
            } else {
                // A masked group ends inside this tile: rows past masked_m must not be written, so
                // the valid rows go out 16 bytes at a time from the math threads. So do a split tail's
                // half tiles: the other half is another CTA's.
                const uint32_t pieces = min(kBlockN, kShapeN - n_first) / 8;
                uint8_t* d_tile = d_ptr + ((static_cast<uint64_t>(group_d) * shape_m + m_row) * kShapeN + n_first) * 2;
                for (uint32_t i = thread; i < tile.rows * pieces; i += kNumMathThreads) {
                    const uint32_t row = i / pieces, col = (i % pieces) * 8;
                    store_global_16(d_tile + (static_cast<uint64_t>(row) * kShapeN + col) * 2,
                                    load_shared_16(chunk(col / Out::kChunkCols) + Out::offset_in_chunk(row, col)));
                }
                // The next tile's stmatrix must not overwrite smem_d (or the held stages be released)
                // before every thread read it.
                named_barrier_sync(1, kNumMathThreads);
            }
            if (started) {
                wgmma_wait<0>();
#pragma unroll
                for (uint32_t i = 0; i < kAccum; ++i)
                    fence_operand(accum[i]);
            }
            holding = kOutputInStages;
            tile = next_tile;
            has_tile = has_next;
        }
        if (kOutputInStages && holding)
            release_held();
        bulk_wait_read();
    }
}

}  // namespace pydg

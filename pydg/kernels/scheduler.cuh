// The persistent tile walk: CTA b takes tiles b, b + gridDim.x, b + 2 * gridDim.x, ...
// With the split tail (dense 256-row tiles), the partial last wave's tiles run as two 128-row halves
// each, on twice as many CTAs: the walk goes on past the last tile with half-tile indices, so the
// CTAs that would idle through the last wave take half of a tile's work each (GemmPlan.split_tail).
// pydg/scheduler/tiles.py mirrors this arithmetic so that its coverage can be tested on a CPU.
#pragma once
#include "ptx.cuh"

enum GemmMode : uint32_t { kDense = 0, kContiguous = 1, kMasked = 2 };

struct Tile {
    uint32_t m_block;
    uint32_t n_block;
    uint32_t group;  // expert (contiguous, masked) or 0 (dense)
    uint32_t rows;   // rows of the tile that may be written (masked: up to masked_m[group])
    bool skip;       // contiguous: the block's rows are padding (m_indices < 0): no loads, no math
    // Contiguous pairs sharing B (kPairsShareB). The pair's CTAs hold neighbouring blocks of rows,
    // which may belong to different experts or be padding, while their pipelines must turn over
    // together: the multicast lands in the same stage of both CTAs.
    bool idle;       // this block is padding and the peer's is not: the stages turn over with no loads or math
    bool own_b;      // the two blocks' experts differ: each CTA loads its own B (no multicast)
    // Split tail: 0 for a whole tile; 1 + s for sub-block s's 128 rows only (rows s * 128 of the block).
    uint32_t half;
};

// n / d for a divisor fixed for the whole launch, with m = floor((2^32 - 1) / d) from the host
// (pydg/scheduler/tiles.py fast_divisor): umulhi(n, m) is n / d or one less for every 32-bit n, and
// one remainder test corrects it. Four integer instructions instead of the reciprocal sequence of
// a runtime division (about twenty dependent ones, which ran at every tile start of the math warps).
struct FastDiv {
    uint32_t d, m;
    DEVICE uint32_t div(uint32_t n) const {
        const uint32_t q = __umulhi(n, m);
        return n - q * d >= d ? q + 1 : q;
    }
};

// The dense and contiguous raster's divisors (tiles.py raster_divisors), kernel parameters.
struct RasterDivisors {
    FastDiv band_tiles;   // tiles per band: band * blocks of the outer axis
    FastDiv band_width;   // a full band's width: band
    FastDiv last_width;   // the last band's width, band or fewer
    uint32_t last_band;   // index of the band that holds the inner axis' last blocks
    uint32_t num_tiles;   // of the grid
};

template <uint32_t kMode, uint32_t kBlockM, uint32_t kNumNBlocks, bool kInnerIsM, bool kPairsShareB,
          uint32_t kClusterSize = 1, bool kSplitTail = false>
struct TileScheduler {
    uint32_t shape_m;     // rows of A per group (dense: M, contiguous: M_sum, masked: M_max)
    uint32_t num_groups;
    uint32_t band;        // blocks of the inner axis walked before the outer axis advances
    const int* grouping;  // contiguous: m_indices; masked: masked_m; dense: unused
    uint32_t next_index;
    // Dense and contiguous. (A masked group's raster is worked out in the group a tile lands in,
    // with plain divisions: a masked CTA has a tile or two.)
    const RasterDivisors& divisors;
    uint32_t group = 0;             // masked: the group the walk has reached
    uint32_t group_first_tile = 0;  // masked: tiles in the groups before it
    // Split tail: the first tile of the partial last wave.
    uint32_t split_first = 0;

    DEVICE TileScheduler(uint32_t shape_m, uint32_t num_groups, uint32_t band, const int* grouping,
                         const RasterDivisors& divisors)
        : shape_m(shape_m), num_groups(num_groups), band(band), grouping(grouping), next_index(blockIdx.x),
          divisors(divisors) {
        if (kSplitTail)
            split_first = divisors.num_tiles - divisors.num_tiles % gridDim.x;
    }

    // Tiles are walked in bands of `band` blocks along the inner axis: the CTAs that run together
    // share the outer axis' operand in L2, and consecutive tiles (a cluster's pair) share one
    // block of the outer axis, which is the operand the pair multicasts. place() sets the blocks of
    // tile `local` of band `band_idx`, whose width is `width` and which is in column `outer`.
    DEVICE void place(uint32_t band_idx, uint32_t local, uint32_t outer, uint32_t width, Tile& tile) const {
        const uint32_t inner = band_idx * band + local - outer * width;
        tile.m_block = kInnerIsM ? inner : outer;
        tile.n_block = kInnerIsM ? outer : inner;
    }

    DEVICE void raster(uint32_t index, Tile& tile) const {
        const uint32_t band_idx = divisors.band_tiles.div(index);
        const uint32_t local = index - band_idx * divisors.band_tiles.d;
        const FastDiv& width = band_idx == divisors.last_band ? divisors.last_width : divisors.band_width;
        place(band_idx, local, width.div(local), width.d, tile);
    }

    // The same walk within a masked group of num_m_blocks blocks of rows.
    DEVICE void raster_group(uint32_t index, uint32_t num_m_blocks, Tile& tile) const {
        const uint32_t inner_count = kInnerIsM ? num_m_blocks : kNumNBlocks;
        const uint32_t outer_count = kInnerIsM ? kNumNBlocks : num_m_blocks;
        const uint32_t group_band_tiles = band * outer_count;
        const uint32_t band_idx = index / group_band_tiles;
        const uint32_t local = index - band_idx * group_band_tiles;
        const uint32_t width = min(band, inner_count - band_idx * band);
        place(band_idx, local, local / width, width, tile);
    }

    // The expert of a contiguous block, from its first row (experts' segments start at multiples of
    // the block size); -1 for padding or an out-of-range value.
    DEVICE int block_expert(uint32_t m_block) const {
        const int expert = load_global_int(grouping + m_block * kBlockM);
        return expert < 0 || static_cast<uint32_t>(expert) >= num_groups ? -1 : expert;
    }

    DEVICE uint32_t masked_rows(uint32_t g) const {
        const int value = load_global_int(grouping + g);
        return value < 0 ? 0u : min(static_cast<uint32_t>(value), shape_m);
    }

    DEVICE bool next(Tile& tile) {
        const uint32_t index = next_index;
        next_index += gridDim.x;
        tile.skip = tile.idle = tile.own_b = false;
        tile.group = 0;
        tile.rows = kBlockM;
        tile.half = 0;
        if (kMode == kMasked) {
            for (; group < num_groups; ++group) {
                const uint32_t valid = masked_rows(group);
                const uint32_t num_m_blocks = (valid + kBlockM - 1) / kBlockM;
                const uint32_t tiles = num_m_blocks * kNumNBlocks;
                if (index < group_first_tile + tiles) {
                    raster_group(index - group_first_tile, num_m_blocks, tile);
                    tile.group = group;
                    tile.rows = min(kBlockM, valid - tile.m_block * kBlockM);
                    return true;
                }
                group_first_tile += tiles;
            }
            return false;
        }
        if (kSplitTail && index >= split_first) {
            // Two half units per tail tile, in the order of the whole tiles' walk: both CTAs of a
            // cluster take the same half of the pair's two tiles (the multicast block stays shared).
            const uint32_t unit = index - split_first;
            if (unit >= 2 * (divisors.num_tiles - split_first))
                return false;
            const uint32_t cluster_unit = unit / kClusterSize;
            tile.half = 1 + cluster_unit % 2;
            raster(split_first + cluster_unit / 2 * kClusterSize + unit % kClusterSize, tile);
            const uint32_t first_row = tile.m_block * kBlockM + (tile.half - 1) * (kBlockM / 2);
            tile.rows = first_row < shape_m ? min(kBlockM / 2, shape_m - first_row) : 0;
            return true;
        }
        if (index >= divisors.num_tiles)
            return false;
        raster(index, tile);
        if (kMode == kContiguous) {
            const int expert = block_expert(tile.m_block);
            tile.group = expert < 0 ? 0u : static_cast<uint32_t>(expert);
            tile.skip = expert < 0;
            if (kPairsShareB) {
                // With m inner, an even band and an even number of m blocks, the pair's tiles are
                // blocks 2i and 2i + 1 of one column of tiles (plan.py validates this).
                const int peer = block_expert(tile.m_block ^ 1);
                tile.skip = expert < 0 && peer < 0;
                tile.idle = expert < 0 && peer >= 0;
                tile.own_b = expert != peer;
            }
        }
        return true;
    }
};

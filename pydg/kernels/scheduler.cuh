// The persistent tile walk: CTA b takes tiles b, b + gridDim.x, b + 2 * gridDim.x, ...
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
};

template <uint32_t kMode, uint32_t kBlockM, uint32_t kNumNBlocks, bool kInnerIsM>
struct TileScheduler {
    uint32_t shape_m;     // rows of A per group (dense: M, contiguous: M_sum, masked: M_max)
    uint32_t num_groups;
    uint32_t band;        // blocks of the inner axis walked before the outer axis advances
    const int* grouping;  // contiguous: m_indices; masked: masked_m; dense: unused
    uint32_t next_index;
    uint32_t group = 0;             // masked: the group the walk has reached
    uint32_t group_first_tile = 0;  // masked: tiles in the groups before it

    DEVICE TileScheduler(uint32_t shape_m, uint32_t num_groups, uint32_t band, const int* grouping)
        : shape_m(shape_m), num_groups(num_groups), band(band), grouping(grouping), next_index(blockIdx.x) {}

    // Tiles are walked in bands of `band` blocks along the inner axis: the CTAs that run together
    // share the outer axis' operand in L2, and consecutive tiles (a cluster's pair) share one
    // block of the outer axis, which is the operand the pair multicasts.
    DEVICE void raster(uint32_t index, uint32_t num_m_blocks, uint32_t& m_block, uint32_t& n_block) const {
        const uint32_t inner_count = kInnerIsM ? num_m_blocks : kNumNBlocks;
        const uint32_t outer_count = kInnerIsM ? kNumNBlocks : num_m_blocks;
        const uint32_t band_tiles = band * outer_count;
        const uint32_t band_idx = index / band_tiles;
        const uint32_t first = band_idx * band;
        const uint32_t width = min(band, inner_count - first);
        const uint32_t local = index - band_idx * band_tiles;
        const uint32_t inner = first + local % width, outer = local / width;
        m_block = kInnerIsM ? inner : outer;
        n_block = kInnerIsM ? outer : inner;
    }

    DEVICE uint32_t masked_rows(uint32_t g) const {
        const int value = load_global_int(grouping + g);
        return value < 0 ? 0u : min(static_cast<uint32_t>(value), shape_m);
    }

    DEVICE bool next(Tile& tile) {
        const uint32_t index = next_index;
        next_index += gridDim.x;
        tile.skip = false;
        tile.group = 0;
        tile.rows = kBlockM;
        if (kMode == kMasked) {
            for (; group < num_groups; ++group) {
                const uint32_t valid = masked_rows(group);
                const uint32_t num_m_blocks = (valid + kBlockM - 1) / kBlockM;
                const uint32_t tiles = num_m_blocks * kNumNBlocks;
                if (index < group_first_tile + tiles) {
                    raster(index - group_first_tile, num_m_blocks, tile.m_block, tile.n_block);
                    tile.group = group;
                    tile.rows = min(kBlockM, valid - tile.m_block * kBlockM);
                    return true;
                }
                group_first_tile += tiles;
            }
            return false;
        }
        const uint32_t num_m_blocks = (shape_m + kBlockM - 1) / kBlockM;
        if (index >= num_m_blocks * kNumNBlocks)
            return false;
        raster(index, num_m_blocks, tile.m_block, tile.n_block);
        if (kMode == kContiguous) {
            // Experts' segments start at multiples of the block size, so a block's first row names
            // the expert of all its rows; a padding block (or an out-of-range value) is skipped.
            const int expert = load_global_int(grouping + tile.m_block * kBlockM);
            tile.skip = expert < 0 || static_cast<uint32_t>(expert) >= num_groups;
            tile.group = tile.skip ? 0u : static_cast<uint32_t>(expert);
        }
        return true;
    }
};

// The PTX that pydg's kernels use, each instruction wrapped in a small named device function.
// NVRTC from the pip wheel has no CUDA toolkit headers, so nothing here includes any.
#pragma once

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef int int32_t;
typedef unsigned long long uint64_t;

#define DEVICE __device__ __forceinline__

// An encoded TMA descriptor (cuTensorMapEncodeTiled's 128 opaque bytes), passed by value.
struct alignas(64) TmaMap {
    uint64_t opaque[16];
};

// ---- identity -------------------------------------------------------------------------------
DEVICE uint32_t cluster_cta_rank() {
    uint32_t rank;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
    return rank;
}

// True in one lane of the converged warp. Code under it is known to run in a single lane, so its
// operands can stay in uniform registers: TMA issued from a plain `thread == x` branch gets a
// loop around each instruction that moves one lane's operands at a time into uniform registers.
DEVICE bool elect_one() {
    uint32_t elected;
    asm volatile("{\n.reg .pred p;\nelect.sync _|p, 0xffffffff;\nselp.u32 %0, 1, 0, p;\n}" : "=r"(elected));
    return elected != 0;
}

// The intrinsic rather than cvta in asm: the compiler then sees through it and keeps shared-memory
// address arithmetic in 32 bits (a quarter fewer instructions in the TMA producer's loop).
DEVICE uint32_t smem_addr(const void* ptr) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

// ---- synchronisation ------------------------------------------------------------------------
DEVICE void named_barrier_sync(uint32_t id, uint32_t num_threads) {
    asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(num_threads) : "memory");
}

DEVICE void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;" ::: "memory");
}

// Ordinary shared-memory stores (stmatrix) become visible to the copy engine only after this.
DEVICE void fence_proxy_async_smem() {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// Barrier initialisation must be visible to the peer CTA's TMA and arrivals, not only to this CTA.
DEVICE void fence_barrier_init() {
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

template <uint32_t kRegisters> DEVICE void registers_increase() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kRegisters));
}

template <uint32_t kRegisters> DEVICE void registers_decrease() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kRegisters));
}

// ---- mbarrier ---------------------------------------------------------------------------------
DEVICE void mbar_init(uint64_t* bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}

DEVICE uint32_t mbar_try_wait(uint32_t bar_addr, uint32_t parity) {
    uint32_t done;
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(bar_addr), "r"(parity)
        : "memory");
    return done;
}

DEVICE void mbar_wait(uint64_t* bar, uint32_t parity) {
    const uint32_t addr = smem_addr(bar);
    while (!mbar_try_wait(addr, parity)) {
    }
}

DEVICE void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}

DEVICE void mbar_arrive(uint64_t* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}

// `count` arrivals at once (one thread standing in for several warps).
DEVICE void mbar_arrive(uint64_t* bar, uint32_t count) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}

DEVICE uint32_t cluster_smem_addr(const void* ptr, uint32_t cta_rank) {
    uint32_t remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(smem_addr(ptr)), "r"(cta_rank));
    return remote;
}

// Arrive on the barrier at the same shared-memory offset in CTA `cta_rank` of the cluster.
// Default (CTA-scope release) semantics: the stage's reads finished with wgmma.wait_group (or
// cp.async.bulk.wait_group.read), so a cluster-scope release, which stalls the arriving warp, buys
// nothing here.
DEVICE void mbar_arrive_cluster(uint64_t* bar, uint32_t cta_rank) {
    asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];" ::"r"(cluster_smem_addr(bar, cta_rank)) : "memory");
}

DEVICE void mbar_arrive_cluster(uint64_t* bar, uint32_t cta_rank, uint32_t count) {
    asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0], %1;" ::"r"(cluster_smem_addr(bar, cta_rank)), "r"(count)
                 : "memory");
}

// ---- TMA ----------------------------------------------------------------------------------------
DEVICE void tma_prefetch_map(const TmaMap* map) {
    asm volatile("prefetch.tensormap [%0];" ::"l"(map) : "memory");
}

// An L2 policy under which the lines a load brings in are the first that L2 evicts. Not volatile:
// the policy is a constant, which the compiler may create once and keep.
DEVICE uint64_t l2_evict_first() {
    uint64_t policy;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    return policy;
}

// kEvictFirst: the box's lines are marked first to go from L2 (l2_evict_first), for data that no
// later wave of tiles reads again.
template <bool kEvictFirst = false>
DEVICE void tma_load_3d(const TmaMap* map, uint64_t* bar, void* dst, int c0, int c1, int c2) {
    if constexpr (kEvictFirst) {
        asm volatile(
            "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
            " [%0], [%1, {%3, %4, %5}], [%2], %6;"
            ::"r"(smem_addr(dst)), "l"(map), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2), "l"(l2_evict_first())
            : "memory");
    } else {
        asm volatile(
            "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
            " [%0], [%1, {%3, %4, %5}], [%2];"
            ::"r"(smem_addr(dst)), "l"(map), "r"(smem_addr(bar)), "r"(c0), "r"(c1), "r"(c2)
            : "memory");
    }
}

// One load written into the same offset of every CTA in `cta_mask`, each CTA's barrier at `bar`'s
// offset receiving the bytes: the operand that a cluster's CTAs share crosses L2 once.
template <bool kEvictFirst = false>
DEVICE void tma_load_3d_multicast(const TmaMap* map, uint64_t* bar, void* dst, int c0, int c1, int c2,
                                  uint16_t cta_mask) {
    if constexpr (kEvictFirst) {
        asm volatile(
            "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
            ".L2::cache_hint [%0], [%1, {%4, %5, %6}], [%2], %3, %7;"
            ::"r"(smem_addr(dst)), "l"(map), "r"(smem_addr(bar)), "h"(cta_mask), "r"(c0), "r"(c1), "r"(c2),
              "l"(l2_evict_first())
            : "memory");
    } else {
        asm volatile(
            "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
            " [%0], [%1, {%4, %5, %6}], [%2], %3;"
            ::"r"(smem_addr(dst)), "l"(map), "r"(smem_addr(bar)), "h"(cta_mask), "r"(c0), "r"(c1), "r"(c2)
            : "memory");
    }
}

DEVICE void tma_store_3d(const TmaMap* map, const void* src, int c0, int c1, int c2) {
    asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%2, %3, %4}], [%1];"
                 ::"l"(map), "r"(smem_addr(src)), "r"(c0), "r"(c1), "r"(c2)
                 : "memory");
}

DEVICE void bulk_commit() {
    asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}

// Waits until this thread's bulk stores have finished reading shared memory.
DEVICE void bulk_wait_read() {
    asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
}

// ---- wgmma --------------------------------------------------------------------------------------
// Shared-memory matrix descriptor for a K-major tile written by TMA with 128-byte swizzling: rows of
// 128 bytes, 8-row atoms of 1024 bytes (the stride byte offset); the leading byte offset is unused.
DEVICE uint64_t wgmma_desc_sw128(const void* tile) {
    uint64_t desc = (smem_addr(tile) & 0x3FFFF) >> 4;
    desc |= uint64_t(1) << 16;
    desc |= uint64_t(1024 >> 4) << 32;
    desc |= uint64_t(1) << 62;
    return desc;
}

DEVICE void wgmma_fence() {
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}

DEVICE void wgmma_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}

template <int kPending> DEVICE void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
}

// The compiler does not know that wgmma writes its accumulators asynchronously: pin each one so that
// no read or write of it moves across the fence/commit/wait that brackets the asynchronous MMA.
DEVICE void fence_operand(float& reg) {
    asm volatile("" : "+f"(reg)::"memory");
}

// ---- epilogue -----------------------------------------------------------------------------------
DEVICE uint32_t pack_bf16x2(float lo, float hi) {
    uint32_t packed;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(hi), "f"(lo));
    return packed;
}

// Four 8x8 b16 matrices: lanes 8i..8i+7 give the row addresses of matrix i; each thread's register i
// holds its two elements of matrix i, which is the layout of a wgmma accumulator fragment.
DEVICE void stmatrix_x4(void* dst, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
    asm volatile("stmatrix.sync.aligned.x4.m8n8.shared.b16 [%0], {%1, %2, %3, %4};"
                 ::"r"(smem_addr(dst)), "r"(r0), "r"(r1), "r"(r2), "r"(r3)
                 : "memory");
}

struct alignas(16) Bytes16 {
    uint32_t x, y, z, w;
};

DEVICE Bytes16 load_shared_16(const void* src) {
    Bytes16 v;
    asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "r"(smem_addr(src)));
    return v;
}

DEVICE void store_global_16(void* dst, Bytes16 v) {
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(dst), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                 : "memory");
}

DEVICE int load_global_int(const int* ptr) {
    int value;
    asm volatile("ld.global.s32 %0, [%1];" : "=r"(value) : "l"(ptr));
    return value;
}

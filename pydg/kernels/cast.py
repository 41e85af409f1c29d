"""The Python side of cast.cu: the FP8 cast kernels' compilation, launch plans and launchers.

Two kernels, each compiled per input dtype: the per-token (1 x 128) cast of a (G, M, K) array, which
writes A's scales TMA-aligned column-major, and the per-block (128 x 128) cast of a (G, N, K) array.
Everything here works on pointers and sizes; pydg/quantize.py turns user arrays into them. The
kernels are compiled through pydg.driver (NVRTC, the disk cache) with a key of their own, so the
GEMM's kernels and these never share a cache entry.
"""
from __future__ import annotations

import hashlib
import pathlib
import threading
from dataclasses import dataclass
from functools import lru_cache

from pydg.driver import cache, nvrtc
from pydg.utils import align, ceil_div
from pydg.version import __version__

KERNEL_DIR = pathlib.Path(__file__).resolve().parent
ENTRY = "cast.cu"
SOURCES = ("cast.cu", "cast.cuh", "ptx.cuh")

BLOCK = 128               # the recipe's scaling granularity
VECTOR = 16               # elements per lane: K must be a multiple of it
WARP_ELEMENTS = 32 * VECTOR  # a per-token warp's unit of work: 512 elements of one row
THREADS = 256             # both kernels (cast.cuh kBlockThreads)
# CTAs per SM, the kernels' launch bounds: the registers of 16 floats per lane (x2 units in flight
# for the per-token cast, x4 rows for the per-block one) allow 3 and 2. The per-block cast of 16- and
# 64-bit inputs also fits in 80 registers, so 3 of its CTAs (50% more bytes in flight: it read 2 TB/s,
# 70% of a copy, with 2) share an SM; float32 would spill there. The per-token grid is one resident
# wave of such CTAs.
PER_TOKEN_BLOCKS_PER_SM = 3
PER_BLOCK_BLOCKS_PER_SM = 2
PER_BLOCK_BLOCKS_PER_SM_NARROW = 3  # inputs other than float32
SCALE_M_ALIGNMENT = 4
INDEX_LIMIT = 2**31 - 1   # the kernels' 32-bit work indices
GRID_YZ_LIMIT = 65535

# The kernels' input element types (cast.cuh InputType) and their sizes in bytes.
INPUT_TYPES = {"float32": 0, "bfloat16": 1, "float16": 2, "float64": 3}
ITEMSIZES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
GRANULARITIES = ("per_token", "per_block")

# Parameters in order (cast.cu), as driver.launch kinds; 64-bit byte strides travel in "pointer" slots.
PARAMS = {
    "per_token": ("pointer", "pointer", "pointer", "pointer", "u32", "u32", "u32", "pointer", "pointer"),
    "per_block": ("pointer", "pointer", "pointer", "u32", "u32", "pointer", "pointer"),
}


@dataclass(frozen=True)
class CastKernel:
    """One compiled variant: the scaling granularity and the input dtype."""
    granularity: str  # "per_token" (1 x 128, A) or "per_block" (128 x 128, B)
    input_dtype: str  # a key of INPUT_TYPES

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity: expected one of {GRANULARITIES}, got {self.granularity!r}")
        if self.input_dtype not in INPUT_TYPES:
            raise TypeError(f"input dtype: expected one of {tuple(INPUT_TYPES)}, got {self.input_dtype!r}")

    @property
    def name(self) -> str:
        return f"pydg_{self.granularity}_cast"

    @property
    def ctas_per_sm(self) -> int:
        """The launch bounds' CTAs per SM (PER_*_BLOCKS_PER_SM)."""
        if self.granularity == "per_token":
            return PER_TOKEN_BLOCKS_PER_SM
        return PER_BLOCK_BLOCKS_PER_SM if self.input_dtype == "float32" else PER_BLOCK_BLOCKS_PER_SM_NARROW

    def defines(self) -> dict[str, int]:
        return {"PYDG_CAST_INPUT": INPUT_TYPES[self.input_dtype],
                "PYDG_CAST_PER_BLOCK": int(self.granularity == "per_block"),
                "PYDG_CAST_CTAS_PER_SM": self.ctas_per_sm}


@lru_cache(maxsize=None)
def sources() -> dict[str, str]:
    return {name: (KERNEL_DIR / name).read_text() for name in SOURCES}


def content_options(kernel: CastKernel) -> list[str]:
    return [f"-D{k}={v}" for k, v in sorted(kernel.defines().items())]


def options(kernel: CastKernel) -> list[str]:
    return [f"--include-path={KERNEL_DIR}", *content_options(kernel)]


def cache_key(kernel: CastKernel) -> str:
    """Hash of what decides the cubin: the cast sources, the options (no paths), NVRTC, arch, pydg."""
    digest = hashlib.sha256(b"pydg-cast\0")
    for name, text in sources().items():
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    for opt in content_options(kernel):
        digest.update(opt.encode() + b"\0")
    digest.update(repr((nvrtc.version(), nvrtc.ARCH, __version__)).encode())
    return digest.hexdigest()[:32]


def kernel_info(kernel: CastKernel) -> dict[str, object]:
    """What the cache entry holds, for `pydg cache list` (its layout column shows the granularity)."""
    return {"name": kernel.name, "mode": kernel.granularity, "input_dtype": kernel.input_dtype,
            "options": content_options(kernel), "nvrtc": ".".join(map(str, nvrtc.version())), "arch": nvrtc.ARCH,
            "pydg": __version__}


@dataclass(frozen=True)
class CompiledCast:
    kernel: CastKernel
    key: str
    cubin: bytes
    ptxas: nvrtc.PtxasReport
    log: str
    from_disk_cache: bool


_compiled: dict[CastKernel, CompiledCast] = {}
_compile_lock = threading.Lock()


def compile_cast(kernel: CastKernel) -> CompiledCast:
    """The cubin of `kernel`: from this process, else from the disk cache, else from NVRTC."""
    compiled = _compiled.get(kernel)
    if compiled is not None:
        return compiled
    with _compile_lock:
        compiled = _compiled.get(kernel)
        if compiled is None:
            key = cache_key(kernel)
            entry = cache.load(key)
            from_disk = entry is not None
            if entry is None:
                entry = nvrtc.compile_cubin(sources()[ENTRY], ENTRY, options(kernel))
                cache.store(key, entry, kernel_info(kernel))
            compiled = CompiledCast(kernel, key, entry.cubin, entry.ptxas, entry.log, from_disk)
            _compiled[kernel] = compiled
    return compiled


# ---- plans --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CastPlan:
    """What one cast launch does, without a GPU. Strides are in bytes.

    per_token: x is (num_groups, rows, k); codes (num_groups, rows, k) contiguous; scales
    (num_groups, rows, ceil(k/128)) float32 stored as (num_groups, ceil(k/128), align(rows, 4)).
    per_block: x is (num_groups, rows, k) with rows = N; scales (num_groups, ceil(N/128), ceil(k/128)).
    """
    kernel: CastKernel
    num_groups: int
    rows: int
    k: int
    row_stride_bytes: int
    group_stride_bytes: int
    masked: bool      # per_token only: rows at or past masked_m[g] are skipped
    grid: tuple[int, int, int]
    block: tuple[int, int, int]

    @property
    def k_blocks(self) -> int:
        return ceil_div(self.k, BLOCK)

    @property
    def scale_storage_shape(self) -> tuple[int, int, int]:
        """The float32 buffer the kernel writes, contiguous."""
        if self.kernel.granularity == "per_token":
            return (self.num_groups, self.k_blocks, align(self.rows, SCALE_M_ALIGNMENT))
        return (self.num_groups, ceil_div(self.rows, BLOCK), self.k_blocks)

    @property
    def is_empty(self) -> bool:
        return self.grid[0] * self.grid[1] * self.grid[2] == 0


def plan_per_token(input_dtype: str, num_groups: int, rows: int, k: int, row_stride_bytes: int,
                   group_stride_bytes: int, num_sms: int, masked: bool = False) -> CastPlan:
    """A grid-stride launch of one resident wave (or fewer CTAs, for small inputs): each warp takes
    512-element pieces of rows in turn."""
    _check_k(k)
    units = num_groups * rows * ceil_div(k, WARP_ELEMENTS)
    if units > INDEX_LIMIT:
        raise ValueError(f"x: expected at most {INDEX_LIMIT} pieces of 512 elements (G * M * ceil(K/512)), "
                         f"got {units} for G={num_groups}, M={rows}, K={k}")
    warps_per_cta = THREADS // 32
    ctas = min(ceil_div(units, warps_per_cta), num_sms * PER_TOKEN_BLOCKS_PER_SM)
    return CastPlan(CastKernel("per_token", input_dtype), num_groups, rows, k, row_stride_bytes,
                    group_stride_bytes, masked, (ctas, 1, 1), (THREADS, 1, 1))


def plan_per_block(input_dtype: str, num_groups: int, rows: int, k: int, row_stride_bytes: int,
                   group_stride_bytes: int) -> CastPlan:
    """One CTA per 128 x 128 block: grid (ceil(K/128), ceil(N/128), G)."""
    _check_k(k)
    grid = (ceil_div(k, BLOCK), ceil_div(rows, BLOCK), num_groups)
    if grid[1] > GRID_YZ_LIMIT or grid[2] > GRID_YZ_LIMIT:
        raise ValueError(f"x: expected at most {GRID_YZ_LIMIT} blocks of 128 rows and {GRID_YZ_LIMIT} groups, "
                         f"got N={rows} ({grid[1]} blocks) and G={num_groups}")
    return CastPlan(CastKernel("per_block", input_dtype), num_groups, rows, k, row_stride_bytes,
                    group_stride_bytes, False, grid, (THREADS, 1, 1))


def _check_k(k: int) -> None:
    if k % VECTOR:
        raise ValueError(f"x: expected K (last dimension) to be a multiple of {VECTOR}, got {k}")
    if k > INDEX_LIMIT:
        raise ValueError(f"x: expected K (last dimension) at most {INDEX_LIMIT}, got {k}")


# ---- launches -----------------------------------------------------------------------------------

class CastLauncher:
    """One kernel loaded on one device, with its parameter buffers: a call sets the plan's grid,
    sizes and pointers, and launches. Shapes change from call to call (M is the number of tokens),
    so nothing here is per shape."""

    def __init__(self, kernel: CastKernel, device: int):
        from pydg.driver.launch import KernelLaunch
        from pydg.driver.module import get_function

        self.kernel = kernel
        self.compiled = compile_cast(kernel)
        func = get_function(device, self.compiled.key, self.compiled.cubin, kernel.name, 0)
        self.launch = KernelLaunch(func, (1, 1, 1), (THREADS, 1, 1), 0, 1, PARAMS[kernel.granularity])
        self._lock = threading.Lock()  # the parameter buffers are shared by the calls of all threads

    def __call__(self, plan: CastPlan, x: int, codes: int, scales: int, masked_m: int, stream: int) -> None:
        """Launch `plan` (of this kernel) on these pointers (masked_m: 0 for none) and `stream`."""
        with self._lock:
            set_arguments(self.launch, plan, x, codes, scales, masked_m)
            self.launch.launch(stream)


def set_arguments(launch, plan: CastPlan, x: int, codes: int, scales: int, masked_m: int) -> None:
    """Write the plan's grid and the kernel's parameters (cast.cu's order) into a KernelLaunch."""
    if plan.kernel.granularity == "per_token":
        values = (x, codes, scales, masked_m, plan.rows, plan.num_groups, plan.k, plan.row_stride_bytes,
                  plan.group_stride_bytes)
    else:
        values = (x, codes, scales, plan.rows, plan.k, plan.row_stride_bytes, plan.group_stride_bytes)
    launch.config.grid[:] = plan.grid
    for index, value in enumerate(values):
        launch.set_value(index, value)


_launchers: dict[tuple[CastKernel, int], CastLauncher] = {}
_launchers_lock = threading.Lock()


def launcher(kernel: CastKernel, device: int) -> CastLauncher:
    """The launcher of `kernel` on `device`, built (the kernel compiled and loaded) on first use."""
    found = _launchers.get((kernel, device))
    if found is None:
        with _launchers_lock:
            found = _launchers.get((kernel, device))
            if found is None:
                found = CastLauncher(kernel, device)
                _launchers[(kernel, device)] = found
    return found

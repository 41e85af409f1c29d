"""The kernel sources shipped in this folder, and their compilation for a plan (with the disk cache)."""
from __future__ import annotations

import hashlib
import pathlib
from dataclasses import dataclass
from functools import lru_cache

from pydg.version import __version__
from pydg.driver import cache, nvrtc
from pydg.scheduler.plan import GemmPlan

KERNEL_DIR = pathlib.Path(__file__).resolve().parent
ENTRY = "fp8_gemm.cu"
KERNEL_NAME = "pydg_fp8_gemm"
# The kernel's parameters in order (fp8_gemm.cu), as driver.launch parameter kinds.
PARAMS = ("tensor_map", "tensor_map", "tensor_map", "tensor_map", "pointer", "pointer", "pointer", "u32", "u32", "u32")


@lru_cache(maxsize=None)
def sources() -> dict[str, str]:
    """Every .cu/.cuh file of the kernel family, by name."""
    return {p.name: p.read_text() for p in sorted(KERNEL_DIR.iterdir()) if p.suffix in (".cu", ".cuh")}


def options(plan: GemmPlan) -> list[str]:
    return [f"--include-path={KERNEL_DIR}", *(f"-D{k}={v}" for k, v in sorted(plan.defines().items()))]


def cache_key(plan: GemmPlan) -> str:
    """Hash of everything that decides the cubin: all sources, options, NVRTC version, arch, pydg."""
    digest = hashlib.sha256()
    for name, text in sources().items():
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    for opt in options(plan):
        # The include path is where the package happens to be installed, not part of the source.
        if not opt.startswith("--include-path="):
            digest.update(opt.encode() + b"\0")
    digest.update(repr((nvrtc.version(), nvrtc.ARCH, __version__)).encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class CompiledKernel:
    key: str
    cubin: bytes
    ptxas: nvrtc.PtxasReport
    log: str
    from_disk_cache: bool


_compiled: dict[str, CompiledKernel] = {}


def compile_plan(plan: GemmPlan) -> CompiledKernel:
    """The cubin for `plan`: from this process, else from the disk cache, else from NVRTC."""
    key = cache_key(plan)
    kernel = _compiled.get(key)
    if kernel is not None:
        return kernel
    entry = cache.load(key)
    from_disk = entry is not None
    if entry is None:
        entry = nvrtc.compile_cubin(sources()[ENTRY], ENTRY, options(plan))
        cache.store(key, entry)
    kernel = CompiledKernel(key=key, cubin=entry.cubin, ptxas=entry.ptxas, log=entry.log, from_disk_cache=from_disk)
    _compiled[key] = kernel
    return kernel

"""The kernel sources shipped in this folder, and their compilation for a plan (with the disk cache)."""
from __future__ import annotations

import hashlib
import pathlib
import re
import threading
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from pydg import log
from pydg.driver import cache, nvrtc
from pydg.scheduler.plan import GemmPlan
from pydg.version import __version__

KERNEL_DIR = pathlib.Path(__file__).resolve().parent
ENTRY = "fp8_gemm.cu"
KERNEL_NAME = "pydg_fp8_gemm"
# The kernel's parameters in order (fp8_gemm.cu), as driver.launch parameter kinds.
PARAMS = ("tensor_map",) * 6 + ("pointer", "pointer", "pointer", "u32", "u32", "u32", "u32x8")
INCLUDE_OPTION = "--include-path="
_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"', re.MULTILINE)


@lru_cache(maxsize=None)
def sources() -> dict[str, str]:
    """Every .cu/.cuh file of the kernel family, by name."""
    return {p.name: p.read_text() for p in sorted(KERNEL_DIR.iterdir()) if p.suffix in (".cu", ".cuh")}


def included_sources(entry: str = ENTRY) -> dict[str, str]:
    """`entry` and every file it includes with #include "..." (transitively), by name: the text
    that decides the kernel (other kernels of this folder do not enter its key)."""
    return dict(_include_closure(entry, tuple(sources().items())))


@lru_cache(maxsize=8)
def _include_closure(entry: str, files: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    texts = dict(files)
    found: dict[str, str] = {}
    pending = [entry]
    while pending:
        name = pending.pop()
        if name in found or name not in texts:
            continue
        found[name] = texts[name]
        pending.extend(_INCLUDE.findall(texts[name]))
    return tuple(sorted(found.items()))


@lru_cache(maxsize=8)
def _sources_digest(files: tuple[tuple[str, str], ...]) -> bytes:
    digest = hashlib.sha256()
    for name, text in files:
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.digest()


def options(plan: GemmPlan) -> list[str]:
    return [f"{INCLUDE_OPTION}{KERNEL_DIR}", *(f"-D{k}={v}" for k, v in sorted(plan.defines().items()))]


def content_options(plan: GemmPlan) -> list[str]:
    """The options that decide the cubin: all but the include path, which only says where the
    package happens to be installed (the included text itself is hashed by cache_key)."""
    return [opt for opt in options(plan) if not opt.startswith(INCLUDE_OPTION)]


def cache_key(plan: GemmPlan) -> str:
    """Hash of everything that decides the cubin and nothing else: the name and text of the entry
    file and of every file it includes, the options (no paths), NVRTC's version, the arch and pydg's
    version. No path, user name, host or time enters it, so a cache directory is valid wherever it
    is copied (tests/test_cache.py)."""
    # Hashing the sources once per process keeps a key to microseconds (a warm start checks many).
    digest = hashlib.sha256(_sources_digest(_include_closure(ENTRY, tuple(sources().items()))))
    for opt in (*nvrtc.BASE_OPTIONS, *content_options(plan)):
        digest.update(opt.encode() + b"\0")
    digest.update(repr((nvrtc.version(), nvrtc.ARCH, __version__)).encode())
    return digest.hexdigest()[:32]


def kernel_info(plan: GemmPlan) -> dict[str, Any]:
    """What a cache entry holds, for `pydg cache list` and for people reading the directory."""
    return {"name": KERNEL_NAME, "mode": plan.mode, "block_m": plan.block_m, "block_n": plan.block_n,
            "block_k": plan.block_k, "num_stages": plan.num_stages, "cluster_size": plan.cluster_size,
            "multicast": plan.multicast, "inner_axis": plan.inner_axis, "n": plan.n, "k": plan.k,
            "options": content_options(plan), "nvrtc": nvrtc.version_text(), "arch": nvrtc.ARCH,
            "pydg": __version__}


@dataclass(frozen=True)
class CompiledKernel:
    key: str
    cubin: bytes
    ptxas: nvrtc.PtxasReport
    log: str
    from_disk_cache: bool
    seconds: float = 0.0  # NVRTC time if compiled here, else the time to read the entry


@dataclass
class JitStats:
    """What this process's JIT did (a travelled cache shows up as compiles == 0)."""
    compiles: int = 0          # NVRTC compilations (disk-cache misses)
    disk_hits: int = 0         # kernels read from the disk cache
    compile_seconds: float = 0.0


_compiled: dict[str, CompiledKernel] = {}
_key_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()
_stats = JitStats()


def jit_stats() -> JitStats:
    """A copy of this process's JIT counters."""
    with _locks_lock:
        return replace(_stats)


def _key_lock(key: str) -> threading.Lock:
    with _locks_lock:
        return _key_locks.setdefault(key, threading.Lock())


def compile_plan(plan: GemmPlan) -> CompiledKernel:
    """The cubin for `plan`: from this process, else from the disk cache, else from NVRTC.
    Threads asking for the same new kernel wait for one compilation."""
    return _get(plan, compile=True)


def lookup(plan: GemmPlan) -> CompiledKernel | None:
    """The kernel if this process or the disk cache has it; never compiles."""
    return _get(plan, compile=False)


def _get(plan: GemmPlan, compile: bool) -> CompiledKernel | None:
    key = cache_key(plan)
    kernel = _compiled.get(key)
    if kernel is not None:
        return kernel
    with _key_lock(key):
        kernel = _compiled.get(key)
        if kernel is None:
            kernel = _load(plan, key) or (_compile(plan, key) if compile else None)
            if kernel is not None:
                _after_first_use(plan, kernel)
                _compiled[key] = kernel
    return kernel


def _load(plan: GemmPlan, key: str) -> CompiledKernel | None:
    started = time.perf_counter()
    entry = cache.load(key)
    if entry is None:
        return None
    seconds = time.perf_counter() - started
    with _locks_lock:
        _stats.disk_hits += 1
    log.report(log.JIT_DEBUG, log.jit_logger, "loaded %s (%s) from %s in %.1f ms", key, _label(plan),
               cache.entry_path(key), seconds * 1e3)
    return CompiledKernel(key, entry.cubin, entry.ptxas, entry.log, from_disk_cache=True, seconds=seconds)


def _compile(plan: GemmPlan, key: str) -> CompiledKernel:
    opts = options(plan)
    log.report(log.JIT_DEBUG, log.jit_logger, "compiling %s (%s) with NVRTC %s: %s", key, _label(plan),
               nvrtc.version_text(), " ".join([*nvrtc.BASE_OPTIONS, *opts]))
    started = time.perf_counter()
    entry = nvrtc.compile_cubin(sources()[ENTRY], ENTRY, opts, keep_ptx=log.enabled(log.DUMP_PTX))
    seconds = time.perf_counter() - started
    with _locks_lock:
        _stats.compiles += 1
        _stats.compile_seconds += seconds
    info = {**kernel_info(plan), "compile_seconds": round(seconds, 3)}
    path = cache.store(key, entry, info)
    log.report(log.JIT_DEBUG, log.jit_logger, "compiled %s in %.2f s (%s), %s", key, seconds, entry.ptxas.summary(),
               f"cached as {path}" if path else "not cached (directory not writable)")
    if entry.ptx is not None:
        _dump_ptx(key, entry.ptx)
    return CompiledKernel(key, entry.cubin, entry.ptxas, entry.log, from_disk_cache=False, seconds=seconds)


def _label(plan: GemmPlan) -> str:
    return (f"{plan.mode} {plan.block_m}x{plan.block_n}x{plan.block_k}, {plan.num_stages} stages, "
            f"cluster {plan.cluster_size} multicast {plan.multicast}, N={plan.n} K={plan.k}")


def _after_first_use(plan: GemmPlan, kernel: CompiledKernel) -> None:
    """The switches that look at a kernel once per process, compiled or read from disk."""
    log.report(log.PTXAS_VERBOSE, log.ptxas_logger, "kernel %s (%s): %s\n%s", kernel.key, _label(plan),
               kernel.ptxas.summary(), kernel.log.strip())
    if log.enabled(log.DUMP_PTX) and not cache.entry_path(kernel.key).with_suffix(".ptx").exists():
        # The entry came from disk without PTX: compile once more only to write it.
        entry = nvrtc.compile_cubin(sources()[ENTRY], ENTRY, options(plan), keep_ptx=True)
        _dump_ptx(kernel.key, entry.ptx or "")
    if log.enabled(log.DUMP_SASS) and not cache.entry_path(kernel.key).with_suffix(".sass").exists():
        from pydg.driver.dump import write_sass

        try:
            path = write_sass(kernel.cubin, cache.entry_path(kernel.key).with_suffix(".sass"))
            log.report(log.DUMP_SASS, log.jit_logger, "wrote %s", path)
        except (OSError, RuntimeError) as err:
            log.warn(log.jit_logger, "PYDG_DUMP_SASS: no SASS for %s: %s", kernel.key, err)
    if log.enabled(log.PTXAS_CHECK):
        nvrtc.check_resources(kernel.ptxas, f"kernel {kernel.key} ({_label(plan)})", kernel.log)


def _dump_ptx(key: str, ptx: str) -> None:
    path = cache.entry_path(key).with_suffix(".ptx")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(ptx)
        log.report(log.DUMP_PTX, log.jit_logger, "wrote %s", path)
    except OSError as err:
        log.warn(log.jit_logger, "PYDG_DUMP_PTX: cannot write %s: %s", path, err)

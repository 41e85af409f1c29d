"""NVRTC: CUDA C++ text to an sm_90a cubin, with ptxas's resource report."""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from functools import lru_cache

from cuda.bindings import nvrtc

from pydg.errors import CudaError, PydgError

ARCH = "sm_90a"
# -default-device: lambdas with `auto` parameters (fp8_gemm.cuh dispatches on one) are device code.
BASE_OPTIONS = (f"-arch={ARCH}", "-std=c++17", "-default-device", "--ptxas-options=-v")


class PtxasCheckError(PydgError):
    """PYDG_PTXAS_CHECK is on and a kernel spills registers or uses local memory (a stack frame)."""


@dataclass(frozen=True)
class PtxasReport:
    """What `ptxas -v` said about the kernel."""
    registers: int
    spill_stores: int
    spill_loads: int
    stack_frame: int
    static_smem_bytes: int = 0  # the kernel's shared memory is dynamic; ptxas only sees static arrays
    local_bytes: int = 0        # "bytes lmem", where this ptxas reports it

    @property
    def uses_local_memory(self) -> bool:
        return bool(self.spill_stores or self.spill_loads or self.stack_frame or self.local_bytes)

    def summary(self) -> str:
        return (f"{self.registers} registers, {self.spill_stores} B spill stores, {self.spill_loads} B spill loads, "
                f"{self.stack_frame} B stack, {self.static_smem_bytes} B static smem")

    @classmethod
    def parse(cls, log: str) -> "PtxasReport | None":
        """The report in an NVRTC log, or None where the log has none."""
        if re.search(r"Used \d+ registers", log) is None:
            return None

        def number(pattern: str) -> int:
            found = re.search(pattern, log)
            if found is None:
                raise CudaError("ptxas -v", "INCOMPLETE_RESOURCE_REPORT", f"no match for {pattern!r}", log)
            return int(found.group(1))

        def optional(pattern: str) -> int:
            found = re.search(pattern, log)
            return int(found.group(1)) if found else 0

        return cls(
            registers=number(r"Used (\d+) registers"),
            spill_stores=number(r"(\d+) bytes spill stores"),
            spill_loads=number(r"(\d+) bytes spill loads"),
            stack_frame=number(r"(\d+) bytes stack frame"),
            static_smem_bytes=optional(r"(\d+) bytes smem"),
            local_bytes=optional(r"(\d+) bytes lmem"),
        )


@dataclass(frozen=True)
class CompiledCubin:
    cubin: bytes
    log: str
    ptxas: PtxasReport | None  # None only inside compile_cubin, before its retry
    ptx: str | None = None     # kept only when asked for (PYDG_DUMP_PTX)


def _check(call: str, result: tuple, log: str = ""):
    err = result[0]
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        name = nvrtc.nvrtcGetErrorString(err)[1]
        raise CudaError(call, name.decode() if isinstance(name, bytes) else str(name), "", log)
    return result[1:] if len(result) > 2 else (result[1] if len(result) == 2 else None)


@lru_cache(maxsize=None)
def version() -> tuple[int, int]:
    major, minor = _check("nvrtcVersion", nvrtc.nvrtcVersion())
    return int(major), int(minor)


def _output(prog, name: str, get_size, get) -> bytes:
    """One of NVRTC's outputs of `prog` (log, CUBIN or PTX), through its pair of calls.

    NVRTC writes into the buffer it is given, so the buffer must be a fresh, mutable bytearray. The
    usual cuda-python idiom `b" " * size` is not: for size 1 (an empty log) Python returns the
    interpreter's shared one-byte object, and NVRTC's terminating NUL then turns every b" " of the
    process into b"\x00"; Python itself builds the spaces of f-strings from it (on the device image
    torch then failed to import, issue 3 notes of 2026-11-23).
    """
    buf = bytearray(_check(f"nvrtcGet{name}Size", get_size(prog)))
    _check(f"nvrtcGet{name}", get(prog, buf))
    return bytes(buf)


def _program_log(prog) -> str:
    log = _output(prog, "ProgramLog", nvrtc.nvrtcGetProgramLogSize, nvrtc.nvrtcGetProgramLog)
    return log.rstrip(b"\x00 ").decode(errors="replace")


def version_text() -> str:
    """"12.9", or why NVRTC cannot be loaded (for reports that must not fail)."""
    try:
        return ".".join(map(str, version()))
    except Exception as err:  # a missing or broken NVRTC wheel is reported, not raised
        return f"unavailable ({type(err).__name__}: {err})"


def compile_cubin(source: str, name: str, options: list[str], keep_ptx: bool = False) -> CompiledCubin:
    """Compile `source` for sm_90a. Raises CudaError carrying the whole log on failure."""
    compiled = _compile(source, name, options, keep_ptx)
    if compiled.ptxas is None:
        # NVRTC 13 reuses PTX it has already assembled (in this process or, through its own cache,
        # an earlier one) without running ptxas again, and so without its report: PYDG_PTX_NONCE
        # adds a global that no earlier compilation had to the PTX (fp8_gemm.cu).
        nonce = secrets.randbits(31)
        compiled = _compile(source, name, [*options, f"-DPYDG_PTX_NONCE={nonce}"], keep_ptx)
    if compiled.ptxas is None:
        raise CudaError("ptxas -v", "NO_RESOURCE_REPORT", "NVRTC's log has no ptxas report", compiled.log)
    return compiled


def check_resources(report: PtxasReport, what: str, log: str = "") -> None:
    """PYDG_PTXAS_CHECK: a kernel that spills or has a stack frame runs from local memory (slow)."""
    if report.uses_local_memory:
        raise PtxasCheckError(f"{what}: expected no spills and no local memory (PYDG_PTXAS_CHECK is on), "
                              f"got {report.summary()}" + (f"\n--- log ---\n{log}" if log else ""))


def _compile(source: str, name: str, options: list[str], keep_ptx: bool) -> CompiledCubin:
    prog = _check("nvrtcCreateProgram", nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], []))
    try:
        opts = [*BASE_OPTIONS, *options]
        encoded = [o.encode() for o in opts]
        result = nvrtc.nvrtcCompileProgram(prog, len(encoded), encoded)
        log = _program_log(prog)
        _check("nvrtcCompileProgram", result, log)
        cubin = _output(prog, "CUBIN", nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN)
        ptx = None
        if keep_ptx:
            ptx = _output(prog, "PTX", nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
            ptx = ptx.rstrip(b"\x00").decode(errors="replace")
        return CompiledCubin(cubin=cubin, log=log, ptxas=PtxasReport.parse(log), ptx=ptx)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)

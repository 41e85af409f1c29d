"""NVRTC: CUDA C++ text to an sm_90a cubin, with ptxas's resource report."""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from functools import lru_cache

from cuda.bindings import nvrtc

from pydg.errors import CudaError

ARCH = "sm_90a"


@dataclass(frozen=True)
class PtxasReport:
    """What `ptxas -v` said about the kernel."""
    registers: int
    spill_stores: int
    spill_loads: int
    stack_frame: int

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

        return cls(
            registers=number(r"Used (\d+) registers"),
            spill_stores=number(r"(\d+) bytes spill stores"),
            spill_loads=number(r"(\d+) bytes spill loads"),
            stack_frame=number(r"(\d+) bytes stack frame"),
        )


@dataclass(frozen=True)
class CompiledCubin:
    cubin: bytes
    log: str
    ptxas: PtxasReport | None  # None only inside compile_cubin, before its retry


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


def _program_log(prog) -> str:
    size = _check("nvrtcGetProgramLogSize", nvrtc.nvrtcGetProgramLogSize(prog))
    buf = b" " * size
    _check("nvrtcGetProgramLog", nvrtc.nvrtcGetProgramLog(prog, buf))
    return buf.rstrip(b"\x00 ").decode(errors="replace")


def compile_cubin(source: str, name: str, options: list[str]) -> CompiledCubin:
    """Compile `source` for sm_90a. Raises CudaError carrying the whole log on failure."""
    compiled = _compile(source, name, options)
    if compiled.ptxas is None:
        # NVRTC 13 reuses PTX it has already assembled (in this process or, through its own cache,
        # an earlier one) without running ptxas again, and so without its report: PYDG_PTX_NONCE
        # adds a global that no earlier compilation had to the PTX (fp8_gemm.cu).
        nonce = secrets.randbits(31)
        compiled = _compile(source, name, [*options, f"-DPYDG_PTX_NONCE={nonce}"])
    if compiled.ptxas is None:
        raise CudaError("ptxas -v", "NO_RESOURCE_REPORT", "NVRTC's log has no ptxas report", compiled.log)
    return compiled


def _compile(source: str, name: str, options: list[str]) -> CompiledCubin:
    prog = _check("nvrtcCreateProgram", nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], []))
    try:
        opts = [f"-arch={ARCH}", "-std=c++17", "--ptxas-options=-v", *options]
        encoded = [o.encode() for o in opts]
        result = nvrtc.nvrtcCompileProgram(prog, len(encoded), encoded)
        log = _program_log(prog)
        _check("nvrtcCompileProgram", result, log)
        size = _check("nvrtcGetCUBINSize", nvrtc.nvrtcGetCUBINSize(prog))
        cubin = b" " * size
        _check("nvrtcGetCUBIN", nvrtc.nvrtcGetCUBIN(prog, cubin))
        return CompiledCubin(cubin=cubin, log=log, ptxas=PtxasReport.parse(log))
    finally:
        nvrtc.nvrtcDestroyProgram(prog)

"""PYDG_DUMP_PTX / PYDG_DUMP_SASS: a kernel's PTX and SASS as text files beside its cache entry.

SASS needs NVIDIA's disassembler, which no pydg dependency ships: nvdisasm or cuobjdump on PATH,
else from the pip wheels `nvidia-cuda-nvdisasm` / `nvidia-cuda-cuobjdump` (CUDA 12 wheels put them
in nvidia/cuda_nvdisasm/bin, CUDA 13 wheels in nvidia/cu13/bin).
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess

# (tool, arguments before the cubin path), in order of preference.
TOOLS = (("nvdisasm", ("-c",)), ("cuobjdump", ("-sass",)))
WHEEL_BIN_DIRS = ("cu13/bin", "cu12/bin", "cuda_nvdisasm/bin", "cuda_cuobjdump/bin")
NO_DISASSEMBLER = ("PYDG_DUMP_SASS: no nvdisasm or cuobjdump found on PATH or in the pip wheels; "
                   "`pip install nvidia-cuda-nvdisasm` (or nvidia-cuda-cuobjdump) provides one")


def _wheel_dirs() -> list[pathlib.Path]:
    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    return [pathlib.Path(root) / sub for root in roots for sub in WHEEL_BIN_DIRS]


def find_disassembler() -> tuple[str, tuple[str, ...]] | None:
    """(path of the tool, its arguments) or None where neither tool can be found."""
    for name, args in TOOLS:
        found = shutil.which(name)
        if found:
            return found, args
    for name, args in TOOLS:
        for directory in _wheel_dirs():
            candidate = directory / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate), args
    return None


def write_sass(cubin: bytes, sass_path: pathlib.Path) -> pathlib.Path:
    """Disassemble `cubin` into `sass_path` (the cubin is written beside it as `.cubin` for the tool).
    RuntimeError with a message saying what to install where no disassembler is found."""
    tool = find_disassembler()
    if tool is None:
        raise RuntimeError(NO_DISASSEMBLER)
    cubin_path = sass_path.with_suffix(".cubin")
    cubin_path.write_bytes(cubin)
    done = subprocess.run([tool[0], *tool[1], str(cubin_path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{tool[0]} failed on {cubin_path} (exit {done.returncode}): {done.stderr.strip()}")
    sass_path.write_text(done.stdout)
    return sass_path

"""The on-disk cache of compiled kernels.

An entry is `<key>.cubin` plus `<key>.json` (the compile log, ptxas's report and the cubin's
SHA-256). Both are written to a temporary file and renamed into place, the JSON last, so a reader in
another process sees a whole entry or none; an entry that fails to parse or to match its checksum
is treated as missing and compiled again.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
from dataclasses import asdict

from pydg.driver.nvrtc import CompiledCubin, PtxasReport


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("PYDG_CACHE_DIR") or pathlib.Path.home() / ".pydg")


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load(key: str) -> CompiledCubin | None:
    directory = cache_dir()
    try:
        meta = json.loads((directory / f"{key}.json").read_text())
        cubin = (directory / f"{key}.cubin").read_bytes()
        if hashlib.sha256(cubin).hexdigest() != meta["cubin_sha256"]:
            return None
        return CompiledCubin(cubin=cubin, log=meta["log"], ptxas=PtxasReport(**meta["ptxas"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(key: str, compiled: CompiledCubin) -> None:
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(directory / f"{key}.cubin", compiled.cubin)
        meta = {"cubin_sha256": hashlib.sha256(compiled.cubin).hexdigest(), "log": compiled.log,
                "ptxas": asdict(compiled.ptxas)}
        _atomic_write(directory / f"{key}.json", json.dumps(meta).encode())
    except OSError:
        pass  # a read-only or full disk only costs a recompile next time

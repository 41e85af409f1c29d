"""The on-disk cache of compiled kernels.

One entry is one file, `<key>.json`: what the kernel is, ptxas's report, the compile log, and the
cubin (base64) with its SHA-256. One file per entry makes every write atomic (a temporary file
renamed into place), so concurrent writers of the same key (which may produce different cubins: see
nvrtc.py's nonce) leave one whole entry, never a cubin of one and a checksum of another. An entry
that fails to parse or to match its checksum is a miss, and is compiled and written again.

The key (pydg/kernels/source.py) holds only content, so a directory filled on one machine is hit in
full on another with the same NVRTC, wherever pydg and the directory are installed. Files written
beside an entry by PYDG_DUMP_PTX/PYDG_DUMP_SASS (`<key>.cubin`, `.ptx`, `.sass`) are not entries.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import pathlib
import tempfile
import threading
import warnings
from dataclasses import asdict, dataclass
from typing import Any

from pydg.driver.nvrtc import CompiledCubin, PtxasReport

FORMAT = 1
ENTRY_SUFFIX = ".json"
SIDE_SUFFIXES = (".cubin", ".ptx", ".sass")
MANIFEST_PREFIX = "warmup-"  # pydg/warmup.py's lists of the kernels a set of shapes needs
AUTOTUNE_PREFIX = "autotune-"  # pydg/autotune.py's records of the fastest plan of a shape

_warned_lock = threading.Lock()
_warned_dirs: set[str] = set()


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("PYDG_CACHE_DIR") or pathlib.Path.home() / ".pydg")


def entry_path(key: str) -> pathlib.Path:
    return cache_dir() / f"{key}{ENTRY_SUFFIX}"


def atomic_write(path: pathlib.Path, data: bytes) -> None:
    """Write `path` so that a reader sees the old file or the whole new one, never a part."""
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


def _decode(meta: dict[str, Any]) -> CompiledCubin:
    """The entry's cubin and report; ValueError/KeyError/TypeError if anything does not match."""
    if meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format')!r}")
    cubin = base64.b64decode(meta["cubin_base64"], validate=True)
    if len(cubin) != meta["cubin_bytes"] or hashlib.sha256(cubin).hexdigest() != meta["cubin_sha256"]:
        raise ValueError("cubin checksum")
    return CompiledCubin(cubin=cubin, log=meta["log"], ptxas=PtxasReport(**meta["ptxas"]))


def load(key: str) -> CompiledCubin | None:
    """The entry for `key`, or None where there is none or it is damaged."""
    try:
        return _decode(json.loads(entry_path(key).read_bytes()))
    except (OSError, ValueError, KeyError, TypeError, binascii.Error):
        return None


def store(key: str, compiled: CompiledCubin, kernel: dict[str, Any] | None = None) -> pathlib.Path | None:
    """Write the entry; `kernel` says what it is (for `pydg cache list`). Returns its path, or None
    where the directory cannot be written (then the kernel lives in this process only: one warning)."""
    directory = cache_dir()
    meta = {
        "format": FORMAT,
        "key": key,
        "kernel": kernel or {},
        "ptxas": asdict(compiled.ptxas),
        "log": compiled.log,
        "cubin_bytes": len(compiled.cubin),
        "cubin_sha256": hashlib.sha256(compiled.cubin).hexdigest(),
        "cubin_base64": base64.b64encode(compiled.cubin).decode(),
    }
    path = directory / f"{key}{ENTRY_SUFFIX}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(meta, indent=1).encode())
    except OSError as err:
        _warn_unwritable(directory, err)
        return None
    return path


def _warn_unwritable(directory: pathlib.Path, err: OSError) -> None:
    with _warned_lock:
        if str(directory) in _warned_dirs:
            return
        _warned_dirs.add(str(directory))
    warnings.warn(f"pydg: cannot write the kernel cache {directory} ({type(err).__name__}: {err}); compiled kernels "
                  "are kept in this process only (set PYDG_CACHE_DIR to a writable directory)",
                  RuntimeWarning, stacklevel=3)


@dataclass(frozen=True)
class EntryInfo:
    """One file of the cache directory as `pydg cache list` shows it."""
    key: str
    path: pathlib.Path
    size_bytes: int
    kernel: dict[str, Any]           # what store() was told; {} for a damaged entry
    ptxas: PtxasReport | None        # None for a damaged entry
    valid: bool


def entries() -> list[EntryInfo]:
    """Every entry in the cache directory, sorted by key, damaged ones included (valid=False)."""
    directory = cache_dir()
    found = []
    try:
        paths = sorted(p for p in directory.iterdir()
                       if p.suffix == ENTRY_SUFFIX and not p.name.startswith((MANIFEST_PREFIX, AUTOTUNE_PREFIX)))
    except OSError:
        return []
    for path in paths:
        try:
            size = path.stat().st_size
            meta = json.loads(path.read_bytes())
            _decode(meta)
            found.append(EntryInfo(path.stem, path, size, dict(meta.get("kernel") or {}),
                                   PtxasReport(**meta["ptxas"]), True))
        except (OSError, ValueError, KeyError, TypeError, binascii.Error):
            found.append(EntryInfo(path.stem, path, path.stat().st_size if path.exists() else 0, {}, None, False))
    return found


def pydg_files(directory: pathlib.Path | None = None) -> list[pathlib.Path]:
    """The files pydg wrote in the cache directory (entries, dumps, manifests, stray temporaries);
    anything else there is not pydg's to count or delete."""
    directory = cache_dir() if directory is None else directory
    try:
        names = list(directory.iterdir())
    except OSError:
        return []
    return [p for p in names if p.is_file() and (p.suffix in (ENTRY_SUFFIX, *SIDE_SUFFIXES) or p.suffix == ".tmp")]


def total_bytes() -> int:
    total = 0
    for path in pydg_files():
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total


def clear() -> int:
    """Delete pydg's files from the cache directory (not the directory, not other files); how many."""
    removed = 0
    for path in pydg_files():
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed

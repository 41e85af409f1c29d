"""Processes sharing one kernel cache directory (PYDG_CACHE_DIR): two compiling the same kernel at
once both succeed and leave one whole entry, which a third process then reads instead of compiling.
Real NVRTC, no GPU needed."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import time

# Each child waits for the go file, so both compile at the same moment, then prints what it got.
CHILD = r"""
import hashlib, json, os, pathlib, sys, time
go = pathlib.Path(sys.argv[1])
while not go.exists():
    time.sleep(0.005)
from pydg.kernels.source import compile_plan
from pydg.scheduler.heuristics import choose_plan
plan = choose_plan("dense", 192, 2320, 656, 1, 132)  # a shape no other test compiles
kernel = compile_plan(plan)
print(json.dumps({"key": kernel.key, "sha": hashlib.sha256(kernel.cubin).hexdigest(),
                  "from_disk": kernel.from_disk_cache, "registers": kernel.ptxas.registers}))
"""


def _start(cache_dir: pathlib.Path, go: pathlib.Path) -> subprocess.Popen:
    env = dict(os.environ, PYDG_CACHE_DIR=str(cache_dir))
    root = pathlib.Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-c", CHILD, str(go)], env=env, cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, f"child failed:\n{stderr}"
    return json.loads(stdout.strip().splitlines()[-1])


def test_two_processes_compile_into_one_cache_directory(tmp_path, monkeypatch):
    cache_dir = tmp_path / "shared-cache"
    go = tmp_path / "go"
    children = [_start(cache_dir, go) for _ in range(2)]
    time.sleep(0.5)  # both are importing pydg and waiting
    go.touch()
    first, second = (_result(child) for child in children)
    assert first["key"] == second["key"]
    assert first["registers"] == second["registers"]

    # One whole entry: it loads, its cubin is one of the two written, and no temporary is left.
    monkeypatch.setenv("PYDG_CACHE_DIR", str(cache_dir))
    from pydg.driver import cache

    entry = cache.load(first["key"])
    assert entry is not None, "the shared directory has no readable entry"
    assert hashlib.sha256(entry.cubin).hexdigest() in {first["sha"], second["sha"]}
    assert not [p.name for p in cache_dir.iterdir() if p.name.endswith(".tmp")]

    # A later process is served from the directory, with the entry's cubin.
    third = _result(_start(cache_dir, go))
    assert third["from_disk"] and third["key"] == first["key"]
    assert third["sha"] == hashlib.sha256(entry.cubin).hexdigest()

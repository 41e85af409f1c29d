"""The on-disk kernel cache: round trip, atomic single-file entries, damaged entries, what the key
covers, a cache that travels to another directory, and the cache under concurrent use."""
import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest

import pydg
from pydg.driver import cache, nvrtc
from pydg.driver.nvrtc import CompiledCubin, PtxasReport
from pydg.kernels import source
from pydg.scheduler import choose_plan

ENTRY = CompiledCubin(cubin=b"\x7fELF" + bytes(range(200)), log="ptxas info: Used 168 registers",
                      ptxas=PtxasReport(registers=168, spill_stores=0, spill_loads=0, stack_frame=0))
SMALL = ("dense", 128, 256, 256, 1, 132)  # a plan whose kernel compiles in well under a second
PACKAGE = pathlib.Path(pydg.__file__).resolve().parent


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty cache directory and an empty in-process kernel table."""
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(source, "_compiled", {})
    return tmp_path


def test_round_trip_in_one_file(fresh):
    assert cache.load("k1") is None
    assert cache.store("k1", ENTRY, {"mode": "dense"}) == fresh / "k1.json"
    assert cache.load("k1") == ENTRY
    assert sorted(p.name for p in fresh.iterdir()) == ["k1.json"]  # one file, no temporary left
    [entry] = cache.entries()
    assert entry.valid and entry.key == "k1" and entry.kernel == {"mode": "dense"} and entry.ptxas == ENTRY.ptxas


def _rewrite(path: pathlib.Path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_damaged_entries_are_misses_not_crashes(fresh):
    damages = {
        "truncated": lambda p: p.write_bytes(p.read_bytes()[:-40]),
        "garbage": lambda p: p.write_bytes(os.urandom(300)),
        "empty": lambda p: p.write_bytes(b""),
        "other cubin": lambda p: _rewrite(p, lambda m: m.update(cubin_base64=base64.b64encode(b"x" * 204).decode())),
        "no report": lambda p: _rewrite(p, lambda m: m.pop("ptxas")),
        "old format": lambda p: _rewrite(p, lambda m: m.pop("format")),
        "not base64": lambda p: _rewrite(p, lambda m: m.update(cubin_base64="@@@@")),
    }
    for name, damage in damages.items():
        key = name.replace(" ", "_")
        cache.store(key, ENTRY)
        damage(fresh / f"{key}.json")
        assert cache.load(key) is None, name
    assert len(cache.entries()) == len(damages) and not any(e.valid for e in cache.entries())


def test_damaged_entry_is_compiled_again(fresh):
    plan = choose_plan(*SMALL)
    first = source.compile_plan(plan)
    path = fresh / f"{first.key}.json"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    source._compiled.clear()
    before = source.jit_stats().compiles
    again = source.compile_plan(plan)
    assert not again.from_disk_cache and source.jit_stats().compiles == before + 1
    assert cache.load(first.key) is not None  # rewritten whole


def test_key_covers_options_and_sources(monkeypatch):
    plan = choose_plan("dense", 4096, 7168, 2048, 1, 132)
    key = source.cache_key(plan)
    assert key == source.cache_key(plan)
    assert key != source.cache_key(replace(plan, num_stages=plan.num_stages - 1))
    assert key != source.cache_key(replace(plan, n=plan.n + 8))
    assert set(source.included_sources()) >= {"fp8_gemm.cu", "fp8_gemm.cuh", "ptx.cuh", "scheduler.cuh"}
    unrelated = {**source.sources(), "another_kernel.cu": "// not included by fp8_gemm.cu\n"}
    monkeypatch.setattr(source, "sources", lambda: unrelated)
    assert key == source.cache_key(plan)
    changed = dict(source.sources())
    changed["ptx.cuh"] += "\n// edited\n"  # included through fp8_gemm.cuh and scheduler.cuh
    monkeypatch.setattr(source, "sources", lambda: changed)
    assert key != source.cache_key(plan)


def test_key_holds_no_path_user_or_time(monkeypatch, tmp_path):
    plan = choose_plan(*SMALL)
    key = source.cache_key(plan)
    monkeypatch.setattr(source, "KERNEL_DIR", tmp_path / "elsewhere" / "kernels")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USER", "someone-else")
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path / "cache"))
    assert str(tmp_path) in " ".join(source.options(plan))  # the compiler is told where the headers are...
    assert source.cache_key(plan) == key                     # ...but the key does not depend on it
    time.sleep(0.01)
    assert source.cache_key(plan) == key


def test_compile_plan_uses_and_fills_the_disk_cache(fresh):
    plan = choose_plan(*SMALL)
    before = source.jit_stats()
    first = source.compile_plan(plan)
    assert not first.from_disk_cache and first.ptxas.spill_stores == 0
    assert cache.load(first.key).cubin == first.cubin
    assert source.compile_plan(plan) is first  # this process remembers it
    source._compiled.clear()
    second = source.compile_plan(plan)
    assert second.from_disk_cache and second.cubin == first.cubin
    after = source.jit_stats()
    assert (after.compiles - before.compiles, after.disk_hits - before.disk_hits) == (1, 1)
    assert cache.entries()[0].kernel["block_m"] == plan.block_m


# ---- a cache that travels ----------------------------------------------------------------------

STATS_SCRIPT = """
import json, sys
import pydg
from pydg.kernels import source
from pydg.scheduler import choose_plan
assert pydg.__file__.startswith(sys.argv[1]), pydg.__file__
kernel = source.compile_plan(choose_plan(*json.loads(sys.argv[2])))
stats = source.jit_stats()
print(json.dumps({"key": kernel.key, "compiles": stats.compiles, "disk_hits": stats.disk_hits}))
"""


def _run_copy(package_root: pathlib.Path, cache_dir: pathlib.Path, shape=SMALL) -> dict:
    env = {**os.environ, "PYTHONPATH": str(package_root), "PYDG_CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", STATS_SCRIPT, str(package_root), json.dumps(shape)],
                          cwd=package_root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cache_built_in_one_place_is_hit_in_full_in_another(tmp_path):
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PACKAGE, tmp_path / "build" / "pydg", ignore=ignore)
    built = _run_copy(tmp_path / "build", tmp_path / "build-cache")
    assert built["compiles"] == 1
    # A second start of the same install compiles nothing.
    assert _run_copy(tmp_path / "build", tmp_path / "build-cache") == {**built, "compiles": 0, "disk_hits": 1}
    # pydg and its cache moved to other directories (an image layer, another machine): all hits.
    shutil.copytree(tmp_path / "build" / "pydg", tmp_path / "serve" / "site" / "pydg", ignore=ignore)
    shutil.copytree(tmp_path / "build-cache", tmp_path / "serve" / "cache")
    moved = _run_copy(tmp_path / "serve" / "site", tmp_path / "serve" / "cache")
    assert moved == {**built, "compiles": 0, "disk_hits": 1}


# ---- the cache under stress --------------------------------------------------------------------

def test_processes_compiling_the_same_new_kernel_leave_one_valid_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    procs = [subprocess.Popen([sys.executable, "-c", STATS_SCRIPT, str(PACKAGE.parent), json.dumps(SMALL)], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert len({r["key"] for r in results}) == 1
    assert all(r["compiles"] + r["disk_hits"] == 1 for r in results)
    [entry] = cache.entries()
    assert entry.valid and entry.key == results[0]["key"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{entry.key}.json"]  # no temporaries left behind


def test_threads_asking_for_the_same_new_kernel_compile_it_once(fresh, monkeypatch):
    calls = []

    def slow_compile(src, name, options, keep_ptx=False):
        calls.append(options)
        time.sleep(0.2)  # long enough for every thread to arrive while the first compiles
        return ENTRY

    monkeypatch.setattr(source.nvrtc, "compile_cubin", slow_compile)
    plan = choose_plan(*SMALL)
    barrier = threading.Barrier(8)
    kernels = []

    def ask():
        barrier.wait()
        kernels.append(source.compile_plan(plan))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(kernels) == 8 and all(k is kernels[0] for k in kernels)


def test_unwritable_cache_compiles_in_memory_with_one_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("PYDG_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(source, "_compiled", {})
    monkeypatch.setattr(cache, "_warned_dirs", set())
    monkeypatch.setattr(source.nvrtc, "compile_cubin", lambda *args, **kwargs: ENTRY)
    with pytest.warns(RuntimeWarning, match="cannot write the kernel cache") as warned:
        first = source.compile_plan(choose_plan(*SMALL))
        second = source.compile_plan(choose_plan("dense", 256, 512, 512, 1, 132))
    assert len(warned) == 1
    assert first.cubin == second.cubin == ENTRY.cubin and not first.from_disk_cache


# ---- listing and clearing ----------------------------------------------------------------------

def test_clear_removes_only_pydg_files(fresh):
    cache.store("k1", ENTRY)
    (fresh / "k1.sass").write_text("sass")
    (fresh / "warmup-abc.json").write_text("{}")
    (fresh / "notes.txt").write_text("the user's")
    assert cache.total_bytes() > 0
    assert [e.key for e in cache.entries()] == ["k1"]  # the warm-up manifest is not a kernel
    assert cache.clear() == 3
    assert sorted(p.name for p in fresh.iterdir()) == ["notes.txt"]
    assert cache.entries() == [] and cache.total_bytes() == 0


def test_missing_directory_lists_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path / "never-made"))
    assert cache.entries() == [] and cache.clear() == 0 and cache.total_bytes() == 0


def test_nvrtc_version_text():
    assert nvrtc.version_text() == ".".join(map(str, nvrtc.version()))

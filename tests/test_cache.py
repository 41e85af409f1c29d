"""The on-disk kernel cache: round trip, atomic files, corrupt entries, and what the key covers."""
import json
from dataclasses import replace

from pydg.driver import cache
from pydg.driver.nvrtc import CompiledCubin, PtxasReport
from pydg.kernels import source
from pydg.scheduler import choose_plan

ENTRY = CompiledCubin(cubin=b"\x7fELF" + bytes(range(200)), log="ptxas info: Used 168 registers",
                      ptxas=PtxasReport(registers=168, spill_stores=0, spill_loads=0, stack_frame=0))


def test_round_trip_in_the_configured_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    assert cache.load("k1") is None
    cache.store("k1", ENTRY)
    assert cache.load("k1") == ENTRY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1.cubin", "k1.json"]  # no temporary left


def test_corrupt_entries_are_misses_not_crashes(tmp_path, monkeypatch):
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    cache.store("k2", ENTRY)
    (tmp_path / "k2.cubin").write_bytes(ENTRY.cubin[:-10])  # truncated cubin: checksum mismatch
    assert cache.load("k2") is None
    cache.store("k3", ENTRY)
    (tmp_path / "k3.json").write_text("{not json")
    assert cache.load("k3") is None
    cache.store("k4", ENTRY)
    meta = json.loads((tmp_path / "k4.json").read_text())
    del meta["ptxas"]
    (tmp_path / "k4.json").write_text(json.dumps(meta))
    assert cache.load("k4") is None
    cache.store("k5", ENTRY)
    (tmp_path / "k5.cubin").unlink()  # a writer that died between the two files
    assert cache.load("k5") is None


def test_key_covers_options_and_sources(monkeypatch):
    plan = choose_plan("dense", 4096, 7168, 2048, 1, 132)
    key = source.cache_key(plan)
    assert key == source.cache_key(plan)
    assert key != source.cache_key(replace(plan, num_stages=plan.num_stages - 1))
    assert key != source.cache_key(replace(plan, n=plan.n + 8))
    changed = dict(source.sources())
    changed["ptx.cuh"] += "\n// edited\n"
    monkeypatch.setattr(source, "sources", lambda: changed)
    assert key != source.cache_key(plan)


def test_compile_plan_uses_and_fills_the_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(source, "_compiled", {})
    plan = choose_plan("dense", 128, 256, 256, 1, 132)
    first = source.compile_plan(plan)
    assert not first.from_disk_cache and first.ptxas.spill_stores == 0
    assert (tmp_path / f"{first.key}.cubin").read_bytes() == first.cubin
    monkeypatch.setattr(source, "_compiled", {})
    second = source.compile_plan(plan)
    assert second.from_disk_cache and second.cubin == first.cubin

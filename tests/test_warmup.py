"""Ahead-of-time compilation of every kernel a model's layers need (pydg/warmup.py)."""
import concurrent.futures
import io
import json

import pytest

from pydg import warmup
from pydg.driver import cache
from pydg.kernels import source
from pydg.warmup import Layer


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(source, "_compiled", {})
    return tmp_path


def test_parse_layer():
    assert warmup.parse_layer("7168x2048") == Layer("dense", 7168, 2048)
    assert warmup.parse_layer("dense:7168x2048") == Layer("dense", 7168, 2048)
    assert warmup.parse_layer("contiguous:8x4096x7168") == Layer("contiguous", 4096, 7168, 8)
    assert warmup.parse_layer(" masked:4x7168x2048 ") == Layer("masked", 7168, 2048, 4)
    for bad, match in [("7168", "expected NxK"), ("masked:7168x2048", "masked:GxNxK"),
                       ("4x7168x2048", "NxK for a dense layer"), ("grouped:2x8x16", "expected NxK"),
                       ("7160x2040", "k of 16"), ("contiguous:0x256x256", "num_groups")]:
        with pytest.raises(ValueError, match=match):
            warmup.parse_layer(bad)


def test_parse_m_list():
    assert warmup.parse_m_list("1-4") == (1, 2, 3, 4)
    assert warmup.parse_m_list("128, 1-3,2,4096") == (1, 2, 3, 128, 4096)
    for bad in ("", "0-4", "5-2", "a", "1-"):
        with pytest.raises(ValueError, match="m: expected"):
            warmup.parse_m_list(bad)


def test_model_file(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"m": "1-8", "layers": [
        {"name": "q_b", "n": 24576, "k": 1536},
        {"name": "moe", "layout": "contiguous", "groups": 8, "n": 4096, "k": 7168},
        {"layout": "masked", "groups": 8, "n": 4096, "k": 7168, "m_max": 256}]}))
    layers, ms = warmup.load_model_file(path)
    assert ms == tuple(range(1, 9))
    assert layers == [Layer("dense", 24576, 1536, name="q_b"), Layer("contiguous", 4096, 7168, 8, name="moe"),
                      Layer("masked", 4096, 7168, 8, 256, name="layers[2]")]
    path.write_text(json.dumps([{"n": 256, "k": 256}]))
    assert warmup.load_model_file(path) == ([Layer("dense", 256, 256, name="layers[0]")], None)
    for bad, match in [({"layers": []}, "non-empty"), ([{"n": 256}], "k: expected a positive int, got None"),
                       ([{"n": 256, "k": 256, "kind": "dense"}], "unknown keys"),
                       ({"m": [0], "layers": [{"n": 256, "k": 256}]}, "m: expected"),
                       ([{"n": 256, "k": 256, "m_max": 64}], "m_max")]:
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=match):
            warmup.load_model_file(path)


def test_contract_layers():
    layers = warmup.contract_layers()
    assert sum(layer.layout == "dense" for layer in layers) == 6       # the 18 dense shapes' N x K
    assert sum(layer.layout == "contiguous" for layer in layers) == 4
    assert sum(layer.layout == "masked" for layer in layers) == 6


@pytest.mark.parametrize("layer, ms", [
    (Layer("dense", 2112, 7168), range(1, 1601)),
    (Layer("dense", 24576, 1536), range(1, 1201)),
    (Layer("contiguous", 7168, 2048, 4), range(1, 401)),
    (Layer("masked", 4096, 7168, 2), range(1, 1201)),
    (Layer("dense", 7168, 2048), [1, 2, 3, 60, 64, 65, 100, 127, 128, 129, 700, 701, 999, 4096, 9000]),
])
def test_bisection_finds_the_kernels_planning_every_m_finds(layer, ms):
    ms = tuple(ms)
    fast = {warmup.kernel_identity(p) for p in warmup.distinct_plans(layer, ms, 132, ms[-1])}
    every = {warmup.kernel_identity(p) for p in warmup.distinct_plans(layer, ms, 132, ms[-1], exhaustive=True)}
    assert fast == every and len(fast) >= 2


def test_layer_planning_rows():
    assert Layer("contiguous", 256, 256, 4).plan(10, 132, 100).m == 40     # M_sum = groups x M
    masked = Layer("masked", 256, 256, 4).plan(10, 132, 100)
    assert (masked.m, masked.expected_m) == (100, 10)                      # M_max: the largest M
    assert Layer("masked", 256, 256, 4, m_max=8).plan(10, 132, 100).expected_m == 8


def _threads(jobs):
    return concurrent.futures.ThreadPoolExecutor(max_workers=jobs)


def test_warmup_compiles_once_then_starts_warm(fresh):
    layers = [Layer("dense", 256, 512), Layer("masked", 256, 512, 2)]
    cold = warmup.warmup(layers, range(1, 300), jobs=2, progress=False, executor_factory=_threads)
    assert cold.kernels >= 2 and cold.compiled == cold.kernels and cold.cached == 0 and not cold.failed
    assert not cold.from_manifest and len(cache.entries()) == cold.kernels
    assert "distinct kernels" in cold.summary()
    warm = warmup.warmup(layers, range(1, 300), jobs=2, progress=False, executor_factory=_threads)
    assert warm.from_manifest and warm.compiled == 0 and warm.cached == cold.kernels
    # A damaged entry is found by its checksum and compiled again, alone.
    damaged = cache.entries()[0].path
    damaged.write_bytes(damaged.read_bytes()[:100])
    repaired = warmup.warmup(layers, range(1, 300), jobs=1, progress=False)
    assert repaired.compiled == 1 and repaired.cached == cold.kernels - 1
    # The kernels of a request are exactly those the GEMM calls would compile.
    needed = {source.cache_key(layer.plan(m, 132, 299)) for layer in layers for m in range(1, 300)}
    assert needed == {e.key for e in cache.entries()}


def test_manifest_depends_on_the_request(fresh):
    layers = [Layer("dense", 256, 512)]
    a = warmup.manifest_path(layers, range(1, 10), 132, False)
    assert a == warmup.manifest_path(layers, tuple(range(1, 10)), 132, False)
    assert a != warmup.manifest_path(layers, range(1, 11), 132, False)
    assert a != warmup.manifest_path(layers, range(1, 10), 114, False)
    assert a != warmup.manifest_path([Layer("dense", 256, 1024)], range(1, 10), 132, False)
    assert a.parent == fresh and a.name.startswith(cache.MANIFEST_PREFIX)


def test_warmup_reports_failures(fresh, monkeypatch):
    def broken(plan):
        raise RuntimeError("NVRTC broke")

    monkeypatch.setattr(source, "compile_plan", broken)
    result = warmup.warmup([Layer("dense", 256, 512)], [1], jobs=1, progress=False)
    assert result.failed == ["RuntimeError: NVRTC broke"] and "1 failed" in result.summary()


def test_warmup_rejects_empty_requests():
    with pytest.raises(ValueError, match="layers"):
        warmup.warmup([], [1])
    with pytest.raises(ValueError, match="ms"):
        warmup.warmup([Layer("dense", 256, 512)], [])


def test_progress_bar_text():
    stream = io.StringIO()
    bar = warmup.Progress("compiling", 25, stream=stream)
    for _ in range(25):
        bar.advance()
    lines = stream.getvalue().splitlines()
    assert 2 <= len(lines) <= 11  # not a terminal: a line per tenth
    assert lines[-1].startswith("compiling [##############################] 25/25")
    quiet = io.StringIO()
    warmup.Progress("x", 3, stream=quiet, enabled=False).advance()
    assert quiet.getvalue() == ""

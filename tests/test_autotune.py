"""Opt-in autotuning (pydg/autotune.py): which plans are timed, what is remembered, and its place in
a GEMM's first call (with the fake GPU of test_hardening.py). Timing itself runs on the GPU only."""
import json
from dataclasses import replace

import pytest

from pydg import autotune
from pydg.driver import cache
from pydg.scheduler.heuristics import choose_plan, ranked_plans
from test_hardening import GOOD_ARGS, call, fake_gpu  # noqa: F401  (fake_gpu is a fixture)


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(autotune, "_memo", {})
    monkeypatch.setattr(autotune, "_forced", None)


def _plans(count=4):
    return autotune.candidates(ranked_plans("dense", 4096, 7168, 2048, 1, 132), count)


def test_switch(monkeypatch):
    monkeypatch.setattr(autotune, "_forced", None)
    monkeypatch.delenv(autotune.AUTOTUNE, raising=False)
    assert not autotune.enabled()
    monkeypatch.setenv(autotune.AUTOTUNE, "1")
    assert autotune.enabled()
    autotune.set_autotune(False)
    assert not autotune.enabled()
    autotune.set_autotune(None)
    assert autotune.enabled()
    with pytest.raises(TypeError, match="on: expected True, False or None"):
        autotune.set_autotune("yes")


def test_candidates_start_with_the_models_choice_and_hold_no_repeats():
    ranked = ranked_plans("dense", 4096, 7168, 2048, 1, 132)
    assert ranked[0] == choose_plan("dense", 4096, 7168, 2048, 1, 132)
    plans = autotune.candidates([ranked[0], *ranked], 3)
    assert plans[:3] == ranked[:3] and len(set(plans)) == 4
    # The model's plan with B's L2 hint the other way comes last.
    assert plans[3] == replace(ranked[0], b_evict_first=not ranked[0].b_evict_first)


@pytest.mark.parametrize("m,hinted", [(64, True), (4096, False)])
def test_candidates_time_the_models_plan_with_b_hint_both_ways(m, hinted):
    ranked = ranked_plans("dense", m, 7168, 2048, 1, 132)
    assert ranked[0].b_evict_first == hinted
    plans = autotune.candidates(ranked)
    assert len(plans) == autotune.CANDIDATES + 1
    assert ranked[0] in plans and replace(ranked[0], b_evict_first=not hinted) in plans


@pytest.mark.parametrize("k,early", [(7168, True), (2048, False)])
def test_contiguous_candidates_time_the_models_plan_with_early_start_both_ways(k, early):
    ranked = ranked_plans("contiguous", 32768, 4096, k, 4, 132)
    first = ranked[0]
    assert first.allows_early_start and first.early_start == early
    plans = autotune.candidates(ranked)
    assert len(plans) == autotune.CANDIDATES + 2 and len(set(plans)) == len(plans)
    assert plans[-1] == replace(first, early_start=not early)
    plans[-1].validate()
    # Dense and masked plans keep the early start off and are not timed with it.
    assert not any(p.early_start for p in autotune.candidates(ranked_plans("dense", 2500, 7168, 7168, 1, 132)))


def test_fastest_is_chosen_remembered_and_read_back(fresh):
    plans = _plans()
    times = {plan: 1e-3 * (len(plans) - i) for i, plan in enumerate(plans)}  # the last is fastest
    timed = []
    winner = autotune.best_plan(plans, "GPU", lambda p: timed.append(p) or times[p])
    assert winner == plans[-1] and timed == plans
    (record,) = cache.cache_dir().glob(f"{cache.AUTOTUNE_PREFIX}*.json")
    data = json.loads(record.read_text())
    assert len(data["timings_us"]) == len(plans) and data["timings_us"][-1]["us"] == 1000.0
    assert cache.entries() == []  # a record is not a kernel entry

    def no_timing(plan):
        raise AssertionError("a remembered shape was timed again")

    assert autotune.best_plan(plans, "GPU", no_timing) == winner  # this process's memory
    autotune._memo.clear()
    assert autotune.best_plan(plans, "GPU", no_timing) == winner  # the record on disk


def test_key_depends_on_the_gpu_and_the_candidates(fresh):
    plans = _plans()
    key = autotune.record_key(plans, "H100")
    assert autotune.record_key(plans, "H200") != key
    assert autotune.record_key(plans[:-1], "H100") != key
    assert autotune.record_key(list(plans), "H100") == key


def test_damaged_or_foreign_records_are_tuned_again(fresh):
    plans = _plans()
    key = autotune.record_key(plans, "GPU")
    path = cache.cache_dir() / f"{cache.AUTOTUNE_PREFIX}{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    assert autotune.load_record(key, plans) is None
    foreign = replace(plans[0], block_n=plans[0].block_n + 16)
    autotune.store_record(key, foreign, [])
    assert autotune.load_record(key, plans) is None  # names no plan of this candidate list
    timed = []
    assert autotune.best_plan(plans, "GPU", lambda p: timed.append(p) or 1.0) == plans[0]
    assert timed == plans


def test_first_call_times_candidates_and_launches_the_winner(fake_gpu, fresh, monkeypatch):
    autotune.set_autotune(True)
    timed = []

    def fake_time(launch, stream):
        launch()
        timed.append(fake_gpu.launches[-1]["function"])
        return 1.0 / len(timed)  # each candidate faster than the one before: the last wins

    monkeypatch.setattr(autotune, "time_launches", fake_time)
    monkeypatch.setattr(autotune, "stream_is_capturing", lambda stream: False)
    args = GOOD_ARGS["dense"]()
    call("dense", args)
    assert 1 < len(timed) <= autotune.CANDIDATES + 1 and len(set(timed)) == len(timed)
    assert fake_gpu.launches[-1]["function"] == timed[-1]  # the call itself ran the winner
    launches = len(fake_gpu.launches)
    call("dense", args)
    assert len(fake_gpu.launches) == launches + 1  # a second call tunes nothing


def test_capture_skips_tuning(fake_gpu, fresh, monkeypatch):
    autotune.set_autotune(True)
    monkeypatch.setattr(autotune, "stream_is_capturing", lambda stream: True)
    monkeypatch.setattr(autotune, "time_launches", lambda launch, stream: pytest.fail("timed during capture"))
    args = GOOD_ARGS["dense"]()
    call("dense", args)
    assert len(fake_gpu.launches) == 1


def test_default_is_the_model_and_needs_no_timing(fake_gpu, fresh, monkeypatch):
    monkeypatch.delenv(autotune.AUTOTUNE, raising=False)
    monkeypatch.setattr(autotune, "time_launches", lambda launch, stream: pytest.fail("timed while off"))
    call("dense", GOOD_ARGS["dense"]())
    assert len(fake_gpu.launches) == 1

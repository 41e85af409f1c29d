"""scripts/l2_walk_model.py: the LRU model of the walk's device-memory reads (a CPU tool for reading
walks side by side, tested here so that its figures stay bounded by what they count)."""
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("l2_walk_model", ROOT / "scripts" / "l2_walk_model.py")
model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model)


@pytest.mark.parametrize("text", ["256,1024,512", "contiguous:2,256,512,256", "masked:3,128,256,512"])
def test_a_walk_that_fits_in_l2_reads_a_and_b_once(text):
    shape = model.parse_shape(text)
    plan, grouping = model.plan_and_grouping(shape)
    once = shape.groups * (shape.m_per_group + shape.n) * shape.k
    assert model.device_reads(plan, grouping, 64 << 20) == once


def test_a_small_l2_reads_more_and_never_more_than_every_load():
    shape = model.parse_shape("2048,4096,1024")  # two waves: the second reads B again
    plan, grouping = model.plan_and_grouping(shape)
    once = shape.m_per_group * shape.k + shape.n * shape.k
    every_load = plan.num_tiles * plan.num_k_blocks * (plan.block_m + plan.block_n) * plan.block_k
    small = model.device_reads(plan, grouping, 1 << 20)
    assert once < small <= every_load
    assert model.device_reads(plan, grouping, 64 << 20) == once


def test_lru_evicts_the_least_recent():
    cache = model.LruCache(capacity=2)
    for key in ("a", "b", "a", "c", "b"):
        cache.touch((key,), 1)
    # a, b miss; a hits; c misses and evicts b; b misses again.
    assert cache.missed == 4 and list(cache.lines) == [("c",), ("b",)]

"""Plans as plain objects without a GPU: plan_gemm, plan_m_grouped_contiguous, plan_m_grouped_masked."""
import dataclasses
import json
import logging

import pytest

import pydg
from pydg import describe
from pydg.driver import cache
from pydg.driver.nvrtc import CompiledCubin, PtxasReport
from pydg.kernels import source

FAKE = CompiledCubin(cubin=b"\x7fELF" + bytes(64), log="ptxas info: Used 154 registers",
                     ptxas=PtxasReport(registers=154, spill_stores=0, spill_loads=0, stack_frame=0))


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(source, "_compiled", {})


def test_plan_gemm_says_everything_without_a_gpu():
    plan = pydg.plan_gemm(4096, 7168, 2048, num_sms=132)
    assert (plan.mode, plan.m, plan.n, plan.k, plan.num_groups, plan.expected_m) == ("dense", 4096, 7168, 2048, 1, None)
    assert plan.block_m % 64 == 0 and plan.block_k == 128 and plan.num_stages >= 3
    assert plan.sms_available == 132 and plan.sms_used <= 132
    assert plan.grid == (plan.sms_used, 1, 1) and plan.block == (plan.plan.threads, 1, 1)
    assert plan.cluster == (plan.cluster_size, 1, 1)
    assert plan.multicast in ("none", "a", "b") and (plan.cluster_size > 1) == (plan.multicast != "none")
    assert plan.num_tiles == -(-4096 // plan.block_m) * -(-7168 // plan.block_n)
    assert plan.waves == pytest.approx(plan.num_tiles / plan.sms_used)
    full, rest = divmod(plan.num_tiles, plan.sms_used)
    assert plan.last_wave_utilisation == pytest.approx(rest / plan.sms_used if rest else 1.0)
    assert plan.smem_bytes == plan.plan.smem_bytes <= 232448
    assert [t.name for t in plan.tensor_maps] == ["lhs data", "rhs data", "lhs scales", "out"]
    for spec in plan.tensor_maps:
        spec.validate()  # encodable as described
    assert plan.cache_key == source.cache_key(plan.plan) and len(plan.cache_key) == 32
    assert plan.kernel is None and plan.registers is None  # not compiled: no ptxas report


def test_repr_is_the_readable_report():
    plan = pydg.plan_gemm(64, 2112, 7168, num_sms=132)
    text = repr(plan)
    assert text == plan.summary()
    for expected in ("CallPlan: dense GEMM M=64 N=2112 K=7168", "block ", "stages", "cluster", "SMs ", "waves",
                     "last wave", "shared memory", "grid (", "lhs data", "rhs data", "lhs scales", "out ",
                     "swizzle 128B", plan.cache_key, "not compiled yet"):
        assert expected in text, expected


def test_plans_are_frozen_and_json_able():
    plan = pydg.plan_gemm(128, 4096, 7168, num_sms=132)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.block_m = 64
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["block_n"] == plan.block_n and data["tensor_maps"][0]["name"] == "lhs data"
    assert data["plan"]["num_stages"] == plan.num_stages


def test_sms_argument_and_default():
    small = pydg.plan_gemm(4096, 7168, 2048, num_sms=66)
    assert small.sms_available == 66 and small.sms_used <= 66
    assert pydg.plan_gemm(4096, 7168, 2048).sms_available == pydg.get_num_sms()


def test_grouped_plans():
    contiguous = pydg.plan_m_grouped_contiguous(4 * 8192, 4096, 7168, 4, num_sms=132)
    assert contiguous.mode == "contiguous" and contiguous.num_groups == 4 and contiguous.m == 32768
    assert contiguous.tensor_maps[1].global_dims == (7168, 4096, 4)  # B holds the 4 experts
    masked = pydg.plan_m_grouped_masked(256, 7168, 2048, 4, expected_m=100, num_sms=132)
    assert masked.mode == "masked" and masked.expected_m == 100
    assert masked.tensor_maps[0].global_dims == (2048, 256, 4)  # A is (G, M_max, K)
    assert "expected_m 100" in repr(masked) and "estimated from expected_m" in repr(masked)
    assert pydg.plan_m_grouped_masked(256, 7168, 2048, 4, num_sms=132).expected_m == 256


@pytest.mark.parametrize("call, match", [
    (lambda: pydg.plan_gemm(0, 256, 256), "m: expected a positive int, got 0"),
    (lambda: pydg.plan_gemm(64, 250, 256), "n: expected a multiple of 8"),
    (lambda: pydg.plan_gemm(64, 256, 200), "k: expected a multiple of 16"),
    (lambda: pydg.plan_gemm(64.0, 256, 256), "m: expected a positive int, got 64.0"),
    (lambda: pydg.plan_gemm(64, 256, 256, num_sms=0), "num_sms: expected a positive int"),
    (lambda: pydg.plan_m_grouped_contiguous(256, 256, 256, 0), "num_groups: expected a positive int"),
    (lambda: pydg.plan_m_grouped_masked(256, 256, 256, 2, expected_m=0), "expected_m: expected a positive int"),
    (lambda: pydg.describe_gemm(64, 256, 256, mode="grouped"), "mode: expected 'dense'"),
])
def test_bad_sizes_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_cached_kernel_report_is_shown_without_compiling():
    plan = pydg.plan_gemm(256, 512, 512, num_sms=132)
    cache.store(plan.cache_key, FAKE)
    again = pydg.plan_gemm(256, 512, 512, num_sms=132)  # compile=False still reads the disk cache
    assert again.kernel == describe.KernelReport(154, 0, 0, 0, 0, from_disk_cache=True)
    assert again.registers == 154 and again.spill_bytes == 0
    assert "154 registers" in repr(again) and "from the disk cache" in repr(again)


def test_compile_true_compiles_with_nvrtc():
    plan = pydg.plan_gemm(128, 256, 256, num_sms=132, compile=True)
    assert plan.kernel is not None and plan.kernel.registers > 0 and not plan.kernel.from_disk_cache
    assert plan.kernel.spill_bytes == 0 and plan.kernel.stack_frame_bytes == 0


def test_describe_gemm_keeps_its_signature():
    described = pydg.describe_gemm(1024, 7168, 2048, mode="masked", num_groups=2, expected_m=512, num_sms=132,
                                   compile=False)
    assert described.plan.mode == "masked" and described.plan.expected_m == 512
    assert "masked" in described.summary() and pydg.CallDescription is pydg.CallPlan


def test_print_configs_prints_each_plan_once(monkeypatch, caplog):
    plan = pydg.plan_gemm(512, 1024, 1024, num_sms=132)
    monkeypatch.setattr(describe, "_printed", set())
    caplog.set_level(logging.DEBUG, logger="pydg")
    monkeypatch.delenv("PYDG_PRINT_CONFIGS", raising=False)
    describe.report_new_shape(plan.plan, plan.tensor_maps)
    assert not caplog.records  # off by default: not even a debug record
    monkeypatch.setenv("PYDG_PRINT_CONFIGS", "1")
    describe.report_new_shape(plan.plan, plan.tensor_maps)
    describe.report_new_shape(plan.plan, plan.tensor_maps)
    [record] = caplog.records
    assert record.name == "pydg.plan" and record.levelno == logging.INFO
    assert "CallPlan: dense GEMM M=512 N=1024 K=1024" in record.getMessage()

"""`python -m pydg` / `pydg` (pydg/cli.py) and the parts of `python -m pydg bench` that need no GPU."""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from pydg import bench
from pydg.__main__ import NO_HOPPER

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _hopper_available() -> bool:
    try:
        from conftest import hopper_available
    except ImportError:
        return False
    return hopper_available()


def test_main_plans_compiles_and_says_no_gpu(tmp_path):
    done = _cli(tmp_path, "--m", "128", "--n", "256", "--k", "256")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NVRTC" in done.stdout
    assert "M=128 N=256 K=256" in done.stdout
    assert "CallPlan: dense GEMM M=128 N=256 K=256" in done.stdout  # the plan
    assert "registers" in done.stdout    # ptxas's report: the kernel was compiled
    if not _hopper_available():
        assert NO_HOPPER in done.stdout
    assert list(tmp_path.glob("*.json")), "the compiled kernel was not cached in PYDG_CACHE_DIR"


def test_main_rejects_bad_arguments():
    done = subprocess.run([sys.executable, "-m", "pydg", "--m", "many"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert "--m" in done.stderr


# The child sees this process's environment minus pytest's variables and pydg's switches.
def _child_environment() -> dict:
    return {name: value for name, value in os.environ.items() if not name.startswith(("PYTEST_", "PYDG_"))}


def _cli(tmp_path, *args, timeout=600, **env):
    env = {**_child_environment(), "PYDG_CACHE_DIR": str(tmp_path), **env}
    return subprocess.run([sys.executable, "-m", "pydg", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args", [[], ["info"], ["plan"], ["compile"], ["warmup"], ["cache"], ["cache", "list"],
                                  ["cache", "clear"]])
def test_help_everywhere(args, capsys):
    from pydg.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--help"])
    assert exit_info.value.code == 0
    assert "usage: pydg" in capsys.readouterr().out


def test_info_works_without_a_gpu(tmp_path, capsys, monkeypatch):
    from pydg.cli import main

    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PYDG_JIT_DEBUG", "1")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for field in ("pydg 0.", "GPU: ", "CUDA driver: ", "cuda-bindings: ", "NVRTC: 1", f"Kernel cache: {tmp_path}",
                  "0 kernels", "Switches set: PYDG_JIT_DEBUG=1"):
        assert field in out, field


def test_plan_command(tmp_path, capsys, monkeypatch):
    from pydg.cli import main

    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    assert main(["plan", "4096", "7168", "2048", "--num-sms", "132"]) == 0
    out = capsys.readouterr().out
    assert "CallPlan: dense GEMM M=4096 N=7168 K=2048" in out and "SMs           132 used of 132" in out
    assert main(["plan", "1024", "4096", "7168", "--grouped", "masked", "--groups", "4", "--expected-m", "64",
                 "--num-sms", "132", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["mode"], data["num_groups"], data["expected_m"]) == ("masked", 4, 64)
    assert main(["plan", "256", "256", "256", "--grouped", "contiguous", "--groups", "2", "--compile"]) == 0
    assert "registers" in capsys.readouterr().out
    assert main(["plan", "256", "250", "256"]) == 2
    assert "n: expected a multiple of 8" in capsys.readouterr().err
    assert main(["plan", "256", "256", "256", "--groups", "2"]) == 2
    with pytest.raises(SystemExit):
        main(["plan", "256", "0", "256"])
    assert "expected a positive integer" in capsys.readouterr().err


def test_compile_then_warm_start_then_cache_commands(tmp_path):
    model = tmp_path / "model.json"
    model.write_text(json.dumps({"layers": [{"name": "up", "layout": "contiguous", "groups": 2, "n": 256,
                                             "k": 512}]}))
    cache_dir = tmp_path / "cache"
    cold = _cli(cache_dir, "compile", "256x512", "--config", str(model), "--m", "1-200", "-j", "2")
    assert cold.returncode == 0, cold.stderr
    assert "2 layers x 200 M values" in cold.stdout and "0 already cached" in cold.stdout
    assert "compiling [" in cold.stderr  # the progress bar
    warm = _cli(cache_dir, "warmup", "256x512", "--config", str(model), "--m", "1-200", "--no-progress")
    assert warm.returncode == 0 and "kernel list from the cache's manifest" in warm.stdout
    assert ", 0 compiled" in warm.stdout and warm.stderr == ""
    listed = _cli(cache_dir, "cache", "list")
    assert listed.returncode == 0 and "contiguous" in listed.stdout and "dense" in listed.stdout
    cleared = _cli(cache_dir, "cache", "clear")
    assert cleared.returncode == 0 and "Removed" in cleared.stdout
    assert "0 kernels" in _cli(cache_dir, "cache", "list").stdout


def test_compile_rejects_bad_requests(tmp_path):
    for args, message in [(["compile"], "expected shapes"), (["compile", "7168"], "shape: expected"),
                          (["compile", "256x256", "--m", "0-3"], "m: expected"),
                          (["compile", "--config", str(tmp_path / "missing.json")], "missing.json")]:
        done = _cli(tmp_path, *args, timeout=120)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)


def test_bench_rejects_unknown_section(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--what", "dense,speed"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'speed'" in err
    assert "dense, grouped, host, shapes" in err


@pytest.mark.parametrize("option", ["--rounds", "--iters"])
def test_bench_rejects_fewer_than_one_round_or_call(capsys, option):
    with pytest.raises(SystemExit) as exit_info:
        bench.main([option, "0"])
    assert exit_info.value.code == 2 and f"{option}: expected a positive number" in capsys.readouterr().err


def test_bench_dispatch_from_main_rejects_unknown_section(capsys):
    from pydg.__main__ import main

    with pytest.raises(SystemExit):
        main(["bench", "--what", "nope"])
    assert "'nope'" in capsys.readouterr().err


def test_parse_sections():
    assert bench.parse_sections("dense") == ["dense"]
    assert bench.parse_sections(" host, dense ,host") == ["host", "dense"]
    assert bench.parse_sections(bench.DEFAULT_SECTIONS) == ["dense", "grouped", "host"]
    for bad in ("", ",", "dense,Dense", "all"):
        with pytest.raises(ValueError, match="--what"):
            bench.parse_sections(bad)


def test_bench_without_torch_says_why(capsys):
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed: main would run the benchmark")
    assert bench.main(["--what", "host"]) == 2
    assert "PyTorch" in capsys.readouterr().err


def test_shape_lists():
    assert len(bench.DENSE_SHAPES) == 18 and len(set(bench.DENSE_SHAPES)) == 18
    assert bench.DENSE_SHAPES[0] == (64, 2112, 7168) and bench.DENSE_SHAPES[-1] == (4096, 7168, 2048)
    assert len(bench.EXTRA_SHAPES) == 54 and len(set(bench.EXTRA_SHAPES)) == 54
    assert {m for m, _, _ in bench.EXTRA_SHAPES} == {1, 37, 300, 1000, 2500, 6000}
    assert {(n, k) for _, n, k in bench.EXTRA_SHAPES} == {(n, k) for n in (2048, 7168, 18432)
                                                          for k in (2048, 7168, 18432)}
    assert len(bench.CONTIGUOUS_SHAPES) == 4 and len(bench.MASKED_SHAPES) == 6
    # Every masked shape has the same total M, so one dense yardstick size serves them all.
    assert {g * m for g, m, _, _ in bench.MASKED_SHAPES} == {1024}
    # pydg's contiguous layout needs every expert's segment aligned.
    from pydg import get_m_alignment_for_contiguous_layout

    assert all(m % get_m_alignment_for_contiguous_layout() == 0 for _, m, _, _ in bench.CONTIGUOUS_SHAPES)
    # Every K is a whole number of 128-wide scale blocks (the shapes' data is made with per-128 casts).
    shapes = bench.DENSE_SHAPES + bench.EXTRA_SHAPES + list(bench.HOST_SHAPES)
    assert all(k % 128 == 0 for _, _, k in shapes)


def test_flops_and_rates():
    # DeepGEMM's published 4096 x 7168 x 16384 at 1358 TFLOPS is 708 us.
    flops = bench.gemm_flops(4096, 7168, 16384)
    assert flops == 2 * 4096 * 7168 * 16384
    assert bench.tflops(flops, 708.0) == pytest.approx(1358, rel=1e-3)
    # Its GB/s (343) counts FP8 A and B and BF16 D.
    nbytes = bench.gemm_bytes(4096, 7168, 16384)
    assert nbytes == 4096 * 16384 + 7168 * 16384 + 2 * 4096 * 7168
    assert bench.gbps(nbytes, 708.0) == pytest.approx(343, rel=5e-3)
    assert bench.gemm_bytes(1024, 4096, 7168, num_weights=4) == 1024 * 7168 + 4 * 4096 * 7168 + 2 * 1024 * 4096


def test_kernel_times_keep_the_median_beside_the_mean():
    # Ten calls of one GEMM kernel, one of them slow (as 64 x 7168 x 16384 was once: 58.0 us mean
    # against 51.6 us re-timed), and a helper kernel launched twice per call.
    gemm = [51.6] * 9 + [116.0]
    times = bench.KernelTimes.from_durations({"gemm": gemm, "helper": [1.0, 3.0] * 10}, calls=10)
    assert times.per_call_us["gemm"] == pytest.approx(58.04)
    assert times.median_us["gemm"] == pytest.approx(51.6)
    assert times.per_call_us["helper"] == pytest.approx(4.0) and times.median_us["helper"] == pytest.approx(4.0)
    assert times.total_us() == pytest.approx(62.04)
    assert times.total_us(median=True) == pytest.approx(55.6)
    assert times.total_us(("helper",), median=True) == pytest.approx(51.6)
    assert times.total_us(only=("helper",), median=True) == pytest.approx(4.0)


def test_outlier_skew_names_only_a_mean_well_above_its_median():
    assert bench.outlier_skew(58.04, 51.6) == pytest.approx(0.1248, rel=1e-3)
    assert bench.outlier_skew(51.7, 51.6) is None  # jitter
    assert bench.outlier_skew(51.6 * (1 + bench.OUTLIER_SKEW), 51.6) is None
    assert bench.outlier_skew(50.0, 51.6) is None  # a mean below the median is no slow call
    assert bench.outlier_skew(10.0, None) is None and bench.outlier_skew(10.0, 0.0) is None


class FakeTimer:
    """Bench's timer without a GPU: each call of a measured function returns its kernel times in turn
    (a list per function name), and the order of the timed functions is logged."""

    def __init__(self, times_us: dict[str, list[float]], fail: dict[str, int] | None = None):
        self.times_us = {name: iter(times) for name, times in times_us.items()}
        self.fail = fail or {}  # function name -> the timing pass (0 = first) that raises
        self.log: list[str] = []

    def durations(self, fn, iters):
        name = fn()
        if self.fail.get(name) == self.log.count(name):
            raise RuntimeError(f"{name} failed in its timing")
        self.log.append(name)
        return {"gemm": [next(self.times_us[name]) for _ in range(iters)], "fill_kernel": [5.0] * iters}

    def event_times(self, fn, iters):
        return [11.0] * iters


def fake_bench(timer, rounds):
    from types import SimpleNamespace

    torch = SimpleNamespace(cuda=SimpleNamespace(synchronize=lambda: None))
    return bench.Bench(torch, None, timer, None, 10, None, None, rounds=rounds)


def test_measure_names_a_mean_moved_by_one_slow_call():
    run = fake_bench(FakeTimer({"pydg": [10.0] * 9 + [30.0]}), rounds=1)
    record = run.measure("dense 1x2x3", "pydg", lambda: "pydg", lambda result: 0.0, 1e-5, 10)
    assert record["ok"] and "us" not in record  # checked, not yet timed
    run.time_queued()
    assert record["ok"] and record["us"] == pytest.approx(17.0) and record["us_median"] == pytest.approx(15.0)
    assert record["us_event"] == pytest.approx(11.0) and record["iters"] == 10
    assert run.outliers == ["dense 1x2x3 pydg: mean 17.0 us, 13% above the median 15.0 us"]


def test_rounds_rotate_the_order_and_share_the_calls():
    """Three implementations over three rounds: each runs first once; the headline is the mean over
    all calls, pydg charged for every kernel and the others without fill kernels, as the anchor."""
    timer = FakeTimer({"pydg": [10.0] * 4 + [11.0] * 4 + [12.0] * 4, "cublas": [20.0] * 12, "deepgemm": [30.0] * 12})
    run = fake_bench(timer, rounds=3)
    records = {impl: run.measure("dense 1x2x3", impl, lambda impl=impl: impl, lambda result: 0.0, 1e-3, 10)
               for impl in ("pydg", "cublas", "deepgemm")}
    run.time_queued()
    assert timer.log == ["pydg", "cublas", "deepgemm", "cublas", "deepgemm", "pydg", "deepgemm", "pydg", "cublas"]
    pydg, cublas, deepgemm = records["pydg"], records["cublas"], records["deepgemm"]
    assert pydg["iters"] == 12  # ceil(10 / 3) calls in each of 3 rounds
    assert pydg["us_rounds"] == pytest.approx([15.0, 16.0, 17.0]) and pydg["round_positions"] == [0, 2, 1]
    assert pydg["us"] == pytest.approx(16.0)  # fill kernel counted for pydg
    assert cublas["us"] == pytest.approx(20.0) and cublas["round_positions"] == [1, 0, 2]
    assert deepgemm["us_rounds"] == pytest.approx([30.0] * 3) and deepgemm["round_positions"] == [2, 1, 0]
    assert run.queued == [] and run.outliers == []


def test_a_timing_that_fails_drops_out_of_the_later_rounds():
    timer = FakeTimer({"pydg": [10.0] * 12, "deepgemm": [30.0] * 12}, fail={"deepgemm": 1})
    run = fake_bench(timer, rounds=3)
    pydg = run.measure("dense 1x2x3", "pydg", lambda: "pydg", lambda result: 0.0, 1e-5, 10)
    deepgemm = run.measure("dense 1x2x3", "deepgemm", lambda: "deepgemm", lambda result: 0.0, 1e-3, 10)
    run.time_queued()
    assert timer.log == ["pydg", "deepgemm", "pydg", "pydg"]
    assert not deepgemm["ok"] and "failed in its timing" in deepgemm["error"] and "us" not in deepgemm
    assert pydg["ok"] and pydg["us_rounds"] == pytest.approx([15.0] * 3) and pydg["round_positions"] == [0, 1, 0]
    assert run.pydg_failures == []


def test_a_wrong_result_is_never_timed():
    timer = FakeTimer({"pydg": [10.0] * 12})
    run = fake_bench(timer, rounds=3)
    record = run.measure("dense 1x2x3", "pydg", lambda: "pydg", lambda result: 1e-4, 1e-5, 10)
    run.time_queued()
    assert timer.log == [] and not record["ok"] and record["error"].startswith("WRONG RESULT")
    assert run.pydg_failures == ["dense 1x2x3 pydg: WRONG RESULT: calc_diff 0.0001 > 1e-05"]


def test_rotated_starts_each_round_one_further():
    assert bench.rotated(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert bench.rotated(["a", "b", "c"], 4) == ["b", "c", "a"]
    assert bench.rotated([], 2) == []


def test_timer_profiles_each_call_and_drops_the_flush():
    """Timer.durations over a fake torch profiler: the flush's kernel is dropped, and the GEMM's mean
    and median per call come from its own launches."""
    from types import SimpleNamespace

    cuda = object()
    recording: list = []  # the open profile's events; None outside a profile

    def launch(name, us):
        if recording is not None:
            recording.append(SimpleNamespace(name=name, device_type=cuda, device_time=us))

    class Profile:
        def __init__(self, activities):
            self.recorded = []

        def __enter__(self):
            nonlocal recording
            recording = self.recorded
            return self

        def __exit__(self, *exc):
            nonlocal recording
            recording = None
            return False

        def events(self):
            return self.recorded

    torch = SimpleNamespace(
        empty=lambda *a, **k: SimpleNamespace(zero_=lambda: launch("flush_kernel", 20.0)), int32=None,
        cuda=SimpleNamespace(synchronize=lambda: None),
        autograd=SimpleNamespace(DeviceType=SimpleNamespace(CUDA=cuda)),
        profiler=SimpleNamespace(profile=Profile, ProfilerActivity=SimpleNamespace(CUDA=None)))
    recording = None
    timer = bench.Timer(torch)
    assert timer.flush_kernels == {"flush_kernel"}
    gemm_us = iter([10.0, 10.0, 10.0, 10.0, 30.0])  # the warm-up call, then four timed ones
    durations = timer.durations(lambda: launch("gemm", next(gemm_us)), iters=4)
    assert durations == {"gemm": [10.0, 10.0, 10.0, 30.0]}
    times = bench.KernelTimes.from_durations(durations, 4)
    assert times.total_us() == pytest.approx(15.0) and times.total_us(median=True) == pytest.approx(10.0)


def test_host_time_is_the_median_batch(monkeypatch):
    """Timer.host_us over a fake clock: each batch's time per call, and the median batch as the figure,
    so one batch slowed by something else on the host does not move it."""
    from types import SimpleNamespace

    clock = [0.0]
    batch_us = iter([9.0, 9.0, 30.0, 10.0, 9.5])  # per call, one batch after another
    current = [0.0]

    def call():
        clock[0] += current[0] * 1e-6

    def synchronize():
        clock[0] += 1e-6  # the GPU finishes 1 us after the batch's last call returns

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    timer = bench.Timer.__new__(bench.Timer)
    timer.torch = SimpleNamespace(cuda=SimpleNamespace(synchronize=synchronize))
    calls = []

    def fn():
        if len(calls) >= bench.HOST_WARMUP and (len(calls) - bench.HOST_WARMUP) % 100 == 0:
            current[0] = next(batch_us)
        calls.append(1)
        call()

    host, synced, batches = timer.host_us(fn, calls=100, batches=5)
    assert len(calls) == bench.HOST_WARMUP + 500
    assert batches == pytest.approx([9.0, 9.0, 30.0, 10.0, 9.5])
    assert host == pytest.approx(9.5) and synced == pytest.approx(9.51)


def test_speedup_and_geomean():
    assert bench.speedup(10.0, 15.0) == 1.5  # pydg 10 us, other 15 us: pydg 1.5x as fast
    assert bench.speedup(None, 15.0) is None and bench.speedup(10.0, None) is None
    assert bench.geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert bench.geomean([2.0, None, 8.0, 0.0]) == pytest.approx(4.0)
    assert bench.geomean([]) is None and bench.geomean([None]) is None
    assert math.isclose(bench.geomean([1.21] * 18), 1.21)


def test_scaled_iters():
    assert bench.scaled_iters(bench.gemm_flops(1, 2048, 2048), 30) == 30
    big = bench.scaled_iters(bench.gemm_flops(6000, 18432, 18432), 30)
    assert 5 <= big < 30
    assert bench.scaled_iters(10**18, 30) == 5
    assert bench.scaled_iters(10**18, 3) == 3  # never more than asked for


def test_dense_summary_keeps_rowwise_out_of_the_blockwise_mean():
    def record(pydg_us, cublas_us, recipe, dg_us):
        r = {"section": "dense", "m": 1, "n": 8, "k": 128, "pydg": {"ok": True, "us": pydg_us},
             "cublas": {"ok": True, "us": cublas_us, "recipe": recipe}, "deepgemm": {"ok": True, "us": dg_us}}
        bench._add_rates(r, 1000, 1000)
        return r

    records = [record(10.0, 20.0, "blockwise", 10.0), record(10.0, 5.0, "blockwise", 40.0),
               record(10.0, 100.0, "rowwise", 20.0)]
    summary = bench.dense_summary(records)
    assert summary["geomean_speedup_vs_cublas_blockwise"] == pytest.approx(1.0)
    assert summary["shapes_vs_cublas_blockwise"] == 2
    assert summary["geomean_speedup_vs_cublas_rowwise_fallback"] == pytest.approx(10.0)
    assert summary["geomean_speedup_vs_deepgemm"] == pytest.approx(2.0)
    assert summary["min_speedup_vs_deepgemm"] == pytest.approx(1.0)
    table = bench.dense_table(records)
    assert "(rowwise)" in table and len(table.splitlines()) == 4


def test_rates_give_the_speedup_of_each_round():
    r = {"section": "dense", "m": 64, "n": 2112, "k": 7168,
         "pydg": {"ok": True, "us": 10.5, "us_rounds": [10.0, 11.0, 10.5]},
         "deepgemm": {"ok": True, "us": 10.5, "us_rounds": [10.5, 10.5, 10.5]},
         "cublas": {"ok": True, "us": 20.0}}  # timed without rounds: no per-round ratio
    bench._add_rates(r, bench.gemm_flops(64, 2112, 7168), bench.gemm_bytes(64, 2112, 7168))
    assert r["speedup_vs_deepgemm"] == pytest.approx(1.0)
    assert r["speedup_vs_deepgemm_rounds"] == pytest.approx([1.05, 0.9545, 1.0], abs=1e-4)
    assert "speedup_vs_cublas_rounds" not in r and r["speedup_vs_cublas"] == pytest.approx(20 / 10.5)


def test_wrong_pydg_result_is_not_a_speed():
    r = {"section": "dense", "m": 64, "n": 2112, "k": 7168,
         "pydg": {"ok": False, "diff": 3e-4, "error": "WRONG RESULT: calc_diff 0.0003 > 1e-05"},
         "cublas": {"ok": True, "us": 20.0, "recipe": "blockwise"}}
    bench._add_rates(r, bench.gemm_flops(64, 2112, 7168), bench.gemm_bytes(64, 2112, 7168))
    assert r["speedup_vs_cublas"] is None and "tflops" not in r["pydg"]
    assert "WRONG" in bench.dense_table([r])
    assert bench.dense_summary([r])["pydg_ok"] == 0


def test_format_table_and_short_plan():
    text = bench.format_table(("a", "bb"), [(1.23456, None), ("x", 12345.6)])
    assert text.splitlines() == ["   a     bb", "1.23      -", "   x  12346"]
    from pydg.scheduler.heuristics import choose_plan

    plan = choose_plan("dense", 4096, 7168, 2048, 1, 132)
    short = bench.short_plan(plan)
    assert short.startswith(f"{plan.block_m}x{plan.block_n} s{plan.num_stages} c{plan.cluster_size}")
    assert bench.short_plan(object()) == "?"


def test_report_is_rewritten_after_each_record(tmp_path):
    import json

    path = tmp_path / "sub" / "bench.json"
    report = bench.Report(str(path), {"gpu": "none"})
    report.add({"section": "dense", "m": 1})
    assert json.loads(path.read_text())["records"] == [{"section": "dense", "m": 1}]
    report.add({"section": "dense", "m": 2})
    data = json.loads(path.read_text())
    assert data["metadata"] == {"gpu": "none"} and len(data["records"]) == 2


def test_git_commit_named_by_the_environment_wins(monkeypatch):
    monkeypatch.setenv("PYDG_GIT_COMMIT", "0123abc")
    assert bench.git_commit() == "0123abc"
    monkeypatch.delenv("PYDG_GIT_COMMIT")
    assert bench.git_commit() != "0123abc"

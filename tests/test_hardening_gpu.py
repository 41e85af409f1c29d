"""Hardening of the three public GEMMs on an sm_90 GPU (README "Guarantees"): bad input leaves `out`
untouched, out-of-range m_indices/masked_m values, sizes past 32-bit offsets, streams and CUDA
graphs, threads, several GPUs, memory over 10,000 calls, determinism and numerics at the limits."""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, replace

import pytest

import pydg
from pydg import gemm
from pydg.driver import nvrtc
from pydg.kernels import source
from gpu_util import DIFF_LIMIT, calc_diff, dequantize, nan_like, quantized_pair, torch_module

pytestmark = pytest.mark.gpu

MODES = ("dense", "contiguous", "masked")
ALIGN = 128  # get_m_alignment_for_contiguous_layout(), checked in test_alignment_assumption
BF16_MAX = 3.3895313892515355e38


def test_alignment_assumption():
    assert pydg.get_m_alignment_for_contiguous_layout() == ALIGN


# ---- one call of a public GEMM, its inputs and its float64 reference ------------------------------

@dataclass
class Case:
    """A call's inputs. rows: M (dense), M_sum (contiguous) or M_max (masked)."""
    mode: str
    a: object
    sa: object
    b: object
    sb: object
    grouping: object = None  # m_indices or masked_m (int32, on the GPU)
    expected_m: int | None = None

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (*self.a.shape[:-1], self.b.shape[-2])

    def run(self, out, **changes) -> None:
        case = replace(self, **changes) if changes else self
        lhs, rhs = (case.a, case.sa), (case.b, case.sb)
        if case.mode == "dense":
            pydg.gemm_fp8_fp8_bf16_nt(lhs, rhs, out)
        elif case.mode == "contiguous":
            pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous(lhs, rhs, out, case.grouping)
        else:
            pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked(lhs, rhs, out, case.grouping, case.expected_m)

    def written(self, torch):
        """Bool mask (out's shape, broadcast over N) of the rows the kernel writes."""
        if self.mode == "dense":
            return torch.ones(self.a.shape[0], 1, dtype=torch.bool, device=self.a.device)
        if self.mode == "contiguous":
            idx = self.grouping.long()
            return ((idx >= 0) & (idx < self.b.shape[0]))[:, None]
        m_max = self.a.shape[1]
        rows = torch.arange(m_max, device=self.a.device)[None, :]
        return (rows < self.grouping.long().clamp(0, m_max)[:, None])[..., None]

    def reference(self, torch):
        """float64 result; rows the kernel must not write are NaN. Every aligned segment of
        m_indices is uniform in these tests, so row-level experts equal the kernel's per-block ones."""
        a_ref = dequantize(torch, self.a, self.sa, False)
        b_ref = dequantize(torch, self.b, self.sb, True)
        if self.mode == "dense":
            return a_ref @ b_ref.T
        ref = torch.full(self.out_shape, float("nan"), dtype=torch.float64, device=self.a.device)
        if self.mode == "contiguous":
            idx = self.grouping.long()
            for g in range(self.b.shape[0]):
                rows = idx == g
                if rows.any():
                    ref[rows] = a_ref[rows] @ b_ref[g].T
            return ref
        m_max = self.a.shape[1]
        for g, count in enumerate(self.grouping.tolist()):
            count = min(max(count, 0), m_max)
            ref[g, :count] = a_ref[g, :count] @ b_ref[g].T
        return ref

    def check(self, torch, out, limit: float = DIFF_LIMIT) -> None:
        torch.cuda.synchronize()
        ref = self.reference(torch)
        written = self.written(torch).expand(self.out_shape)
        assert torch.isnan(out[~written]).all(), f"{self.mode}: rows that must not be written were"
        got = out[written]
        assert not torch.isnan(got).any(), f"{self.mode}: rows left unwritten"
        if got.numel():
            diff = calc_diff(torch, got, ref[written])
            assert diff <= limit, f"{self.mode}: calc_diff {diff:.3g}"


def make_case(torch, mode: str, m: int, n: int, k: int, groups: int = 3, seed: int = 0) -> Case:
    """m: dense M; contiguous rows per expert (rounded up to the alignment); masked M_max."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    if mode == "dense":
        a, sa = quantized_pair(torch, m, k, per_block=False, gen=gen)
        b, sb = quantized_pair(torch, n, k, per_block=True, gen=gen)
        return Case(mode, a, sa, b, sb)
    b, sb = quantized_pair(torch, n, k, per_block=True, lead=(groups,), gen=gen)
    if mode == "contiguous":
        per_expert = -(-m // ALIGN) * ALIGN
        a, sa = quantized_pair(torch, groups * per_expert, k, per_block=False, gen=gen)
        order = torch.randperm(groups, generator=gen, device="cuda")  # experts in any order
        m_indices = order.repeat_interleave(per_expert).to(torch.int32)
        return Case(mode, a, sa, b, sb, m_indices)
    a, sa = quantized_pair(torch, m, k, per_block=False, lead=(groups,), gen=gen)
    masked = torch.randint(0, m + 1, (groups,), generator=gen, device="cuda", dtype=torch.int32)
    masked[0] = m
    return Case(mode, a, sa, b, sb, masked, expected_m=max(1, m // 2))


def guarded_out(torch, shape, pad: int = 4096):
    """A NaN-filled out inside a NaN-filled buffer, `pad` elements (16-byte aligned) each side, so a
    write past either end of out shows."""
    numel = 1
    for d in shape:
        numel *= d
    buffer = torch.full((numel + 2 * pad,), float("nan"), dtype=torch.bfloat16, device="cuda")
    return buffer, buffer[pad:pad + numel].view(shape)


def assert_guard_intact(torch, buffer, out) -> None:
    torch.cuda.synchronize()
    pad = (buffer.numel() - out.numel()) // 2
    assert torch.isnan(buffer[:pad]).all() and torch.isnan(buffer[pad + out.numel():]).all(), \
        "written outside out"


def fresh_sa(torch, sa, factor: float = 1.0):
    """A new copy of A's scales (scaled), in the TMA layout: never an alias of `sa`."""
    return pydg.get_col_major_tma_aligned_tensor(sa * factor)


SMALL = {"dense": (256, 512, 512), "contiguous": (256, 512, 512), "masked": (256, 512, 512)}


# ---- 1. bad input: refused, out untouched -----------------------------------------------------------

def _bad_calls(torch, case: Case):
    """(label, changes to the call, error, pattern) with real GPU tensors."""
    a8 = case.a.view(torch.uint8)
    lead, (rows, k) = case.a.shape[:-2], case.a.shape[-2:]
    misaligned = torch.empty(a8.numel() + 16, dtype=torch.uint8, device="cuda")[8:8 + a8.numel()].view(a8.shape)
    padded = torch.empty(*lead, rows, k + 8, dtype=torch.uint8, device="cuda")[..., :k]
    calls = [
        ("b on the CPU", dict(b=case.b.cpu()), ValueError, "rhs data: expected an array in GPU memory"),
        ("sb on the CPU", dict(sb=case.sb.cpu()), ValueError, "rhs scales: expected an array in GPU memory"),
        ("a transposed", dict(a=a8.transpose(-1, -2).contiguous().transpose(-1, -2)), ValueError,
         "lhs data: expected a contiguous last dimension"),
        ("a at a byte offset of 8", dict(a=misaligned), ValueError,
         "lhs data: expected a data pointer aligned to 16 bytes"),
        ("a rows not 16-byte strided", dict(a=padded), ValueError, "lhs data: expected strides that are multiples of 16"),
        ("sa row-major", dict(sa=case.sa.contiguous()), ValueError, "lhs scales: expected TMA-aligned column-major"),
        ("sa float16", dict(sa=fresh_sa(torch, case.sa).half()), TypeError, "lhs scales: expected dtype float32"),
        ("sb transposed", dict(sb=case.sb.transpose(-1, -2).contiguous().transpose(-1, -2)), ValueError,
         "rhs scales: expected contiguous strides"),
        ("b float32", dict(b=case.b.float()), TypeError, "rhs data: expected dtype"),
        ("b short K", dict(b=case.b[..., :k - 16].contiguous()), ValueError, "rhs data: expected shape"),
    ]
    if case.mode != "dense":
        name = "m_indices" if case.mode == "contiguous" else "masked_m"
        calls += [
            (f"{name} int64", dict(grouping=case.grouping.long()), TypeError, f"{name}: expected dtype int32"),
            (f"{name} short", dict(grouping=case.grouping[:-1]), ValueError, f"{name}: expected shape"),
            (f"{name} on the CPU", dict(grouping=case.grouping.cpu()), ValueError,
             f"{name}: expected an array in GPU memory"),
            (f"{name} strided", dict(grouping=case.grouping.repeat_interleave(2)[::2]), ValueError,
             f"{name}: expected contiguous strides"),
        ]
    if case.mode == "masked":
        calls += [("expected_m 0", dict(expected_m=0), ValueError, "expected_m: expected a positive int"),
                  ("expected_m -1", dict(expected_m=-1), ValueError, "expected_m: expected a positive int"),
                  ("expected_m 2.0", dict(expected_m=2.0), TypeError, "expected_m: expected a positive int")]
    return calls


@pytest.mark.parametrize("mode", MODES)
def test_bad_inputs_raise_and_leave_out_untouched(mode):
    torch = torch_module()
    case = make_case(torch, mode, *SMALL[mode])
    buffer, out = guarded_out(torch, case.out_shape)
    failures = []
    for label, changes, error, pattern in _bad_calls(torch, case):
        try:
            with pytest.raises(error, match=pattern):
                case.run(out, **changes)
        except BaseException as err:  # report every case, not only the first
            failures.append(f"{label}: {err}")
    # Wrong out: its dtype, a transposed view, a wrong shape.
    other = nan_like(torch, case.out_shape)
    for label, bad_out, error in [("out float32", other.float(), TypeError),
                                  ("out transposed", other.transpose(-1, -2).contiguous().transpose(-1, -2), ValueError),
                                  ("out short N", other[..., :-8], ValueError)]:
        try:
            with pytest.raises(error, match="out: expected"):
                case.run(bad_out)
        except BaseException as err:
            failures.append(f"{label}: {err}")
    torch.cuda.synchronize()
    assert not failures, "\n".join(failures)
    assert torch.isnan(buffer).all(), "a refused call wrote"
    assert torch.isnan(other).all()
    case.run(out)  # and the same out still works
    case.check(torch, out)
    assert_guard_intact(torch, buffer, out)


@pytest.mark.parametrize("mode", MODES)
def test_arrays_on_two_gpus_are_refused(mode):
    torch = torch_module()
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    case = make_case(torch, mode, *SMALL[mode])
    out = nan_like(torch, case.out_shape)
    with pytest.raises(ValueError, match="rhs data: expected the same GPU as lhs data, cuda:0, got cuda:1"):
        case.run(out, b=case.b.to("cuda:1"))
    torch.cuda.synchronize()
    assert torch.isnan(out).all()


# ---- 2. values only the GPU sees ----------------------------------------------------------------------

def test_contiguous_out_of_range_expert_ids_skip_their_blocks():
    torch = torch_module()
    groups, n, k = 4, 512, 512
    case = make_case(torch, "contiguous", ALIGN, n, k, groups=groups)
    ids = case.grouping.clone()
    bad_values = [groups, groups + 7, 2**31 - 1, -2, -2**31]
    # Append one block per bad value after the experts' segments, and overwrite expert 1's block.
    extra = torch.tensor(bad_values, dtype=torch.int32, device="cuda").repeat_interleave(ALIGN)
    m_indices = torch.cat([ids, extra])
    m_indices[ALIGN:2 * ALIGN] = groups + 1
    a, sa = quantized_pair(torch, m_indices.numel(), k, per_block=False)
    bad = replace(case, a=a, sa=sa, grouping=m_indices)
    buffer, out = guarded_out(torch, bad.out_shape)
    bad.run(out)
    bad.check(torch, out)  # skipped blocks stay NaN, the others are right
    assert torch.isnan(out[ALIGN:2 * ALIGN]).all() and torch.isnan(out[groups * ALIGN:]).all()
    assert_guard_intact(torch, buffer, out)


def test_masked_out_of_range_counts_are_clamped():
    torch = torch_module()
    groups, m_max, n, k = 6, 200, 512, 384
    case = make_case(torch, "masked", m_max, n, k, groups=groups)
    counts = [-1, -2**31, m_max + 1, 2**31 - 1, 0, m_max]
    bad = replace(case, grouping=torch.tensor(counts, dtype=torch.int32, device="cuda"), expected_m=100)
    buffer, out = guarded_out(torch, bad.out_shape)
    bad.run(out)
    bad.check(torch, out)
    assert torch.isnan(out[0]).all() and torch.isnan(out[1]).all() and torch.isnan(out[4]).all()
    assert not torch.isnan(out[2]).any() and not torch.isnan(out[3]).any()
    assert_guard_intact(torch, buffer, out)


# ---- sizes past 32-bit element offsets (each output about 4.3 GB) -------------------------------

def _check_rows(torch, case: Case, out, rows) -> None:
    """Compare selected rows (numbered along out viewed as (rows, N)) with the reference."""
    n = case.b.shape[-2]
    flat = out.view(-1, n)
    for r in rows:
        if case.mode == "masked":
            g, i = divmod(r, case.a.shape[1])
            a_row, s_row = case.a[g, i], case.sa[g, i]
        else:
            g = 0 if case.mode == "dense" else int(case.grouping[r])
            a_row, s_row = case.a[r], case.sa[r]
        b, sb = (case.b, case.sb) if case.mode == "dense" else (case.b[g], case.sb[g])
        ref = dequantize(torch, a_row[None], s_row[None], False) @ dequantize(torch, b, sb, True).T
        got = flat[r][None]
        assert not torch.isnan(got).any(), f"row {r} unwritten"
        assert calc_diff(torch, got, ref) <= DIFF_LIMIT, f"row {r}"


@pytest.mark.parametrize("mode", MODES)
def test_outputs_past_2_to_the_31_elements(mode):
    torch = torch_module()
    n, k = 32768, 128
    if mode == "dense":
        m = 65536 + 192  # M * N > 2**31
        case = make_case(torch, mode, m, n, k)
        rows = [0, 1, 65535, 65536, 65537, m - 1]
    elif mode == "contiguous":
        case = make_case(torch, mode, 32768 + ALIGN, n, k, groups=2)
        ids = case.grouping.clone()
        ids[-ALIGN:] = -1  # the last block, past 2**31 elements, is padding
        case = replace(case, grouping=ids)
        m = ids.numel()
        rows = [0, 32768, 65536 - 1, 65536, m - ALIGN - 1]
    else:
        groups, m_max = 4, 16448
        case = make_case(torch, mode, m_max, n, k, groups=groups)
        counts = torch.tensor([m_max, 100, 0, m_max - 5], dtype=torch.int32, device="cuda")
        case = replace(case, grouping=counts, expected_m=m_max)
        rows = [0, m_max - 1, m_max + 99, 3 * m_max, 4 * m_max - 6]
    out = nan_like(torch, case.out_shape)
    assert out.numel() > 2**31
    case.run(out)
    torch.cuda.synchronize()
    # Per-row reductions: a boolean mask over 2**31 elements would need tens of GB of indices.
    nan = torch.isnan(out)
    any_nan, all_nan = nan.any(-1), nan.all(-1)
    del nan
    written = case.written(torch).squeeze(-1).expand(any_nan.shape)
    assert not any_nan[written].any(), "rows left unwritten"
    assert all_nan[~written].all(), "rows written that must not be"
    _check_rows(torch, case, out, rows)


# ---- 3. streams and graphs ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_call_is_ordered_on_the_current_torch_stream(mode):
    torch = torch_module()
    case = make_case(torch, mode, *SMALL[mode])
    out = nan_like(torch, case.out_shape)
    case.run(out)  # compile and load now, not while the stream sleeps

    def launch(stream):
        with torch.cuda.stream(stream):
            case.run(out)

    _assert_runs_behind_busy_stream(torch, out, launch, "the GEMM did not run behind its stream's earlier work")
    case.check(torch, out)


def _assert_runs_behind_busy_stream(torch, out, launch, message: str) -> None:
    """Poison `out`, keep a new stream busy, `launch(stream)` the call on it, and check from a second
    stream that `out` was still untouched while the first slept: the call was queued behind it."""
    torch.cuda.synchronize()
    out.fill_(float("nan"))
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(200_000_000)
    launch(stream)
    observer = torch.cuda.Stream()
    with torch.cuda.stream(observer):
        seen_early = out.clone()
    torch.cuda.synchronize()
    assert torch.isnan(seen_early).all(), message


def test_call_is_ordered_on_the_current_cupy_stream():
    cupy = pytest.importorskip("cupy")
    torch = torch_module()
    case = make_case(torch, "dense", *SMALL["dense"])
    out = nan_like(torch, case.out_shape)
    ca, csa = cupy.asarray(case.a.view(torch.uint8)), cupy.asarray(case.sa)
    cb, csb = cupy.asarray(case.b.view(torch.uint8)), cupy.asarray(case.sb)
    cout = cupy.asarray(out.view(torch.int16))  # CuPy has no bfloat16: raw 16-bit words
    assert csa.strides == tuple(s * 4 for s in case.sa.stride())
    pydg.gemm_fp8_fp8_bf16_nt((ca, csa), (cb, csb), cout)  # warm-up on CuPy's default stream
    cupy.cuda.get_current_stream().synchronize()

    def launch(stream):
        with cupy.cuda.ExternalStream(stream.cuda_stream):
            pydg.gemm_fp8_fp8_bf16_nt((ca, csa), (cb, csb), cout)

    _assert_runs_behind_busy_stream(torch, out, launch, "the GEMM did not run on CuPy's current stream")
    case.check(torch, out)


def test_two_streams_run_different_gemms_concurrently():
    torch = torch_module()
    cases = [make_case(torch, "dense", 2048, 4096, 2048, seed=1), make_case(torch, "masked", 512, 2048, 1024, seed=2),
             make_case(torch, "contiguous", 384, 1536, 1024, seed=3)]
    outs = [nan_like(torch, c.out_shape) for c in cases]
    for case, out in zip(cases, outs):
        case.run(out)
    torch.cuda.synchronize()
    streams = [torch.cuda.Stream() for _ in cases]
    main = torch.cuda.current_stream()
    for _ in range(10):
        for out in outs:
            out.fill_(float("nan"))
        for stream, case, out in zip(streams, cases, outs):
            stream.wait_stream(main)
            with torch.cuda.stream(stream):
                for _ in range(3):
                    case.run(out)
        for stream in streams:
            main.wait_stream(stream)
        torch.cuda.synchronize()
        for case, out in zip(cases, outs):
            case.check(torch, out)


def _new_inputs(torch, case: Case, seed: int) -> Case:
    """Inputs of the same shapes with new values (masked: new counts; contiguous: new expert order
    and some padding blocks)."""
    m = case.a.shape[-2] if case.mode != "contiguous" else case.a.shape[0] // case.b.shape[0]
    new = make_case(torch, case.mode, m, case.b.shape[-2], case.b.shape[-1],
                    groups=case.b.shape[0] if case.mode != "dense" else 3, seed=seed)
    if case.mode == "contiguous" and seed % 3 == 0:
        ids = new.grouping.clone()
        ids[:ALIGN] = -1
        new = replace(new, grouping=ids)
    return new


@pytest.mark.parametrize("mode", MODES)
def test_cuda_graph_replays_100_times_with_new_data(mode):
    torch = torch_module()
    case = make_case(torch, mode, *SMALL[mode])
    out = nan_like(torch, case.out_shape)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        case.run(out)  # warm-up outside the capture: compile and load
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        case.run(out)
    for i in range(100):
        new = _new_inputs(torch, case, seed=1000 + i)
        for name in ("a", "sa", "b", "sb", "grouping"):
            if getattr(case, name) is not None:
                getattr(case, name).copy_(getattr(new, name))
        out.fill_(float("nan"))
        graph.replay()
        case.check(torch, out)


# ---- 4. threads ---------------------------------------------------------------------------------------

def _thread_cases(torch):
    """20 shapes over the three GEMMs: 5 (N, K) pairs (one GEMM each), four M each."""
    pairs = [(512, 1024), (1024, 512), (768, 768), (2048, 256), (256, 2048)]
    cases = []
    for i, (n, k) in enumerate(pairs):
        mode = MODES[i % 3]
        for j, m in enumerate((64, 96, 300, 700)):
            cases.append(make_case(torch, mode, m if mode != "contiguous" else m // 3, n, k, seed=10 * i + j))
    return cases


def test_eight_threads_twenty_shapes_compile_once_and_are_correct(monkeypatch, tmp_path):
    torch = torch_module()
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(source, "_compiled", {})  # every kernel is new to this process
    compiles: Counter = Counter()
    lock = threading.Lock()
    real_compile = nvrtc.compile_cubin

    def counting_compile(text, name, options, *args, **kwargs):
        with lock:
            compiles[tuple(options)] += 1
        return real_compile(text, name, options, *args, **kwargs)

    monkeypatch.setattr(nvrtc, "compile_cubin", counting_compile)
    cases = _thread_cases(torch)
    torch.cuda.synchronize()
    results: list[tuple[int, object]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(t: int) -> None:
        try:
            stream = torch.cuda.Stream()
            mine = []
            start.wait()
            with torch.cuda.stream(stream):
                for repeat in range(2):
                    for i in range(len(cases)):
                        index = (i + 3 * t) % len(cases)  # threads start on different shapes
                        out = nan_like(torch, cases[index].out_shape)
                        cases[index].run(out)
                        mine.append((index, out))
            stream.synchronize()
            with lock:
                results.extend(mine)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(results) == 8 * 2 * len(cases)
    for index, out in results:
        cases[index].check(torch, out)
    assert compiles, "no kernel was compiled"
    assert all(count == 1 for count in compiles.values()), f"kernels compiled more than once: {compiles}"


# ---- 5. several GPUs --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_arrays_on_gpu1_run_on_gpu1(mode):
    torch = torch_module()
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    with torch.cuda.device(1):
        case = make_case(torch, mode, *SMALL[mode])
        out = nan_like(torch, case.out_shape)
    assert torch.cuda.current_device() == 0
    case.run(out)  # the caller's current device is 0
    assert torch.cuda.current_device() == 0, "the call changed the caller's current device"
    torch.cuda.synchronize(1)
    with torch.cuda.device(1):
        case.check(torch, out)
        out.fill_(float("nan"))
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):  # GPU 1's current stream is honoured
            torch.cuda._sleep(100_000_000)
            case.run(out)
        seen_early = out.clone()  # on GPU 1's default stream
        torch.cuda.synchronize(1)
        assert torch.isnan(seen_early).all()
        case.check(torch, out)
    # The same shape on GPU 0 still runs there.
    case0 = make_case(torch, mode, *SMALL[mode])
    out0 = nan_like(torch, case0.out_shape)
    case0.run(out0)
    case0.check(torch, out0)


# ---- 6. memory ------------------------------------------------------------------------------------------

def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _free_device_bytes() -> int:
    from cuda.bindings import driver as cu

    from pydg.driver.cuda import check

    free, _ = check("cuMemGetInfo", cu.cuMemGetInfo())
    return int(free)


def test_ten_thousand_calls_over_fifty_shapes_do_not_grow_memory():
    # The free-memory check is device-wide: it needs the GPU to itself (scripts/gpu_check.sh runs it
    # after the parallel shards).
    torch = torch_module()
    shapes = [(m, n, k) for (n, k) in ((256, 512), (512, 256), (768, 384), (1024, 1024), (384, 768))
              for m in (1, 17, 64, 100, 128, 200, 256, 333, 512, 640)]
    assert len(shapes) == 50
    cases, outs = [], []
    for i, (m, n, k) in enumerate(shapes):
        mode = MODES[i % 3]
        case = make_case(torch, mode, m if mode != "contiguous" else max(1, m // 3), n, k, seed=i)
        cases.append(case)
        # Two outputs and two copies of A per shape, alternated: every call re-points tensor maps.
        outs.append([nan_like(torch, case.out_shape) for _ in range(2)])
    alternates = [(c.a, c.a.clone()) for c in cases]

    def calls(count: int) -> None:
        for i in range(count):
            s = i % 50
            flip = (i // 50) % 2
            cases[s].run(outs[s][flip], a=alternates[s][flip])

    calls(2000)  # warm-up: compile, load, allocate whatever is allocated once
    torch.cuda.synchronize()
    rss, allocated, free = _rss_bytes(), torch.cuda.memory_allocated(), _free_device_bytes()
    calls(10_000)
    torch.cuda.synchronize()
    rss_growth = _rss_bytes() - rss
    assert torch.cuda.memory_allocated() == allocated
    assert free - _free_device_bytes() <= 8 << 20, "device memory shrank by more than 8 MiB"
    assert rss_growth <= 16 << 20, f"host RSS grew by {rss_growth / 2**20:.1f} MiB over 10,000 calls"
    assert len(gemm._cache.prepared) <= gemm.MAX_PREPARED
    for s in (0, 1, 2, 49):
        cases[s].check(torch, outs[s][1])  # the last call of each of these wrote outs[s][1]


# ---- 8. determinism ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,shape", [("dense", (4096, 7168, 2048)), ("dense", (128, 2112, 7168)),
                                        ("contiguous", (1024, 4096, 2048)), ("masked", (512, 4096, 2048))])
def test_twenty_repeats_are_bitwise_identical(mode, shape):
    torch = torch_module()
    case = make_case(torch, mode, *shape, groups=4)
    first = nan_like(torch, case.out_shape)
    case.run(first)
    case.check(torch, first)
    for _ in range(19):
        again = nan_like(torch, case.out_shape)
        case.run(again)
        torch.cuda.synchronize()
        same = torch.equal(first.view(torch.int16), again.view(torch.int16))  # NaN rows compare as bits
        assert same, "a repeat differed"


# ---- 9. numerics ---------------------------------------------------------------------------------------

E4M3_NAN = 0x7F


def full_case(torch, mode: str, k: int = 512) -> Case:
    """256 rows x 512 columns per group, 2 groups; masked: every row of both groups valid."""
    case = make_case(torch, mode, 256, 512, k, groups=2)
    if mode == "masked":
        case = replace(case, grouping=torch.tensor([256, 256], dtype=torch.int32, device="cuda"))
    return case


@pytest.mark.parametrize("mode", MODES)
def test_nan_in_a_row_reaches_exactly_that_row(mode):
    torch = torch_module()
    case = full_case(torch, mode)
    a = case.a.view(torch.uint8).clone()
    row = (300 if mode == "contiguous" else 37)
    a.view(-1, a.shape[-1])[row if mode != "masked" else 256 + row, 100] = E4M3_NAN
    out = nan_like(torch, case.out_shape)
    case.run(out, a=a)
    torch.cuda.synchronize()
    flat = out.view(-1, out.shape[-1])
    hit = row if mode != "masked" else 256 + row
    assert torch.isnan(flat[hit]).all()
    others = torch.cat([flat[:hit], flat[hit + 1:]])
    assert not torch.isnan(others).any(), "NaN reached rows it does not belong to"


@pytest.mark.parametrize("mode", MODES)
def test_nan_in_b_row_reaches_exactly_that_column(mode):
    torch = torch_module()
    case = full_case(torch, mode)
    b = case.b.view(torch.uint8).clone()
    col = 200
    if mode == "dense":
        b[col, 17] = E4M3_NAN
    else:
        b[0, col, 17] = E4M3_NAN  # expert/group 0 only
    out = nan_like(torch, case.out_shape)
    case.run(out, b=b)
    torch.cuda.synchronize()
    if mode == "dense":
        affected = torch.zeros(case.out_shape, dtype=torch.bool, device="cuda")
        affected[:, col] = True
    elif mode == "contiguous":
        affected = torch.zeros(case.out_shape, dtype=torch.bool, device="cuda")
        affected[case.grouping == 0, col] = True
    else:
        affected = torch.zeros(case.out_shape, dtype=torch.bool, device="cuda")
        affected[0, :, col] = True
    assert torch.isnan(out[affected]).all()
    assert not torch.isnan(out[~affected]).any(), "NaN reached columns it does not belong to"


@pytest.mark.parametrize("mode", MODES)
def test_non_finite_scale_reaches_exactly_its_outputs(mode):
    torch = torch_module()
    case = full_case(torch, mode)
    sa, sb = fresh_sa(torch, case.sa), case.sb.clone()
    row = 5
    sa[..., row, 2] = float("inf")  # row 5 (of every group)
    sb[..., 2, 1] = float("nan")    # columns 256..383 (of every expert)
    out = nan_like(torch, case.out_shape)
    case.run(out, sa=sa, sb=sb)
    torch.cuda.synchronize()
    affected = torch.zeros(case.out_shape, dtype=torch.bool, device="cuda")
    affected[..., row, :] = True
    affected[..., 256:384] = True
    assert (~torch.isfinite(out[affected])).all()
    assert torch.isfinite(out[~affected]).all(), "a non-finite scale reached outputs that do not use it"


# E4M3 bytes at the format's limits: ±448 (largest), ±2^-6 (smallest normal), ±2^-9 .. ±7*2^-9 (subnormals).
E4M3_MAX = (0x7E, 0xFE)
E4M3_SUBNORMAL = (0x01, 0x81, 0x02, 0x82, 0x05, 0x85, 0x07, 0x87)
E4M3_MIN_NORMAL = (0x08, 0x88)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("values", ["max", "subnormal", "mixed"])
def test_inputs_at_e4m3_limits_stay_within_the_accuracy_bound(mode, values):
    torch = torch_module()
    case = make_case(torch, mode, 256, 512, 512, groups=2)
    table = {"max": E4M3_MAX, "subnormal": E4M3_SUBNORMAL,
             "mixed": E4M3_MAX + E4M3_SUBNORMAL + E4M3_MIN_NORMAL}[values]
    table = torch.tensor(table, dtype=torch.uint8, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(5)

    def fill(x):
        return table[torch.randint(0, table.numel(), x.shape, device="cuda", generator=gen)].view(torch.float8_e4m3fn)

    limit_case = replace(case, a=fill(case.a), b=fill(case.b), sa=fresh_sa(torch, torch.ones_like(case.sa)),
                         sb=torch.ones_like(case.sb))
    out = nan_like(torch, limit_case.out_shape)
    limit_case.run(out)
    limit_case.check(torch, out)


def test_all_448_is_exact():
    torch = torch_module()
    m, n, k = 256, 256, 1024
    a = torch.full((m, k), 0x7E, dtype=torch.uint8, device="cuda")
    b = torch.full((n, k), 0x7E, dtype=torch.uint8, device="cuda")
    sa = pydg.get_col_major_tma_aligned_tensor(torch.ones(m, k // 128, device="cuda"))
    sb = torch.ones(n // 128, k // 128, device="cuda")
    out = nan_like(torch, (m, n))
    pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)
    torch.cuda.synchronize()
    assert (out.double() == 448.0 * 448.0 * k).all()  # 205520896 = 1.53125 * 2**27: exact in BF16


@pytest.mark.parametrize("mode", MODES)
def test_zero_scales_give_exact_zeros(mode):
    torch = torch_module()
    case = full_case(torch, mode)
    sa, sb = fresh_sa(torch, case.sa), case.sb.clone()
    sa[..., 7, :] = 0.0   # row 7 (of every group)
    sb[..., 1, :] = 0.0   # columns 128..255 (of every expert)
    zero_case = replace(case, sa=sa, sb=sb)
    out = nan_like(torch, case.out_shape)
    zero_case.run(out)
    zero_case.check(torch, out)
    assert (out[..., 7, :] == 0).all() and (out[..., 128:256] == 0).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["tiny", "subnormal", "huge"])
def test_tiny_subnormal_and_huge_scales_match_the_reference(mode, kind):
    torch = torch_module()
    case = make_case(torch, mode, 256, 512, 512, groups=2)
    if kind == "tiny":       # sa * sb near FP32's smallest normal: results about 2**-100
        sa, sb = fresh_sa(torch, case.sa, 2.0**-50), case.sb * 2.0**-50
    elif kind == "subnormal":  # A's scales are FP32 subnormals; B's a power of two, so sa * sb is exact
        sa, sb = fresh_sa(torch, case.sa, 2.0**-130), torch.full_like(case.sb, 2.0**10)
        assert (sa[sa != 0].abs() < 2.0**-126).all()
    else:                    # dequantized values near 2**50: results about 2**100
        sa, sb = fresh_sa(torch, case.sa, 2.0**50), case.sb * 2.0**50
    scaled = replace(case, sa=sa, sb=sb)
    out = nan_like(torch, case.out_shape)
    scaled.run(out)
    scaled.check(torch, out)
    assert torch.isfinite(out[scaled.written(torch).expand(case.out_shape)]).all()
    if kind != "huge":
        assert (out[scaled.written(torch).expand(case.out_shape)] != 0).float().mean() > 0.99, "flushed to zero"


@pytest.mark.parametrize("mode", MODES)
def test_results_past_bf16_range_are_infinite_like_the_reference(mode):
    torch = torch_module()
    case = full_case(torch, mode, k=128)  # one block of K: no partial sums to overflow
    huge = replace(case, sa=fresh_sa(torch, case.sa, 2.0**60), sb=case.sb * 2.0**60)
    out = nan_like(torch, case.out_shape)
    huge.run(out)
    torch.cuda.synchronize()
    ref = huge.reference(torch)
    over = ref.abs() > 1.01 * BF16_MAX
    inside = ref.abs() < 0.99 * BF16_MAX
    assert over.any() and inside.any(), "the test's scales do not straddle BF16's range"
    assert torch.isinf(out[over]).all() and (torch.sign(out[over].double()) == torch.sign(ref[over])).all()
    assert torch.isfinite(out[inside]).all()
    assert calc_diff(torch, out[inside], ref[inside]) <= DIFF_LIMIT

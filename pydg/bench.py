"""`python -m pydg bench`: pydg beside cuBLAS (torch._scaled_mm) and DeepGEMM, same GPU, same run.

The method is the anchor's (shared/anchor/anchor_bench.py), so figures compare with the issue tables:
- every result is checked against the float64 product of the dequantized inputs before it is timed;
  a pydg result over calc_diff 1e-5 is reported as WRONG and never counted as a speed;
- the headline is kernel time from the torch profiler, the mean over `--iters` calls, each call
  preceded by a 256 MB write that flushes the L2 (the flush's own kernel is not counted);
- a shape's implementations are checked first, then timed in `--rounds` rounds of an equal share of
  the calls, the order rotated each round: none always runs first, straight after the float64
  reference, or last (the anchor times each back to back; `--rounds 1` does that, in call order);
- beside it, CUDA-event time of each call (events around the call, after the flush), the median;
  and the median of the kernel times (`us_median`): a mean more than 5% above it is named as an
  outlier at the end of the run, for re-timing (one slow call moves the anchor's mean).
pydg is charged for every kernel its call launches. cuBLAS and DeepGEMM are charged as the anchor
charges them (elementwise/fill kernels left out; DeepGEMM's "gemm" kernels only), which can only
favour them. Speedups are other_us / pydg_us: above 1 means pydg is faster.

Only the standard library is imported at module level: the CLI's parsing and the arithmetic
helpers are usable (and tested) on a machine without torch or a GPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

DIFF_LIMIT = 1e-5       # CONTRACT.md: pydg's accuracy bound against the float64 reference
REFERENCE_LIMIT = 1e-3  # cuBLAS/DeepGEMM: beyond this a result is wrong (a layout mix-up), not rounded
FLUSH_BYTES = 256 * 10**6
DEFAULT_ITERS = 30
DEFAULT_ROUNDS = 3
HOST_CALLS = 1000
# Batches of HOST_CALLS timed one after another; the median batch is the figure. One batch of 1000 read
# 8.8 us at 1 x 256 x 128 in one H100 run and 13.0 us in the next with the same host path (and
# DeepGEMM's 34.2 and 23.0): whatever else the host did during one batch moved it.
HOST_BATCHES = 5
HOST_WARMUP = 200  # 20 gave 15.6 us where scripts/host_profile.py measured 10 us (bench/NOTES.md, 2026-11-23)
# The anchor's exclusions for cuBLAS/DeepGEMM: the flush and any fill/elementwise helper kernel.
ANCHOR_EXCLUDED = ("elementwise", "fill", "Fill", "zero")

SECTIONS = ("dense", "grouped", "host", "shapes")
DEFAULT_SECTIONS = "dense,grouped,host"  # "shapes" is long (54 shapes): asked for explicitly

# The DeepSeek-V3 shapes of CONTRACT.md's table, in its order.
DENSE_NK = ((2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048))
DENSE_SHAPES = [(m, n, k) for m in (64, 128, 4096) for n, k in DENSE_NK]
# Shapes nobody published figures for: odd and tiny M, square-ish and skinny N x K.
EXTRA_MS = (1, 37, 300, 1000, 2500, 6000)
EXTRA_NK = tuple((n, k) for n in (2048, 7168, 18432) for k in (2048, 7168, 18432))
EXTRA_SHAPES = [(m, n, k) for n, k in EXTRA_NK for m in EXTRA_MS]
# MoE layouts: (groups, rows per group, N, K).
CONTIGUOUS_SHAPES = ((4, 8192, 4096, 7168), (4, 8192, 7168, 2048), (8, 4096, 4096, 7168), (8, 4096, 7168, 2048))
MASKED_SHAPES = ((1, 1024, 4096, 7168), (1, 1024, 7168, 2048), (2, 512, 4096, 7168), (2, 512, 7168, 2048),
                 (4, 256, 4096, 7168), (4, 256, 7168, 2048))
# Host overhead: a GEMM whose kernel is ~2 us (the host is the limit) and a typical decode layer.
HOST_SHAPES = ((1, 256, 128), (128, 7168, 2048))
# A mean of kernel times this much above their median is named as an outlier (Bench.outliers).
OUTLIER_SKEW = 0.05
MASKED_TARGET = 0.9  # CONTRACT: masked grouped GEMMs within 10% of the dense kernel at the same total M


# ------------------------------------------------------------------------------ arithmetic helpers

def gemm_flops(m: int, n: int, k: int) -> int:
    """Multiply-adds counted twice, for M rows in total."""
    return 2 * m * n * k


def gemm_bytes(m: int, n: int, k: int, num_weights: int = 1) -> int:
    """Bytes a GEMM must move at least: FP8 A (M x K) and B (num_weights x N x K), BF16 D (M x N).
    Scales (< 1%) are left out, as in DeepGEMM's published GB/s."""
    return m * k + num_weights * n * k + 2 * m * n


def tflops(flops: float, us: float) -> float:
    return flops / us / 1e6


def gbps(nbytes: float, us: float) -> float:
    return nbytes / us / 1e3


def speedup(pydg_us: float | None, other_us: float | None) -> float | None:
    """How many times faster pydg is (other's time over pydg's); None unless both were timed."""
    if not pydg_us or not other_us:
        return None
    return other_us / pydg_us


def outlier_skew(mean_us: float, median_us: float | None) -> float | None:
    """How far a mean over calls sits above their median, where that is more than OUTLIER_SKEW (one
    slow call among the timed ones; seen at 12% on a 52 us kernel); None where it is not."""
    if not median_us or mean_us <= median_us * (1 + OUTLIER_SKEW):
        return None
    return mean_us / median_us - 1


def geomean(values: Iterable[float | None]) -> float | None:
    """Geometric mean of the positive values given (None and non-positive ones are skipped)."""
    logs = [math.log(v) for v in values if v is not None and v > 0]
    return math.exp(sum(logs) / len(logs)) if logs else None


def parse_sections(text: str) -> list[str]:
    """'dense,host' -> ['dense', 'host'], in the order given, without repeats."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise ValueError(f"--what: unknown value {', '.join(map(repr, unknown)) or repr(text)}; "
                         f"expected a comma-separated subset of {', '.join(SECTIONS)}")
    return list(dict.fromkeys(names))


def scaled_iters(flops: int, iters: int, minimum: int = 5, budget_flops: float = 2.5e13) -> int:
    """Fewer timed calls for big GEMMs: about `budget_flops` per measurement (~25 ms at 1 PFLOPS),
    never fewer than `minimum` nor more than `iters`."""
    return max(min(iters, minimum), min(iters, int(budget_flops // max(flops, 1))))


def shape_label(*dims: int) -> str:
    return "x".join(str(d) for d in dims)


def short_plan(plan: Any) -> str:
    """'128x176 s4 c2b' for a GemmPlan: block M x N, stages, cluster size and multicast operand."""
    try:
        cluster = f"c{plan.cluster_size}{plan.multicast[0]}" if plan.cluster_size > 1 else "c1"
        return f"{plan.block_m}x{plan.block_n} s{plan.num_stages} {cluster}"
    except AttributeError:
        return "?"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Right-aligned columns; floats shown with 3 significant figures, None as '-'."""
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in text]
    return "\n".join(lines)


def describe_error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:400]


# ------------------------------------------------------------------------------------- the report

class Report:
    """All records of a run plus metadata; rewritten to disk after every record so that a run
    killed at the device's time limit still leaves what it measured."""

    def __init__(self, path: str | None, metadata: dict[str, Any]):
        self.path = pathlib.Path(path) if path else None
        self.data: dict[str, Any] = {"metadata": metadata, "records": [], "summary": {}}

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.data["records"]

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def git_commit() -> str | None:
    """$PYDG_GIT_COMMIT if set, else the checkout's commit. The device's copy of the tree carries the
    .git of the session's start, so a device command names the commit it runs in PYDG_GIT_COMMIT."""
    if os.environ.get("PYDG_GIT_COMMIT"):
        return os.environ["PYDG_GIT_COMMIT"]
    root = pathlib.Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if done.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return done.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def driver_version() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from cuda.bindings import driver as cu

        err, version = cu.cuDriverGetVersion()
        return f"CUDA driver API {version // 1000}.{version % 1000 // 10}" if int(err) == 0 else None
    except Exception:  # no cuda-python or no driver: the metadata just lacks the field
        return None


def collect_metadata(torch: Any, deep_gemm: Any, deep_gemm_error: str | None, argv: Sequence[str]) -> dict[str, Any]:
    import pydg

    props = torch.cuda.get_device_properties(0)
    try:
        from pydg.driver import nvrtc

        nvrtc_version = ".".join(map(str, nvrtc.version()))
    except Exception as err:  # recorded, not fatal: the bench itself will show what fails
        nvrtc_version = describe_error(err)
    return {
        "gpu": torch.cuda.get_device_name(0),
        "compute_capability": f"{props.major}.{props.minor}",
        "sms": props.multi_processor_count,
        "driver": driver_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "nvrtc": nvrtc_version,
        "python": platform.python_version(),
        "pydg": pydg.__version__,
        "git_commit": git_commit(),
        "deep_gemm": getattr(deep_gemm, "__version__", "present") if deep_gemm is not None else None,
        "deep_gemm_import_error": deep_gemm_error,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(argv),
        # PYDG_* settings of the run (PYDG_AUTOTUNE changes the plans).
        "switches": {name: value for name, value in sorted(os.environ.items()) if name.startswith("PYDG_")},
        "method": {"timing": "torch profiler kernel time, mean (us) and median (us_median); CUDA-event time per call, median",
                   "l2_flush_bytes": FLUSH_BYTES, "pydg_diff_limit": DIFF_LIMIT,
                   "reference_diff_limit": REFERENCE_LIMIT, "speedup": "other_us / pydg_us"},
    }


# ----------------------------------------------------------------------------------------- timing

@dataclass
class KernelTimes:
    """Device time per call of each kernel a measured function launched, microseconds: the mean over
    the calls (the anchor's measure) and the median (one slow call moves the mean, not the median)."""

    per_call_us: dict[str, float]
    median_us: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_durations(cls, durations_us: dict[str, list[float]], calls: int) -> KernelTimes:
        """From each kernel's durations over `calls` calls; a kernel launched n times per call counts
        n times its median launch."""
        return cls({name: sum(d) / calls for name, d in durations_us.items()},
                   {name: statistics.median(d) * len(d) / calls for name, d in durations_us.items()})

    def total_us(self, excluded: Sequence[str] = (), only: Sequence[str] | None = None, median: bool = False) -> float:
        times = self.median_us if median else self.per_call_us
        return sum(us for name, us in times.items()
                   if not any(e in name for e in excluded) and (only is None or any(o in name for o in only)))

    def rounded(self) -> dict[str, float]:
        return {name[:120]: round(us, 3) for name, us in self.per_call_us.items()}


def _device_time_us(event: Any) -> float:
    # torch renamed cuda_time to device_time (2.4); accept both.
    return float(event.device_time if hasattr(event, "device_time") else event.cuda_time)


class Timer:
    """Kernel time (torch profiler) and event time of a function, with the L2 flushed before each call."""

    def __init__(self, torch: Any):
        self.torch = torch
        self.flush_buffer = torch.empty(FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
        # The flush's own kernels, by exact name, so that nothing else of the same family is dropped.
        self.flush_kernels = frozenset(self._durations(self.flush, iters=3, flush=False))

    def flush(self) -> None:
        self.flush_buffer.zero_()

    def _durations(self, fn: Callable[[], Any], iters: int, flush: bool) -> dict[str, list[float]]:
        torch = self.torch
        fn()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(iters):
                if flush:
                    self.flush()
                fn()
            torch.cuda.synchronize()
        durations: dict[str, list[float]] = defaultdict(list)
        for event in prof.events():
            if event.device_type == torch.autograd.DeviceType.CUDA:
                durations[event.name].append(_device_time_us(event))
        return durations

    def durations(self, fn: Callable[[], Any], iters: int) -> dict[str, list[float]]:
        """Each kernel's device times over `iters` calls of `fn` (after a warm-up call), the L2
        flushed before each call; the flush's kernels removed."""
        return {name: d for name, d in self._durations(fn, iters, flush=True).items() if name not in self.flush_kernels}

    def event_times(self, fn: Callable[[], Any], iters: int) -> list[float]:
        """The time between CUDA events recorded just before and after each of `iters` calls, us."""
        torch = self.torch
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for start, end in zip(starts, ends):
            self.flush()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) * 1e3 for s, e in zip(starts, ends)]

    def host_us(self, fn: Callable[[], Any], calls: int = HOST_CALLS,
                batches: int = HOST_BATCHES) -> tuple[float, float, list[float]]:
        """(Python wall time per call until a batch's last call returned, per call until the GPU
        finished it, each the median over `batches` batches of `calls` back-to-back calls on the same
        arrays after a warm-up; every batch's host time per call)."""
        torch = self.torch
        for _ in range(HOST_WARMUP):
            fn()
        torch.cuda.synchronize()
        host, synced = [], []
        for _ in range(batches):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            t1 = time.perf_counter()
            torch.cuda.synchronize()
            t2 = time.perf_counter()
            host.append((t1 - t0) / calls * 1e6)
            synced.append((t2 - t0) / calls * 1e6)
        return statistics.median(host), statistics.median(synced), host


# ------------------------------------------------------------------------- data and the reference

def calc_diff(torch: Any, x: Any, y: Any) -> float:
    """DeepGEMM's 1 - 2*sum(x*y)/sum(x*x + y*y), in float64 on the GPU; NaN anywhere gives NaN."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    denominator = float((x * x + y * y).sum())
    if denominator == 0.0:
        return 0.0
    return float(1.0 - 2.0 * float((x * y).sum()) / denominator)


def dequantize_rows(torch: Any, data: Any, scales: Any) -> Any:
    """float64 (..., M, K) from E4M3 data and per-row-per-128 scales (..., M, KB), any strides."""
    k = data.shape[-1]
    return data.to(torch.float64) * scales.to(torch.float64).repeat_interleave(128, dim=-1)[..., :k]


def dequantize_blocks(torch: Any, data: Any, scales: Any) -> Any:
    """float64 (..., N, K) from E4M3 data and per-128x128-block scales (..., NB, KB)."""
    n, k = data.shape[-2:]
    expanded = scales.to(torch.float64).repeat_interleave(128, dim=-2)[..., :n, :]
    return data.to(torch.float64) * expanded.repeat_interleave(128, dim=-1)[..., :k]


@dataclass
class Lhs:
    """A quantized: E4M3 data, row-major scales (dequantizing, cuBLAS) and the TMA-aligned copy (pydg)."""

    data: Any
    scales: Any
    scales_tma: Any
    values: Any  # float64 dequantized


@dataclass
class Rhs:
    data: Any
    scales: Any
    values: Any  # float64 dequantized


def make_lhs(torch: Any, pydg: Any, shape: tuple[int, ...]) -> Lhs:
    data, scales = pydg.per_token_cast_to_fp8(torch.randn(*shape, device="cuda", dtype=torch.bfloat16))
    return Lhs(data, scales, pydg.get_col_major_tma_aligned_tensor(scales), dequantize_rows(torch, data, scales))


def make_rhs(torch: Any, pydg: Any, shape: tuple[int, ...]) -> Rhs:
    data, scales = pydg.per_block_cast_to_fp8(torch.randn(*shape, device="cuda", dtype=torch.bfloat16))
    return Rhs(data, scales, dequantize_blocks(torch, data, scales))


def nan_output(torch: Any, *shape: int) -> Any:
    """Outputs start as NaN so that rows a kernel failed to write fail the check."""
    return torch.full(shape, float("nan"), device="cuda", dtype=torch.bfloat16)


# ------------------------------------------------------------------------------ cuBLAS variants

def scaled_mm_blockwise_variants(torch: Any) -> list[tuple[str, Callable[..., Callable[[], Any]]]]:
    """The ways torch._scaled_mm may take 1x128 (A) and 128x128 (B) scales on sm_90, as the anchor
    tries them: each entry makes, from (a, sa row-major, b, sb), a call returning D (M, N) bf16."""
    def make(scale_a: Callable[[Any], Any], scale_b: Callable[[Any], Any]):
        def bind(a: Any, sa: Any, b: Any, sb: Any) -> Callable[[], Any]:
            sa_arg, sb_arg = scale_a(sa), scale_b(sb)
            return lambda: torch._scaled_mm(a, b.t(), sa_arg, sb_arg, out_dtype=torch.bfloat16)
        return bind

    def m_major(s):
        return s.t().contiguous().t()

    return [
        ("blockwise: scale_a (M,KB) M-major, scale_b sb.t()", make(m_major, lambda s: s.t())),
        ("blockwise: scale_a (M,KB) M-major, scale_b sb.t().contiguous()", make(m_major, lambda s: s.t().contiguous())),
        ("blockwise: scale_a (M,KB) M-major, scale_b sb", make(m_major, lambda s: s)),
        ("blockwise: scale_a (M,KB) row-major, scale_b sb.t()", make(lambda s: s, lambda s: s.t())),
    ]


def scaled_mm_rowwise(torch: Any, a: Any, b: Any) -> Callable[[], Any]:
    """cuBLAS FP8 with one scale per row of A and of B (all ones): a coarser recipe than pydg's,
    timed only where blockwise is refused, and always labelled so."""
    ones_a = torch.ones(a.shape[0], 1, device="cuda", dtype=torch.float32)
    ones_b = torch.ones(1, b.shape[0], device="cuda", dtype=torch.float32)
    return lambda: torch._scaled_mm(a, b.t(), ones_a, ones_b, out_dtype=torch.bfloat16)


# --------------------------------------------------------------------------------- the benchmark

@dataclass
class Timing:
    """An implementation whose result was right, waiting to be timed in its case's rounds."""

    label: str
    impl: str
    fn: Callable[[], Any]
    record: dict[str, Any]
    iters: int
    only: Sequence[str] | None
    durations: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    events_us: list[float] = field(default_factory=list)
    round_us: list[float] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # its place in each round's order, 0 = first
    calls: int = 0

    @property
    def excluded(self) -> Sequence[str]:
        # pydg is charged for all its kernels; others as the anchor charges them (see the module doc).
        return () if self.impl.startswith("pydg") else ANCHOR_EXCLUDED


def rotated(items: Sequence[Any], turn: int) -> list[Any]:
    """The items in order, starting at index turn (mod their count): round `turn`'s timing order."""
    shift = turn % len(items) if items else 0
    return list(items[shift:]) + list(items[:shift])


@dataclass
class Bench:
    torch: Any
    pydg: Any
    timer: Timer
    deep_gemm: Any | None
    iters: int
    report: Report
    deadline: float | None
    cublas_variant: int = 0  # the blockwise variant that worked last: tried first next time
    pydg_failures: list[str] = field(default_factory=list)
    outliers: list[str] = field(default_factory=list)  # means a slow call moved (outlier_skew)
    extra_shapes: list[tuple[int, int, int]] | None = None  # --shapes: the 'shapes' section's list
    rounds: int = DEFAULT_ROUNDS
    queued: list[Timing] = field(default_factory=list)

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def measure(self, label: str, impl: str, fn: Callable[[], Any], check: Callable[[Any], float],
                limit: float, iters: int, only: Sequence[str] | None = None) -> dict[str, Any]:
        """Run once and check; if right, queue `fn` for timing (time_queued fills in the times). The
        record's "ok" says the result was right until a timing fails. Never raises: failures are
        recorded and printed."""
        torch = self.torch
        record: dict[str, Any] = {"impl": impl, "ok": False}
        try:
            result = fn()
            torch.cuda.synchronize()
            diff = check(result)
            record["diff"] = diff
            if not diff <= limit:  # NaN fails too
                record["error"] = f"WRONG RESULT: calc_diff {diff:.3g} > {limit:g}"
            else:
                record["ok"] = True
                self.queued.append(Timing(label, impl, fn, record, iters, only))
        except Exception as err:  # one failed measurement must not end the run
            self._record_error(record, err)
        if not record["ok"]:
            self._announce_failure(label, impl, record["error"])
        return record

    def time_queued(self) -> None:
        """Time every implementation queued since the last call: `rounds` rounds, each giving every
        one an equal share of its calls, the order rotated from round to round. Each record gets the
        mean over all its calls (the headline), each round's mean and its place in each round."""
        queue, self.queued = self.queued, []
        for turn in range(self.rounds):
            for position, timing in enumerate(rotated([t for t in queue if t.record["ok"]], turn)):
                calls = math.ceil(timing.iters / self.rounds)
                try:
                    durations = self.timer.durations(timing.fn, calls)
                    timing.events_us += self.timer.event_times(timing.fn, calls)
                except Exception as err:
                    self._record_error(timing.record, err)
                    self._announce_failure(timing.label, timing.impl, timing.record["error"])
                    continue
                for name, times in durations.items():
                    timing.durations[name] += times
                timing.calls += calls
                timing.round_us.append(KernelTimes.from_durations(durations, calls).total_us(timing.excluded, timing.only))
                timing.positions.append(position)
        for timing in queue:
            if timing.record["ok"]:
                self._finish(timing)

    def _finish(self, timing: Timing) -> None:
        record, excluded, only = timing.record, timing.excluded, timing.only
        kernels = KernelTimes.from_durations(timing.durations, timing.calls)
        record.update(us=kernels.total_us(excluded, only), us_all_kernels=kernels.total_us(),
                      us_median=kernels.total_us(excluded, only, median=True),
                      us_event=statistics.median(timing.events_us), iters=timing.calls, kernels=kernels.rounded(),
                      us_rounds=[round(us, 3) for us in timing.round_us], round_positions=timing.positions)
        if record["us"] <= 0:
            record.update(ok=False, error="no kernel time recorded (profiler saw no matching kernel)")
            self._announce_failure(timing.label, timing.impl, record["error"])
        elif (skew := outlier_skew(record["us"], record["us_median"])) is not None:
            self._announce_outlier(f"{timing.label} {timing.impl}: mean {record['us']:.1f} us, {skew:.0%} above "
                                   f"the median {record['us_median']:.1f} us")

    def _record_error(self, record: dict[str, Any], err: BaseException) -> None:
        record.update(ok=False, error=describe_error(err),
                      traceback="".join(traceback.format_exception(type(err), err, err.__traceback__)[-6:]))
        try:
            self.torch.cuda.synchronize()
        except Exception:
            pass

    def _announce_outlier(self, line: str) -> None:
        # Kept as measured (the anchor's mean), but named, so that a run's one slow call is re-timed
        # before anyone reads a trend into it.
        self.outliers.append(line)
        print(f"  ~ {line}: a slow call moved the mean; re-time this shape", flush=True)

    def _announce_failure(self, label: str, impl: str, error: str) -> None:
        if impl.startswith("pydg"):
            self.pydg_failures.append(f"{label} {impl}: {error}")
            banner = "!" * 100
            print(f"{banner}\n!! PYDG FAILED on {label} ({impl}): {error}\n!! not counted as a speed result\n{banner}",
                  flush=True)
        else:
            print(f"  ! {label} {impl}: {error}", flush=True)

    def pydg_plan(self, m: int, n: int, k: int, **kwargs: Any) -> tuple[str | None, str | None]:
        """(one-line plan summary, short form) as describe_gemm gives it, without compiling."""
        try:
            plan = self.pydg.describe_gemm(m, n, k, compile=False, **kwargs).plan
            return plan.summary(), short_plan(plan)
        except Exception as err:
            return f"describe_gemm failed: {describe_error(err)}", None

    def find_blockwise(self, args: Sequence[tuple[Any, Any, Any, Any]], check: Callable[[Any], float],
                       loop: bool = False) -> tuple[str | None, Callable[[], Any] | None, list[str]]:
        """(variant name, call, errors): the first cuBLAS blockwise variant giving a right result.

        One (a, sa, b, sb) product gives a call returning D; with `loop`, a call runs one product per
        group and returns the list of their Ds (also for a single group)."""
        variants = scaled_mm_blockwise_variants(self.torch)
        order = [self.cublas_variant] + [i for i in range(len(variants)) if i != self.cublas_variant]
        errors = []
        for index in order:
            name, bind = variants[index]
            try:
                calls = [bind(*a) for a in args]
                fn = (lambda calls=calls: [c() for c in calls]) if loop else calls[0]
                diff = check(fn())
            except Exception as err:
                errors.append(f"{name}: {describe_error(err)[:160]}")
                continue
            if not diff <= REFERENCE_LIMIT:
                errors.append(f"{name}: calc_diff {diff:.3g}")
                continue
            self.cublas_variant = index
            return name, fn, errors
        return None, None, errors

    def cublas_blockwise(self, label: str, impl: str, args: Sequence[tuple[Any, Any, Any, Any]],
                         check: Callable[[Any], float], iters: int, loop: bool = False) -> dict[str, Any]:
        """cuBLAS blockwise timed with the first variant that works; its name is recorded."""
        name, fn, errors = self.find_blockwise(args, check, loop)
        if fn is None:
            return {"impl": impl, "ok": False, "recipe": "blockwise", "error": "no blockwise variant worked",
                    "variant_errors": errors}
        record = self.measure(label, impl, fn, check, REFERENCE_LIMIT, iters)
        record.update(recipe="blockwise", variant=name)
        return record


# -------------------------------------------------------------------------------- dense sections

def _dense_case(bench: Bench, section: str, m: int, rhs: Rhs, iters: int) -> dict[str, Any]:
    torch, pydg, dg = bench.torch, bench.pydg, bench.deep_gemm
    n, k = rhs.data.shape
    label = f"{section} {shape_label(m, n, k)}"
    flops, nbytes = gemm_flops(m, n, k), gemm_bytes(m, n, k)
    lhs = make_lhs(torch, pydg, (m, k))
    reference = lhs.values @ rhs.values.t()
    record: dict[str, Any] = {"section": section, "m": m, "n": n, "k": k, "flops": flops, "bytes": nbytes}
    record["plan"], record["plan_short"] = bench.pydg_plan(m, n, k)

    out = nan_output(torch, m, n)
    record["pydg"] = bench.measure(
        label, "pydg", lambda: pydg.gemm_fp8_fp8_bf16_nt((lhs.data, lhs.scales_tma), (rhs.data, rhs.scales), out),
        lambda _: calc_diff(torch, out, reference), DIFF_LIMIT, iters)

    record["cublas"] = bench.cublas_blockwise(label, "cublas", [(lhs.data, lhs.scales, rhs.data, rhs.scales)],
                                              lambda r: calc_diff(torch, r, reference), iters)
    if not record["cublas"]["ok"]:
        record["cublas"] = _cublas_rowwise_fallback(bench, label, lhs, rhs, record["cublas"], iters)

    if dg is not None:
        d = nan_output(torch, m, n)
        try:
            sa_dg = dg.get_mn_major_tma_aligned_tensor(lhs.scales)
            record["deepgemm"] = bench.measure(
                label, "deepgemm", lambda: dg.fp8_gemm_nt((lhs.data, sa_dg), (rhs.data, rhs.scales), d),
                lambda _: calc_diff(torch, d, reference), REFERENCE_LIMIT, iters, only=("gemm",))
        except Exception as err:
            record["deepgemm"] = {"impl": "deepgemm", "ok": False, "error": describe_error(err)}
    bench.time_queued()
    _add_rates(record, flops, nbytes)
    return record


def _cublas_rowwise_fallback(bench: Bench, label: str, lhs: Lhs, rhs: Rhs, refused: dict[str, Any],
                             iters: int) -> dict[str, Any]:
    torch = bench.torch
    print(f"  ! {label}: cuBLAS blockwise refused ({refused['variant_errors'][:1]}); timing ROW-WISE scaling instead",
          flush=True)
    reference = lhs.data.to(torch.float64) @ rhs.data.to(torch.float64).t()  # unit scales
    record = bench.measure(label, "cublas", scaled_mm_rowwise(torch, lhs.data, rhs.data),
                           lambda r: calc_diff(torch, r, reference), REFERENCE_LIMIT, iters)
    record.update(recipe="rowwise", variant="rowwise: scale_a (M,1), scale_b (1,N), ones",
                  note="cuBLAS refused blockwise scaling here; ROW-WISE scaling timed instead "
                       "(a coarser recipe, not pydg's numerics)", blockwise_errors=refused["variant_errors"])
    return record


def _add_rates(record: dict[str, Any], flops: int, nbytes: int) -> None:
    """TFLOPS and GB/s of every timed implementation in a record, and pydg's speedups over the others."""
    for impl in ("pydg", "cublas", "deepgemm", "cublas_loop", "scaled_grouped_mm", "pydg_dense_same_m"):
        entry = record.get(impl)
        if entry and entry.get("ok"):
            entry["tflops"] = tflops(flops, entry["us"])
            entry["gbps"] = gbps(nbytes, entry["us"])
    pydg = record["pydg"]
    pydg_us = pydg.get("us") if pydg.get("ok") else None
    for impl in ("cublas", "deepgemm", "cublas_loop", "scaled_grouped_mm"):
        entry = record.get(impl)
        if entry is not None:
            record[f"speedup_vs_{impl}"] = speedup(pydg_us, entry.get("us") if entry.get("ok") else None)
            ours, theirs = pydg.get("us_rounds"), entry.get("us_rounds")
            if pydg_us is not None and entry.get("ok") and ours and theirs and len(ours) == len(theirs):
                # Round by round: how far the ratio moves within one run.
                record[f"speedup_vs_{impl}_rounds"] = [round(b / a, 4) for a, b in zip(ours, theirs)]


def run_dense_section(bench: Bench, section: str, shapes: Sequence[tuple[int, int, int]],
                      iters_for: Callable[[int, int, int], int]) -> list[dict[str, Any]]:
    """Each (N, K)'s B is quantized once and shared by its M values; records keep the list's order."""
    torch = bench.torch
    torch.manual_seed(0)
    by_nk: dict[tuple[int, int], list[int]] = defaultdict(list)
    for m, n, k in shapes:
        by_nk[(n, k)].append(m)
    records: dict[tuple[int, int, int], dict[str, Any]] = {}
    for (n, k), ms in by_nk.items():
        if bench.out_of_time():
            break
        try:
            rhs = make_rhs(torch, bench.pydg, (n, k))
        except Exception as err:
            for m in ms:
                records[(m, n, k)] = _failed_record(section, m, n, k, err)
            continue
        for m in ms:
            if bench.out_of_time():
                break
            try:
                records[(m, n, k)] = _dense_case(bench, section, m, rhs, iters_for(m, n, k))
            except Exception as err:  # data preparation itself failed (e.g. out of memory)
                bench.queued.clear()  # what the case checked before it failed is not timed
                records[(m, n, k)] = _failed_record(section, m, n, k, err)
            bench.report.add(records[(m, n, k)])
            _print_dense_row(records[(m, n, k)])
        del rhs
        torch.cuda.empty_cache()
    ordered = [records[s] for s in shapes if s in records]
    skipped = [s for s in shapes if s not in records]
    if skipped:
        print(f"  ! {section}: {len(skipped)} shapes skipped (--max-seconds reached)", flush=True)
        bench.report.add({"section": section, "skipped_for_time": [list(s) for s in skipped]})
    print(f"\n== {section}: kernel time (profiler, L2 flushed), speedup = other us / pydg us ==")
    print(dense_table(ordered))
    return ordered


def _failed_record(section: str, m: int, n: int, k: int, err: BaseException) -> dict[str, Any]:
    print(f"  ! {section} {shape_label(m, n, k)}: setup failed: {describe_error(err)}", flush=True)
    return {"section": section, "m": m, "n": n, "k": k,
            "pydg": {"impl": "pydg", "ok": False, "error": "setup failed: " + describe_error(err)}}


def _print_dense_row(record: dict[str, Any]) -> None:
    def us(impl: str) -> str:
        entry = record.get(impl) or {}
        return f"{entry['us']:.1f}us" if entry.get("ok") else "FAIL" if entry else "-"

    diff = record["pydg"].get("diff")
    print(f"{record['section']} {shape_label(record['m'], record['n'], record['k'])}: pydg {us('pydg')} "
          f"(diff {diff if diff is None else f'{diff:.2e}'}), cuBLAS {us('cublas')}, DeepGEMM {us('deepgemm')}",
          flush=True)


def _value(record: dict[str, Any], impl: str, key: str) -> Any:
    entry = record.get(impl) or {}
    return entry.get(key) if entry.get("ok") else None


def dense_table(records: Sequence[dict[str, Any]]) -> str:
    headers = ("M", "N", "K", "pydg us", "TFLOPS", "GB/s", "event us", "cuBLAS us", "TFLOPS", "DG us", "TFLOPS",
               "vs cuBLAS", "vs DG", "diff", "plan")
    rows = []
    for r in records:
        if "m" not in r:
            continue
        pydg_note = _value(r, "pydg", "us") or ("WRONG" if "WRONG" in str(r["pydg"].get("error")) else "FAIL")
        cublas_tag = "" if (r.get("cublas") or {}).get("recipe", "blockwise") == "blockwise" else " (rowwise)"
        vs_cublas = r.get("speedup_vs_cublas")
        rows.append((r["m"], r["n"], r["k"], pydg_note, _value(r, "pydg", "tflops"), _value(r, "pydg", "gbps"),
                     _value(r, "pydg", "us_event"), _value(r, "cublas", "us"), _value(r, "cublas", "tflops"),
                     _value(r, "deepgemm", "us"), _value(r, "deepgemm", "tflops"),
                     None if vs_cublas is None else f"{vs_cublas:.3f}x{cublas_tag}",
                     None if r.get("speedup_vs_deepgemm") is None else f"{r['speedup_vs_deepgemm']:.3f}x",
                     None if r["pydg"].get("diff") is None else f"{r['pydg']['diff']:.1e}", r.get("plan_short")))
    return format_table(headers, rows)


def dense_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Geometric-mean speedups; cuBLAS's row-wise fallbacks are kept out of the blockwise mean."""
    blockwise = [r.get("speedup_vs_cublas") for r in records
                 if (r.get("cublas") or {}).get("recipe") == "blockwise"]
    rowwise = [r.get("speedup_vs_cublas") for r in records if (r.get("cublas") or {}).get("recipe") == "rowwise"]
    deepgemm = [r.get("speedup_vs_deepgemm") for r in records]
    return {
        "shapes": len(records),
        "pydg_ok": sum(1 for r in records if r["pydg"].get("ok")),
        "geomean_speedup_vs_cublas_blockwise": geomean(blockwise),
        "shapes_vs_cublas_blockwise": sum(1 for v in blockwise if v),
        "geomean_speedup_vs_cublas_rowwise_fallback": geomean(rowwise),
        "shapes_vs_cublas_rowwise_fallback": sum(1 for v in rowwise if v),
        "geomean_speedup_vs_deepgemm": geomean(deepgemm),
        "shapes_vs_deepgemm": sum(1 for v in deepgemm if v),
        "min_speedup_vs_cublas_blockwise": min((v for v in blockwise if v), default=None),
        "min_speedup_vs_deepgemm": min((v for v in deepgemm if v), default=None),
    }


def print_summary(section: str, summary: dict[str, Any]) -> None:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}x"

    print(f"geomean {section} pydg/cuBLAS-blockwise speedup: {fmt(summary['geomean_speedup_vs_cublas_blockwise'])} "
          f"over {summary['shapes_vs_cublas_blockwise']} of {summary['shapes']} shapes "
          f"(min {fmt(summary['min_speedup_vs_cublas_blockwise'])})")
    if summary["shapes_vs_cublas_rowwise_fallback"]:
        print(f"geomean {section} pydg/cuBLAS-ROWWISE (fallback, coarser recipe) speedup: "
              f"{fmt(summary['geomean_speedup_vs_cublas_rowwise_fallback'])} "
              f"over {summary['shapes_vs_cublas_rowwise_fallback']} shapes")
    print(f"geomean {section} pydg/DeepGEMM speedup: {fmt(summary['geomean_speedup_vs_deepgemm'])} "
          f"over {summary['shapes_vs_deepgemm']} of {summary['shapes']} shapes "
          f"(min {fmt(summary['min_speedup_vs_deepgemm'])})")
    print(f"{section}: pydg correct and timed on {summary['pydg_ok']} of {summary['shapes']} shapes", flush=True)


def section_dense(bench: Bench) -> None:
    records = run_dense_section(bench, "dense", DENSE_SHAPES, lambda m, n, k: bench.iters)
    summary = dense_summary(records)
    bench.report.data["summary"]["dense"] = summary
    print_summary("dense", summary)


def section_shapes(bench: Bench) -> None:
    records = run_dense_section(bench, "shapes", bench.extra_shapes or EXTRA_SHAPES,
                                lambda m, n, k: scaled_iters(gemm_flops(m, n, k), bench.iters))
    summary = dense_summary(records)
    bench.report.data["summary"]["shapes"] = summary
    print_summary("shapes", summary)


# ------------------------------------------------------------------------------- grouped section

def _scaled_grouped_mm(bench: Bench, label: str, a: Any, b: Any, offsets: Any | None,
                       reference: Callable[[], Any], valid_rows: Callable[[Any], Any]) -> dict[str, Any]:
    """torch._scaled_grouped_mm with unit row-wise scales (it takes no block scales): a coarser recipe,
    labelled so. a: (M_sum, K) with `offsets`, or (G, M, K); b: (G, N, K)."""
    torch = bench.torch
    if not hasattr(torch, "_scaled_grouped_mm"):
        return {"impl": "scaled_grouped_mm", "ok": False, "error": "this torch has no _scaled_grouped_mm"}
    groups, n = b.shape[0], b.shape[1]
    rows = a.shape[0] if offsets is not None else a.shape[0] * a.shape[1]
    scale_shapes = ([((rows,), (groups, n)), ((rows, 1), (groups, 1, n))] if offsets is not None else
                    [((a.shape[0], a.shape[1]), (groups, n)), ((rows,), (groups * n,))])
    b_t = b.transpose(-2, -1)  # (G, K, N) column-major: what the grouped kernel expects
    try:
        expected = reference()
    except Exception as err:
        return {"impl": "scaled_grouped_mm", "ok": False, "error": "reference failed: " + describe_error(err)}
    errors = []
    for shape_a, shape_b in scale_shapes:
        scale_a = torch.ones(shape_a, device="cuda", dtype=torch.float32)
        scale_b = torch.ones(shape_b, device="cuda", dtype=torch.float32)

        def fn(scale_a=scale_a, scale_b=scale_b):
            return torch._scaled_grouped_mm(a, b_t, scale_a, scale_b, offs=offsets, out_dtype=torch.bfloat16)
        record = bench.measure(label, "scaled_grouped_mm", fn, lambda r: calc_diff(torch, valid_rows(r), expected),
                               REFERENCE_LIMIT, bench.iters)
        if record["ok"] or "WRONG" in str(record.get("error")):
            record.update(recipe="rowwise", scale_shapes=[list(shape_a), list(shape_b)],
                          note="torch._scaled_grouped_mm takes row-wise scales only: unit row-wise scales timed "
                               "(a coarser recipe than pydg's)")
            return record
        errors.append(f"scales {list(shape_a)}, {list(shape_b)}: {record.get('error', '?')}")
    return {"impl": "scaled_grouped_mm", "ok": False, "recipe": "rowwise", "error": "; ".join(errors)[:600]}


def _setup_deep_gemm_alignment(bench: Bench) -> None:
    dg = bench.deep_gemm
    try:
        dg.set_mk_alignment_for_contiguous_layout(dg.get_theoretical_mk_alignment_for_contiguous_layout())
    except Exception as err:  # older/newer API: DeepGEMM's default alignment then applies
        print(f"  note: DeepGEMM alignment API: {describe_error(err)[:200]}", flush=True)


def _contiguous_case(bench: Bench, groups: int, m_per_group: int, n: int, k: int) -> dict[str, Any]:
    torch, pydg, dg = bench.torch, bench.pydg, bench.deep_gemm
    m = groups * m_per_group
    label = f"contiguous {groups}x{m_per_group}x{n}x{k}"
    flops, nbytes = gemm_flops(m, n, k), gemm_bytes(m, n, k, num_weights=groups)
    record: dict[str, Any] = {"section": "contiguous", "groups": groups, "m_per_group": m_per_group, "n": n, "k": k,
                              "flops": flops, "bytes": nbytes}
    record["plan"], record["plan_short"] = bench.pydg_plan(m, n, k, mode="contiguous", num_groups=groups)
    lhs = make_lhs(torch, pydg, (m, k))
    rhs = make_rhs(torch, pydg, (groups, n, k))
    segments = [slice(g * m_per_group, (g + 1) * m_per_group) for g in range(groups)]
    reference = torch.cat([lhs.values[s] @ rhs.values[g].t() for g, s in enumerate(segments)])
    m_indices = torch.arange(groups, device="cuda", dtype=torch.int32).repeat_interleave(m_per_group)

    out = nan_output(torch, m, n)
    record["pydg"] = bench.measure(
        label, "pydg", lambda: pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous(
            (lhs.data, lhs.scales_tma), (rhs.data, rhs.scales), out, m_indices),
        lambda _: calc_diff(torch, out, reference), DIFF_LIMIT, bench.iters)

    if dg is not None:
        d = nan_output(torch, m, n)
        try:
            sa_dg = dg.get_mn_major_tma_aligned_tensor(lhs.scales)
            record["deepgemm"] = bench.measure(
                label, "deepgemm", lambda: dg.m_grouped_fp8_gemm_nt_contiguous(
                    (lhs.data, sa_dg), (rhs.data, rhs.scales), d, m_indices),
                lambda _: calc_diff(torch, d, reference), REFERENCE_LIMIT, bench.iters, only=("gemm",))
        except Exception as err:
            record["deepgemm"] = {"impl": "deepgemm", "ok": False, "error": describe_error(err)}

    per_group = [(lhs.data[s], lhs.scales[s].contiguous(), rhs.data[g], rhs.scales[g]) for g, s in enumerate(segments)]
    record["cublas_loop"] = bench.cublas_blockwise(
        label, "cublas_loop", per_group, lambda rs: calc_diff(torch, torch.cat(rs), reference), bench.iters,
        loop=True)

    offsets = torch.arange(1, groups + 1, device="cuda", dtype=torch.int32) * m_per_group

    def unscaled_reference():
        return torch.cat([lhs.data[s].to(torch.float64) @ rhs.data[g].to(torch.float64).t()
                          for g, s in enumerate(segments)])
    record["scaled_grouped_mm"] = _scaled_grouped_mm(bench, label, lhs.data, rhs.data, offsets,
                                                     unscaled_reference, lambda r: r)
    bench.time_queued()
    _add_rates(record, flops, nbytes)
    return record


def _masked_case(bench: Bench, groups: int, m_per_group: int, n: int, k: int) -> dict[str, Any]:
    torch, pydg, dg = bench.torch, bench.pydg, bench.deep_gemm
    m_max = m_per_group  # every row valid, as in DeepGEMM's published masked figures
    label = f"masked {groups}x{m_per_group}x{n}x{k}"
    flops, nbytes = gemm_flops(groups * m_per_group, n, k), gemm_bytes(groups * m_per_group, n, k, num_weights=groups)
    record: dict[str, Any] = {"section": "masked", "groups": groups, "m_per_group": m_per_group, "m_max": m_max,
                              "n": n, "k": k, "flops": flops, "bytes": nbytes}
    record["plan"], record["plan_short"] = bench.pydg_plan(m_max, n, k, mode="masked", num_groups=groups,
                                                           expected_m=m_per_group)
    lhs = make_lhs(torch, pydg, (groups, m_max, k))
    rhs = make_rhs(torch, pydg, (groups, n, k))
    masked_m = torch.full((groups,), m_per_group, device="cuda", dtype=torch.int32)
    reference = torch.stack([lhs.values[g, :m_per_group] @ rhs.values[g].t() for g in range(groups)])

    def valid(x):
        return x[:, :m_per_group]

    out = nan_output(torch, groups, m_max, n)
    record["pydg"] = bench.measure(
        label, "pydg", lambda: pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked(
            (lhs.data, lhs.scales_tma), (rhs.data, rhs.scales), out, masked_m, m_per_group),
        lambda _: calc_diff(torch, valid(out), reference), DIFF_LIMIT, bench.iters)

    if dg is not None:
        d = nan_output(torch, groups, m_max, n)
        try:
            sa_dg = dg.get_mn_major_tma_aligned_tensor(lhs.scales)
            record["deepgemm"] = bench.measure(
                label, "deepgemm", lambda: dg.m_grouped_fp8_gemm_nt_masked(
                    (lhs.data, sa_dg), (rhs.data, rhs.scales), d, masked_m, m_per_group),
                lambda _: calc_diff(torch, valid(d), reference), REFERENCE_LIMIT, bench.iters, only=("gemm",))
        except Exception as err:
            record["deepgemm"] = {"impl": "deepgemm", "ok": False, "error": describe_error(err)}

    per_group = [(lhs.data[g, :m_per_group], lhs.scales[g, :m_per_group].contiguous(), rhs.data[g], rhs.scales[g])
                 for g in range(groups)]
    record["cublas_loop"] = bench.cublas_blockwise(
        label, "cublas_loop", per_group, lambda rs: calc_diff(torch, torch.stack(rs), reference), bench.iters,
        loop=True)

    def unscaled_reference():
        return torch.stack([lhs.data[g, :m_per_group].to(torch.float64) @ rhs.data[g].to(torch.float64).t()
                            for g in range(groups)])
    record["scaled_grouped_mm"] = _scaled_grouped_mm(bench, label, lhs.data, rhs.data, None, unscaled_reference, valid)

    # The dense kernel at the same total M (one weight matrix): the yardstick of the masked target.
    dense_m = groups * m_per_group
    dense_lhs, dense_rhs = make_lhs(torch, pydg, (dense_m, k)), make_rhs(torch, pydg, (n, k))
    dense_reference = dense_lhs.values @ dense_rhs.values.t()
    dense_out = nan_output(torch, dense_m, n)
    record["pydg_dense_same_m"] = bench.measure(
        label, "pydg-dense", lambda: pydg.gemm_fp8_fp8_bf16_nt(
            (dense_lhs.data, dense_lhs.scales_tma), (dense_rhs.data, dense_rhs.scales), dense_out),
        lambda _: calc_diff(torch, dense_out, dense_reference), DIFF_LIMIT, bench.iters)
    bench.time_queued()
    _add_rates(record, flops, nbytes)
    masked_us = _value(record, "pydg", "us")
    dense_us = _value(record, "pydg_dense_same_m", "us")
    ratio = dense_us / masked_us if masked_us and dense_us else None
    record["masked_over_dense_speed"] = ratio
    record["meets_masked_target"] = None if ratio is None else ratio >= MASKED_TARGET
    return record


def grouped_table(records: Sequence[dict[str, Any]]) -> str:
    headers = ("layout", "G", "M/G", "N", "K", "pydg us", "TFLOPS", "DG us", "TFLOPS", "cuBLAS loop us",
               "grouped_mm us", "vs DG", "vs loop", "vs grouped_mm", "masked/dense", "diff", "plan")
    rows = []
    for r in records:
        def x(key: str) -> str | None:
            v = r.get(key)
            return None if v is None else f"{v:.3f}x"
        pydg_us = _value(r, "pydg", "us") or ("WRONG" if "WRONG" in str(r["pydg"].get("error")) else "FAIL")
        rows.append((r["section"], r["groups"], r["m_per_group"], r["n"], r["k"], pydg_us, _value(r, "pydg", "tflops"),
                     _value(r, "deepgemm", "us"), _value(r, "deepgemm", "tflops"), _value(r, "cublas_loop", "us"),
                     _value(r, "scaled_grouped_mm", "us"), x("speedup_vs_deepgemm"), x("speedup_vs_cublas_loop"),
                     x("speedup_vs_scaled_grouped_mm"),
                     None if r.get("masked_over_dense_speed") is None else f"{r['masked_over_dense_speed']:.2f}",
                     None if r["pydg"].get("diff") is None else f"{r['pydg']['diff']:.1e}", r.get("plan_short")))
    return format_table(headers, rows)


def section_grouped(bench: Bench) -> None:
    torch = bench.torch
    torch.manual_seed(1)
    if bench.deep_gemm is not None:
        _setup_deep_gemm_alignment(bench)
    cases = ([(_contiguous_case, shape) for shape in CONTIGUOUS_SHAPES]
             + [(_masked_case, shape) for shape in MASKED_SHAPES])
    records = []
    for case, (groups, m_per_group, n, k) in cases:
        if bench.out_of_time():
            print("  ! grouped: --max-seconds reached, remaining shapes skipped", flush=True)
            break
        kind = "contiguous" if case is _contiguous_case else "masked"
        try:
            record = case(bench, groups, m_per_group, n, k)
        except Exception as err:  # data preparation failed
            bench.queued.clear()
            print(f"  ! {kind} {groups}x{m_per_group}x{n}x{k}: setup failed: {describe_error(err)}", flush=True)
            record = {"section": kind, "groups": groups, "m_per_group": m_per_group, "n": n, "k": k,
                      "pydg": {"impl": "pydg", "ok": False, "error": "setup failed: " + describe_error(err)}}
        records.append(record)
        bench.report.add(record)
        torch.cuda.empty_cache()
    print("\n== grouped: kernel time (profiler, L2 flushed); grouped_mm = torch._scaled_grouped_mm, ROW-WISE scales ==")
    print(grouped_table(records))
    summary = {
        "geomean_speedup_vs_deepgemm": geomean(r.get("speedup_vs_deepgemm") for r in records),
        "geomean_speedup_vs_cublas_loop": geomean(r.get("speedup_vs_cublas_loop") for r in records),
        "geomean_speedup_vs_scaled_grouped_mm_rowwise": geomean(r.get("speedup_vs_scaled_grouped_mm") for r in records),
        "masked_meeting_target": sum(1 for r in records if r.get("meets_masked_target")),
        "masked_shapes": sum(1 for r in records if r["section"] == "masked"),
        "pydg_ok": sum(1 for r in records if r["pydg"].get("ok")),
        "shapes": len(records),
    }
    bench.report.data["summary"]["grouped"] = summary
    for key, name in (("geomean_speedup_vs_deepgemm", "DeepGEMM"),
                      ("geomean_speedup_vs_cublas_loop", "cuBLAS-blockwise-per-group-loop"),
                      ("geomean_speedup_vs_scaled_grouped_mm_rowwise", "torch._scaled_grouped_mm-ROWWISE")):
        value = summary[key]
        print(f"geomean grouped pydg/{name} speedup: {'n/a' if value is None else f'{value:.3f}x'}")
    print(f"grouped: masked within {100 - MASKED_TARGET * 100:.0f}% of dense on {summary['masked_meeting_target']} "
          f"of {summary['masked_shapes']}; pydg correct on {summary['pydg_ok']} of {summary['shapes']}", flush=True)


# ---------------------------------------------------------------------------------- host section

def _host_impl(bench: Bench, label: str, impl: str, fn: Callable[[], Any], check: Callable[[Any], float],
               limit: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    record = bench.measure(label, impl, fn, check, limit, iters=20)
    bench.time_queued()
    record.update(extra or {})
    if record["ok"]:
        try:
            record["host_us_per_call"], record["wall_us_per_call_synced"], record["host_us_batches"] = \
                bench.timer.host_us(fn)
            record["calls"], record["batches"] = HOST_CALLS, HOST_BATCHES
        except Exception as err:
            record.update(ok=False, error=describe_error(err))
    return record


def _host_case(bench: Bench, m: int, n: int, k: int) -> dict[str, Any]:
    torch, pydg, dg = bench.torch, bench.pydg, bench.deep_gemm
    label = f"host {shape_label(m, n, k)}"
    lhs, rhs = make_lhs(torch, pydg, (m, k)), make_rhs(torch, pydg, (n, k))
    reference = lhs.values @ rhs.values.t()
    record: dict[str, Any] = {"section": "host", "m": m, "n": n, "k": k, "impls": {}}
    out = nan_output(torch, m, n)
    record["impls"]["pydg"] = _host_impl(
        bench, label, "pydg",
        lambda: pydg.gemm_fp8_fp8_bf16_nt((lhs.data, lhs.scales_tma), (rhs.data, rhs.scales), out),
        lambda _: calc_diff(torch, out, reference), DIFF_LIMIT)

    def check(r):
        return calc_diff(torch, r, reference)
    name, fn, errors = bench.find_blockwise([(lhs.data, lhs.scales, rhs.data, rhs.scales)], check)
    if fn is not None:
        record["impls"]["cublas"] = _host_impl(bench, label, "cublas", fn, check, REFERENCE_LIMIT,
                                               {"recipe": "blockwise", "variant": name})
    else:
        print(f"  ! {label}: cuBLAS blockwise refused; timing ROW-WISE scaling instead", flush=True)
        unscaled = lhs.data.to(torch.float64) @ rhs.data.to(torch.float64).t()
        record["impls"]["cublas-rowwise"] = _host_impl(
            bench, label, "cublas-rowwise", scaled_mm_rowwise(torch, lhs.data, rhs.data),
            lambda r: calc_diff(torch, r, unscaled), REFERENCE_LIMIT,
            {"recipe": "rowwise", "note": "cuBLAS refused blockwise scaling here; ROW-WISE scaling timed instead",
             "blockwise_errors": errors})
    if dg is not None:
        d = nan_output(torch, m, n)
        try:
            sa_dg = dg.get_mn_major_tma_aligned_tensor(lhs.scales)
            record["impls"]["deepgemm"] = _host_impl(
                bench, label, "deepgemm", lambda: dg.fp8_gemm_nt((lhs.data, sa_dg), (rhs.data, rhs.scales), d),
                lambda _: calc_diff(torch, d, reference), REFERENCE_LIMIT)
        except Exception as err:
            record["impls"]["deepgemm"] = {"impl": "deepgemm", "ok": False, "error": describe_error(err)}
    return record


def section_host(bench: Bench) -> None:
    bench.torch.manual_seed(2)
    rows = []
    for m, n, k in HOST_SHAPES:
        try:
            record = _host_case(bench, m, n, k)
        except Exception as err:  # data preparation failed
            bench.queued.clear()
            print(f"  ! host {shape_label(m, n, k)}: setup failed: {describe_error(err)}", flush=True)
            record = {"section": "host", "m": m, "n": n, "k": k,
                      "impls": {"pydg": {"impl": "pydg", "ok": False, "error": "setup failed: " + describe_error(err)}}}
        bench.report.add(record)
        for impl, entry in record["impls"].items():
            rows.append((shape_label(m, n, k), impl, entry.get("host_us_per_call"),
                         entry.get("wall_us_per_call_synced"), entry.get("us") if entry.get("ok") else None,
                         None if entry.get("ok") else str(entry.get("error", ""))[:60]))
    print(f"\n== host: {HOST_BATCHES} batches of {HOST_CALLS} back-to-back calls on the same arrays, the median "
          "batch; host us = Python wall time per call until the batch's last call returned; synced = until the "
          "GPU finished ==")
    print(format_table(("shape", "impl", "host us/call", "wall us/call (synced)", "kernel us", "error"), rows))


# ------------------------------------------------------------------------------------------- plot

def plot_dense(records: Sequence[dict[str, Any]], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no plot written to {path}")
        return
    records = [r for r in records if r.get("section") == "dense" and "m" in r]
    if not records:
        print("no dense records: no plot written")
        return
    impls = (("pydg", "pydg"), ("cublas", "cuBLAS (torch._scaled_mm)"), ("deepgemm", "DeepGEMM"))
    width = 0.27
    fig, ax = plt.subplots(figsize=(max(10, len(records) * 0.9), 5))
    for i, (impl, name) in enumerate(impls):
        values = [_value(r, impl, "tflops") or 0.0 for r in records]
        ax.bar([x + (i - 1) * width for x in range(len(records))], values, width, label=name)
    ax.set_xticks(range(len(records)))
    ax.set_xticklabels([shape_label(r["m"], r["n"], r["k"]) for r in records], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("TFLOPS (kernel time, L2 flushed)")
    meta = bench_title()
    ax.set_title(f"FP8 GEMM, 1x128/128x128 scaling{meta}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot written to {path}")


def bench_title() -> str:
    try:
        import torch

        return f" on {torch.cuda.get_device_name(0)}"
    except Exception:
        return ""


# -------------------------------------------------------------------------------------------- CLI

def shape_list(text: str) -> list[tuple[int, int, int]]:
    """'1,2048,2048;37,2048,2048' -> [(1, 2048, 2048), (37, 2048, 2048)]."""
    try:
        shapes = [tuple(int(v) for v in item.split(",")) for item in text.split(";") if item.strip()]
    except ValueError:
        shapes = []
    if not shapes or any(len(shape) != 3 or min(shape) < 1 for shape in shapes):
        raise argparse.ArgumentTypeError(f"expected M,N,K[;M,N,K...] of positive ints, got {text!r}")
    return shapes


def build_parser() -> argparse.ArgumentParser:
    def sections(text: str) -> list[str]:
        try:
            return parse_sections(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parser = argparse.ArgumentParser(
        prog="python -m pydg bench",
        description="pydg's FP8 GEMMs beside cuBLAS (torch._scaled_mm) and DeepGEMM (if importable), "
                    "same GPU, same run: kernel time from the torch profiler with the L2 flushed.")
    parser.add_argument("--what", type=sections, default=parse_sections(DEFAULT_SECTIONS),
                        help=f"comma-separated subset of {', '.join(SECTIONS)} (default {DEFAULT_SECTIONS})")
    parser.add_argument("--json", metavar="PATH", help="write metadata and every record to this JSON file")
    parser.add_argument("--plot", metavar="PNG", help="bar chart of TFLOPS per dense shape (needs matplotlib)")
    parser.add_argument("--iters", type=int, default=DEFAULT_ITERS, help=f"timed calls per measurement "
                        f"(default {DEFAULT_ITERS}; 'shapes' uses fewer for big GEMMs)")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help=f"rounds that share each shape's timed calls, the order of the implementations "
                        f"rotated each round (default {DEFAULT_ROUNDS}; 1: each timed back to back, in call order)")
    parser.add_argument("--shapes", type=shape_list, default=None, metavar="M,N,K[;M,N,K...]",
                        help="the dense shapes of the 'shapes' section (default: the 54 of EXTRA_SHAPES)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop starting new shapes after this many seconds (the rest are recorded as skipped)")
    return parser


def _import_deep_gemm() -> tuple[Any | None, str | None]:
    try:
        import deep_gemm
    except Exception as err:  # absent or broken build: compare without it
        return None, describe_error(err)
    return deep_gemm, None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # torch warns once per profiling session that events are per cycle: each session here is one cycle.
    warnings.filterwarnings("ignore", message=".*Profiler clears events at the end of each cycle.*")
    if args.iters < 1:
        build_parser().error("--iters: expected a positive number of calls")
    if args.rounds < 1:
        build_parser().error("--rounds: expected a positive number of rounds")
    try:
        import torch
    except ImportError:
        print("pydg bench needs PyTorch (with CUDA) to make data and to time with its profiler", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("pydg bench needs a CUDA GPU (an sm_90 Hopper for pydg's kernels); none is visible", file=sys.stderr)
        return 2
    import pydg

    deep_gemm, dg_error = _import_deep_gemm()
    metadata = collect_metadata(torch, deep_gemm, dg_error, sys.argv[1:] if argv is None else argv)
    print(f"pydg {metadata['pydg']} ({metadata['git_commit'] or 'no git commit'}) on {metadata['gpu']}, driver "
          f"{metadata['driver']}, torch {metadata['torch']}, NVRTC {metadata['nvrtc']}; DeepGEMM: "
          f"{'present' if deep_gemm is not None else 'absent (' + str(dg_error)[:120] + ')'}", flush=True)
    deadline = time.monotonic() + args.max_seconds if args.max_seconds else None
    metadata["rounds"] = args.rounds
    bench = Bench(torch, pydg, Timer(torch), deep_gemm, args.iters, Report(args.json, metadata), deadline,
                  extra_shapes=args.shapes, rounds=args.rounds)
    runners = {"dense": section_dense, "grouped": section_grouped, "host": section_host, "shapes": section_shapes}
    for section in args.what:
        started = time.monotonic()
        print(f"\n#### {section}", flush=True)
        try:
            runners[section](bench)
        except Exception as err:  # a whole section broke (e.g. a sticky CUDA error): keep the others
            print(f"!! section {section} failed: {describe_error(err)}", flush=True)
            bench.report.data["summary"][f"{section}_error"] = describe_error(err)
        bench.report.data["summary"][f"{section}_seconds"] = round(time.monotonic() - started, 1)
        bench.report.save()
    bench.report.data["summary"]["pydg_failures"] = bench.pydg_failures
    bench.report.data["summary"]["outliers"] = bench.outliers
    bench.report.save()
    if args.plot:
        try:
            plot_dense(bench.report.records, args.plot)
        except Exception as err:  # a plot is a convenience: never fail the run for it
            print(f"plot failed: {describe_error(err)}")
    if bench.outliers:
        print(f"\n~ {len(bench.outliers)} means moved by a slow call (headline kept as measured; re-time these):")
        for line in bench.outliers:
            print(f"~   {line}")
    if bench.pydg_failures:
        print(f"\n!! {len(bench.pydg_failures)} pydg measurements FAILED (wrong result or error):")
        for line in bench.pydg_failures:
            print(f"!!   {line}")
    if args.json:
        print(f"records written to {args.json}")
    return 1 if bench.pydg_failures else 0


if __name__ == "__main__":
    sys.exit(main())

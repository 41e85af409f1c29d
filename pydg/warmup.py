"""Compile ahead of time every kernel a model's GEMMs can need (`pydg compile` / `pydg warmup`).

A *layer* is a GEMM whose weights are fixed (N, K and, for MoE layers, the group count) and whose M
varies with the batch. M counts rows per group, as CONTRACT.md writes grouped shapes: a dense layer
is planned at M, a contiguous one at M_sum = groups x M, a masked one with expected_m = M (M_max:
the layer's `m_max`, else the largest M). The warm-up plans every (layer, M), keeps the distinct
kernels, and compiles those missing from the disk cache in parallel processes.

Planning every M of 1..16384 for many layers would take minutes (a plan costs about 1 ms), so
the search uses the shape of the heuristics: inside one 64-row block of M (block_m is 64 or 128)
the tile counts are fixed and only the DRAM floor of the time estimate grows with M, so the chosen
kernel can only move forward along the tie-break order, never come back. Two ends that agree
therefore cover everything between them, and ends that differ are bisected. `exhaustive=True`
plans every M instead (tests/test_warmup.py checks that both find the same kernels).

The kernels a request needs are remembered in the cache directory (`warmup-<hash>.json`, keyed by
the request, pydg's version and the scheduler's source text), so a warm start plans nothing: it
reads that list and checks each entry's checksum.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import pathlib
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

from pydg.scheduler.heuristics import choose_plan
from pydg.scheduler.plan import GemmPlan
from pydg.version import __version__

LAYOUTS = ("dense", "contiguous", "masked")
DEFAULT_M = tuple(range(1, 16385))
SEGMENT_ROWS = 64      # the smallest block_m: tile counts are constant inside one such block of rows
CHUNK_M = 2048         # M values per planning task handed to a worker process
SCHEDULER_DIR = pathlib.Path(__file__).resolve().parent / "scheduler"


@dataclass(frozen=True)
class Layer:
    """One GEMM of a model: its layout, N, K, groups (MoE) and, for masked layers, M_max."""
    layout: str = "dense"
    n: int = 0
    k: int = 0
    num_groups: int = 1
    m_max: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        what = f"layer {self.name!r}" if self.name else "layer"
        if self.layout not in LAYOUTS:
            raise ValueError(f"{what}: layout: expected one of {LAYOUTS}, got {self.layout!r}")
        for attr in ("n", "k", "num_groups"):
            value = getattr(self, attr)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{what}: {attr}: expected a positive int, got {value!r}")
        if self.n % 8 or self.k % 16:
            raise ValueError(f"{what}: expected n a multiple of 8 and k of 16, got n={self.n} k={self.k}")
        if self.layout == "dense" and self.num_groups != 1:
            raise ValueError(f"{what}: groups: expected 1 for a dense layer, got {self.num_groups}")
        if self.m_max is not None and (self.layout != "masked" or not isinstance(self.m_max, int) or self.m_max < 1):
            raise ValueError(f"{what}: m_max: expected a positive int on a masked layer, got {self.m_max!r}")

    def label(self) -> str:
        groups = f"{self.num_groups}x" if self.layout != "dense" else ""
        return f"{self.layout}:{groups}{self.n}x{self.k}" + (f" ({self.name})" if self.name else "")

    def plan(self, m: int, num_sms: int, m_top: int) -> GemmPlan:
        """The plan at M rows (per group); m_top is the largest M asked for (masked M_max default)."""
        if self.layout == "dense":
            return choose_plan("dense", m, self.n, self.k, 1, num_sms)
        if self.layout == "contiguous":
            return choose_plan("contiguous", self.num_groups * m, self.n, self.k, self.num_groups, num_sms)
        m_max = self.m_max or m_top
        return choose_plan("masked", m_max, self.n, self.k, self.num_groups, num_sms, expected_m=min(m, m_max))

    def tile_rows(self, m: int) -> int:
        """The rows whose 64-row block fixes the tile counts at M."""
        return self.num_groups * m if self.layout == "contiguous" else m


# ---- what users write: shapes, M lists, JSON files -------------------------------------------

_SHAPE = re.compile(r"^(?:(dense|contiguous|masked):)?(?:(\d+)x)?(\d+)x(\d+)$")


def parse_layer(text: str) -> Layer:
    """`NxK` or `dense:NxK` (dense), `contiguous:GxNxK`, `masked:GxNxK`."""
    found = _SHAPE.match(text.strip())
    if found is None:
        raise ValueError(f"shape: expected NxK, dense:NxK, contiguous:GxNxK or masked:GxNxK, got {text!r}")
    layout, groups, n, k = found.groups()
    layout = layout or "dense"
    if layout != "dense" and groups is None:
        raise ValueError(f"shape: expected {layout}:GxNxK (G groups), got {text!r}")
    if layout == "dense" and groups is not None:
        raise ValueError(f"shape: expected NxK for a dense layer, got {text!r}")
    return Layer(layout, int(n), int(k), int(groups or 1))


def parse_m_list(text: str) -> tuple[int, ...]:
    """`1-16384`, `1,2,4,128`, or both: `1-64,128,4096`. Sorted, duplicates dropped."""
    values: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        found = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if found is None:
            raise ValueError(f"m: expected a list like 1-16384 or 1,2,4,128, got {text!r}")
        lo, hi = int(found.group(1)), int(found.group(2) or found.group(1))
        if lo < 1 or hi < lo:
            raise ValueError(f"m: expected positive ranges lo-hi with lo <= hi, got {part!r}")
        values.update(range(lo, hi + 1))
    return tuple(sorted(values))


def load_model_file(path: str | os.PathLike) -> tuple[list[Layer], tuple[int, ...] | None]:
    """The layers (and optional M list) of a JSON file:

        {"m": "1-16384",                       (optional; a string as for --m, or a list of ints)
         "layers": [{"name": "attn.q_b", "n": 24576, "k": 1536},
                    {"name": "moe.up", "layout": "contiguous", "groups": 8, "n": 4096, "k": 7168},
                    {"name": "moe.decode", "layout": "masked", "groups": 8, "n": 4096, "k": 7168,
                     "m_max": 256}]}

    A bare list of layer objects is read as {"layers": [...]}."""
    data = json.loads(pathlib.Path(path).read_text())
    if isinstance(data, list):
        data = {"layers": data}
    if not isinstance(data, dict) or not isinstance(data.get("layers"), list) or not data["layers"]:
        raise ValueError(f"{path}: expected an object with a non-empty \"layers\" list, got {type(data).__name__}")
    layers = []
    for i, item in enumerate(data["layers"]):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: layers[{i}]: expected an object, got {item!r}")
        unknown = set(item) - {"name", "layout", "n", "k", "groups", "m_max"}
        if unknown:
            raise ValueError(f"{path}: layers[{i}]: unknown keys {sorted(unknown)} (expected name, layout, n, k, "
                             "groups, m_max)")
        layers.append(Layer(item.get("layout", "dense"), item.get("n"), item.get("k"), item.get("groups", 1),
                            item.get("m_max"), str(item.get("name", f"layers[{i}]"))))
    ms = data.get("m")
    if ms is None:
        return layers, None
    if isinstance(ms, str):
        return layers, parse_m_list(ms)
    if not isinstance(ms, list) or not all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in ms):
        raise ValueError(f"{path}: m: expected a string like \"1-16384\" or a list of positive ints, got {ms!r}")
    return layers, tuple(sorted(set(ms)))


def contract_layers() -> list[Layer]:
    """The 18 dense and 10 grouped shapes of CONTRACT.md's performance table, as layers."""
    from pydg.bench import CONTIGUOUS_SHAPES, DENSE_NK, MASKED_SHAPES

    layers = [Layer("dense", n, k) for n, k in DENSE_NK]
    layers += [Layer("contiguous", n, k, g) for g, _, n, k in CONTIGUOUS_SHAPES]
    layers += [Layer("masked", n, k, g) for g, _, n, k in MASKED_SHAPES]
    return layers


# ---- finding the distinct kernels --------------------------------------------------------------

def kernel_identity(plan: GemmPlan) -> tuple:
    """Equal for two plans exactly when they compile to the same kernel (the -D values)."""
    return tuple(sorted(plan.defines().items()))


def distinct_plans(layer: Layer, ms: Sequence[int], num_sms: int, m_top: int,
                   exhaustive: bool = False) -> list[GemmPlan]:
    """One plan per distinct kernel that `layer` needs over the (sorted) M values `ms`."""
    found: dict[tuple, GemmPlan] = {}
    planned: dict[int, tuple] = {}

    def identity(i: int) -> tuple:
        if i not in planned:
            plan = layer.plan(ms[i], num_sms, m_top)
            planned[i] = kernel_identity(plan)
            found.setdefault(planned[i], plan)
        return planned[i]

    def search(lo: int, hi: int) -> None:
        if hi - lo <= 1 or identity(lo) == identity(hi):
            identity(lo), identity(hi)
            return
        mid = (lo + hi) // 2
        search(lo, mid)
        search(mid, hi)

    if exhaustive:
        for i in range(len(ms)):
            identity(i)
        return list(found.values())
    start = 0
    for i in range(1, len(ms) + 1):
        if i == len(ms) or _segment(layer, ms[i]) != _segment(layer, ms[start]):
            search(start, i - 1)
            start = i
    return list(found.values())


def _segment(layer: Layer, m: int) -> int:
    return (layer.tile_rows(m) - 1) // SEGMENT_ROWS


# ---- the warm-up -------------------------------------------------------------------------------

@dataclass
class WarmupResult:
    layers: int
    m_values: int
    kernels: int                 # distinct kernels the layers need
    compiled: int                # compiled now by NVRTC
    cached: int                  # already in the disk cache
    failed: list[str] = field(default_factory=list)
    plan_seconds: float = 0.0
    compile_seconds: float = 0.0
    total_seconds: float = 0.0
    from_manifest: bool = False  # the kernel list was remembered, nothing was planned

    def summary(self) -> str:
        planned = ("kernel list from the cache's manifest" if self.from_manifest
                   else f"planned in {self.plan_seconds:.1f} s")
        text = (f"{self.layers} layers x {self.m_values} M values -> {self.kernels} distinct kernels ({planned}); "
                f"{self.cached} already cached, {self.compiled} compiled in {self.compile_seconds:.1f} s; "
                f"total {self.total_seconds:.1f} s")
        if self.failed:
            text += f"\n{len(self.failed)} failed:\n  " + "\n  ".join(self.failed)
        return text


class Progress:
    """A one-line text progress bar on stderr (a line per tenth when stderr is not a terminal)."""

    def __init__(self, label: str, total: int, stream=None, enabled: bool = True):
        self.label, self.total, self.done = label, total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and total > 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.perf_counter()
        self._last_tenth = -1
        self._draw()

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        width = 30
        filled = width * self.done // self.total
        line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{time.perf_counter() - self.started:.1f} s")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if self.done >= self.total else ""))
        else:
            tenth = 10 * self.done // self.total
            if tenth == self._last_tenth:
                return
            self._last_tenth = tenth
            self.stream.write(line + "\n")
        self.stream.flush()


def manifest_path(layers: Sequence[Layer], ms: Sequence[int], num_sms: int, exhaustive: bool) -> pathlib.Path:
    """Where the kernel list of this request is remembered: keyed by the request and the code that
    plans (the scheduler's source text), so any change to the heuristics plans again."""
    from pydg.driver import cache

    digest = hashlib.sha256()
    request = {"layers": [asdict(layer) for layer in layers], "m": _compress(ms), "num_sms": num_sms,
               "exhaustive": exhaustive, "pydg": __version__, "search": SEGMENT_ROWS}
    digest.update(json.dumps(request, sort_keys=True).encode())
    for path in sorted(SCHEDULER_DIR.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return cache.cache_dir() / f"{cache.MANIFEST_PREFIX}{digest.hexdigest()[:32]}.json"


def _compress(ms: Sequence[int]) -> list[list[int]]:
    """[[lo, hi], ...] runs of consecutive values."""
    runs: list[list[int]] = []
    for m in ms:
        if runs and runs[-1][1] == m - 1:
            runs[-1][1] = m
        else:
            runs.append([m, m])
    return runs


def _read_manifest(path: pathlib.Path) -> list[GemmPlan] | None:
    try:
        return [GemmPlan(**item) for item in json.loads(path.read_text())["plans"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_manifest(path: pathlib.Path, plans: Iterable[GemmPlan]) -> None:
    from pydg.driver import cache

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache.atomic_write(path, json.dumps({"plans": [asdict(p) for p in plans]}).encode())
    except OSError:
        pass  # only costs planning again next time; an unwritable cache already warned


def _plan_chunk(layer: Layer, ms: tuple[int, ...], num_sms: int, m_top: int, exhaustive: bool) -> list[GemmPlan]:
    return distinct_plans(layer, ms, num_sms, m_top, exhaustive)


def _compile_one(plan: GemmPlan) -> tuple[str, bool, float, str | None]:
    """(key, compiled now?, seconds, error): run in a worker process."""
    from pydg.kernels.source import compile_plan

    started = time.perf_counter()
    try:
        kernel = compile_plan(plan)
    except Exception as err:  # one kernel's failure is reported with the others, not fatal to them
        return "", False, time.perf_counter() - started, f"{type(err).__name__}: {err}"
    return kernel.key, not kernel.from_disk_cache, time.perf_counter() - started, None


def warmup(layers: Sequence[Layer], ms: Sequence[int] = DEFAULT_M, *, num_sms: int = 132, jobs: int | None = None,
           exhaustive: bool = False, replan: bool = False, progress: bool = True,
           executor_factory: Callable[[int], concurrent.futures.Executor] | None = None) -> WarmupResult:
    """Plan every (layer, M), then compile the distinct kernels that the disk cache lacks, in `jobs`
    processes (default: every CPU). `replan` ignores a remembered kernel list."""
    from pydg.driver import cache
    from pydg.kernels.source import cache_key

    if not layers:
        raise ValueError("layers: expected at least one layer, got none")
    ms = tuple(sorted(set(ms)))
    if not ms or ms[0] < 1:
        raise ValueError(f"ms: expected positive M values, got {ms[:3]}...")
    jobs = jobs or os.cpu_count() or 1
    started = time.perf_counter()
    result = WarmupResult(layers=len(layers), m_values=len(ms), kernels=0, compiled=0, cached=0)
    manifest = manifest_path(layers, ms, num_sms, exhaustive)
    plans = None if replan else _read_manifest(manifest)
    result.from_manifest = plans is not None
    make_pool = executor_factory or _process_pool
    pool = None
    try:
        if plans is None:
            tasks = [(layer, ms[i:i + CHUNK_M]) for layer in layers for i in range(0, len(ms), CHUNK_M)]
            bar = Progress("planning", len(tasks), enabled=progress)
            found: dict[tuple, GemmPlan] = {}
            if jobs > 1 and len(tasks) > 1:
                pool = make_pool(jobs)
                futures = [pool.submit(_plan_chunk, layer, chunk, num_sms, ms[-1], exhaustive) for layer, chunk in tasks]
                outcomes = (f.result() for f in concurrent.futures.as_completed(futures))
            else:
                outcomes = (_plan_chunk(layer, chunk, num_sms, ms[-1], exhaustive) for layer, chunk in tasks)
            for chunk_plans in outcomes:
                for plan in chunk_plans:
                    found.setdefault(kernel_identity(plan), plan)
                bar.advance()
            plans = list(found.values())
            _write_manifest(manifest, plans)
        result.plan_seconds = time.perf_counter() - started

        by_key = {cache_key(plan): plan for plan in plans}
        result.kernels = len(by_key)
        missing = [plan for key, plan in by_key.items() if cache.load(key) is None]
        result.cached = result.kernels - len(missing)
        compile_started = time.perf_counter()
        bar = Progress("compiling", len(missing), enabled=progress)
        if jobs > 1 and len(missing) > 1:
            pool = pool or make_pool(jobs)
            outcomes = (f.result() for f in concurrent.futures.as_completed([pool.submit(_compile_one, p)
                                                                             for p in missing]))
        else:
            outcomes = (_compile_one(p) for p in missing)
        for key, compiled_now, _seconds, error in outcomes:
            if error is not None:
                result.failed.append(error)
            elif compiled_now:
                result.compiled += 1
            else:
                result.cached += 1  # another process wrote it meanwhile
            bar.advance()
        result.compile_seconds = time.perf_counter() - compile_started
    finally:
        if pool is not None:
            pool.shutdown()
    result.total_seconds = time.perf_counter() - started
    return result


def _process_pool(jobs: int) -> concurrent.futures.Executor:
    # spawn, not fork: a parent that has touched the CUDA driver cannot fork safely, and workers
    # only need NVRTC and the scheduler.
    return concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))

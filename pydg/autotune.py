"""Opt-in autotuning: at a shape's first call, time the model's best few plans on the GPU and keep the
fastest, remembered in the cache directory for later processes.

Off by default (the default plan is deterministic and known without a GPU: `pydg.plan_gemm`). Turn it
on with PYDG_AUTOTUNE=1 or `pydg.set_autotune(True)`. Tuning launches each candidate on the call's
own arrays and stream (every candidate writes the same elements of `out`, and the call's own launch
follows), so the first call of a shape takes some milliseconds more. A call made while its stream is
being captured into a CUDA graph cannot be timed: it takes the model's plan and tunes nothing.

A record, `autotune-<key>.json`, names the winner and every candidate's time. Its key holds the shape,
the SM count, the GPU's name, pydg's version, the kernel sources and the candidate list, so a change
to any of them tunes again; a damaged record is tuned again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import statistics
import threading
from dataclasses import asdict, replace
from typing import Callable

from pydg import log
from pydg.scheduler.plan import GemmPlan
from pydg.version import __version__

AUTOTUNE = "PYDG_AUTOTUNE"
CANDIDATES = 6   # the model's best plans timed per shape
WARMUP = 2       # launches before timing (the first also loads the module)
REPEATS = 10     # timed launches; the median counts

logger = logging.getLogger("pydg.autotune")
_forced: bool | None = None
_memo: dict[str, GemmPlan] = {}
_memo_lock = threading.Lock()


def set_autotune(on: bool | None) -> None:
    """Turn autotuning on or off for this process (None: follow PYDG_AUTOTUNE again)."""
    global _forced
    if on is not None and not isinstance(on, bool):
        raise TypeError(f"on: expected True, False or None, got {on!r}")
    _forced = on


def enabled() -> bool:
    return _forced if _forced is not None else log.enabled(AUTOTUNE)


def candidates(ranked: list[GemmPlan], count: int = CANDIDATES) -> list[GemmPlan]:
    """The plans to time: the model's first `count`, without repeats, then its first with B's L2 hint
    the other way (heuristics.B_EVICT_FIRST_MAX_READERS rests on timings of a few shapes; near the
    limit either form has won by a few percent) and, in the contiguous layout, with the early start
    the other way (heuristics.EARLY_START_MIN_K_BLOCKS: near it the two forms ran within 0.4%)."""
    chosen: list[GemmPlan] = []
    for plan in ranked:
        if plan not in chosen:
            chosen.append(plan)
        if len(chosen) == count:
            break
    if chosen:
        first = chosen[0]
        others = [replace(first, b_evict_first=not first.b_evict_first)]
        if first.mode == "contiguous" and first.allows_early_start:
            others.append(replace(first, early_start=not first.early_start))
        chosen += [other for other in others if other not in chosen]
    return chosen


def record_key(plans: list[GemmPlan], device_name: str) -> str:
    from pydg.kernels.source import sources

    digest = hashlib.sha256(b"pydg-autotune\0")
    digest.update(json.dumps([asdict(p) for p in plans], sort_keys=True).encode())
    digest.update(repr((device_name, __version__)).encode())
    for name, text in sources().items():
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:32]


def _record_path(key: str):
    from pydg.driver import cache  # NVRTC's bindings load with it: only when a record is read or written

    return cache.cache_dir() / f"{cache.AUTOTUNE_PREFIX}{key}.json"


def load_record(key: str, plans: list[GemmPlan]) -> GemmPlan | None:
    """The remembered winner, if the record is whole and names one of `plans`."""
    try:
        data = json.loads(_record_path(key).read_bytes())
        winner = GemmPlan(**data["winner"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return winner if winner in plans else None


def store_record(key: str, winner: GemmPlan, timings: list[tuple[float, GemmPlan]]) -> None:
    data = {"winner": asdict(winner),
            "timings_us": [{"us": round(seconds * 1e6, 3), "plan": plan.summary()} for seconds, plan in timings]}
    from pydg.driver import cache

    path = _record_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache.atomic_write(path, json.dumps(data, indent=1).encode())
    except OSError as err:
        log.warn(logger, "PYDG_AUTOTUNE: cannot remember the winner in %s: %s", path, err)


def best_plan(plans: list[GemmPlan], device_name: str, time_plan: Callable[[GemmPlan], float]) -> GemmPlan:
    """The fastest of `plans` (the model's choice first): from this process's memory, else from the
    record in the cache directory, else by timing each with `time_plan` (seconds per launch)."""
    key = record_key(plans, device_name)
    with _memo_lock:
        known = _memo.get(key)
    if known is not None:
        return known
    winner = load_record(key, plans)
    if winner is None:
        timings = [(time_plan(plan), plan) for plan in plans]
        winner = min(timings, key=lambda t: t[0])[1]
        store_record(key, winner, timings)
        log.report(AUTOTUNE, logger, "tuned %s: %s (%s)", plans[0].summary().split(",")[0], winner.summary(),
                   ", ".join(f"{s * 1e6:.1f} us" for s, _ in timings))
    with _memo_lock:
        _memo[key] = winner
    return winner


def time_launches(launch: Callable[[], None], stream: int) -> float:
    """Median seconds of one launch on `stream`, by CUDA events around each of REPEATS launches."""
    from cuda.bindings import driver as cu

    from pydg.driver.cuda import check

    handle = cu.CUstream(stream)
    for _ in range(WARMUP):
        launch()
    start = check("cuEventCreate", cu.cuEventCreate(0))
    end = check("cuEventCreate", cu.cuEventCreate(0))
    try:
        times = []
        for _ in range(REPEATS):
            check("cuEventRecord", cu.cuEventRecord(start, handle))
            launch()
            check("cuEventRecord", cu.cuEventRecord(end, handle))
            check("cuEventSynchronize", cu.cuEventSynchronize(end))
            times.append(check("cuEventElapsedTime", cu.cuEventElapsedTime(start, end)) * 1e-3)
    finally:
        cu.cuEventDestroy(start)
        cu.cuEventDestroy(end)
    return statistics.median(times)


def stream_is_capturing(stream: int) -> bool:
    from cuda.bindings import driver as cu

    from pydg.driver.cuda import check

    status = check("cuStreamIsCapturing", cu.cuStreamIsCapturing(cu.CUstream(stream)))
    return status != cu.CUstreamCaptureStatus.CU_STREAM_CAPTURE_STATUS_NONE

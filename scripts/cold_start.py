"""Cold-start numbers for the README: `import pydg`, NVRTC time per kernel variant, cached load.

    python scripts/cold_start.py [--json out.json]

Runs in a fresh temporary cache. Without a GPU the cached load is the disk read only; with one it
also loads the module and fetches the function (cuModuleLoadData + cuModuleGetFunction).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def import_seconds(runs: int = 5) -> float:
    """Median wall time of `import pydg` in a fresh interpreter (the interpreter's start excluded)."""
    code = "import time; t = time.perf_counter(); import pydg; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
             for _ in range(runs)]
    return statistics.median(times)


def variants():
    """One plan per kernel form the heuristics can choose (tests/test_kernels.py's list)."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from test_kernels import VARIANTS

    return VARIANTS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    os.environ["PYDG_CACHE_DIR"] = tempfile.mkdtemp(prefix="pydg-cold-")
    result = {"import_s": import_seconds(), "cpus": os.cpu_count()}
    from pydg.driver import nvrtc
    from pydg.kernels import source

    result["nvrtc"] = nvrtc.version_text()
    compile_s, load_s = {}, {}
    for plan in variants():
        name = f"{plan.mode}-{plan.block_m}x{plan.block_n}-{plan.multicast}"
        source._compiled.clear()
        kernel = source.compile_plan(plan)
        compile_s[name] = kernel.seconds
        source._compiled.clear()
        started = time.perf_counter()
        kernel = source.compile_plan(plan)
        assert kernel.from_disk_cache
        load_s[name] = time.perf_counter() - started
    result["compile_s"] = compile_s
    result["cached_read_s"] = load_s
    print(f"import pydg: {result['import_s'] * 1e3:.0f} ms (median of 5 fresh interpreters)")
    print(f"NVRTC {result['nvrtc']} compile, {len(compile_s)} variants: median {statistics.median(compile_s.values()):.2f} s, "
          f"max {max(compile_s.values()):.2f} s ({max(compile_s, key=compile_s.get)})")
    print(f"cached kernel read from disk: median {statistics.median(load_s.values()) * 1e3:.2f} ms, "
          f"max {max(load_s.values()) * 1e3:.2f} ms")
    try:
        from pydg.driver.cuda import device_count, primary_context
        from pydg.driver.module import get_function

        if device_count() > 0:
            plan = variants()[0]
            started = time.perf_counter()
            primary_context(0)
            result["primary_context_s"] = time.perf_counter() - started
            print(f"primary context (once per process, shared with torch/CuPy): {result['primary_context_s'] * 1e3:.1f} ms")
            source._compiled.clear()
            started = time.perf_counter()
            kernel = source.compile_plan(plan)
            get_function(0, kernel.key, kernel.cubin, source.KERNEL_NAME, plan.smem_bytes)
            result["cached_load_to_function_s"] = time.perf_counter() - started
            print(f"cached kernel to a CUfunction: {result['cached_load_to_function_s'] * 1e3:.2f} ms")
    except Exception as err:  # no driver: the disk read above is the whole cached load
        print(f"(no GPU: module load not measured: {type(err).__name__})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

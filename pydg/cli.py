"""The `pydg` command line (also `python -m pydg`).

    pydg                       plan and compile one GEMM, and on an sm_90 GPU run and check it
    pydg info                  GPU, driver, cuda-bindings, NVRTC, the kernel cache
    pydg plan M N K            what a call of that shape will do (no GPU needed)
    pydg compile SHAPE...      compile ahead of time every kernel the shapes need (alias: warmup)
    pydg bench                 the benchmark against cuBLAS and DeepGEMM (pydg/bench.py)
    pydg cache list|clear      the kernel cache's entries

Every command has --help. Nothing here needs a GPU except the default job's run and `bench`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any, Sequence

DEFAULT_SHAPE = (4096, 7168, 2048)
NUM_SMS_WITHOUT_GPU = 132  # plan as for an H100 SXM where no GPU can be asked
NO_HOPPER = "No Hopper (sm_90) GPU found: compiled and planned only."
COMMANDS = ("info", "plan", "compile", "warmup", "bench", "cache")


# ---- the parser --------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    m, n, k = DEFAULT_SHAPE
    parser = argparse.ArgumentParser(
        prog="pydg",
        description="FP8 GEMMs for NVIDIA Hopper in pure Python (also run as `python -m pydg`). Without a "
                    "command: plan and compile the dense GEMM of --m/--n/--k and, on an sm_90 GPU, run it once "
                    "and check it against a float64 reference.",
        epilog="`pydg COMMAND --help` describes each command. Environment variables: see README "
               "(PYDG_CACHE_DIR, PYDG_JIT_DEBUG, PYDG_PRINT_CONFIGS, PYDG_PTXAS_VERBOSE, PYDG_PTXAS_CHECK, "
               "PYDG_DUMP_PTX, PYDG_DUMP_SASS).")
    parser.add_argument("--m", type=int, default=m, help=f"rows of A and D (default {m})")
    parser.add_argument("--n", type=int, default=n, help=f"rows of B, columns of D (default {n})")
    parser.add_argument("--k", type=int, default=k, help=f"the reduction dimension (default {k})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    commands.add_parser("info", help="GPU, driver, cuda-bindings and NVRTC versions, the kernel cache",
                        description="Say what pydg finds on this machine: GPU, CUDA driver, cuda-bindings, NVRTC, "
                                    "the kernel cache (directory, entries, size), a SASS disassembler, and "
                                    "which PYDG_* switches are set. Works without a GPU.")

    plan = commands.add_parser(
        "plan", help="what a call of a shape will do (no GPU needed)",
        description="Print the plan of one GEMM call: block sizes, stages, cluster and multicast, SMs, waves, "
                    "shared memory, launch dimensions, the tensor maps' encode parameters and the kernel's cache "
                    "key (with --compile, also ptxas's registers and spills). M is M (dense), M_sum "
                    "(--grouped contiguous) or M_max (--grouped masked).")
    plan.add_argument("m", type=_positive_int, metavar="M")
    plan.add_argument("n", type=_positive_int, metavar="N")
    plan.add_argument("k", type=_positive_int, metavar="K")
    plan.add_argument("--grouped", choices=("contiguous", "masked"), help="an MoE layout instead of a dense GEMM")
    plan.add_argument("--groups", type=_positive_int, default=1, help="number of groups (experts), default 1")
    plan.add_argument("--expected-m", type=_positive_int,
                      help="masked layout: the host's hint of rows per group (default M)")
    plan.add_argument("--num-sms", type=_positive_int,
                      help=f"SMs to plan for (default: the GPU's, or {NUM_SMS_WITHOUT_GPU} without one)")
    plan.add_argument("--compile", action="store_true", help="compile the kernel (NVRTC) to show ptxas's report")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")

    warm = commands.add_parser(
        "compile", aliases=["warmup"], help="compile ahead of time every kernel a list of shapes needs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compile every kernel that the given layers need for every M of a list (default 1-16384), in "
                    "parallel processes, into the kernel cache, so that serving starts warm.\n\n"
                    "A layer is NxK (dense), contiguous:GxNxK or masked:GxNxK (G groups). M counts rows per "
                    "group: contiguous layers are planned at M_sum = G*M, masked ones with expected_m = M.\n"
                    "A model file (--config) is JSON:\n"
                    '  {"m": "1-16384", "layers": [{"name": "q_b", "n": 24576, "k": 1536},\n'
                    '     {"name": "moe", "layout": "contiguous", "groups": 8, "n": 4096, "k": 7168},\n'
                    '     {"layout": "masked", "groups": 8, "n": 4096, "k": 7168, "m_max": 256}]}')
    warm.add_argument("shapes", nargs="*", metavar="SHAPE", help="NxK, contiguous:GxNxK or masked:GxNxK")
    warm.add_argument("--config", metavar="FILE", help="a JSON file of a model's layers (format above)")
    warm.add_argument("--contract", action="store_true",
                      help="the 18 dense and 10 grouped shapes of CONTRACT.md's performance table")
    warm.add_argument("--m", dest="m_list", metavar="LIST",
                      help="M values: ranges and values like 1-16384 or 1-64,128,4096 (default: the config's, "
                           "else 1-16384)")
    warm.add_argument("--jobs", "-j", type=_positive_int, default=None,
                      help=f"compiler processes (default: every CPU, here {os.cpu_count()})")
    warm.add_argument("--num-sms", type=_positive_int,
                      help=f"SMs to plan for (default: the GPU's, or {NUM_SMS_WITHOUT_GPU} without one)")
    warm.add_argument("--exhaustive", action="store_true",
                      help="plan every M one by one instead of bisecting each 64-row block (slow; same result)")
    warm.add_argument("--replan", action="store_true", help="ignore the remembered kernel list of this request")
    warm.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    commands.add_parser("bench", help="benchmark against cuBLAS and DeepGEMM (needs a GPU and torch; "
                                      "`pydg bench --help`)", add_help=False)

    cache = commands.add_parser("cache", help="list or clear the kernel cache",
                                description="The kernel cache lives in $PYDG_CACHE_DIR (default ~/.pydg).")
    actions = cache.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="every cached kernel with its shape and ptxas report",
                       description="List every cached kernel: key, layout, block sizes, stages, cluster, N, K, "
                                   "registers, spills, size.")
    actions.add_parser("clear", help="delete pydg's files from the cache directory",
                       description="Delete the files pydg wrote in the cache directory (other files stay).")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # The benchmark parses its own arguments (and its own --help).
        from pydg.bench import main as bench_main

        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        return default_job(args.m, args.n, args.k)
    if args.command == "info":
        return info()
    if args.command == "plan":
        return plan_command(args)
    if args.command in ("compile", "warmup"):
        return compile_command(args, parser)
    return cache_command(args.action)


# ---- environment probes (never raise: a machine without a GPU is an ordinary case) -------------

def first_device() -> tuple[Any | None, str]:
    """(device 0's info, or None; a line saying what was found)."""
    try:
        from pydg.driver.cuda import device_count, device_info

        if device_count() == 0:
            return None, "no CUDA device"
        info = device_info(0)
    except Exception as err:  # no driver library, no GPU, a broken install: all mean "plan only"
        return None, f"no usable CUDA driver ({type(err).__name__})"
    major, minor = info.compute_capability
    name = " ".join(info.name.replace("\x00", " ").split())  # the driver pads names
    return info, f"{name} (sm_{major}{minor}, {info.num_sms} SMs)"


def driver_version() -> str:
    try:
        from cuda.bindings import driver as cu

        err, version = cu.cuDriverGetVersion()
        if int(err) != 0:
            return f"not usable ({err})"
        return f"{version // 1000}.{version % 1000 // 10} (CUDA driver API)"
    except Exception as err:  # no libcuda on this machine
        return f"not found ({type(err).__name__})"


def bindings_version() -> str:
    try:
        from importlib.metadata import version

        return version("cuda-bindings")
    except Exception:  # an install without metadata: ask the module
        try:
            import cuda.bindings

            return str(cuda.bindings.__version__)
        except Exception as err:
            return f"not found ({type(err).__name__})"


def nvrtc_version() -> str:
    from pydg.driver import nvrtc

    return nvrtc.version_text()


def planning_sms(requested: int | None, have_device: bool | None = None) -> int:
    """--num-sms, else the GPU's count, else an H100 SXM's."""
    if requested is not None:
        return requested
    if have_device is None:
        have_device = first_device()[0] is not None
    if have_device:
        from pydg.gemm import get_num_sms

        return get_num_sms()
    return NUM_SMS_WITHOUT_GPU


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# ---- commands ----------------------------------------------------------------------------------

def info() -> int:
    import pydg
    from pydg import log
    from pydg.driver import cache
    from pydg.driver.dump import find_disassembler

    print(f"pydg {pydg.__version__} ({os.path.dirname(pydg.__file__)})")
    print(f"Python {sys.version.split()[0]}")
    _, found = first_device()
    print(f"GPU: {found}")
    print(f"CUDA driver: {driver_version()}")
    print(f"cuda-bindings: {bindings_version()}")
    print(f"NVRTC: {nvrtc_version()}")
    directory = cache.cache_dir()
    source = "PYDG_CACHE_DIR" if os.environ.get(log.CACHE_DIR) else "default; set PYDG_CACHE_DIR to move it"
    entries = cache.entries()
    writable = _writable(directory)
    print(f"Kernel cache: {directory} ({source}): {len(entries)} kernels, {_mib(cache.total_bytes())}"
          f"{'' if writable else ', NOT WRITABLE (kernels compile in memory only)'}")
    tool = find_disassembler()
    print(f"SASS disassembler (PYDG_DUMP_SASS): {tool[0] if tool else 'none (pip install nvidia-cuda-nvdisasm)'}")
    switches = [f"{name}={os.environ[name]}" for name in log.SWITCHES if os.environ.get(name)]
    print(f"Switches set: {', '.join(switches) if switches else 'none'}")
    return 0


def _writable(directory) -> bool:
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the directory is made on first write: ask of its nearest existing parent
    return probe.is_dir() and os.access(probe, os.W_OK)


def plan_command(args: argparse.Namespace) -> int:
    from pydg.describe import plan_gemm, plan_m_grouped_contiguous, plan_m_grouped_masked

    num_sms = planning_sms(args.num_sms)
    try:
        if args.grouped is None:
            if args.groups != 1 or args.expected_m is not None:
                raise ValueError("--groups and --expected-m: expected only with --grouped")
            result = plan_gemm(args.m, args.n, args.k, num_sms=num_sms, compile=args.compile)
        elif args.grouped == "contiguous":
            result = plan_m_grouped_contiguous(args.m, args.n, args.k, args.groups, num_sms=num_sms,
                                               compile=args.compile)
        else:
            result = plan_m_grouped_masked(args.m, args.n, args.k, args.groups, args.expected_m, num_sms=num_sms,
                                           compile=args.compile)
    except ValueError as err:
        print(f"pydg plan: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.summary())
    return 0


def compile_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pydg import warmup

    try:
        layers = [warmup.parse_layer(text) for text in args.shapes]
        ms = None
        if args.config:
            config_layers, ms = warmup.load_model_file(args.config)
            layers += config_layers
        if args.contract:
            layers += warmup.contract_layers()
        if args.m_list:
            ms = warmup.parse_m_list(args.m_list)
    except (ValueError, OSError) as err:
        parser.error(str(err))
    if not layers:
        parser.error("compile: expected shapes, --config FILE or --contract")
    layers = list(dict.fromkeys(layers))
    num_sms = planning_sms(args.num_sms)
    print(f"pydg compile: {len(layers)} layers, M {_m_text(ms or warmup.DEFAULT_M)}, {num_sms} SMs, "
          f"{args.jobs or os.cpu_count()} processes, NVRTC {nvrtc_version()}", flush=True)
    result = warmup.warmup(layers, ms or warmup.DEFAULT_M, num_sms=num_sms, jobs=args.jobs,
                           exhaustive=args.exhaustive, replan=args.replan, progress=not args.no_progress)
    print(result.summary())
    return 1 if result.failed else 0


def _m_text(ms: Sequence[int]) -> str:
    if len(ms) > 1 and ms[-1] - ms[0] == len(ms) - 1:
        return f"{ms[0]}-{ms[-1]}"
    return ",".join(map(str, ms[:8])) + (f",... ({len(ms)} values)" if len(ms) > 8 else "")


def cache_command(action: str) -> int:
    from pydg.driver import cache

    directory = cache.cache_dir()
    if action == "clear":
        removed = cache.clear()
        print(f"Removed {removed} files from {directory}")
        return 0
    entries = cache.entries()
    print(f"Kernel cache {directory}: {len(entries)} kernels, {_mib(cache.total_bytes())}")
    if not entries:
        return 0
    header = f"{'key':<32}  {'layout':<10} {'block':>9} {'stages':>6} {'cluster':>9} {'N':>6} {'K':>6} " \
             f"{'regs':>4} {'spills':>6} {'KiB':>6}"
    print(header)
    for e in entries:
        if not e.valid:
            print(f"{e.key:<32}  damaged entry (it is compiled again when needed)")
            continue
        kernel = e.kernel
        block = f"{kernel.get('block_m', '?')}x{kernel.get('block_n', '?')}"
        cluster = f"{kernel.get('cluster_size', '?')}/{kernel.get('multicast', '?')}"
        spills = e.ptxas.spill_stores + e.ptxas.spill_loads
        print(f"{e.key:<32}  {kernel.get('mode', '?'):<10} {block:>9} {kernel.get('num_stages', '?'):>6} "
              f"{cluster:>9} {kernel.get('n', '?'):>6} {kernel.get('k', '?'):>6} {e.ptxas.registers:>4} "
              f"{spills:>6} {e.size_bytes / 1024:>6.0f}")
    return 0


# ---- the default job ---------------------------------------------------------------------------

def default_job(m: int, n: int, k: int) -> int:
    import pydg

    print(f"pydg {pydg.__version__}: FP8 GEMMs with DeepSeek's fine-grained scaling for NVIDIA Hopper, "
          "in pure Python over the CUDA driver (kernels compiled at run time by NVRTC).")
    print(f"NVRTC {nvrtc_version()}")
    device, found = first_device()
    print(f"GPU: {found}")
    if not _describe(m, n, k, have_device=device is not None):
        return 1
    if device is None or device.compute_capability != (9, 0):
        print(f"\n{NO_HOPPER}")
        return 0
    from pydg.selfcheck import run_once

    try:
        return 0 if run_once(m, n, k) else 1
    except Exception as err:  # the user sees what failed and where, and a failing exit status
        print(f"\nRunning the GEMM failed: {type(err).__name__}: {err}")
        traceback.print_exc()
        return 1


def _describe(m: int, n: int, k: int, have_device: bool) -> bool:
    """Print the plan with the kernel's ptxas report; False if planning or compiling failed."""
    from pydg.describe import plan_gemm

    started = time.perf_counter()
    try:
        result = plan_gemm(m, n, k, num_sms=planning_sms(None, have_device), compile=True)
    except Exception as err:  # shown to the user as what it is; the exit status says it failed
        print(f"planning/compiling {m}x{n}x{k} failed: {type(err).__name__}: {err}")
        return False
    print(f"\nGEMM M={m} N={n} K={k} (dense, FP8 E4M3 in, BF16 out); planned and compiled in "
          f"{time.perf_counter() - started:.2f} s:")
    print(result.summary())
    return True

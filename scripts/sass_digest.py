"""Which benchmarked kernels did a source change alter? A digest of the SASS of every benchmark shape's
default plan (pydg bench's dense, shapes, host and grouped sections on 132 SMs), compiled here by NVRTC:
no GPU needed. Constant-bank offsets are masked, so kernel parameters added or removed do not count;
everything else ptxas emits (opcodes, registers, order) does.

usage: python scripts/sass_digest.py --write FILE     the digests of the sources as they are now
       python scripts/sass_digest.py --compare FILE   the shapes whose plan or SASS differs from FILE's
                                                      (exit status 1 if any)

Digests are comparable only from one NVRTC version (the file records it; --compare refuses another).
Typical use, before a change: `git stash; python scripts/sass_digest.py --write /tmp/before.json;
git stash pop; python scripts/sass_digest.py --compare /tmp/before.json`.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import sys

from sass_ops import disassemble, instructions  # (scripts/ is on sys.path when run as a script)

_CONSTANT_BANK = re.compile(r"c\[0x0\]\[0x[0-9a-f]+\]")


def benchmark_shapes() -> list[tuple[str, tuple]]:
    """(name, choose_plan arguments) of every shape pydg bench runs by default."""
    from pydg import bench

    shapes = [(f"{m},{n},{k}", ("dense", m, n, k, 1, None))
              for m, n, k in [*bench.DENSE_SHAPES, *bench.EXTRA_SHAPES, *bench.HOST_SHAPES]]
    shapes += [(f"contiguous:{g},{m},{n},{k}", ("contiguous", g * m, n, k, g, None)) for g, m, n, k in bench.CONTIGUOUS_SHAPES]
    shapes += [(f"masked:{g},{m},{n},{k}", ("masked", m, n, k, g, m)) for g, m, n, k in bench.MASKED_SHAPES]
    return list(dict(shapes).items())  # a shape listed twice (host and dense) once


def sass_digest(sass: str) -> str:
    """A digest of nvdisasm's listing: its instructions, without addresses or constant-bank offsets."""
    text = "\n".join(_CONSTANT_BANK.sub("c[0x0][X]", whole) for _, _, whole in instructions(sass))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def digest(args: tuple) -> tuple[str, str]:
    """(plan summary, SASS digest) of the default plan of one shape (choose_plan's arguments)."""
    from pydg.kernels.source import compile_plan
    from pydg.scheduler.heuristics import choose_plan

    mode, m, n, k, groups, expected = args
    plan = choose_plan(mode, m, n, k, groups, 132, expected_m=expected)
    return plan.summary(), sass_digest(disassemble(compile_plan(plan).cubin))


def nvrtc_version() -> str:
    """NVRTC's version, with its wheel's (a patch release may schedule differently; the API says only 12.9)."""
    from importlib import metadata

    from pydg.driver import nvrtc

    for wheel in ("nvidia-cuda-nvrtc-cu12", "nvidia-cuda-nvrtc"):
        try:
            return f"{nvrtc.version_text()} ({wheel} {metadata.version(wheel)})"
        except metadata.PackageNotFoundError:
            continue
    return nvrtc.version_text()


def digests() -> dict:
    shapes = benchmark_shapes()
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        results = list(pool.map(digest, [args for _, args in shapes]))
    return {"nvrtc": nvrtc_version(),
            "shapes": {name: {"plan": plan, "sass": sass} for (name, _), (plan, sass) in zip(shapes, results)}}


def compare(before: dict, now: dict) -> list[str]:
    """One line per shape whose plan or SASS differs (or that only one side has)."""
    lines = []
    for name in sorted(set(before["shapes"]) | set(now["shapes"])):
        old, new = before["shapes"].get(name), now["shapes"].get(name)
        if old is None or new is None:
            lines.append(f"{name}: only {'now' if old is None else 'before'}")
        elif old["plan"] != new["plan"]:
            lines.append(f"{name}: plan changed: {old['plan']} -> {new['plan']}")
        elif old["sass"] != new["sass"]:
            lines.append(f"{name}: SASS changed ({new['plan']})")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", metavar="FILE")
    action.add_argument("--compare", metavar="FILE")
    args = parser.parse_args(argv)
    if args.compare:
        with open(args.compare) as f:
            before = json.load(f)
    now = digests()
    if args.write:
        with open(args.write, "w") as f:
            json.dump(now, f, indent=1)
        print(f"{len(now['shapes'])} kernels ({now['nvrtc']}) -> {args.write}")
        return 0
    if before["nvrtc"] != now["nvrtc"]:
        raise SystemExit(f"{args.compare} was written with {before['nvrtc']}, this is {now['nvrtc']}: not comparable")
    changed = compare(before, now)
    print("\n".join(changed) if changed else f"all {len(now['shapes'])} kernels unchanged")
    print(f"{len(changed)} of {len(now['shapes'])} changed", file=sys.stderr)
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

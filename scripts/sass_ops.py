"""The SASS of a kernel as a short op stream, to lay two main loops side by side: each instruction on
one line, runs of the same opcode folded into "OP xN" (64 promotion FFMAs become one line).

usage: python scripts/sass_ops.py SOURCE [SOURCE ...]
SOURCE: a shape as scripts/plan_sweep.py takes it (M,N,K, contiguous:G,M,N,K, masked:G,M,N,K; the
heuristic's plan on 132 SMs, compiled here by NVRTC: no GPU needed), a .cubin, or SASS text from
nvdisasm -c. Each source's stream goes to stdout after a "### SOURCE" line.

DeepGEMM's kernel for the same tile can be built where a CUDA toolkit is installed (bench/NOTES.md,
2026-12-07, twenty-ninth session, says how) and passed here as a .cubin.
"""
from __future__ import annotations

import pathlib
import re
import sys
import tempfile

from shapes import shape_of  # (scripts/ is on sys.path when run as a script)

# nvdisasm -c prints "        /*0cd0*/                   FFMA R1, R2, R3, R1 ;   /* 0x... */"; the
# address field widens past 0xffff.
_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def opcode_of(instruction: str) -> str:
    """The opcode with its modifiers of one instruction's text, past a predicate such as "@!P0"."""
    words = instruction.split() or [""]
    return words[1] if words[0].startswith("@") and len(words) > 1 else words[0]


def instructions(sass: str) -> list[tuple[str, str, str]]:
    """(address, opcode with its modifiers, whole instruction) for each instruction of `sass`."""
    found = []
    for line in sass.splitlines():
        match = _INSTRUCTION.match(line)
        if match is None:
            continue
        address, text = match.groups()
        found.append((address, opcode_of(text), text))
    return found


def folded(sass: str) -> list[str]:
    """One line per instruction, a run of one opcode as "ADDRESS OPCODE xN"."""
    items = instructions(sass)
    lines = []
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1][1] == items[i][1]:
            j += 1
        address, opcode, text = items[i]
        lines.append(f"{address} {opcode} x{j - i + 1}" if j > i else f"{address} {text}")
        i = j + 1
    return lines


def disassemble(cubin: bytes) -> str:
    """nvdisasm's (or cuobjdump's) listing of `cubin`, through pydg's own dump switch."""
    from pydg.driver.dump import write_sass
    with tempfile.TemporaryDirectory() as folder:
        return write_sass(cubin, pathlib.Path(folder) / "kernel.sass").read_text()


def sass_of(source: str) -> str:
    path = pathlib.Path(source)
    if path.suffix == ".cubin":
        return disassemble(path.read_bytes())
    if path.exists():
        return path.read_text()
    from pydg.kernels.source import compile_plan
    from pydg.scheduler.heuristics import choose_plan
    mode, (m, n, k, groups, expected) = shape_of(source)
    plan = choose_plan(mode, m, n, k, groups, 132, expected_m=expected)
    print(f"# {plan.summary()}", file=sys.stderr)
    return disassemble(compile_plan(plan).cubin)


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    for source in argv:
        print(f"### {source}")
        print("\n".join(folded(sass_of(source))))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Warp-stall samples per SASS instruction from `gpu_check.sh profile` with PYDG_PROFILE_SOURCE=1
(ncu's source page as CSV): the instructions that hold the most samples, with their main stall
reasons, the totals per reason, and the samples per kind of instruction (waiting for wgmma, issuing
it, promoting with FFMA, the rest): two kernels that run the same wgmma stream compare there.
usage: python scripts/stall_report.py source_<kernel>.csv [--top N] [--all]
--all: print every instruction (address order) with its samples, to read a loop's listing."""
import csv
import sys
from collections import Counter

from sass_ops import opcode_of  # (scripts/ is on sys.path when run as a script)


def rows(path: str):
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]
    reader = csv.reader(lines)
    header = None
    for row in reader:
        if row and row[0] == "Address":
            header = row
            continue
        if header and len(row) >= len(header) - 1 and row[0].startswith("0x"):
            yield dict(zip(header, row))


KINDS = (("wgmma wait", "WARPGROUP.DEPBAR"), ("wgmma issue", "QGMMA"), ("promotion FFMA", "FFMA"))


def samples_by_kind(records) -> dict[str, int]:
    """Samples per kind of instruction (KINDS, by opcode; the rest as "other")."""
    counts = dict.fromkeys([kind for kind, _ in KINDS] + ["other"], 0)
    for r in records:
        opcode = opcode_of(r["Source"])
        kind = next((kind for kind, prefix in KINDS if opcode.startswith(prefix)), "other")
        counts[kind] += int(r["Warp Stall Sampling (All Samples)"] or 0)
    return counts


def main(path: str, top: int, every: bool) -> None:
    records = list(rows(path))
    reasons = [key for key in (records[0] if records else {}) if key.startswith("stall_") and "Not Issued" not in key]
    total = Counter()
    samples_all = 0
    for r in records:
        samples = int(r["Warp Stall Sampling (All Samples)"] or 0)
        samples_all += samples
        for key in reasons:
            total[key] += int(r[key] or 0)
    print(f"{len(records)} instructions, {samples_all} samples")
    for key, value in total.most_common():
        if value:
            print(f"  {key:24s} {value:8d} {value / max(samples_all, 1):6.1%}")
    print("by kind:")
    for kind, value in samples_by_kind(records).items():
        print(f"  {kind:24s} {value:8d} {value / max(samples_all, 1):6.1%}")

    def line(r) -> str:
        samples = int(r["Warp Stall Sampling (All Samples)"] or 0)
        detail = sorted(((int(r[k] or 0), k[6:]) for k in reasons), reverse=True)[:3]
        why = " ".join(f"{k}={v}" for v, k in detail if v)
        return (f"{r['Address'][-5:]} {samples:7d} {samples / max(samples_all, 1):6.1%} "
                f"exec {r['Instructions Executed']:>9s}  {r['Source'].strip()[:60]:60s} {why}")

    if every:
        for r in records:
            print(line(r))
        return
    print(f"\ntop {top} instructions by samples:")
    for r in sorted(records, key=lambda r: -int(r["Warp Stall Sampling (All Samples)"] or 0))[:top]:
        print(line(r))


if __name__ == "__main__":
    args = sys.argv[1:]
    top = int(args[args.index("--top") + 1]) if "--top" in args else 40
    main(next(a for a in args if a.endswith(".csv")), top, "--all" in args)

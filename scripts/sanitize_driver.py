"""Runs the dense, contiguous and masked GEMM kernels on small shapes for compute-sanitizer
(scripts/sanitize.sh), out-of-range m_indices and masked_m values included, and checks each result
against a float64 reference. Every `out` lies inside a NaN-filled guard buffer, so a write past
either end shows even where the sanitizer cannot see it (next to another live allocation).

Prints one line per call, "ok <label>" or "FAIL <label>: <why>", and exits 1 if any failed.
    python scripts/sanitize_driver.py [--what small|staged|all]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch

import pydg

ALIGN = pydg.get_m_alignment_for_contiguous_layout()
GUARD = 4096  # elements of NaN before and after every out
DIFF_LIMIT = 1e-5


def lhs(rows: int, k: int, lead: tuple[int, ...] = ()):
    data, scales = pydg.per_token_cast_to_fp8(torch.randn(*lead, rows, k, device="cuda"))
    return data, pydg.get_col_major_tma_aligned_tensor(scales)


def rhs(n: int, k: int, lead: tuple[int, ...] = ()):
    return pydg.per_block_cast_to_fp8(torch.randn(*lead, n, k, device="cuda"))


def dequantize(data, scales, per_block: bool):
    values = data.to(torch.float64)
    s = scales.to(torch.float64)
    if per_block:
        s = s.repeat_interleave(128, dim=-2)[..., : values.shape[-2], :]
    return values * s.repeat_interleave(128, dim=-1)[..., : values.shape[-1]]


def calc_diff(x, y) -> float:
    x, y = x.to(torch.float64), y.to(torch.float64)
    denom = (x * x + y * y).sum()
    return float(1 - 2 * (x * y).sum() / denom) if float(denom) > 0 else 0.0


def guarded(shape: tuple[int, ...]):
    numel = 1
    for d in shape:
        numel *= d
    buffer = torch.full((numel + 2 * GUARD,), float("nan"), dtype=torch.bfloat16, device="cuda")
    return buffer, buffer[GUARD:GUARD + numel].view(shape)


@dataclass
class Result:
    label: str
    problems: list[str]


def _check(label: str, buffer, out, reference) -> Result:
    """reference: float64, NaN where the kernel must not write."""
    torch.cuda.synchronize()
    problems = []
    if not (torch.isnan(buffer[:GUARD]).all() and torch.isnan(buffer[-GUARD:]).all()):
        problems.append("wrote outside out")
    must_skip = torch.isnan(reference)
    if not torch.isnan(out[must_skip]).all():
        problems.append("wrote rows it must skip")
    got, want = out[~must_skip], reference[~must_skip]
    if torch.isnan(got).any():
        problems.append("left rows unwritten")
    elif got.numel() and calc_diff(got, want) > DIFF_LIMIT:
        problems.append(f"calc_diff {calc_diff(got, want):.3g}")
    return Result(label, problems)


def dense(m: int, n: int, k: int) -> Result:
    a, sa = lhs(m, k)
    b, sb = rhs(n, k)
    buffer, out = guarded((m, n))
    pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)
    return _check(f"dense {m}x{n}x{k}", buffer, out, dequantize(a, sa, False) @ dequantize(b, sb, True).T)


def contiguous(blocks: list[int], n: int, k: int, groups: int) -> Result:
    """blocks: the expert id of each aligned block of rows (any int32 value)."""
    m_indices = torch.tensor(blocks, dtype=torch.int32, device="cuda").repeat_interleave(ALIGN)
    m = m_indices.numel()
    a, sa = lhs(m, k)
    b, sb = rhs(n, k, (groups,))
    buffer, out = guarded((m, n))
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (b, sb), out, m_indices)
    a_ref, b_ref = dequantize(a, sa, False), dequantize(b, sb, True)
    reference = torch.full((m, n), float("nan"), dtype=torch.float64, device="cuda")
    for g in range(groups):
        rows = m_indices == g
        reference[rows] = a_ref[rows] @ b_ref[g].T
    return _check(f"contiguous G={groups} blocks={blocks} {n}x{k}", buffer, out, reference)


def masked(counts: list[int], m_max: int, n: int, k: int, expected_m: int) -> Result:
    groups = len(counts)
    a, sa = lhs(m_max, k, (groups,))
    b, sb = rhs(n, k, (groups,))
    masked_m = torch.tensor(counts, dtype=torch.int32, device="cuda")
    buffer, out = guarded((groups, m_max, n))
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, sa), (b, sb), out, masked_m, expected_m)
    a_ref, b_ref = dequantize(a, sa, False), dequantize(b, sb, True)
    reference = torch.full((groups, m_max, n), float("nan"), dtype=torch.float64, device="cuda")
    for g, count in enumerate(counts):
        rows = min(max(count, 0), m_max)
        reference[g, :rows] = a_ref[g, :rows] @ b_ref[g].T
    return _check(f"masked counts={counts} M_max={m_max} {n}x{k}", buffer, out, reference)


def calls(what: str):
    """Small shapes for every tool; `all` adds shapes big enough for clusters of two (multicast) and
    for output staged in the stages; `staged` only the latter (racecheck's run of them, apart)."""
    big = 2**31 - 1
    # 256-row tiles of 32 k-blocks in one wave (132 tiles; masked: by the hint): the output staged in
    # held stages (GemmPlan.output_in_stages), in pairs sharing A and, masked, with groups ending
    # inside a tile, an empty one, and more tiles than the hint's.
    staged = [lambda: dense(2816, 1536, 4096),
              lambda: masked([512, 300, 0, 512], 512, 4096, 4096, expected_m=256)]
    if what == "staged":
        yield from staged
        return
    yield lambda: dense(200, 264, 400)           # partial tiles in M, N and K
    yield lambda: dense(64, 128, 128)
    yield lambda: dense(1, 16, 16)
    yield lambda: contiguous([0, 1, -1, 2], 256, 384, groups=3)
    # Out-of-range expert ids: >= G, far past it, and below -1; their blocks are skipped.
    yield lambda: contiguous([3, 0, big, -7, -2**31, 1], 264, 256, groups=2)
    yield lambda: masked([64, 0, 17, 128], 128, 256, 384, expected_m=64)
    # Out-of-range counts: negative (0 rows), past M_max (M_max rows), the int32 extremes.
    yield lambda: masked([-1, 100 + 5, -2**31, big, 37], 100, 264, 256, expected_m=50)
    if what == "all":
        yield from staged
        yield lambda: dense(2048, 4096, 512)     # enough tiles for a cluster of two
        yield lambda: dense(4096, 2048, 256)
        yield lambda: contiguous([0, 1, 2, 3] * 8, 2048, 512, groups=4)  # pairs of two experts: own B each
        # Pairs sharing B: (0, 0) shares; (1, padding), (padding, 2), (out of range, 2): idle blocks.
        yield lambda: contiguous([0, 0, 1, -1, -1, 2, 5, 2] * 4, 2048, 512, groups=3)
        yield lambda: masked([1024, 900, 5, 1024], 1024, 2048, 512, expected_m=512)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=("small", "staged", "all"), default="all")
    args = parser.parse_args()
    torch.manual_seed(0)
    failed = 0
    for call in calls(args.what):
        try:
            result = call()
        except Exception as err:  # a failed call is reported, the others still run
            print(f"FAIL {call.__code__.co_firstlineno}: {type(err).__name__}: {err}", flush=True)
            failed += 1
            continue
        if result.problems:
            failed += 1
            print(f"FAIL {result.label}: {'; '.join(result.problems)}", flush=True)
        else:
            print(f"ok {result.label}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""A DeepSeek-V3-sized Mixture-of-Experts feed-forward layer on pydg's FP8 grouped GEMMs, checked
and timed against the same layer in BF16 torch, on one Hopper GPU.

    python examples/moe_layer.py          # V3's expert sizes, 32 experts, top-8: runs in seconds
    python examples/moe_layer.py --full   # DeepSeek-V3: 256 routed experts, 4096 prefill tokens

Prefill, contiguous layout: route each token to its top-k experts; permute the (token, expert)
pairs into one (M_sum, hidden) matrix of per-expert segments, each padded to
pydg.get_m_alignment_for_contiguous_layout() rows (m_indices = -1 on padding rows); FP8-cast per
token; grouped GEMM up-projection with gate and up fused (N = 2 * intermediate); SiLU(gate) * up;
FP8-cast; grouped GEMM down-projection; un-permute, weight by the router, sum over the k experts.
Decode, masked layout: each expert's tokens sit in the first masked_m[e] rows of an
(experts, M_max, hidden) batch; nothing is read back to the host, so the step can be graph-captured.

Each path is checked twice: against the BF16 torch layer (the relative error is FP8's: about 6%
on random data; e4m3 keeps 3 mantissa bits), and against the same FP8 computation emulated in
float32 from the dequantized operands (which isolates pydg: well under 1%).
The router is DeepSeek-V3's sigmoid top-k with normalised weights, without its bias and group limit.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F

import pydg
from pydg.testing import bench, calc_diff

BLOCK = 128


@dataclass(frozen=True)
class Config:
    hidden: int = 7168        # DeepSeek-V3's model width
    intermediate: int = 2048  # its MoE expert width
    experts: int = 32         # V3 has 256 routed experts (--full)
    top_k: int = 8
    tokens: int = 1024        # prefill tokens
    decode_tokens: int = 128  # tokens of one decode step
    seed: int = 0
    iters: int = 10           # timed calls per measurement; 0 skips timing
    grouped_mm: bool = True   # also time torch._grouped_mm (BF16) where this torch has it


FULL = Config(experts=256, tokens=4096, decode_tokens=128)


# ---- weights ----------------------------------------------------------------------------------------

def _fp8_bytes(x: torch.Tensor) -> torch.Tensor:
    """E4M3 data as uint8 (pydg's casts give float8_e4m3fn for torch; raw bytes index and copy anywhere)."""
    return x.view(torch.uint8)


@dataclass
class Experts:
    """Routed experts in BF16 (the reference) and in pydg's recipe (128x128 block scales)."""
    router: torch.Tensor    # (E, hidden) bf16
    w13: torch.Tensor       # (E, 2 * intermediate, hidden) bf16: gate rows, then up rows
    w2: torch.Tensor        # (E, hidden, intermediate) bf16
    w13_fp8: torch.Tensor   # (E, 2 * intermediate, hidden) float8_e4m3fn
    w13_scales: torch.Tensor  # (E, 2 * intermediate / 128, hidden / 128) float32
    w2_fp8: torch.Tensor
    w2_scales: torch.Tensor


def _quantize_experts(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block FP8 of (E, N, K) weights, one expert at a time (bounds the float32 temporaries)."""
    e, n, k = w.shape
    data = torch.empty(e, n, k, dtype=torch.uint8, device=w.device)
    scales = torch.empty(e, pydg.ceil_div(n, BLOCK), pydg.ceil_div(k, BLOCK), dtype=torch.float32, device=w.device)
    for i in range(e):
        d, s = pydg.per_block_cast_to_fp8(w[i])
        data[i] = _fp8_bytes(d)
        scales[i] = s
    return data.view(torch.float8_e4m3fn), scales


def make_experts(cfg: Config, gen: torch.Generator) -> Experts:
    e, h, i = cfg.experts, cfg.hidden, cfg.intermediate

    def randn(*shape: int, std: float) -> torch.Tensor:
        return (torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=gen) * std)

    w13, w2 = randn(e, 2 * i, h, std=h**-0.5), randn(e, h, i, std=i**-0.5)
    w13_fp8, w13_scales = _quantize_experts(w13)
    w2_fp8, w2_scales = _quantize_experts(w2)
    return Experts(randn(e, h, std=h**-0.5), w13, w2, w13_fp8, w13_scales, w2_fp8, w2_scales)


def route(x: torch.Tensor, experts: Experts, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, k) expert ids and (T, k) float32 weights summing to 1 per token."""
    scores = torch.sigmoid(x.float() @ experts.router.float().T)
    weights, ids = scores.topk(top_k, dim=-1)
    return ids, weights / weights.sum(-1, keepdim=True)


def silu_and_mul(h: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) * up in float32, from (..., 2 * I) gate|up rows."""
    gate, up = h.float().chunk(2, dim=-1)
    return F.silu(gate) * up


# ---- pydg, prefill: the contiguous layout ----------------------------------------------------------

@dataclass
class ContiguousDispatch:
    """Where each (token, slot) pair goes in the padded per-expert segments."""
    rows: torch.Tensor       # (T*k,) destination row of each pair, pairs sorted by expert
    tokens: torch.Tensor     # (T*k,) source token of each sorted pair
    weights: torch.Tensor    # (T*k,) its router weight
    m_indices: torch.Tensor  # (M_sum,) int32 expert of each row, -1 for padding
    m_sum: int


def dispatch_contiguous(ids: torch.Tensor, weights: torch.Tensor, num_experts: int) -> ContiguousDispatch:
    align = pydg.get_m_alignment_for_contiguous_layout()
    top_k = ids.shape[1]
    expert = ids.reshape(-1)
    order = torch.argsort(expert, stable=True)
    sorted_expert = expert[order]
    counts = torch.bincount(expert, minlength=num_experts)
    padded = (counts + align - 1) // align * align
    first_pair = torch.cumsum(counts, 0) - counts
    first_row = torch.cumsum(padded, 0) - padded
    rank = torch.arange(expert.numel(), device=ids.device) - first_pair[sorted_expert]
    rows = first_row[sorted_expert] + rank
    # The one host sync of the layer: M_sum sizes the buffers. (A serving system sizes them for the
    # worst case, or learns the counts from its all-to-all, and keeps the whole step on the GPU.)
    m_sum = int(padded.sum())
    m_indices = torch.full((m_sum,), -1, dtype=torch.int32, device=ids.device)
    m_indices[rows] = sorted_expert.int()
    return ContiguousDispatch(rows, order // top_k, weights.reshape(-1)[order], m_indices, m_sum)


def _gather_fp8_rows(x_fp8: torch.Tensor, x_scales: torch.Tensor, tokens: torch.Tensor, rows: torch.Tensor,
                     shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter already-cast token rows (per-token scales commute with a row permutation) into a
    zeroed (…, rows, K) batch; `rows` indexes its leading dimensions. Returns A and its scales in
    the TMA-aligned layout."""
    k_blocks = x_scales.shape[-1]
    data = torch.zeros(*shape, dtype=torch.uint8, device=x_fp8.device)
    scales = torch.zeros(*shape[:-1], k_blocks, dtype=torch.float32, device=x_fp8.device)
    data[rows] = _fp8_bytes(x_fp8)[tokens]
    scales[rows] = x_scales[tokens]
    return data.view(torch.float8_e4m3fn), pydg.get_col_major_tma_aligned_tensor(scales)


def _cast_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token FP8 with TMA-aligned scales, for a (…, M, K) activation."""
    data, scales = pydg.per_token_cast_to_fp8(x)
    return data, pydg.get_col_major_tma_aligned_tensor(scales)


def moe_prefill_pydg(x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, experts: Experts,
                     keep: dict | None = None) -> torch.Tensor:
    """The FP8 layer, contiguous layout. `keep` (optional) receives the intermediate tensors."""
    t, h = x.shape
    d = dispatch_contiguous(ids, weights, experts.w13.shape[0])
    x_fp8, x_scales = pydg.per_token_cast_to_fp8(x)
    a, sa = _gather_fp8_rows(x_fp8, x_scales, d.tokens, d.rows, (d.m_sum, h))
    up = torch.empty(d.m_sum, experts.w13.shape[1], dtype=torch.bfloat16, device=x.device)
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (experts.w13_fp8, experts.w13_scales), up, d.m_indices)
    # Rows of padding-only blocks were never written: what they hold is cast and multiplied along
    # (rows are independent) and never gathered below.
    act, act_scales = _cast_rows(silu_and_mul(up))
    down = torch.empty(d.m_sum, h, dtype=torch.bfloat16, device=x.device)
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((act, act_scales), (experts.w2_fp8, experts.w2_scales), down,
                                                   d.m_indices)
    y = torch.zeros(t, h, dtype=torch.float32, device=x.device)
    y.index_add_(0, d.tokens, down[d.rows].float() * d.weights[:, None])
    if keep is not None:
        keep.update(dispatch=d, a=a, sa=sa, act=act, act_scales=act_scales)
    return y.bfloat16()


# ---- pydg, decode: the masked layout ---------------------------------------------------------------

@dataclass
class MaskedDispatch:
    experts: torch.Tensor   # (T*k,) expert of each sorted pair
    slots: torch.Tensor     # (T*k,) its row within the expert's batch
    tokens: torch.Tensor
    weights: torch.Tensor
    masked_m: torch.Tensor  # (E,) int32 valid rows per expert, on the GPU
    m_max: int


def dispatch_masked(ids: torch.Tensor, weights: torch.Tensor, num_experts: int) -> MaskedDispatch:
    """Static shapes, no host sync: M_max = T (a token picks an expert at most once)."""
    top_k = ids.shape[1]
    expert = ids.reshape(-1)
    order = torch.argsort(expert, stable=True)
    sorted_expert = expert[order]
    counts = torch.bincount(expert, minlength=num_experts)
    slots = torch.arange(expert.numel(), device=ids.device) - (torch.cumsum(counts, 0) - counts)[sorted_expert]
    return MaskedDispatch(sorted_expert, slots, order // top_k, weights.reshape(-1)[order], counts.int(), ids.shape[0])


def moe_decode_pydg(x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, experts: Experts) -> torch.Tensor:
    t, h = x.shape
    num_experts = experts.w13.shape[0]
    d = dispatch_masked(ids, weights, num_experts)
    expected_m = max(1, pydg.ceil_div(t * ids.shape[1], num_experts))  # the heuristics' hint
    x_fp8, x_scales = pydg.per_token_cast_to_fp8(x)
    a, sa = _gather_fp8_rows(x_fp8, x_scales, d.tokens, (d.experts, d.slots), (num_experts, d.m_max, h))
    up = torch.empty(num_experts, d.m_max, experts.w13.shape[1], dtype=torch.bfloat16, device=x.device)
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, sa), (experts.w13_fp8, experts.w13_scales), up, d.masked_m,
                                               expected_m)
    # Only each expert's valid rows are cast (the rest hold leftovers that are never read back).
    act, act_scales = pydg.per_token_cast_to_fp8_masked(silu_and_mul(up), d.masked_m)
    act_scales = pydg.get_col_major_tma_aligned_tensor(act_scales)  # already so on the GPU: no copy
    down = torch.empty(num_experts, d.m_max, h, dtype=torch.bfloat16, device=x.device)
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((act, act_scales), (experts.w2_fp8, experts.w2_scales), down,
                                               d.masked_m, expected_m)
    y = torch.zeros(t, h, dtype=torch.float32, device=x.device)
    y.index_add_(0, d.tokens, down[d.experts, d.slots].float() * d.weights[:, None])
    return y.bfloat16()


# ---- references -------------------------------------------------------------------------------------

def moe_bf16_loop(x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, experts: Experts) -> torch.Tensor:
    """The BF16 torch layer, one expert at a time (what a plain implementation does)."""
    y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for e in range(experts.w13.shape[0]):
        token, slot = (ids == e).nonzero(as_tuple=True)
        if token.numel() == 0:
            continue
        act = silu_and_mul(x[token] @ experts.w13[e].T).bfloat16()
        y.index_add_(0, token, (act @ experts.w2[e].T).float() * weights[token, slot, None])
    return y.bfloat16()


def moe_bf16_grouped(x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, experts: Experts) -> torch.Tensor:
    """The BF16 layer on torch._grouped_mm (cuBLAS/CUTLASS grouped GEMM), same padded layout as pydg's."""
    d = dispatch_contiguous(ids, weights, experts.w13.shape[0])
    a = torch.zeros(d.m_sum, x.shape[1], dtype=torch.bfloat16, device=x.device)
    a[d.rows] = x[d.tokens]
    align = pydg.get_m_alignment_for_contiguous_layout()
    counts = torch.bincount(ids.reshape(-1), minlength=experts.w13.shape[0])
    offsets = torch.cumsum((counts + align - 1) // align * align, 0).int()
    up = torch._grouped_mm(a, experts.w13.transpose(-2, -1), offs=offsets)
    down = torch._grouped_mm(silu_and_mul(up).bfloat16(), experts.w2.transpose(-2, -1), offs=offsets)
    y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    y.index_add_(0, d.tokens, down[d.rows].float() * d.weights[:, None])
    return y.bfloat16()


def _dequantize(data: torch.Tensor, scales: torch.Tensor, per_block: bool) -> torch.Tensor:
    values, s = data.float(), scales.float()
    if per_block:
        s = s.repeat_interleave(BLOCK, dim=-2)[..., : values.shape[-2], :]
    return values * s.repeat_interleave(BLOCK, dim=-1)[..., : values.shape[-1]]


def moe_fp8_emulated(x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, experts: Experts) -> torch.Tensor:
    """pydg's computation in float32 torch from the same FP8 operands (one expert at a time): what
    pydg must match up to accumulation order, so that the comparison isolates pydg."""
    x_fp8, x_scales = pydg.per_token_cast_to_fp8(x)
    x_values = _dequantize(x_fp8, x_scales, per_block=False)
    y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for e in range(experts.w13.shape[0]):
        token, slot = (ids == e).nonzero(as_tuple=True)
        if token.numel() == 0:
            continue
        w13 = _dequantize(experts.w13_fp8[e], experts.w13_scales[e], per_block=True)
        up = (x_values[token] @ w13.T).bfloat16()
        act_fp8, act_scales = pydg.per_token_cast_to_fp8(silu_and_mul(up))
        w2 = _dequantize(experts.w2_fp8[e], experts.w2_scales[e], per_block=True)
        down = (_dequantize(act_fp8, act_scales, per_block=False) @ w2.T).bfloat16()
        y.index_add_(0, token, down.float() * weights[token, slot, None])
    return y.bfloat16()


# ---- checks and timing -----------------------------------------------------------------------------

def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    x, reference = x.double(), reference.double()
    return float((x - reference).norm() / reference.norm())


def _time_us(fn: Callable[[], Any], iters: int) -> float:
    return bench(fn, warmups=2, iters=iters, flush_l2=False) * 1e6


def _gemm_tflops(pairs: int, cfg: Config, us: float) -> float:
    """Useful FLOPs of the two grouped GEMMs (valid rows only) per microsecond, in TFLOPS."""
    flops = 2 * pairs * (2 * cfg.intermediate * cfg.hidden + cfg.hidden * cfg.intermediate)
    return flops / us / 1e6


def run_path(name: str, cfg: Config, experts: Experts, tokens: int, gen: torch.Generator) -> dict[str, Any]:
    x = torch.randn(tokens, cfg.hidden, device="cuda", dtype=torch.bfloat16, generator=gen)
    ids, weights = route(x, experts, cfg.top_k)
    layer = moe_prefill_pydg if name == "prefill" else moe_decode_pydg
    y = layer(x, ids, weights, experts)
    y_bf16 = moe_bf16_loop(x, ids, weights, experts)
    y_emulated = moe_fp8_emulated(x, ids, weights, experts)
    result: dict[str, Any] = {
        "path": name, "tokens": tokens, "experts": cfg.experts, "top_k": cfg.top_k,
        "rel_err_vs_bf16": relative_error(y, y_bf16), "calc_diff_vs_bf16": calc_diff(y, y_bf16),
        "rel_err_vs_fp8_emulation": relative_error(y, y_emulated),
        "finite": bool(torch.isfinite(y).all()),
    }
    if cfg.iters > 0:
        result["pydg_us"] = _time_us(lambda: layer(x, ids, weights, experts), cfg.iters)
        result["bf16_loop_us"] = _time_us(lambda: moe_bf16_loop(x, ids, weights, experts), cfg.iters)
        if cfg.grouped_mm and name == "prefill" and hasattr(torch, "_grouped_mm"):
            try:
                y_grouped = moe_bf16_grouped(x, ids, weights, experts)
                result["bf16_grouped_rel_err_vs_loop"] = relative_error(y_grouped, y_bf16)
                result["bf16_grouped_mm_us"] = _time_us(lambda: moe_bf16_grouped(x, ids, weights, experts),
                                                        cfg.iters)
            except (RuntimeError, TypeError) as err:  # this torch or GPU has no BF16 grouped GEMM for it
                result["bf16_grouped_mm_error"] = f"{type(err).__name__}: {err}"[:200]
        if name == "prefill":
            result.update(_time_prefill_gemms(x, ids, weights, experts, cfg))
    return result


def _time_prefill_gemms(x, ids, weights, experts: Experts, cfg: Config) -> dict[str, float]:
    """The two grouped GEMMs alone, on the operands the layer built."""
    keep: dict = {}
    moe_prefill_pydg(x, ids, weights, experts, keep)
    d = keep["dispatch"]
    up = torch.empty(d.m_sum, experts.w13.shape[1], dtype=torch.bfloat16, device=x.device)
    down = torch.empty(d.m_sum, x.shape[1], dtype=torch.bfloat16, device=x.device)

    def gemms() -> None:
        pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((keep["a"], keep["sa"]), (experts.w13_fp8, experts.w13_scales),
                                                       up, d.m_indices)
        pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((keep["act"], keep["act_scales"]),
                                                       (experts.w2_fp8, experts.w2_scales), down, d.m_indices)

    us = bench(gemms, warmups=2, iters=cfg.iters, flush_l2=True) * 1e6
    return {"pydg_gemms_us": us, "pydg_gemms_tflops": _gemm_tflops(ids.numel(), cfg, us), "m_sum": d.m_sum}


def run(cfg: Config) -> dict[str, dict[str, Any]]:
    """Build the experts, run both paths, check and time them; returns one record per path."""
    gen = torch.Generator(device="cuda").manual_seed(cfg.seed)
    experts = make_experts(cfg, gen)
    results = {"prefill": run_path("prefill", cfg, experts, cfg.tokens, gen)}
    results["decode"] = run_path("decode", cfg, experts, cfg.decode_tokens, gen)
    return results


def report(cfg: Config, results: dict[str, dict[str, Any]]) -> str:
    lines = [f"MoE layer: hidden {cfg.hidden}, expert intermediate {cfg.intermediate}, {cfg.experts} experts, "
             f"top-{cfg.top_k}, on {torch.cuda.get_device_name()}"]
    for r in results.values():
        lines.append(f"{r['path']:>8} ({r['tokens']} tokens): rel. error vs BF16 torch {r['rel_err_vs_bf16']:.2%} "
                     f"(calc_diff {r['calc_diff_vs_bf16']:.1e}), vs the FP8 emulation "
                     f"{r['rel_err_vs_fp8_emulation']:.2%}")
        if "pydg_us" in r:
            timing = (f"{'':>8} time: pydg FP8 layer {r['pydg_us']:.0f} us, BF16 per-expert loop "
                      f"{r['bf16_loop_us']:.0f} us ({r['bf16_loop_us'] / r['pydg_us']:.2f}x)")
            if "bf16_grouped_mm_us" in r:
                timing += (f", BF16 torch._grouped_mm {r['bf16_grouped_mm_us']:.0f} us "
                           f"({r['bf16_grouped_mm_us'] / r['pydg_us']:.2f}x)")
            lines.append(timing)
        if "pydg_gemms_us" in r:
            lines.append(f"{'':>8} pydg's two grouped GEMMs alone: {r['pydg_gemms_us']:.0f} us, "
                         f"{r['pydg_gemms_tflops']:.0f} TFLOPS (M_sum {r['m_sum']} rows, L2 flushed)")
        if "bf16_grouped_mm_error" in r:
            lines.append(f"{'':>8} torch._grouped_mm not timed: {r['bf16_grouped_mm_error']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="DeepSeek-V3's 256 experts and 4096 prefill tokens")
    defaults = Config()
    for field in ("hidden", "intermediate", "experts", "top_k", "tokens", "decode_tokens", "seed", "iters"):
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, default=None,
                            help=f"default {getattr(defaults, field)} ({getattr(FULL, field)} with --full)")
    parser.add_argument("--no-grouped-mm", action="store_true", help="do not time torch._grouped_mm")
    args = parser.parse_args(argv)
    cfg = FULL if args.full else defaults
    changes = {f: getattr(args, f) for f in ("hidden", "intermediate", "experts", "top_k", "tokens",
                                             "decode_tokens", "seed", "iters") if getattr(args, f) is not None}
    cfg = replace(cfg, grouped_mm=not args.no_grouped_mm, **changes)
    if cfg.top_k > cfg.experts:
        parser.error(f"--top-k: expected at most --experts ({cfg.experts}), got {cfg.top_k}")
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if not torch.cuda.is_available():
        print("this example needs a CUDA GPU (an H100/H200 for pydg's kernels)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results = run(cfg)
    print(report(cfg, results))
    print(f"({time.perf_counter() - started:.1f} s in all, kernel compilation included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Inputs and references for the GPU tests (torch on the GPU; the float64 reference of the recipe)."""
from __future__ import annotations

import pydg

DIFF_LIMIT = 1e-5  # CONTRACT.md: DeepGEMM's calc_diff against the float64 product of dequantized inputs


def torch_module():
    import pytest

    return pytest.importorskip("torch")


def quantized_pair(torch, rows: int, k: int, per_block: bool, lead: tuple[int, ...] = (), gen=None):
    """Random normal data (never zeros) in the recipe: (fp8, scales); A's scales TMA-aligned."""
    x = torch.randn(*lead, rows, k, device="cuda", dtype=torch.float32, generator=gen)
    # Rows of different magnitude so that the per-row and per-block scales matter.
    x = x * torch.exp2(torch.randint(-4, 5, (*lead, rows, 1), device="cuda", generator=gen).float())
    if per_block:
        return pydg.per_block_cast_to_fp8(x)
    data, scales = pydg.per_token_cast_to_fp8(x)
    return data, pydg.get_col_major_tma_aligned_tensor(scales)


def dequantize(torch, data, scales, per_block: bool):
    """float64 (…, R, K) from fp8 data and its scales (any layout)."""
    values = data.to(torch.float64)
    k = values.shape[-1]
    s = scales.to(torch.float64)
    if per_block:
        s = s.repeat_interleave(128, dim=-2)[..., : values.shape[-2], :]
    s = s.repeat_interleave(128, dim=-1)[..., :k]
    return values * s


def calc_diff(torch, x, y) -> float:
    x, y = x.to(torch.float64), y.to(torch.float64)
    denom = (x * x + y * y).sum()
    return float(1 - 2 * (x * y).sum() / denom) if float(denom) > 0 else 0.0


def nan_like(torch, shape):
    return torch.full(shape, float("nan"), device="cuda", dtype=torch.bfloat16)


def launch_plan(torch, plan, arrays):
    """Launch `plan` itself (not the heuristic's) on arrays (a, sa, b, sb, out[, grouping]), on torch's
    current stream: what the tests use to compare kernel variants of one shape."""
    from pydg.arrays import array_info
    from pydg.kernels.fp8_gemm import GemmLauncher, GemmOperands

    ops = GemmOperands(*(array_info(x, name) for x, name in zip(arrays, ("a", "sa", "b", "sb", "out", "grouping"))))
    pointers = tuple(x.data_ptr() for x in arrays) + ((0,) if len(arrays) == 5 else ())
    GemmLauncher(plan, ops, arrays[0].device.index or 0)(pointers, torch.cuda.current_stream().cuda_stream)


def quantize_rows_traceable(torch, x):
    """Per-token FP8 in plain torch ops (traceable by torch.compile), scales TMA-aligned column-major."""
    m, k = x.shape
    blocks = x.float().view(m, k // 128, 128)
    scales = blocks.abs().amax(dim=-1).clamp(min=1e-4) / 448.0
    data = (blocks / scales.unsqueeze(-1)).to(torch.float8_e4m3fn).view(m, k)
    buffer = torch.zeros(k // 128, (m + 3) // 4 * 4, dtype=torch.float32, device=x.device)
    buffer[:, :m] = scales.t()
    return data, buffer[:, :m].t()

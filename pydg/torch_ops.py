"""pydg's GEMMs as PyTorch custom operators, for torch.compile (fullgraph) and CUDA graphs.

`import pydg.torch_ops` (torch >= 2.4) registers six operators in the namespace `pydg`; `import
pydg` alone never imports torch. Each GEMM comes as a functional operator, which allocates and
returns its output (what torch.compile and mode="reduce-overhead" work best with), and as an
`_out` operator that writes a given `out` (declared as mutated, DeepGEMM's calling convention):

    torch.ops.pydg.gemm_fp8_fp8_bf16_nt(a, sa, b, sb) -> out (M, N) bf16
    torch.ops.pydg.gemm_fp8_fp8_bf16_nt_out(a, sa, b, sb, out) -> None
    torch.ops.pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous(a, sa, b, sb, m_indices) -> out (M_sum, N)
    torch.ops.pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous_out(a, sa, b, sb, out, m_indices) -> None
    torch.ops.pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked(a, sa, b, sb, masked_m, expected_m) -> out (G, M_max, N)
    torch.ops.pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked_out(a, sa, b, sb, out, masked_m, expected_m) -> None

The FP8 casts come as operators too, so that a compiled model can quantise its activations:

    torch.ops.pydg.per_token_cast_to_fp8(x) -> (x_fp8, scales)   x (M, K) or (G, M, K); scales TMA-aligned
    torch.ops.pydg.per_block_cast_to_fp8(w) -> (w_fp8, scales)   w (N, K) or (G, N, K); scales contiguous

Arguments are those of the pydg functions of the same name, with the (data, scales) pairs
flattened: a/sa are the LHS and its TMA-aligned column-major scales, b/sb the RHS and its block
scales (see pydg.gemm_fp8_fp8_bf16_nt). The functional operators' outputs are new bf16 tensors
from torch.empty: rows that a call does not write (padding rows of the contiguous layout in
blocks of padding only; rows at or past masked_m[g] of the masked layout) hold whatever the
allocator left there. The same operators are importable from this module as Python callables.

Under torch.compile the operators are opaque: their fake (meta) implementations give the output's
shape and dtype without a GPU, and Inductor passes every input with exactly the strides seen when
tracing (the scales' column-major layout survives). A compiled model whose inputs keep their
shapes replays as one CUDA graph under mode="reduce-overhead": the masked operator reads masked_m
on the GPU only. The first call of a shape compiles its kernel (seconds at most, then cached on
disk): run a model once eagerly, or let torch.compile's warm-up run do it, before capturing.
There is no backward: these operators are for inference (autograd raises if a gradient is needed).
"""
from __future__ import annotations

import inspect

try:
    import torch
except ImportError as err:
    raise ImportError("pydg.torch_ops needs PyTorch 2.4 or newer (pip install \"pydg[torch]\")") from err

import pydg
from pydg.layout import tma_aligned_strides
from pydg.utils import ceil_div

if not hasattr(torch.library, "custom_op"):
    raise ImportError(f"pydg.torch_ops needs PyTorch 2.4 or newer (torch.library.custom_op), got {torch.__version__}")

Tensor = torch.Tensor
_NAMESPACE = "pydg"


def _tags() -> dict:
    """Ask Inductor for the exact strides of tracing time (torch >= 2.7 names that tag; older
    versions already keep custom operators' input strides by default)."""
    tag = getattr(torch.Tag, "needs_exact_strides", None)
    if tag is None or "tags" not in inspect.signature(torch.library.custom_op).parameters:
        return {}
    return {"tags": (tag,)}


def _op(name: str, mutates_args: tuple[str, ...] = ()):
    return torch.library.custom_op(f"{_NAMESPACE}::{name}", mutates_args=mutates_args, **_tags())


def _rank(x: Tensor, name: str, rank: int, layout: str) -> None:
    if x.dim() != rank:
        raise ValueError(f"{name}: expected a tensor of rank {rank} {layout}, got shape {tuple(x.shape)}")


def _dense_shape(a: Tensor, b: Tensor) -> tuple[int, int]:
    _rank(a, "lhs data", 2, "(M, K)")
    _rank(b, "rhs data", 2, "(N, K)")
    return a.shape[0], b.shape[0]


def _contiguous_shape(a: Tensor, b: Tensor) -> tuple[int, int]:
    _rank(a, "lhs data", 2, "(M_sum, K)")
    _rank(b, "rhs data", 3, "(G, N, K)")
    return a.shape[0], b.shape[1]


def _masked_shape(a: Tensor, b: Tensor) -> tuple[int, int, int]:
    _rank(a, "lhs data", 3, "(G, M_max, K)")
    _rank(b, "rhs data", 3, "(G, N, K)")
    return a.shape[0], a.shape[1], b.shape[1]


def _empty_out(a: Tensor, shape: tuple[int, ...]) -> Tensor:
    return torch.empty(shape, dtype=torch.bfloat16, device=a.device)


# ---- dense ---------------------------------------------------------------------------------------

@_op("gemm_fp8_fp8_bf16_nt")
def gemm_fp8_fp8_bf16_nt(a: Tensor, sa: Tensor, b: Tensor, sb: Tensor) -> Tensor:
    """out (M, N) bf16 = (a * sa) @ (b * sb)^T; arguments as for pydg.gemm_fp8_fp8_bf16_nt."""
    out = _empty_out(a, _dense_shape(a, b))
    pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)
    return out


@gemm_fp8_fp8_bf16_nt.register_fake
def _(a: Tensor, sa: Tensor, b: Tensor, sb: Tensor) -> Tensor:
    return _empty_out(a, _dense_shape(a, b))


@_op("gemm_fp8_fp8_bf16_nt_out", mutates_args=("out",))
def gemm_fp8_fp8_bf16_nt_out(a: Tensor, sa: Tensor, b: Tensor, sb: Tensor, out: Tensor) -> None:
    """Writes (a * sa) @ (b * sb)^T into out (M, N) bf16, as pydg.gemm_fp8_fp8_bf16_nt."""
    pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)


@gemm_fp8_fp8_bf16_nt_out.register_fake
def _(a: Tensor, sa: Tensor, b: Tensor, sb: Tensor, out: Tensor) -> None:
    return None


# ---- MoE, contiguous layout ----------------------------------------------------------------------

@_op("m_grouped_gemm_fp8_fp8_bf16_nt_contiguous")
def m_grouped_gemm_fp8_fp8_bf16_nt_contiguous(a: Tensor, sa: Tensor, b: Tensor, sb: Tensor,
                                              m_indices: Tensor) -> Tensor:
    """out (M_sum, N) bf16, row i = A[i] @ B[m_indices[i]]^T (scaled); padding-only blocks unwritten."""
    out = _empty_out(a, _contiguous_shape(a, b))
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (b, sb), out, m_indices)
    return out


@m_grouped_gemm_fp8_fp8_bf16_nt_contiguous.register_fake
def _(a: Tensor, sa: Tensor, b: Tensor, sb: Tensor, m_indices: Tensor) -> Tensor:
    return _empty_out(a, _contiguous_shape(a, b))


@_op("m_grouped_gemm_fp8_fp8_bf16_nt_contiguous_out", mutates_args=("out",))
def m_grouped_gemm_fp8_fp8_bf16_nt_contiguous_out(a: Tensor, sa: Tensor, b: Tensor, sb: Tensor, out: Tensor,
                                                  m_indices: Tensor) -> None:
    """Writes the contiguous-layout grouped GEMM into out (M_sum, N) bf16."""
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (b, sb), out, m_indices)


@m_grouped_gemm_fp8_fp8_bf16_nt_contiguous_out.register_fake
def _(a: Tensor, sa: Tensor, b: Tensor, sb: Tensor, out: Tensor, m_indices: Tensor) -> None:
    return None


# ---- MoE, masked layout --------------------------------------------------------------------------

@_op("m_grouped_gemm_fp8_fp8_bf16_nt_masked")
def m_grouped_gemm_fp8_fp8_bf16_nt_masked(a: Tensor, sa: Tensor, b: Tensor, sb: Tensor, masked_m: Tensor,
                                          expected_m: int) -> Tensor:
    """out (G, M_max, N) bf16, out[g, :masked_m[g]] = A[g] @ B[g]^T (scaled); later rows unwritten."""
    out = _empty_out(a, _masked_shape(a, b))
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, sa), (b, sb), out, masked_m, int(expected_m))
    return out


@m_grouped_gemm_fp8_fp8_bf16_nt_masked.register_fake
def _(a: Tensor, sa: Tensor, b: Tensor, sb: Tensor, masked_m: Tensor, expected_m: int) -> Tensor:
    return _empty_out(a, _masked_shape(a, b))


@_op("m_grouped_gemm_fp8_fp8_bf16_nt_masked_out", mutates_args=("out",))
def m_grouped_gemm_fp8_fp8_bf16_nt_masked_out(a: Tensor, sa: Tensor, b: Tensor, sb: Tensor, out: Tensor,
                                              masked_m: Tensor, expected_m: int) -> None:
    """Writes the masked-layout grouped GEMM into out (G, M_max, N) bf16 (rows < masked_m[g] only)."""
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, sa), (b, sb), out, masked_m, int(expected_m))


@m_grouped_gemm_fp8_fp8_bf16_nt_masked_out.register_fake
def _(a: Tensor, sa: Tensor, b: Tensor, sb: Tensor, out: Tensor, masked_m: Tensor, expected_m: int) -> None:
    return None


# ---- FP8 casts -----------------------------------------------------------------------------------

def _cast_input(x: Tensor) -> None:
    if x.dim() not in (2, 3):
        raise ValueError(f"x: expected a tensor of rank 2 (M, K) or 3 (G, M, K), got shape {tuple(x.shape)}")


@_op("per_token_cast_to_fp8")
def per_token_cast_to_fp8(x: Tensor) -> tuple[Tensor, Tensor]:
    """x (M, K) or (G, M, K) float -> E4M3 data of x's shape and float32 scales (…, M, ceil(K/128))
    in the TMA-aligned column-major layout the GEMMs read (on any device)."""
    _cast_input(x)
    data, scales = pydg.per_token_cast_to_fp8(x)
    return data.view(torch.float8_e4m3fn), pydg.get_col_major_tma_aligned_tensor(scales)


@per_token_cast_to_fp8.register_fake
def _(x: Tensor) -> tuple[Tensor, Tensor]:
    _cast_input(x)
    shape = (*x.shape[:-1], ceil_div(x.shape[-1], 128))
    scales = torch.empty_strided(shape, tma_aligned_strides(shape), dtype=torch.float32, device=x.device)
    return torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=x.device), scales


@_op("per_block_cast_to_fp8")
def per_block_cast_to_fp8(x: Tensor) -> tuple[Tensor, Tensor]:
    """w (N, K) or (G, N, K) float -> E4M3 data of w's shape and float32 scales (…, ceil(N/128),
    ceil(K/128)), contiguous."""
    _cast_input(x)
    data, scales = pydg.per_block_cast_to_fp8(x)
    return data.view(torch.float8_e4m3fn), scales.contiguous()


@per_block_cast_to_fp8.register_fake
def _(x: Tensor) -> tuple[Tensor, Tensor]:
    _cast_input(x)
    shape = (*x.shape[:-2], ceil_div(x.shape[-2], 128), ceil_div(x.shape[-1], 128))
    return (torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=x.device),
            torch.empty(shape, dtype=torch.float32, device=x.device))

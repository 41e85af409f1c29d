"""pydg's GEMMs for JAX arrays, called eagerly (outside jax.jit), returning a new JAX array.

    import jax.numpy as jnp, pydg.jax_ops as pj
    out = pj.gemm_fp8_fp8_bf16_nt(a, sa, b, sb)          # (M, N) bfloat16 jax.Array

FP8 data may be jnp.float8_e4m3fn arrays or uint8 arrays of E4M3 bytes. A's scales are given
row-major, (M, ceil(K/128)) float32 (or (G, M_max, ceil(K/128)) for the masked layout): JAX arrays
are always row-major, so these functions make the TMA-aligned column-major copy that the kernel
reads themselves (tma_aligned_scales, a small transpose by JAX). Arrays must be concrete, on one
GPU; jax is imported only when one of these functions is called.

Synchronisation, and why every call is synchronous: JAX computes asynchronously on CUDA streams of
its own that cannot be named from Python, and it does not know that pydg writes the output. So a
call (1) waits until its inputs and the output it allocates are ready (block_until_ready),
(2) launches pydg's kernel on the legacy default stream, and (3) waits for that stream before the
output is returned, so that JAX can never read it early. The host therefore waits once per call:
fine for experiments and for layers that are large enough, not for a tight decode loop (use torch
or CuPy there, whose streams pydg joins without waiting).

Advanced: the pydg.* functions also accept JAX arrays directly, `out` included. pydg then writes
into the buffer of `out` behind JAX's back (JAX arrays are immutable): pass only a buffer that no
other array shares (a fresh jnp.empty), give A's scales as tma_aligned_scales(sa), and call
synchronize(out) before JAX uses the result.
"""
from __future__ import annotations

from typing import Any

import pydg
from pydg.arrays import ArrayInfo, DeviceView, array_info
from pydg.layout import SCALE_M_ALIGNMENT, tma_aligned_strides
from pydg.utils import align


def _jnp() -> Any:
    import jax.numpy as jnp

    return jnp


def tma_aligned_scales(sa: Any) -> DeviceView:
    """A's scales in the TMA-aligned column-major layout, as pydg reads them.

    sa: (M, KB) or (G, M, KB) float32 jax.Array, row-major (KB = ceil(K/128)).
    Returns a DeviceView of shape (M, KB) / (G, M, KB) with strides (1, align(M, 4)) /
    (KB * align(M, 4), 1, align(M, 4)) into a new zero-padded (…, KB, align(M, 4)) JAX array that
    the view keeps alive.
    """
    jnp = _jnp()
    shape = tuple(sa.shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"lhs scales: expected a tensor of rank 2 (M, KB) or 3 (G, M, KB), got shape {shape}")
    if sa.dtype != jnp.float32:
        raise TypeError(f"lhs scales: expected dtype float32, got {sa.dtype}")
    *lead, m, kb = shape
    padded = jnp.zeros((*lead, kb, align(m, SCALE_M_ALIGNMENT)), jnp.float32)
    padded = padded.at[..., :m].set(jnp.swapaxes(sa, -1, -2))
    flat = array_info(padded, "lhs scales")  # waits for the copy to exist
    info = ArrayInfo(flat.ptr, shape, tma_aligned_strides(shape), "float32", flat.device, "jax")
    return DeviceView(info, owner=padded)


def synchronize(x: Any) -> None:
    """Wait until the work pydg launched for JAX arrays on x's GPU (on the legacy stream) is done."""
    from cuda.bindings import driver as cu

    from pydg.driver.cuda import check, make_current

    info = x.info if isinstance(x, DeviceView) else array_info(x, "x")
    make_current(info.device)
    check("cuStreamSynchronize", cu.cuStreamSynchronize(cu.CUstream(0)))


def _empty(shape: tuple[int, ...], like: Any) -> Any:
    import jax

    jnp = _jnp()
    (device,) = like.devices()
    return jnp.empty(shape, jnp.bfloat16, device=device) if _accepts_device() else jax.device_put(
        jnp.empty(shape, jnp.bfloat16), device)


def _accepts_device() -> bool:
    import inspect

    return "device" in inspect.signature(_jnp().empty).parameters


def _rank(x: Any, name: str, rank: int, layout: str) -> None:
    array_info(x, name)  # a concrete single-GPU array (a clear TypeError for tracers), ready to be read
    if len(x.shape) != rank:
        raise ValueError(f"{name}: expected a tensor of rank {rank} {layout}, got shape {tuple(x.shape)}")


def gemm_fp8_fp8_bf16_nt(a: Any, sa: Any, b: Any, sb: Any) -> Any:
    """out = (a * sa) @ (b * sb)^T, a new (M, N) bfloat16 jax.Array.

    a: (M, K) float8_e4m3fn or uint8 (E4M3 bytes); sa: (M, ceil(K/128)) float32, row-major.
    b: (N, K) float8_e4m3fn or uint8; sb: (ceil(N/128), ceil(K/128)) float32.
    Synchronous (see the module's docstring); N a multiple of 8, K of 16.
    """
    _rank(a, "lhs data", 2, "(M, K)")
    _rank(b, "rhs data", 2, "(N, K)")
    out = _empty((a.shape[0], b.shape[0]), a)
    pydg.gemm_fp8_fp8_bf16_nt((a, tma_aligned_scales(sa)), (b, sb), out)
    synchronize(out)
    return out


def m_grouped_gemm_fp8_fp8_bf16_nt_contiguous(a: Any, sa: Any, b: Any, sb: Any, m_indices: Any) -> Any:
    """MoE contiguous layout: a new (M_sum, N) bfloat16 jax.Array, row i = A[i] @ B[m_indices[i]]^T.

    a: (M_sum, K) E4M3, each expert's rows starting at a multiple of
    pydg.get_m_alignment_for_contiguous_layout(); sa: (M_sum, ceil(K/128)) float32, row-major.
    b: (G, N, K) E4M3; sb: (G, ceil(N/128), ceil(K/128)) float32. m_indices: (M_sum,) int32, -1
    for padding rows. Blocks of padding rows only are left as jnp.empty made them (zeros).
    """
    _rank(a, "lhs data", 2, "(M_sum, K)")
    _rank(b, "rhs data", 3, "(G, N, K)")
    out = _empty((a.shape[0], b.shape[1]), a)
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, tma_aligned_scales(sa)), (b, sb), out, m_indices)
    synchronize(out)
    return out


def m_grouped_gemm_fp8_fp8_bf16_nt_masked(a: Any, sa: Any, b: Any, sb: Any, masked_m: Any, expected_m: int) -> Any:
    """MoE masked layout: a new (G, M_max, N) bfloat16 jax.Array, out[g, :masked_m[g]] = A[g] @ B[g]^T.

    a: (G, M_max, K) E4M3; sa: (G, M_max, ceil(K/128)) float32, row-major. b: (G, N, K) E4M3;
    sb: (G, ceil(N/128), ceil(K/128)) float32. masked_m: (G,) int32 on the GPU; expected_m: a
    host-side int hint of the typical rows per group. Rows at or past masked_m[g] are left as
    jnp.empty made them (zeros).
    """
    _rank(a, "lhs data", 3, "(G, M_max, K)")
    _rank(b, "rhs data", 3, "(G, N, K)")
    out = _empty((a.shape[0], a.shape[1], b.shape[1]), a)
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, tma_aligned_scales(sa)), (b, sb), out, masked_m, expected_m)
    synchronize(out)
    return out

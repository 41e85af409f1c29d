"""Every check the host can make before a launch. Messages say argument, expected, got."""
from __future__ import annotations

import numbers
from dataclasses import dataclass

from pydg.arrays import ArrayInfo
from pydg.layout import get_m_alignment_for_contiguous_layout
from pydg.utils import align, ceil_div

FP8_DTYPES = ("float8_e4m3fn", "uint8", "int8")
BF16_DTYPES = ("bfloat16", "uint16", "int16")  # CuPy has no bfloat16: raw 16-bit words are accepted
# TMA coordinates and the kernel's row, column and group indices are signed 32-bit, so each of M,
# N, K and G must fit; offsets into the arrays (M * K, M * N, G * M * N elements) need not: TMA
# addresses in 64 bits, and the kernel's own stores and B's scale loads compute 64-bit offsets.
INDEX_LIMIT = 2**31 - 1
# The kernel's persistent walk numbers tiles in 32 bits (and steps by the grid past the last one).
TILE_LIMIT = 2**31


@dataclass(frozen=True)
class Problem:
    """The sizes a validated call computes. m is rows per group (dense M, M_sum, or M_max)."""
    mode: str
    m: int
    n: int
    k: int
    num_groups: int
    device: int


def _fail(name: str, what: str, expected, got) -> None:
    raise ValueError(f"{name}: expected {what} {expected}, got {got}")


def _dtype(info: ArrayInfo, name: str, allowed: tuple[str, ...]) -> None:
    if info.dtype not in allowed:
        raise TypeError(f"{name}: expected dtype {' or '.join(allowed)}, got {info.dtype}")


def _ndim(info: ArrayInfo, name: str, ndim: int) -> None:
    if len(info.shape) != ndim:
        _fail(name, "a tensor of rank", ndim, f"rank {len(info.shape)} (shape {info.shape})")


def _shape(info: ArrayInfo, name: str, shape: tuple[int, ...]) -> None:
    if info.shape != shape:
        _fail(name, "shape", shape, info.shape)


def _strides(info: ArrayInfo, name: str, strides: tuple[int, ...], layout: str) -> None:
    """Exact strides in elements, ignoring those of dimensions of size 1 (they are never stepped)."""
    if 0 in info.shape:
        return  # no elements, nothing is read through these strides
    for size, got, want in zip(info.shape, info.strides, strides):
        if size > 1 and got != want:
            _fail(name, f"{layout} strides", strides, info.strides)


def _rows(info: ArrayInfo, name: str, itemsize: int) -> None:
    """Contiguous rows (last stride 1) whose other strides TMA can step: multiples of 16 bytes."""
    if 0 in info.shape:
        return
    if info.shape[-1] > 1 and info.strides[-1] != 1:
        _fail(name, "a contiguous last dimension, stride", 1, info.strides[-1])
    for size, stride in zip(info.shape[:-1], info.strides[:-1]):
        if size > 1 and (stride * itemsize) % 16:
            _fail(name, "strides that are multiples of 16 bytes, in elements a multiple of", 16 // itemsize,
                  info.strides)


def _sizes(name: str, **sizes: int) -> None:
    for dim, value in sizes.items():
        if value > INDEX_LIMIT:
            _fail(name, f"{dim} at most", INDEX_LIMIT, value)


def _same_device(infos: dict[str, ArrayInfo]) -> int:
    devices = {name: info.device for name, info in infos.items()}
    first_name, device = next(iter(devices.items()))
    for name, d in devices.items():
        if d < 0:
            _fail(name, "an array in GPU memory on device", f"cuda:{device}" if device >= 0 else "cuda", "host memory")
        if d != device:
            _fail(name, f"the same GPU as {first_name},", f"cuda:{device}", f"cuda:{d}")
    return device


def _a_scales(sa: ArrayInfo, name: str, groups: int | None, m: int, k_blocks: int) -> None:
    _dtype(sa, name, ("float32",))
    m_aligned = align(m, 4)
    if groups is None:
        _shape(sa, name, (m, k_blocks))
        _strides(sa, name, (1, m_aligned), "TMA-aligned column-major (use get_col_major_tma_aligned_tensor)")
    else:
        _shape(sa, name, (groups, m, k_blocks))
        _strides(sa, name, (m_aligned * k_blocks, 1, m_aligned),
                 "TMA-aligned column-major (use get_col_major_tma_aligned_tensor)")


def _pair(arg, name: str):
    if not isinstance(arg, (tuple, list)) or len(arg) != 2:
        raise TypeError(f"{name}: expected a pair (fp8 data, float32 scales), got {type(arg).__name__}")
    return arg


def unpack(lhs, rhs) -> tuple:
    """(a, sa, b, sb) of any pair types (gemm's call path unpacks plain tuples itself)."""
    a, sa = _pair(lhs, "lhs")
    b, sb = _pair(rhs, "rhs")
    return a, sa, b, sb


def _common(a: ArrayInfo, b: ArrayInfo, sb: ArrayInfo, out: ArrayInfo, n: int, k: int, groups_b: int | None) -> None:
    _dtype(a, "lhs data", FP8_DTYPES)
    _dtype(b, "rhs data", FP8_DTYPES)
    _dtype(sb, "rhs scales", ("float32",))
    _dtype(out, "out", BF16_DTYPES)
    if k % 16:
        _fail("lhs data", "K (last dimension) a multiple of", 16, k)
    if n % 8:
        _fail("rhs data", "N a multiple of", 8, n)
    _rows(a, "lhs data", 1)
    _rows(b, "rhs data", 1)
    sb_shape = (ceil_div(n, 128), ceil_div(k, 128))
    if groups_b is not None:
        sb_shape = (groups_b, *sb_shape)
    _shape(sb, "rhs scales", sb_shape)
    contiguous = tuple(_contiguous_strides(sb_shape))
    _strides(sb, "rhs scales", contiguous, "contiguous")
    _strides(out, "out", tuple(_contiguous_strides(out.shape)), "contiguous")
    _sizes("rhs data", N=n, K=k)


def _contiguous_strides(shape: tuple[int, ...]):
    strides, step = [], 1
    for d in reversed(shape):
        strides.insert(0, step)
        step *= d
    return strides


def check_dense(a: ArrayInfo, sa: ArrayInfo, b: ArrayInfo, sb: ArrayInfo, out: ArrayInfo) -> Problem:
    _ndim(a, "lhs data", 2)
    _ndim(b, "rhs data", 2)
    m, k = a.shape
    n = b.shape[0]
    if b.shape[1] != k:
        _fail("rhs data", "shape (N, K) with K =", k, b.shape)
    _common(a, b, sb, out, n, k, None)
    _a_scales(sa, "lhs scales", None, m, ceil_div(k, 128))
    _shape(out, "out", (m, n))
    _sizes("lhs data", M=m)
    device = _same_device({"lhs data": a, "lhs scales": sa, "rhs data": b, "rhs scales": sb, "out": out})
    return Problem("dense", m, n, k, 1, device)


def check_contiguous(a: ArrayInfo, sa: ArrayInfo, b: ArrayInfo, sb: ArrayInfo, out: ArrayInfo,
                     m_indices: ArrayInfo) -> Problem:
    _ndim(a, "lhs data", 2)
    _ndim(b, "rhs data", 3)
    m, k = a.shape
    groups, n = b.shape[0], b.shape[1]
    if groups < 1:
        _fail("rhs data", "at least one group, G =", ">= 1", groups)
    if b.shape[2] != k:
        _fail("rhs data", "shape (G, N, K) with K =", k, b.shape)
    _common(a, b, sb, out, n, k, groups)
    _sizes("rhs data", G=groups)
    _a_scales(sa, "lhs scales", None, m, ceil_div(k, 128))
    _shape(out, "out", (m, n))
    _dtype(m_indices, "m_indices", ("int32",))
    _shape(m_indices, "m_indices", (m,))
    _strides(m_indices, "m_indices", (1,), "contiguous")
    alignment = get_m_alignment_for_contiguous_layout()
    if m % alignment:
        _fail("lhs data", f"M_sum (rows of all experts, each segment padded to {alignment}) a multiple of",
              alignment, m)
    _sizes("lhs data", M=m)
    device = _same_device({"lhs data": a, "lhs scales": sa, "rhs data": b, "rhs scales": sb, "out": out,
                           "m_indices": m_indices})
    return Problem("contiguous", m, n, k, groups, device)


def check_expected_m(expected_m) -> int:
    """A positive host-side int (numpy integers too; never a GPU tensor, whose value would need a sync)."""
    if type(expected_m) is not int:
        if isinstance(expected_m, bool) or not isinstance(expected_m, numbers.Integral):
            raise TypeError(f"expected_m: expected a positive int (a host-side hint of the rows per group), "
                            f"got {type(expected_m).__name__} {expected_m!r}")
        expected_m = int(expected_m)
    if expected_m < 1:
        raise ValueError(f"expected_m: expected a positive int (a host-side hint of the rows per group), "
                         f"got {expected_m}")
    return expected_m


def check_masked(a: ArrayInfo, sa: ArrayInfo, b: ArrayInfo, sb: ArrayInfo, out: ArrayInfo,
                 masked_m: ArrayInfo) -> Problem:
    _ndim(a, "lhs data", 3)
    _ndim(b, "rhs data", 3)
    groups, m, k = a.shape
    if groups < 1:
        _fail("lhs data", "at least one group, G =", ">= 1", groups)
    if b.shape[0] != groups or b.shape[2] != k:
        _fail("rhs data", "shape (G, N, K) =", (groups, "N", k), b.shape)
    n = b.shape[1]
    _common(a, b, sb, out, n, k, groups)
    _sizes("lhs data", G=groups)
    _a_scales(sa, "lhs scales", groups, m, ceil_div(k, 128))
    _shape(out, "out", (groups, m, n))
    _dtype(masked_m, "masked_m", ("int32",))
    _shape(masked_m, "masked_m", (groups,))
    _strides(masked_m, "masked_m", (1,), "contiguous")
    _sizes("lhs data", M_max=m)
    device = _same_device({"lhs data": a, "lhs scales": sa, "rhs data": b, "rhs scales": sb, "out": out,
                           "masked_m": masked_m})
    return Problem("masked", m, n, k, groups, device)


def check_tile_count(plan) -> None:
    """After planning: the tiles of the output (masked: every row of every group, the most masked_m
    can ask for) must be countable by the kernel's 32-bit tile index."""
    groups = plan.num_groups if plan.mode == "masked" else 1
    tiles = groups * plan.num_m_blocks * plan.num_n_blocks
    if tiles > TILE_LIMIT:
        _fail("out", "at most", f"{TILE_LIMIT} output tiles of {plan.block_m}x{plan.block_n} "
              "(the kernel's tile index is 32-bit)", f"{tiles} tiles")


def check_pointers(infos: tuple[ArrayInfo, ...], names: tuple[str, ...], alignments: tuple[int, ...]) -> None:
    """Per call: TMA needs 16-byte aligned base addresses (and plain loads 4-byte ones)."""
    for info, name, alignment in zip(infos, names, alignments):
        if info.ptr % alignment:
            _fail(name, "a data pointer aligned to", f"{alignment} bytes", hex(info.ptr))

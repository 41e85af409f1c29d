"""Every bad input the host can see raises a ValueError/TypeError naming the argument."""
from dataclasses import replace

import numpy as np
import pytest

import pydg
from pydg import validate
from pydg.arrays import ArrayInfo, array_info
from pydg.utils import align, ceil_div

BASE = 0x7F0000000000


def info(shape, dtype, strides=None, ptr=BASE, device=0):
    if strides is None:
        strides, step = [], 1
        for d in reversed(shape):
            strides.insert(0, step)
            step *= d
    return ArrayInfo(ptr, tuple(shape), tuple(strides), dtype, device, "torch")


def dense_args(m=256, n=512, k=1024):
    kb = ceil_div(k, 128)
    return dict(a=info((m, k), "float8_e4m3fn"), sa=info((m, kb), "float32", (1, align(m, 4))),
                b=info((n, k), "float8_e4m3fn"), sb=info((ceil_div(n, 128), kb), "float32"),
                out=info((m, n), "bfloat16"))


def test_good_dense_problem():
    p = validate.check_dense(**dense_args(300, 520, 1040))
    assert (p.mode, p.m, p.n, p.k, p.num_groups, p.device) == ("dense", 300, 520, 1040, 1, 0)


@pytest.mark.parametrize("change,error,pattern", [
    (dict(a=info((256, 1024), "float16")), TypeError, "lhs data: expected dtype float8_e4m3fn or uint8"),
    (dict(b=info((512, 1024), "bfloat16")), TypeError, "rhs data: expected dtype"),
    (dict(out=info((256, 512), "float32")), TypeError, "out: expected dtype bfloat16"),
    (dict(sa=info((256, 8), "float16", (1, 256))), TypeError, "lhs scales: expected dtype float32"),
    (dict(sb=info((4, 8), "float64")), TypeError, "rhs scales: expected dtype float32"),
    (dict(a=info((256, 1024, 1), "uint8")), ValueError, "lhs data: expected a tensor of rank 2"),
    (dict(b=info((512, 1008), "uint8")), ValueError, r"rhs data: expected shape \(N, K\) with K = 1024"),
    (dict(sa=info((256, 8), "float32")), ValueError, "lhs scales: expected TMA-aligned column-major"),
    (dict(sa=info((256, 7), "float32", (1, 256))), ValueError, r"lhs scales: expected shape \(256, 8\)"),
    (dict(sb=info((4, 7), "float32")), ValueError, r"rhs scales: expected shape \(4, 8\)"),
    (dict(sb=info((4, 8), "float32", (1, 4))), ValueError, "rhs scales: expected contiguous strides"),
    (dict(out=info((256, 520), "bfloat16")), ValueError, r"out: expected shape \(256, 512\)"),
    (dict(out=info((256, 512), "bfloat16", (1, 256))), ValueError, "out: expected contiguous strides"),
    (dict(a=info((256, 1024), "uint8", (1, 256))), ValueError, "lhs data: expected a contiguous last dimension"),
    (dict(a=info((256, 1024), "uint8", (1032, 1))), ValueError, "lhs data: expected strides that are multiples of 16"),
    (dict(out=info((256, 512), "bfloat16", device=1)), ValueError, "out: expected the same GPU as lhs data"),
    (dict(b=info((512, 1024), "uint8", device=-1)), ValueError, "rhs data: expected an array in GPU memory"),
])
def test_dense_bad_inputs(change, error, pattern):
    args = dense_args()
    args.update(change)
    with pytest.raises(error, match=pattern):
        validate.check_dense(**args)


def test_k_and_n_granularity():
    with pytest.raises(ValueError, match="K .* a multiple of 16"):
        validate.check_dense(**dense_args(64, 128, 1000))
    with pytest.raises(ValueError, match="N a multiple of 8"):
        validate.check_dense(**dense_args(64, 132, 1024))


def test_32_bit_limits():
    args = dense_args()
    args["a"] = info((2**31, 1024), "uint8")
    args["sa"] = info((2**31, 8), "float32", (1, 2**31))
    args["out"] = info((2**31, 512), "bfloat16")
    with pytest.raises(ValueError, match="M at most"):
        validate.check_dense(**args)


def test_pointer_alignment_is_checked_per_call():
    a = info((64, 128), "uint8", ptr=BASE + 8)
    with pytest.raises(ValueError, match="lhs data: expected a data pointer aligned to 16 bytes"):
        validate.check_pointers((a,), ("lhs data",), (16,))
    validate.check_pointers((replace(a, ptr=BASE + 16),), ("lhs data",), (16,))


def contiguous_args(m=512, n=256, k=512, groups=4):
    kb = ceil_div(k, 128)
    return dict(a=info((m, k), "uint8"), sa=info((m, kb), "float32", (1, m)), b=info((groups, n, k), "uint8"),
                sb=info((groups, ceil_div(n, 128), kb), "float32"), out=info((m, n), "bfloat16"),
                m_indices=info((m,), "int32"))


def test_contiguous_checks():
    assert validate.check_contiguous(**contiguous_args()).num_groups == 4
    for change, error, pattern in [
        (dict(m_indices=info((512,), "int64")), TypeError, "m_indices: expected dtype int32"),
        (dict(m_indices=info((511,), "int32")), ValueError, "m_indices: expected shape"),
        (dict(b=info((0, 256, 512), "uint8")), ValueError, "rhs data: expected at least one group"),
        (dict(sb=info((3, 2, 4), "float32")), ValueError, "rhs scales: expected shape"),
    ]:
        args = contiguous_args()
        args.update(change)
        with pytest.raises(error, match=pattern):
            validate.check_contiguous(**args)
    args = contiguous_args(m=500)
    args["sa"] = info((500, 4), "float32", (1, 500))
    with pytest.raises(ValueError, match="M_sum .* a multiple of"):
        validate.check_contiguous(**args)


def masked_args(groups=4, m=100, n=256, k=512):
    kb, ma = ceil_div(k, 128), align(m, 4)
    return dict(a=info((groups, m, k), "uint8"), sa=info((groups, m, kb), "float32", (ma * kb, 1, ma)),
                b=info((groups, n, k), "uint8"), sb=info((groups, ceil_div(n, 128), kb), "float32"),
                out=info((groups, m, n), "bfloat16"), masked_m=info((groups,), "int32"))


def test_masked_checks():
    assert validate.check_masked(**masked_args()).m == 100
    for change, error, pattern in [
        (dict(masked_m=info((4,), "uint32")), TypeError, "masked_m: expected dtype int32"),
        (dict(masked_m=info((5,), "int32")), ValueError, "masked_m: expected shape"),
        (dict(b=info((3, 256, 512), "uint8")), ValueError, "rhs data: expected shape"),
        (dict(out=info((4, 100, 264), "bfloat16")), ValueError, "out: expected shape"),
        (dict(sa=info((4, 100, 4), "float32")), ValueError, "lhs scales: expected TMA-aligned"),
    ]:
        args = masked_args()
        args.update(change)
        with pytest.raises(error, match=pattern):
            validate.check_masked(**args)
    with pytest.raises(TypeError, match="expected_m: expected a positive int.*got float 2.5"):
        validate.check_expected_m(2.5)
    with pytest.raises(TypeError, match="expected_m"):
        validate.check_expected_m(True)
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"expected_m: expected a positive int .*got {bad}"):
            validate.check_expected_m(bad)
    assert validate.check_expected_m(np.int64(7)) == 7 and type(validate.check_expected_m(np.int32(7))) is int


def test_public_api_rejects_non_arrays_and_bad_pairs():
    a = np.zeros((64, 128), np.uint8)
    with pytest.raises(TypeError, match="lhs: expected a pair"):
        pydg.gemm_fp8_fp8_bf16_nt(a, (a, a), a)
    with pytest.raises(TypeError, match="lhs data: expected a CUDA array"):
        pydg.gemm_fp8_fp8_bf16_nt((a, a), (a, a), a)
    with pytest.raises(TypeError, match="expected_m"):
        pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, a), (a, a), a, a, [64])


def test_set_num_sms_rejects_nonsense():
    with pytest.raises(ValueError, match="num_sms"):
        pydg.set_num_sms(0)
    with pytest.raises(ValueError, match="num_sms"):
        pydg.set_num_sms(True)


def test_cuda_array_interface_objects_are_read():
    class Fake:
        __cuda_array_interface__ = {"shape": (4, 32), "typestr": "|u1", "data": (0, False), "version": 3,
                                    "strides": None}

    got = array_info(Fake(), "x")
    assert got.shape == (4, 32) and got.strides == (32, 1) and got.dtype == "uint8" and got.device == -1

"""B's L2 prefetch (plan.prefetch_b, off by default) on an sm_90 GPU: a hint that must not change a
single bit of the result, in each layout, with prefetch distances past K's end."""
from dataclasses import replace

import pytest

from pydg.scheduler.heuristics import choose_plan
from gpu_util import DIFF_LIMIT, calc_diff, dequantize, launch_plan, nan_like, quantized_pair, torch_module
from test_grouped_gpu import _contiguous_inputs, _masked_inputs

pytestmark = pytest.mark.gpu


def _run(torch, plan, arrays, out_shape):
    out = nan_like(torch, out_shape)
    launch_plan(torch, plan, (*arrays[:4], out, *arrays[4:]))
    return out


def _same_bits_with_prefetch(torch, plan, arrays, out_shape, distances=(1, 8, 64)):
    plain = _run(torch, plan, arrays, out_shape)
    for distance in distances:
        prefetched = _run(torch, replace(plan, prefetch_b=distance), arrays, out_shape)
        torch.cuda.synchronize()
        assert torch.equal(prefetched.isnan(), plain.isnan())
        assert torch.equal(prefetched.nan_to_num(), plain.nan_to_num()), f"prefetch_b={distance}"
    return plain


@pytest.mark.parametrize("m,n,k", [(64, 2112, 7168), (128, 4096, 896), (4096, 7168, 2048)])
def test_dense(m, n, k):
    torch = torch_module()
    a, sa = quantized_pair(torch, m, k, per_block=False)
    b, sb = quantized_pair(torch, n, k, per_block=True)
    plan = choose_plan("dense", m, n, k, 1, torch.cuda.get_device_properties(0).multi_processor_count)
    out = _same_bits_with_prefetch(torch, plan, (a, sa, b, sb), (m, n))
    assert not out.isnan().any()
    assert calc_diff(torch, out, dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T) <= DIFF_LIMIT


def test_contiguous():
    torch = torch_module()
    n, k = 4096, 1024
    a, sa, b, sb, b_ref, m_indices = _contiguous_inputs(torch, [300, 0, 128, 1000], n, k)
    plan = choose_plan("contiguous", a.shape[0], n, k, 4, torch.cuda.get_device_properties(0).multi_processor_count)
    out = _same_bits_with_prefetch(torch, plan, (a, sa, b, sb, m_indices), (a.shape[0], n))
    rows = (m_indices == 3).nonzero().squeeze(1)
    expected = dequantize(torch, a, sa, False)[rows] @ b_ref[3].T
    assert calc_diff(torch, out[rows], expected) <= DIFF_LIMIT


def test_masked():
    torch = torch_module()
    groups, m_max, n, k = 4, 256, 4096, 2048
    a, sa, b, sb, b_ref = _masked_inputs(torch, groups, m_max, n, k)
    masked_m = torch.tensor([256, 0, 17, 200], device="cuda", dtype=torch.int32)
    plan = choose_plan("masked", m_max, n, k, groups, torch.cuda.get_device_properties(0).multi_processor_count,
                       expected_m=170)
    out = _same_bits_with_prefetch(torch, plan, (a, sa, b, sb, masked_m), (groups, m_max, n))
    assert out[1].isnan().all() and out[2, 17:].isnan().all()
    expected = dequantize(torch, a[3], sa[3], False)[:200] @ b_ref[3].T
    assert calc_diff(torch, out[3, :200], expected) <= DIFF_LIMIT

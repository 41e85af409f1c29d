"""Checks shared by the GPU tests of kernel options (the early start, B's L2 hint, the output staged
in held stages, the split tail): a heuristic candidate in the tile and cluster form asked for,
and a plan with an option on compared with the same plan without it: right against the float64
reference, nothing written where it must not be, and bit for bit the same (the products are added in
the same order)."""
from __future__ import annotations

import random
from dataclasses import replace

import pydg
from pydg.scheduler.heuristics import candidate_plans
from gpu_util import DIFF_LIMIT, calc_diff, dequantize, launch_plan, nan_like, quantized_pair, torch_module
from test_grouped_gpu import _check_masked, _check_padding_blocks_poisoned, _contiguous_inputs, _masked_inputs


def candidate(mode, m, n, k, groups, block_m, block_n, cluster, multicast, expected_m=None):
    """The heuristic's candidate of this tile, in the cluster form asked for (validated)."""
    for plan in candidate_plans(mode, m, n, k, groups, pydg.get_num_sms(), expected_m=expected_m):
        if (plan.block_m, plan.block_n, plan.cluster_size) == (block_m, block_n, 1):
            if cluster > 1:
                plan = replace(plan, cluster_size=cluster, multicast=multicast, inner_axis="m" if multicast == "b" else "n",
                               num_sms=plan.num_sms - plan.num_sms % 2)
            plan.validate()
            return plan
    raise AssertionError(f"no {block_m}x{block_n} plan for {mode} {m}x{n}x{k}")


def dense_checked(own, other, m: int, n: int, k: int, gen=None):
    """Both plans on the same random inputs; `other`'s output checked right against the reference and
    nothing written past its rows. Returns (other's output, own's)."""
    torch = torch_module()
    a, sa = quantized_pair(torch, m, k, per_block=False, gen=gen)
    b, sb = quantized_pair(torch, n, k, per_block=True, gen=gen)
    expected = nan_like(torch, (m, n))
    launch_plan(torch, own, (a, sa, b, sb, expected))
    buffer = nan_like(torch, (m + 64, n))
    launch_plan(torch, other, (a, sa, b, sb, buffer[:m]))
    torch.cuda.synchronize()
    reference = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
    assert not buffer[:m].isnan().any(), other.summary()
    assert buffer[m:].isnan().all(), other.summary()
    assert calc_diff(torch, buffer[:m], reference) <= DIFF_LIMIT, other.summary()
    return buffer[:m], expected


def dense_matches_own(own, other, m: int, n: int, k: int) -> None:
    """`other` (`own` with an option on): checked as dense_checked does, and bit for bit `own`'s."""
    out, expected = dense_checked(own, other, m, n, k)
    assert torch_module().equal(out, expected), other.summary()


def masked_matches_own(own, other, groups: int, m_max: int, n: int, k: int, seed: int) -> None:
    """`other` (`own` with an option on) on masked groups that are full, empty, of one row and random:
    right against the reference, rows past a group's count left poisoned, and bit for bit `own`'s."""
    torch = torch_module()
    rng = random.Random(seed)
    masked = [m_max, 0, 1] + [rng.randint(1, m_max) for _ in range(groups - 3)]
    a, sa, b, sb, b_ref = _masked_inputs(torch, groups, m_max, n, k)
    masked_m = torch.tensor(masked, device="cuda", dtype=torch.int32)
    expected = nan_like(torch, (groups, m_max, n))
    launch_plan(torch, own, (a, sa, b, sb, expected, masked_m))
    out = nan_like(torch, (groups, m_max, n))
    launch_plan(torch, other, (a, sa, b, sb, out, masked_m))
    torch.cuda.synchronize()
    _check_masked(torch, a, sa, b_ref, out, masked)
    assert torch.equal(out.nan_to_num(), expected.nan_to_num()), other.summary()
    assert torch.equal(out.isnan(), expected.isnan()), other.summary()


# Experts of 0, 1 and up to 2000 rows: 36 blocks of 64 rows with the trailing padding one.
EXPERT_SIZES = [0, 1, 128, 300, 1000, 1, 0, 330, 2000, 64, 128]


def contiguous_checked(torch, plan, out, a, sa, b_ref, m_indices, groups: int) -> None:
    """`out` of `plan`'s contiguous call: each expert's rows right against the reference, blocks of
    padding left poisoned."""
    a_ref, idx = dequantize(torch, a, sa, False), m_indices.long()
    for g in range(groups):
        rows = (idx == g).nonzero().squeeze(1)
        if rows.numel():
            assert not out[rows].isnan().any(), plan.summary()
            assert calc_diff(torch, out[rows], a_ref[rows] @ b_ref[g].T) <= DIFF_LIMIT, plan.summary()
    _check_padding_blocks_poisoned(torch, out, idx)


def contiguous_matches_own(plans_for, n: int, k: int, sizes: list[int] = EXPERT_SIZES) -> None:
    """`plans_for(rows)` = (own, other), the plan without and with an option for the concatenated rows
    of `sizes`: `other` right against the reference, padding rows left poisoned, bit for bit `own`'s."""
    torch = torch_module()
    a, sa, b, sb, b_ref, m_indices = _contiguous_inputs(torch, sizes, n, k)
    own, other = plans_for(a.shape[0])
    expected = nan_like(torch, (a.shape[0], n))
    launch_plan(torch, own, (a, sa, b, sb, expected, m_indices))
    out = nan_like(torch, (a.shape[0], n))
    launch_plan(torch, other, (a, sa, b, sb, out, m_indices))
    torch.cuda.synchronize()
    contiguous_checked(torch, other, out, a, sa, b_ref, m_indices, len(sizes))
    assert torch.equal(out.isnan(), expected.isnan()), other.summary()
    assert torch.equal(out.nan_to_num(), expected.nan_to_num()), other.summary()

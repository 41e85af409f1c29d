"""The wide tiles (208 columns, heuristics.WIDE_TILES) on an sm_90 GPU in each layout and cluster form the
heuristic gives them: right against the float64 reference, `out` poisoned first, nothing written where it
must not be. A 208-wide tile spans three of B's 128-row scale blocks and compiles eight copies of its
k-loop (one per start column modulo 128); test_block_widths_gpu.py runs every copy."""
import random

import pytest

from pydg.scheduler import heuristics
from pydg.scheduler.heuristics import ranked_plans
from gpu_util import launch_plan, nan_like, torch_module
from test_grouped_gpu import _check_masked, _contiguous_inputs, _masked_inputs
from variant_checks import EXPERT_SIZES, contiguous_checked, dense_checked

pytestmark = pytest.mark.gpu


def _wide_plan(mode, m, n, k, groups, block_m, multicast, expected_m=None):
    """The ranked candidate of this tile and cluster form, finished as the heuristic launches it."""
    for plan in ranked_plans(mode, m, n, k, groups, 132, expected_m=expected_m):
        if (plan.block_m, plan.block_n, plan.multicast) == (block_m, 208, multicast):
            return plan
    raise AssertionError(f"no {block_m}x208 {multicast} plan for {mode} {m}x{n}x{k}")


# (M, N, K, block_m, multicast): pairs sharing B and A, single CTAs over several waves, the one-wave
# shape the model would take 128x208 for (300 x 26640 x 2176), and M ending inside a block.
DENSE = [(4096, 7168, 896, 128, "b"), (1000, 6656, 640, 64, "a"), (2000, 7168, 1152, 128, "none"),
         (300, 26640, 2176, 128, "none"), (37, 25376, 1024, 64, "none")]


@pytest.mark.parametrize("m,n,k,block_m,multicast", DENSE)
def test_wide_dense(m, n, k, block_m, multicast, monkeypatch):
    narrow = heuristics.choose_plan("dense", m, n, k, 1, 132)
    monkeypatch.setattr(heuristics, "WIDE_TILES", True)
    wide = _wide_plan("dense", m, n, k, 1, block_m, multicast)
    dense_checked(narrow, wide, m, n, k)


@pytest.mark.parametrize("block_m,multicast", [(128, "b"), (64, "a"), (64, "none")])
def test_wide_contiguous(block_m, multicast, monkeypatch):
    torch = torch_module()
    n, k = 6656, 4096  # 32 column blocks of 208 (pairs sharing A need an even count); K: the early start
    a, sa, b, sb, b_ref, m_indices = _contiguous_inputs(torch, EXPERT_SIZES, n, k)
    monkeypatch.setattr(heuristics, "WIDE_TILES", True)
    plan = _wide_plan("contiguous", a.shape[0], n, k, len(EXPERT_SIZES), block_m, multicast)
    out = nan_like(torch, (a.shape[0], n))
    launch_plan(torch, plan, (a, sa, b, sb, out, m_indices))
    torch.cuda.synchronize()
    contiguous_checked(torch, plan, out, a, sa, b_ref, m_indices, len(EXPERT_SIZES))


@pytest.mark.parametrize("block_m,multicast", [(128, "none"), (64, "none"), (64, "a")])
def test_wide_masked(block_m, multicast, monkeypatch):
    torch = torch_module()
    groups, m_max, n, k = 4, 512, 6656, 1024
    rng = random.Random(block_m)
    masked = [m_max, 0, 1, rng.randint(2, m_max - 1)]
    a, sa, b, sb, b_ref = _masked_inputs(torch, groups, m_max, n, k)
    monkeypatch.setattr(heuristics, "WIDE_TILES", True)
    plan = _wide_plan("masked", m_max, n, k, groups, block_m, multicast, expected_m=m_max)
    out = nan_like(torch, (groups, m_max, n))
    launch_plan(torch, plan, (a, sa, b, sb, out, torch.tensor(masked, device="cuda", dtype=torch.int32)))
    torch.cuda.synchronize()
    _check_masked(torch, a, sa, b_ref, out, masked)

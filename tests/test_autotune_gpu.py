"""PYDG_AUTOTUNE on the GPU: tuning times real launches, keeps a record, and the result is right."""
import json

import pytest

import pydg
from pydg import autotune, gemm
from pydg.driver import cache
from gpu_util import DIFF_LIMIT, calc_diff, dequantize, nan_like, quantized_pair, torch_module
from test_grouped_gpu import _check_padding_blocks_poisoned, _contiguous_inputs

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("m,n,k", [(4096, 2112, 7168), (64, 2112, 7168), (300, 7168, 2048)])
def test_tuned_call_is_correct_and_remembered(m, n, k, tmp_path, monkeypatch):
    torch = torch_module()
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(autotune, "_memo", {})
    monkeypatch.setattr(gemm, "_cache", gemm._ThreadCache())  # earlier tests prepared these shapes untuned
    autotune.set_autotune(True)
    try:
        a, sa = quantized_pair(torch, m, k, per_block=False)
        b, sb = quantized_pair(torch, n, k, per_block=True)
        out = nan_like(torch, (m, n))
        pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)
        torch.cuda.synchronize()
    finally:
        autotune.set_autotune(None)
    reference = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
    assert not out.isnan().any()
    assert calc_diff(torch, out, reference) <= DIFF_LIMIT
    assert len(list(tmp_path.glob(f"{cache.AUTOTUNE_PREFIX}*.json"))) == 1


def test_tuned_contiguous_call_times_the_early_start_both_ways(tmp_path, monkeypatch):
    """At K = 3072 (24 k-blocks, under EARLY_START_MIN_K_BLOCKS) the model's plan runs without the early
    start; tuning also times it with it. Whichever wins, every expert's rows are right and the padding
    blocks keep their poison."""
    torch = torch_module()
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(autotune, "_memo", {})
    monkeypatch.setattr(gemm, "_cache", gemm._ThreadCache())
    sizes, n, k = [1024, 700, 0, 1300], 2048, 3072
    a, sa, b, sb, b_ref, m_indices = _contiguous_inputs(torch, sizes, n, k)
    out = nan_like(torch, (a.shape[0], n))
    autotune.set_autotune(True)
    try:
        pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (b, sb), out, m_indices)
        torch.cuda.synchronize()
    finally:
        autotune.set_autotune(None)
    idx = m_indices.long()
    a_ref = dequantize(torch, a, sa, False)
    for g, size in enumerate(sizes):
        rows = (idx == g).nonzero().squeeze(1)
        assert rows.numel() == size
        if size:
            assert not out[rows].isnan().any()
            assert calc_diff(torch, out[rows], a_ref[rows] @ b_ref[g].T) <= DIFF_LIMIT
    _check_padding_blocks_poisoned(torch, out, idx)
    (record,) = tmp_path.glob(f"{cache.AUTOTUNE_PREFIX}*.json")
    timed = [t["plan"] for t in json.loads(record.read_text())["timings_us"]]
    early = [plan for plan in timed if "next tile started early" in plan]
    assert len(early) == 1 and len(timed) > 2, timed
    assert early[0].replace(", next tile started early", "") == timed[0]

"""PYDG_AUTOTUNE on the GPU: tuning times real launches, keeps a record, and the result is right."""
import pytest

import pydg
from pydg import autotune, gemm
from pydg.driver import cache
from gpu_util import DIFF_LIMIT, calc_diff, dequantize, nan_like, quantized_pair, torch_module

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

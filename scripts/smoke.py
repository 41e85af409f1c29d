"""Quick GPU smoke check: a few shapes of each layout, printing calc_diff (scripts/gpu_check.sh runs the full suite)."""
import sys
import time

import torch

import pydg

sys.path.insert(0, "tests")
from gpu_util import calc_diff, dequantize, nan_like, quantized_pair  # noqa: E402


def dense(m, n, k):
    a, sa = quantized_pair(torch, m, k, per_block=False)
    b, sb = quantized_pair(torch, n, k, per_block=True)
    out = nan_like(torch, (m, n))
    t = time.perf_counter()
    pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)
    torch.cuda.synchronize()
    t = time.perf_counter() - t
    ref = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
    print(f"dense {m}x{n}x{k}: diff {calc_diff(torch, out, ref):.3g} nan {int(torch.isnan(out).sum())} "
          f"first call {t*1e3:.0f} ms | {pydg.describe_gemm(m, n, k, compile=False).plan.summary()}", flush=True)


if __name__ == "__main__":
    for shape in [(256, 512, 1024), (1, 256, 128), (4096, 7168, 2048), (64, 2112, 7168), (300, 392, 656), (128, 24576, 1536)]:
        dense(*shape)
    # Which stream does a call inside torch.cuda.stream(s) use?
    from pydg.arrays import current_stream
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        print("torch stream", hex(s.cuda_stream), "pydg sees", hex(current_stream("torch", 0)),
              "raw getter", hasattr(torch._C, "_cuda_getCurrentRawStream"), flush=True)

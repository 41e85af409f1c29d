"""Memory bandwidth of pydg's FP8 cast kernels against a device-to-device copy, on the GPU.

    python scripts/bench_cast.py            # the table below, on cuda:0, torch needed

Each case is timed with pydg.testing.bench (CUDA events around each call, L2 flushed before it,
median of `--iters`; the flush also hides the host's time per call). Bytes moved are the input read plus the E4M3 codes and float32 scales
written; a copy of a tensor the size of the input moves twice its bytes. The target (issue 8) is
at least 80% of the copy's bandwidth on large inputs. The last column times the same cast done with
torch operations (pydg.quantize's host recipe run on the GPU) for comparison.
"""
from __future__ import annotations

import argparse

CASES = [  # (cast, shape, dtype)
    ("per_token", (8192, 7168), "bfloat16"),
    ("per_token", (8192, 7168), "float32"),
    ("per_token", (4096, 2048), "bfloat16"),
    ("per_token", (65536, 512), "bfloat16"),
    ("per_token", (128, 7168), "bfloat16"),
    ("masked", (8, 4096, 7168), "bfloat16"),
    ("per_block", (7168, 7168), "bfloat16"),
    ("per_block", (24576, 1536), "float32"),
    ("per_block", (8, 4096, 7168), "bfloat16"),
]


def main() -> None:
    import torch

    import pydg
    from pydg import quantize
    from pydg.testing import bench

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()

    print(f"{torch.cuda.get_device_name()}, pydg {pydg.__version__}, torch {torch.__version__}")
    print(f"{'cast':>9} {'shape':>18} {'dtype':>8} {'us':>8} {'GB/s':>7} {'copy GB/s':>9} {'of copy':>7} "
          f"{'torch us':>9}")
    for kind, shape, dtype in CASES:
        x = torch.randn(*shape, device="cuda", dtype=getattr(torch, dtype))
        copy_dst = torch.empty_like(x)
        copy_s = bench(lambda: copy_dst.copy_(x), iters=args.iters)
        copy_gbps = 2 * x.nbytes / copy_s / 1e9

        if kind == "masked":
            masked_m = torch.full((shape[0],), shape[1], device="cuda", dtype=torch.int32)
            cast = lambda: pydg.per_token_cast_to_fp8_masked(x, masked_m)  # noqa: E731
            torch_cast = lambda: quantize._per_token_torch(x)  # noqa: E731
        elif kind == "per_token":
            cast = lambda: pydg.per_token_cast_to_fp8(x)  # noqa: E731
            torch_cast = lambda: quantize._per_token_torch(x)  # noqa: E731
        else:
            cast = lambda: pydg.per_block_cast_to_fp8(x)  # noqa: E731
            torch_cast = lambda: quantize._per_block_torch(x)  # noqa: E731
        codes, scales = cast()
        moved = x.nbytes + codes.nbytes + scales.numel() * 4
        cast_s = bench(cast, iters=args.iters)
        torch_s = bench(torch_cast, iters=max(3, args.iters // 5))
        gbps = moved / cast_s / 1e9
        print(f"{kind:>9} {'x'.join(map(str, shape)):>18} {dtype:>8} {cast_s * 1e6:8.1f} {gbps:7.0f} "
              f"{copy_gbps:9.0f} {gbps / copy_gbps:7.0%} {torch_s * 1e6:9.1f}")
        del x, copy_dst, codes, scales


if __name__ == "__main__":
    main()

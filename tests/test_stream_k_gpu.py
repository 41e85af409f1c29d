"""Stream-K (GemmPlan.stream_k) on an sm_90 GPU: the last tiles shared out as runs of k-blocks, a split
tile finished by the CTA that computes its k-block 0 from the others' FP32 partials.

What can go wrong: a k-block computed twice or never (the walks of the producer and the math warps,
the owner's list of senders), an owner reading a partial before it is published or one left over
from an earlier launch (the flags), a sender writing D, a write outside `out`. Each case poisons a
buffer taller than `out`, checks the result against float64, against the plan without stream-K (the
same sums in another order: equal to within a few BF16 rounding steps), that rows past M are still
NaN, and that every flag is back at zero; then launches again on new data."""
from dataclasses import replace

import pytest

from gpu_util import DIFF_LIMIT, calc_diff, dequantize, nan_like, quantized_pair, torch_module
from variant_checks import candidate, dense_checked

pytestmark = pytest.mark.gpu


def _shared_out(plan, num_sms=None):
    """The plan with stream-K (and the grid asked for), in the form the heuristic would give it."""
    from pydg.scheduler.heuristics import stream_k_form

    if num_sms is not None:
        plan = replace(plan, num_sms=num_sms)
    shared = stream_k_form(plan)
    shared.validate()
    return replace(shared, stream_k=False), shared


def _flags(torch, stream: int) -> list[int]:
    """The workspace's flags of `stream` (all must be zero between launches)."""
    import ctypes

    from cuda.bindings import driver as cu
    from pydg.driver import workspace

    torch.cuda.synchronize()
    address = workspace._workspaces[(torch.cuda.current_device(), stream)][0]
    host = (ctypes.c_int32 * (workspace.FLAG_BYTES // 4))()
    err, = cu.cuMemcpyDtoH(host, address, workspace.FLAG_BYTES)
    assert err == cu.CUresult.CUDA_SUCCESS
    return list(host)


def _check(torch, plain, shared, m, n, k, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    out, expected = dense_checked(plain, shared, m, n, k, gen)
    # The split sums round differently in FP32, so a BF16 output may differ by a rounding step.
    close = torch.isclose(out.float(), expected.float(), rtol=2 ** -7, atol=1e-2)
    assert bool(close.all()), (shared.summary(), int((~close).sum()))
    assert not any(_flags(torch, torch.cuda.current_stream().cuda_stream)), shared.summary()


# (M, N, K, block_m, block_n, cluster, multicast, num_sms): several waves with a partial last one;
# K of 1 to 129 k-blocks (one k-block: the share-out is by whole tiles); rows ending inside a block;
# a grid of 40 SMs (many whole waves before the share-out); fewer tiles than SMs (tiles split among
# many CTAs: 4096 x 1024 x 8192 at 256x128 is 128 tiles on 132); small M, where the share-out is a
# split-K (scripts/ab_split_k.py): 33 tiles split four ways, 56 tiles of 128 k-blocks, 37 rows.
DENSE = [
    (4096, 7168, 1024, 256, 128, 2, "a", None),
    (4096, 4096, 2048, 256, 128, 2, "b", None),
    (2500, 7168, 1536, 256, 128, 2, "a", None),
    (1000, 8192, 896, 256, 128, 1, "none", None),
    (4096, 2112, 3072, 128, 176, 2, "b", None),
    (777, 6144, 640, 128, 160, 1, "none", None),
    (1000, 4096, 16512, 128, 128, 2, "a", None),
    (3000, 2048, 128, 256, 128, 1, "none", None),
    (4096, 3072, 768, 256, 128, 2, "a", 40),
    (1000, 2048, 2048, 128, 128, 1, "none", 131),
    (4096, 1024, 8192, 256, 128, 1, "none", None),
    (512, 4096, 4096, 64, 128, 1, "none", None),
    (64, 2112, 7168, 64, 64, 1, "none", None),
    (128, 7168, 16384, 128, 128, 1, "none", None),
    (37, 2048, 7168, 64, 32, 1, "none", None),
    # The splits the model picks with heuristics.SPLIT_K on (test_kernels checks they are compiled).
    (128, 2112, 7168, 128, 64, 1, "none", None),
    (37, 2048, 7168, 64, 80, 1, "none", None),
    (300, 4096, 7168, 128, 160, 1, "none", None),
    (300, 2112, 7168, 128, 144, 1, "none", None),
]


@pytest.mark.parametrize("m,n,k,block_m,block_n,cluster,multicast,num_sms", DENSE)
def test_dense(m, n, k, block_m, block_n, cluster, multicast, num_sms):
    torch = torch_module()
    plain, shared = _shared_out(candidate("dense", m, n, k, 1, block_m, block_n, cluster, multicast), num_sms)
    assert shared.stream_k_tiles > 0, shared.summary()
    _check(torch, plain, shared, m, n, k, seed=m + n + k)
    _check(torch, plain, shared, m, n, k, seed=m + n + k + 1)  # a second launch on new data


def _prepared(torch, m, n, k, seed):
    """Random inputs, a NaN output, and a launcher of the 256x128 stream-K plan in pairs sharing A on
    them (made outside any capture: it loads the module), with its pointers."""
    from pydg.arrays import array_info
    from pydg.kernels.fp8_gemm import GemmLauncher, GemmOperands

    _, shared = _shared_out(candidate("dense", m, n, k, 1, 256, 128, 2, "a"))
    gen = torch.Generator(device="cuda").manual_seed(seed)
    a, sa = quantized_pair(torch, m, k, per_block=False, gen=gen)
    b, sb = quantized_pair(torch, n, k, per_block=True, gen=gen)
    arrays = (a, sa, b, sb, nan_like(torch, (m, n)))
    ops = GemmOperands(*(array_info(x, name) for x, name in zip(arrays, ("a", "sa", "b", "sb", "out"))))
    return (*arrays, GemmLauncher(shared, ops, 0), tuple(x.data_ptr() for x in arrays) + (0,))


def test_side_stream_then_graph_replays_with_new_inputs():
    """A side stream gets its own workspace; a captured launch replays with new inputs (the kernel sets
    the flags it raised back to zero, so every replay starts clean)."""
    torch = torch_module()
    m, n, k = 4096, 7168, 2048
    a, sa, b, sb, out, launcher, pointers = _prepared(torch, m, n, k, seed=7)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        launcher(pointers, side.cuda_stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            launcher(pointers, side.cuda_stream)
    torch.cuda.synchronize()
    reference = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
    assert calc_diff(torch, out, reference) <= DIFF_LIMIT
    for seed in (8, 9):
        gen = torch.Generator(device="cuda").manual_seed(seed)
        new_a, new_sa = quantized_pair(torch, m, k, per_block=False, gen=gen)
        a.copy_(new_a)
        sa.copy_(new_sa)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        reference = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
        assert not out.isnan().any()
        assert calc_diff(torch, out, reference) <= DIFF_LIMIT
    assert not any(_flags(torch, side.cuda_stream))


def test_first_call_on_a_stream_inside_graph_capture():
    """A stream's workspace may first be needed while it is being captured: it is allocated with the
    thread in the relaxed capture mode, and its flags are cleared by a memset that the graph records
    (and replays, harmlessly)."""
    torch = torch_module()
    m, n, k = 2500, 7168, 1536
    a, sa, b, sb, out, launcher, pointers = _prepared(torch, m, n, k, seed=11)
    side = torch.cuda.Stream()  # no workspace yet
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        launcher(pointers, side.cuda_stream)
    for _ in range(2):
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        reference = dequantize(torch, a, sa, False) @ dequantize(torch, b, sb, True).T
        assert not out.isnan().any() and calc_diff(torch, out, reference) <= DIFF_LIMIT
    assert not any(_flags(torch, side.cuda_stream))

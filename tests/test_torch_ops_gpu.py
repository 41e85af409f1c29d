"""pydg's torch.library operators: eager results, opcheck, torch.compile(fullgraph) and CUDA graphs."""
import shutil

import pytest

import pydg
from gpu_util import DIFF_LIMIT, calc_diff, nan_like, quantize_rows_traceable, quantized_pair, torch_module

pytestmark = pytest.mark.gpu

# Inductor builds Triton kernels, and Triton needs a host C compiler for its launchers.
HAS_C_COMPILER = any(shutil.which(cc) for cc in ("cc", "gcc", "clang"))
needs_inductor = pytest.mark.skipif(not HAS_C_COMPILER, reason="Inductor/Triton need a C compiler")


@pytest.fixture(scope="module")
def torch():
    torch = torch_module()
    import pydg.torch_ops  # noqa: F401  (registers torch.ops.pydg.*)

    return torch


@pytest.fixture(autouse=True)
def fresh_dynamo(torch):
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _dense(torch, m=256, n=512, k=1024):
    a, sa = quantized_pair(torch, m, k, per_block=False)
    b, sb = quantized_pair(torch, n, k, per_block=True)
    return a, sa, b, sb


def _contiguous(torch, sizes=(128, 256, 128), n=384, k=512):
    """Segments of whole 128-row blocks only: every row is written, so outputs compare in full."""
    m_indices = torch.cat([torch.full((size,), g, dtype=torch.int32) for g, size in enumerate(sizes)]).cuda()
    a, sa = quantized_pair(torch, sum(sizes), k, per_block=False)
    b, sb = quantized_pair(torch, n, k, per_block=True, lead=(len(sizes),))
    return a, sa, b, sb, m_indices


def _masked(torch, groups=4, m_max=128, n=256, k=512):
    a, sa = quantized_pair(torch, m_max, k, per_block=False, lead=(groups,))
    b, sb = quantized_pair(torch, n, k, per_block=True, lead=(groups,))
    return a, sa, b, sb


# ---- eager ---------------------------------------------------------------------------------------

def test_dense_ops_equal_the_direct_call(torch):
    a, sa, b, sb = _dense(torch)
    direct = nan_like(torch, (a.shape[0], b.shape[0]))
    pydg.gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), direct)
    functional = torch.ops.pydg.gemm_fp8_fp8_bf16_nt(a, sa, b, sb)
    out = nan_like(torch, direct.shape)
    torch.ops.pydg.gemm_fp8_fp8_bf16_nt_out(a, sa, b, sb, out)
    torch.cuda.synchronize()
    assert functional.dtype == torch.bfloat16 and functional.shape == direct.shape
    assert torch.equal(functional, direct) and torch.equal(out, direct)
    assert not torch.isnan(direct).any()


def test_contiguous_ops_equal_the_direct_call(torch):
    a, sa, b, sb, m_indices = _contiguous(torch)
    direct = nan_like(torch, (a.shape[0], b.shape[1]))
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous((a, sa), (b, sb), direct, m_indices)
    functional = torch.ops.pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous(a, sa, b, sb, m_indices)
    out = nan_like(torch, direct.shape)
    torch.ops.pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous_out(a, sa, b, sb, out, m_indices)
    torch.cuda.synchronize()
    assert torch.equal(functional, direct) and torch.equal(out, direct)


def test_masked_ops_equal_the_direct_call_on_valid_rows(torch):
    a, sa, b, sb = _masked(torch)
    masked = [128, 5, 0, 77]
    masked_m = torch.tensor(masked, dtype=torch.int32, device="cuda")
    direct = nan_like(torch, (a.shape[0], a.shape[1], b.shape[1]))
    pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked((a, sa), (b, sb), direct, masked_m, 64)
    functional = torch.ops.pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked(a, sa, b, sb, masked_m, 64)
    out = nan_like(torch, direct.shape)
    torch.ops.pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked_out(a, sa, b, sb, out, masked_m, 64)
    torch.cuda.synchronize()
    for g, rows in enumerate(masked):
        assert torch.equal(functional[g, :rows], direct[g, :rows]) and torch.equal(out[g, :rows], direct[g, :rows])
        assert torch.isnan(out[g, rows:]).all(), "the _out operator wrote rows past masked_m"


def test_bad_input_raises_pydg_errors_through_the_op(torch):
    a, sa, b, sb = _dense(torch)
    with pytest.raises(ValueError, match="lhs scales"):
        torch.ops.pydg.gemm_fp8_fp8_bf16_nt(a, sa.contiguous(), b, sb)
    with pytest.raises(ValueError, match="lhs data: expected a tensor of rank 3"):
        torch.ops.pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked(a, sa, b, sb, sb.int(), 1)


def _opcheck_cases(torch):
    a, sa, b, sb = _dense(torch, 128, 256, 256)
    ca, csa, cb, csb, m_indices = _contiguous(torch, (128, 128), 256, 256)
    ma, msa, mb, msb = _masked(torch, 2, 64, 256, 256)
    full = torch.full((2,), 64, dtype=torch.int32, device="cuda")  # every row valid: outputs compare in full
    # FP8 as raw bytes: opcheck compares inputs before and after with allclose, which torch lacks for float8.
    a, b, ca, cb, ma, mb = (x.view(torch.uint8) for x in (a, b, ca, cb, ma, mb))
    ops = torch.ops.pydg
    return {
        "dense": (ops.gemm_fp8_fp8_bf16_nt, (a, sa, b, sb)),
        "dense_out": (ops.gemm_fp8_fp8_bf16_nt_out, (a, sa, b, sb, nan_like(torch, (128, 256)))),
        "contiguous": (ops.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous, (ca, csa, cb, csb, m_indices)),
        "contiguous_out": (ops.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous_out,
                           (ca, csa, cb, csb, nan_like(torch, (256, 256)), m_indices)),
        "masked": (ops.m_grouped_gemm_fp8_fp8_bf16_nt_masked, (ma, msa, mb, msb, full, 64)),
        "masked_out": (ops.m_grouped_gemm_fp8_fp8_bf16_nt_masked_out,
                       (ma, msa, mb, msb, nan_like(torch, (2, 64, 256)), full, 64)),
    }


@pytest.mark.parametrize("case", ["dense", "dense_out", "contiguous", "contiguous_out", "masked", "masked_out"])
def test_opcheck(torch, case):
    """torch's own checks of a custom operator: schema (mutation declared), fake tensors, AOT dispatch."""
    op, args = _opcheck_cases(torch)[case]
    torch.library.opcheck(op, args)


# ---- torch.compile -------------------------------------------------------------------------------

class _DenseLinear:
    """Built lazily (torch is imported by a fixture): an FP8 linear layer calling the operator."""

    @staticmethod
    def make(torch, n=512, k=1024, quantize_inside=False):
        class DenseLinear(torch.nn.Module):
            def __init__(self):
                super().__init__()
                w, sw = quantized_pair(torch, n, k, per_block=True)
                self.register_buffer("w", w)
                self.register_buffer("sw", sw)

            def forward(self, x_or_a, sa=None):
                a, sa = quantize_rows_traceable(torch, x_or_a) if quantize_inside else (x_or_a, sa)
                return torch.ops.pydg.gemm_fp8_fp8_bf16_nt(a, sa, self.w, self.sw)

        return DenseLinear().cuda()


BACKENDS = [pytest.param("aot_eager", id="aot_eager"), pytest.param("inductor", id="inductor", marks=needs_inductor)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_fullgraph_equals_eager(torch, backend):
    model = _DenseLinear.make(torch)
    a, sa = quantized_pair(torch, 256, 1024, per_block=False)
    expected = model(a, sa)
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    got = compiled(a, sa)
    torch.cuda.synchronize()
    assert torch.equal(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_out_variant_equals_eager(torch, backend):
    a, sa, b, sb = _dense(torch)

    def fn(a, sa, b, sb):
        out = torch.empty(a.shape[0], b.shape[0], dtype=torch.bfloat16, device=a.device)
        torch.ops.pydg.gemm_fp8_fp8_bf16_nt_out(a, sa, b, sb, out)
        return out.float() * 2.0

    expected = fn(a, sa, b, sb)
    got = torch.compile(fn, backend=backend, fullgraph=True, dynamic=False)(a, sa, b, sb)
    torch.cuda.synchronize()
    assert torch.equal(got, expected)


@needs_inductor
@pytest.mark.parametrize("m", [96, 98])  # 98: A's scales have a padded column stride (100)
def test_compiled_with_quantisation_inside(torch, m):
    """Inductor makes the scales inside the graph; the operator still gets their column-major strides."""
    model = _DenseLinear.make(torch, quantize_inside=True)
    x = torch.randn(m, 1024, device="cuda")
    expected = model(x)
    got = torch.compile(model, fullgraph=True, dynamic=False)(x)
    torch.cuda.synchronize()
    # Inductor may round a scale's division differently by an ulp: equal up to that.
    assert calc_diff(torch, got, expected) < DIFF_LIMIT


def _check_replays(torch, compiled, eager, make_inputs, compare, steps=5):
    from torch._dynamo.utils import counters

    counters.clear()
    for step in range(steps):
        inputs = make_inputs(step)
        torch.compiler.cudagraph_mark_step_begin()
        got = compiled(*inputs).clone()  # a CUDA-graph output is overwritten by the next replay
        expected = eager(*inputs)
        torch.cuda.synchronize()
        compare(got, expected, inputs, step)
    assert counters["inductor"]["cudagraph_skips"] == 0, "CUDA graphs were skipped"


@pytest.mark.parametrize("mode", [pytest.param("reduce-overhead", marks=needs_inductor), "cudagraphs-backend"])
def test_cuda_graphs_replay_dense_with_new_inputs(torch, mode):
    model = _DenseLinear.make(torch, quantize_inside=(mode == "reduce-overhead"))
    if mode == "reduce-overhead":
        compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True, dynamic=False)

        def make_inputs(step):
            return (torch.randn(200, 1024, device="cuda") * (step + 1),)
    else:
        compiled = torch.compile(model, backend="cudagraphs", fullgraph=True, dynamic=False)

        def make_inputs(step):
            return quantized_pair(torch, 200, 1024, per_block=False)

    def compare(got, expected, inputs, step):
        assert not torch.isnan(got).any()
        assert calc_diff(torch, got, expected) < DIFF_LIMIT, f"replay {step}"

    _check_replays(torch, compiled, model, make_inputs, compare)


@pytest.mark.parametrize("mode", [pytest.param("reduce-overhead", marks=needs_inductor), "cudagraphs-backend"])
def test_cuda_graphs_replay_masked_decode_with_new_row_counts(torch, mode):
    """The decode use: one captured graph, new tokens and new masked_m values at every step."""
    groups, m_max, n, k = 4, 64, 512, 512
    b, sb = quantized_pair(torch, n, k, per_block=True, lead=(groups,))

    class Experts(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("b", b)
            self.register_buffer("sb", sb)

        def forward(self, a, sa, masked_m):
            return torch.ops.pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked(a, sa, self.b, self.sb, masked_m, 32)

    model = Experts().cuda()
    options = dict(mode="reduce-overhead") if mode == "reduce-overhead" else dict(backend="cudagraphs")
    compiled = torch.compile(model, fullgraph=True, dynamic=False, **options)
    gen = torch.Generator(device="cuda").manual_seed(5)

    def make_inputs(step):
        a, sa = quantized_pair(torch, m_max, k, per_block=False, lead=(groups,), gen=gen)
        masked = torch.randint(0, m_max + 1, (groups,), device="cuda", generator=gen, dtype=torch.int32)
        masked[step % groups] = m_max
        return a, sa, masked

    def compare(got, expected, inputs, step):
        for g, rows in enumerate(inputs[2].tolist()):
            assert torch.equal(got[g, :rows], expected[g, :rows]), f"replay {step}, group {g}"

    _check_replays(torch, compiled, model, make_inputs, compare)


@pytest.mark.parametrize("mode", [pytest.param("reduce-overhead", marks=needs_inductor), "cudagraphs-backend"])
def test_cuda_graphs_with_the_cast_operator(torch, mode):
    """A layer that quantises with pydg's cast kernel and multiplies, compiled whole and replayed."""
    w, sw = torch.ops.pydg.per_block_cast_to_fp8(torch.randn(512, 1024, device="cuda"))

    def layer(x):
        a, sa = torch.ops.pydg.per_token_cast_to_fp8(x)
        return torch.ops.pydg.gemm_fp8_fp8_bf16_nt(a, sa, w, sw)

    options = dict(mode="reduce-overhead") if mode == "reduce-overhead" else dict(backend="cudagraphs")
    compiled = torch.compile(layer, fullgraph=True, dynamic=False, **options)

    def make_inputs(step):
        return (torch.randn(98, 1024, device="cuda", dtype=torch.bfloat16) * (step + 1),)

    def compare(got, expected, inputs, step):
        assert torch.equal(got, expected), f"replay {step}"

    _check_replays(torch, compiled, layer, make_inputs, compare)

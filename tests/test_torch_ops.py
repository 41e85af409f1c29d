"""CPU: pydg never needs torch to import; pydg.torch_ops says clearly that it does."""
import pathlib
import shutil
import subprocess
import sys

import pytest

from gpu_util import quantize_rows_traceable

ROOT = pathlib.Path(__file__).resolve().parent.parent

_NO_TORCH = "import sys; sys.modules['torch'] = None\n"  # makes `import torch` raise ImportError


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _NO_TORCH + code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_pydg_imports_without_torch():
    done = _run("import pydg, pydg.testing, pydg.jax_ops\n"
                "assert 'torch' not in sys.modules or sys.modules['torch'] is None\nprint('ok')")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_torch_ops_without_torch_is_an_import_error():
    done = _run("import pydg.torch_ops")
    assert done.returncode != 0 and "ImportError: pydg.torch_ops needs PyTorch" in done.stderr


# ---- with torch installed (CPU): the operators' plumbing, with pydg's GPU GEMMs replaced by a
# float64 torch computation on the host that also insists on pydg's scale layout ----------------

# Inductor compiles C++ for the host.
needs_cxx = pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
                               reason="Inductor on the CPU needs a C++ compiler")
INDUCTOR = pytest.param("inductor", marks=needs_cxx)


def _cpu_backend(torch):
    from pydg.layout import is_col_major_tma_aligned

    def dequantize(data, scales, per_block):
        if data.dtype == torch.uint8:
            data = data.view(torch.float8_e4m3fn)
        values, s = data.double(), scales.double()
        if per_block:
            s = s.repeat_interleave(128, dim=-2)[..., : values.shape[-2], :]
        return values * s.repeat_interleave(128, dim=-1)[..., : values.shape[-1]]

    def checked(lhs, rhs):
        (a, sa), (b, sb) = lhs, rhs
        assert is_col_major_tma_aligned(tuple(sa.shape), tuple(sa.stride())), f"sa strides {sa.stride()}"
        return dequantize(a, sa, False), dequantize(b, sb, True)

    def dense(lhs, rhs, out):
        a, b = checked(lhs, rhs)
        out.copy_(a @ b.T)

    def contiguous(lhs, rhs, out, m_indices):
        a, b = checked(lhs, rhs)
        for i, g in enumerate(m_indices.tolist()):
            if g >= 0:
                out[i] = (a[i] @ b[g].T).to(out.dtype)

    def masked(lhs, rhs, out, masked_m, expected_m):
        assert type(expected_m) is int
        a, b = checked(lhs, rhs)
        for g, rows in enumerate(masked_m.tolist()):
            out[g, :rows] = (a[g, :rows] @ b[g].T).to(out.dtype)

    return {"gemm_fp8_fp8_bf16_nt": dense, "m_grouped_gemm_fp8_fp8_bf16_nt_contiguous": contiguous,
            "m_grouped_gemm_fp8_fp8_bf16_nt_masked": masked}


@pytest.fixture
def cpu_ops(monkeypatch):
    torch = pytest.importorskip("torch")
    import pydg
    import pydg.torch_ops  # noqa: F401

    for name, fn in _cpu_backend(torch).items():
        monkeypatch.setattr(pydg, name, fn)
    torch._dynamo.reset()
    yield torch
    torch._dynamo.reset()


def _quantized(torch, rows, k, per_block, lead=()):
    import pydg

    x = torch.randn(*lead, rows, k)
    if per_block:
        return pydg.per_block_cast_to_fp8(x)
    data, scales = pydg.per_token_cast_to_fp8(x)
    return data, pydg.get_col_major_tma_aligned_tensor(scales)




def test_schemas_declare_the_mutated_out(cpu_ops):
    torch = cpu_ops
    ops = torch.ops.pydg
    assert "Tensor(a4!) out" in str(ops.gemm_fp8_fp8_bf16_nt_out.default._schema)
    assert "Tensor(a4!) out" in str(ops.m_grouped_gemm_fp8_fp8_bf16_nt_masked_out.default._schema)
    assert str(ops.gemm_fp8_fp8_bf16_nt.default._schema).endswith("-> Tensor")


def test_opcheck_every_operator(cpu_ops):
    torch = cpu_ops
    ops = torch.ops.pydg
    # FP8 as raw bytes: opcheck compares inputs before and after with allclose, which torch lacks for float8.
    a, sa = _quantized(torch, 96, 256, False)
    b, sb = _quantized(torch, 64, 256, True)
    gb, gsb = _quantized(torch, 64, 256, True, lead=(2,))
    ma, msa = _quantized(torch, 16, 256, False, lead=(2,))
    a, b, gb, ma = (x.view(torch.uint8) for x in (a, b, gb, ma))
    m_indices = torch.tensor([0] * 40 + [-1] * 8 + [1] * 48, dtype=torch.int32)
    masked_m = torch.tensor([16, 16], dtype=torch.int32)  # every row written: outputs compare in full
    cases = [
        (ops.gemm_fp8_fp8_bf16_nt, (a, sa, b, sb)),
        (ops.gemm_fp8_fp8_bf16_nt_out, (a, sa, b, sb, torch.zeros(96, 64, dtype=torch.bfloat16))),
        (ops.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous, (a, sa, gb, gsb, torch.zeros(96, dtype=torch.int32))),
        (ops.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous_out,
         (a, sa, gb, gsb, torch.zeros(96, 64, dtype=torch.bfloat16), m_indices)),
        (ops.m_grouped_gemm_fp8_fp8_bf16_nt_masked, (ma, msa, gb, gsb, masked_m, 16)),
        (ops.m_grouped_gemm_fp8_fp8_bf16_nt_masked_out,
         (ma, msa, gb, gsb, torch.zeros(2, 16, 64, dtype=torch.bfloat16), masked_m, 16)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_fake_tensors_give_shapes_and_name_bad_ranks(cpu_ops):
    torch = cpu_ops
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        a = torch.empty(4, 8, 256, dtype=torch.float8_e4m3fn)
        sa = torch.empty(4, 8, 2)
        b = torch.empty(4, 128, 256, dtype=torch.float8_e4m3fn)
        sb = torch.empty(4, 1, 2)
        out = torch.ops.pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked(a, sa, b, sb, torch.empty(4, dtype=torch.int32), 2)
        assert out.shape == (4, 8, 128) and out.dtype == torch.bfloat16
        with pytest.raises(ValueError, match="rhs data: expected a tensor of rank 2"):
            torch.ops.pydg.gemm_fp8_fp8_bf16_nt(a[0], sa[0], b, sb)


@pytest.mark.parametrize("backend", ["aot_eager", INDUCTOR])
@pytest.mark.parametrize("m", [96, 98])  # 98: A's scales have a padded column stride (100)
def test_compiled_fullgraph_with_quantisation_inside(cpu_ops, backend, m):
    torch = cpu_ops
    b, sb = _quantized(torch, 64, 256, True)

    def layer(x):
        a, sa = quantize_rows_traceable(torch, x)
        out = torch.ops.pydg.gemm_fp8_fp8_bf16_nt(a, sa, b, sb)
        res = torch.empty_like(out)
        torch.ops.pydg.gemm_fp8_fp8_bf16_nt_out(a, sa, b, sb, res)
        return out.float() + res.float()

    x = torch.randn(m, 256)
    expected = layer(x)
    got = torch.compile(layer, backend=backend, fullgraph=True, dynamic=False)(x)
    from pydg.testing import calc_diff

    assert calc_diff(got, expected) < 1e-5


@pytest.mark.parametrize("shape", [(98, 256), (3, 37, 384)])
def test_cast_operators_match_pydg_and_their_fake_strides(cpu_ops, shape):
    torch = cpu_ops
    import pydg

    x = torch.randn(*shape)
    data, scales = torch.ops.pydg.per_token_cast_to_fp8(x)
    ref_data, ref_scales = pydg.per_token_cast_to_fp8(x)
    assert torch.equal(data.view(torch.uint8), ref_data.view(torch.uint8)) and torch.equal(scales, ref_scales)
    from pydg.layout import is_col_major_tma_aligned

    assert is_col_major_tma_aligned(tuple(scales.shape), tuple(scales.stride()))
    torch.library.opcheck(torch.ops.pydg.per_token_cast_to_fp8, (x,))
    torch.library.opcheck(torch.ops.pydg.per_block_cast_to_fp8, (x[..., :32, :].contiguous(),))  # N: multiple of 8


@needs_cxx
def test_compiled_model_quantising_with_the_cast_operator(cpu_ops):
    torch = cpu_ops
    b, sb = _quantized(torch, 64, 256, True)

    def layer(x):
        a, sa = torch.ops.pydg.per_token_cast_to_fp8(x)
        return torch.ops.pydg.gemm_fp8_fp8_bf16_nt(a, sa, b, sb)

    x = torch.randn(98, 256)
    got = torch.compile(layer, backend="inductor", fullgraph=True, dynamic=False)(x)
    assert torch.equal(got, layer(x))

"""pydg's GEMMs on JAX arrays (pydg.jax_ops, and direct calls) on an sm_90 GPU, against pydg.reference."""
import os

# JAX takes 75% of the GPU at start unless told otherwise: leave room for the torch tests of the same run.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import pydg  # noqa: E402
from pydg import reference  # noqa: E402
from pydg.testing import calc_diff  # noqa: E402

pytestmark = pytest.mark.gpu
DIFF_LIMIT = 1e-5


@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax")
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:  # a CPU-only jaxlib
        gpus = []
    if not gpus:
        pytest.skip("JAX has no GPU backend here")
    return jax


@pytest.fixture(scope="module")
def pj(jax):
    import pydg.jax_ops

    return pydg.jax_ops


def _lhs(rng, rows, k, lead=()):
    """E4M3 bytes (uint8) and row-major float32 scales, made by numpy."""
    x = rng.standard_normal((*lead, rows, k)).astype(np.float32)
    return pydg.per_token_cast_to_fp8(x * np.exp2(rng.integers(-3, 4, (*lead, rows, 1))).astype(np.float32))


def _rhs(rng, rows, k, lead=()):
    return pydg.per_block_cast_to_fp8(rng.standard_normal((*lead, rows, k)).astype(np.float32))


def _host(x):
    return np.asarray(x.astype("float32"), dtype=np.float64)


def _put(jax, *arrays):
    return tuple(jax.device_put(x, jax.devices("gpu")[0]) for x in arrays)


def test_dense_from_uint8_bytes_and_float8(jax, pj):
    jnp = jax.numpy
    rng = np.random.default_rng(0)
    m, n, k = 300, 392, 656  # M not a multiple of 4: the scales' padded layout is exercised
    a, sa = _lhs(rng, m, k)
    b, sb = _rhs(rng, n, k)
    ja, jsa, jb, jsb = _put(jax, a, sa, b, sb)
    out = pj.gemm_fp8_fp8_bf16_nt(ja, jsa, jb, jsb)
    assert out.shape == (m, n) and out.dtype == jnp.bfloat16
    assert calc_diff(_host(out), reference.gemm_reference(a, sa, b, sb)) <= DIFF_LIMIT
    fa = jax.lax.bitcast_convert_type(ja, jnp.float8_e4m3fn)
    fb = jax.lax.bitcast_convert_type(jb, jnp.float8_e4m3fn)
    assert np.array_equal(_host(pj.gemm_fp8_fp8_bf16_nt(fa, jsa, fb, jsb)), _host(out))


def test_inputs_still_being_computed_are_waited_for(jax, pj):
    """Inputs fresh from asynchronous JAX work (on JAX's streams) are complete when pydg reads them."""
    jnp = jax.numpy
    rng = np.random.default_rng(1)
    m, n, k = 1024, 2048, 4096
    a, sa = _lhs(rng, m, k)
    b, sb = _rhs(rng, n, k)
    ja, jsa, jb, jsb = _put(jax, a, sa, b, sb)
    expected = _host(pj.gemm_fp8_fp8_bf16_nt(ja, jsa, jb, jsb))
    for step in range(3):
        # A few dependent kernels so that the inputs are not ready when the call starts.
        busy = jnp.ones((4096, 4096), jnp.float32)
        for _ in range(4):
            busy = busy @ busy * 1e-4
        jsb2 = jsb * (1.0 + busy[0, 0] * 0.0)
        ja2 = jnp.bitwise_xor(ja, jnp.uint8(0))
        got = pj.gemm_fp8_fp8_bf16_nt(ja2, jsa, jb, jsb2)
        assert np.array_equal(_host(got), expected), f"step {step}"
        # The result is complete for JAX work that follows at once.
        assert np.array_equal(np.asarray((got.astype(jnp.float32) * 2.0)), expected * 2.0)


def test_contiguous_layout(jax, pj):
    rng = np.random.default_rng(2)
    align = pydg.get_m_alignment_for_contiguous_layout()
    sizes, n, k = [37, 128, 0, 200], 256, 512
    m_indices = []
    for g, size in enumerate(sizes):
        m_indices += [g] * size + [-1] * (-size % align)
    m_indices = np.array(m_indices, dtype=np.int32)
    a, sa = _lhs(rng, len(m_indices), k)
    b, sb = _rhs(rng, n, k, lead=(len(sizes),))
    out = pj.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous(*_put(jax, a, sa, b, sb, m_indices))
    valid = m_indices >= 0
    expected = reference.contiguous_reference(a, sa, b, sb, m_indices)
    assert calc_diff(_host(out)[valid], expected[valid]) <= DIFF_LIMIT


def test_masked_layout(jax, pj):
    rng = np.random.default_rng(3)
    groups, m_max, n, k = 3, 128, 256, 384
    a, sa = _lhs(rng, m_max, k, lead=(groups,))
    b, sb = _rhs(rng, n, k, lead=(groups,))
    masked = np.array([128, 10, 0], dtype=np.int32)
    out = pj.m_grouped_gemm_fp8_fp8_bf16_nt_masked(*_put(jax, a, sa, b, sb, masked), expected_m=46)
    assert out.shape == (groups, m_max, n)
    expected = reference.masked_reference(a, sa, b, sb, masked)
    got = _host(out)
    for g, rows in enumerate(masked):
        if rows:
            assert calc_diff(got[g, :rows], expected[g, :rows]) <= DIFF_LIMIT


def test_direct_call_writing_a_jax_out(jax, pj):
    """The advanced path: pydg.* with JAX arrays, A's scales as a DeviceView, then synchronize."""
    jnp = jax.numpy
    rng = np.random.default_rng(4)
    m, n, k = 128, 256, 256
    a, sa = _lhs(rng, m, k)
    b, sb = _rhs(rng, n, k)
    ja, jsa, jb, jsb = _put(jax, a, sa, b, sb)
    out = jnp.empty((m, n), jnp.bfloat16)
    pydg.gemm_fp8_fp8_bf16_nt((ja, pj.tma_aligned_scales(jsa)), (jb, jsb), out)
    pj.synchronize(out)
    assert calc_diff(_host(out), reference.gemm_reference(a, sa, b, sb)) <= DIFF_LIMIT


def test_tracers_and_wrong_scales_are_refused(jax, pj):
    jnp = jax.numpy
    rng = np.random.default_rng(5)
    a, sa = _lhs(rng, 64, 256)
    b, sb = _rhs(rng, 128, 256)
    ja, jsa, jb, jsb = _put(jax, a, sa, b, sb)
    with pytest.raises(TypeError, match="concrete jax.Array"):
        jax.jit(lambda x: pj.gemm_fp8_fp8_bf16_nt(x, jsa, jb, jsb))(ja)
    with pytest.raises(TypeError, match="lhs scales: expected dtype float32"):
        pj.gemm_fp8_fp8_bf16_nt(ja, jsa.astype(jnp.bfloat16), jb, jsb)
    with pytest.raises(ValueError, match="lhs scales"):  # row-major scales handed to pydg directly
        pydg.gemm_fp8_fp8_bf16_nt((ja, jnp.zeros((64, 2), jnp.float32)), (jb, jsb), jnp.empty((64, 128), jnp.bfloat16))

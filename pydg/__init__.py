"""pydg: FP8 GEMMs with fine-grained scaling for Hopper, in pure Python over the CUDA driver."""
from pydg.version import __version__
from pydg.autotune import set_autotune
from pydg.describe import (
    CallDescription,
    CallPlan,
    KernelReport,
    describe_gemm,
    plan_gemm,
    plan_m_grouped_contiguous,
    plan_m_grouped_masked,
)
from pydg.errors import CudaError, PydgError
from pydg.gemm import (
    gemm_fp8_fp8_bf16_nt,
    get_num_sms,
    m_grouped_gemm_fp8_fp8_bf16_nt_contiguous,
    m_grouped_gemm_fp8_fp8_bf16_nt_masked,
    set_num_sms,
)
from pydg.layout import get_col_major_tma_aligned_tensor, get_m_alignment_for_contiguous_layout
from pydg.quantize import per_block_cast_to_fp8, per_token_cast_to_fp8, per_token_cast_to_fp8_masked
from pydg.utils import ceil_div

__all__ = [
    "CallDescription",
    "CallPlan",
    "KernelReport",
    "CudaError",
    "PydgError",
    "__version__",
    "ceil_div",
    "describe_gemm",
    "gemm_fp8_fp8_bf16_nt",
    "get_col_major_tma_aligned_tensor",
    "get_m_alignment_for_contiguous_layout",
    "get_num_sms",
    "m_grouped_gemm_fp8_fp8_bf16_nt_contiguous",
    "m_grouped_gemm_fp8_fp8_bf16_nt_masked",
    "per_block_cast_to_fp8",
    "per_token_cast_to_fp8",
    "per_token_cast_to_fp8_masked",
    "plan_gemm",
    "plan_m_grouped_contiguous",
    "plan_m_grouped_masked",
    "set_autotune",
    "set_num_sms",
]

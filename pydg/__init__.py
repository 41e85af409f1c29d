"""pydg: FP8 GEMMs with fine-grained scaling for Hopper, in pure Python over the CUDA driver."""
from pydg.version import __version__
from pydg.describe import CallDescription, describe_gemm
from pydg.errors import CudaError, PydgError
from pydg.gemm import (
    gemm_fp8_fp8_bf16_nt,
    get_num_sms,
    m_grouped_gemm_fp8_fp8_bf16_nt_contiguous,
    m_grouped_gemm_fp8_fp8_bf16_nt_masked,
    set_num_sms,
)
from pydg.layout import get_col_major_tma_aligned_tensor, get_m_alignment_for_contiguous_layout
from pydg.quantize import per_block_cast_to_fp8, per_token_cast_to_fp8
from pydg.utils import ceil_div

__all__ = [
    "CallDescription",
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
    "set_num_sms",
]

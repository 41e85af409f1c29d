"""TensorMapSpec -> the 128-byte descriptor, through cuTensorMapEncodeTiled."""
from __future__ import annotations

from cuda.bindings import driver as cu

from pydg.driver.cuda import check, init
from pydg.tma.spec import TensorMapSpec

_DTYPES = {
    "uint8": cu.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_UINT8,
    "bfloat16": cu.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
    "float32": cu.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
}
_SWIZZLES = {
    "none": cu.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_NONE,
    "32B": cu.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_32B,
    "64B": cu.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_64B,
    "128B": cu.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_128B,
}
_INTERLEAVES = {
    "none": cu.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE,
    "16B": cu.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_16B,
    "32B": cu.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_32B,
}
_L2 = {
    "none": cu.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_NONE,
    "64B": cu.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_64B,
    "128B": cu.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
    "256B": cu.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
}
_OOB = {
    "zero": cu.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
    "nan": cu.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA,
}


def encode(spec: TensorMapSpec):
    """Validate and encode; returns the driver's CUtensorMap (its getPtr() is the 128 bytes)."""
    spec.validate()
    init()
    u32, u64 = cu.cuuint32_t, cu.cuuint64_t
    return check("cuTensorMapEncodeTiled", cu.cuTensorMapEncodeTiled(
        _DTYPES[spec.dtype], u32(spec.rank), spec.global_address, [u64(d) for d in spec.global_dims],
        [u64(s) for s in spec.global_strides], [u32(b) for b in spec.box_dims],
        [u32(e) for e in spec.strides_or_ones()],
        _INTERLEAVES[spec.interleave], _SWIZZLES[spec.swizzle], _L2[spec.l2_promotion], _OOB[spec.oob_fill]))

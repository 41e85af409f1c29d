"""TensorMapSpec enforces TMA's rules before the driver sees them."""
import pytest

from pydg.tma.spec import TensorMapSpec


def good(**changes):
    base = dict(name="lhs data", dtype="uint8", global_address=0x7F0000000000, global_dims=(7168, 4096, 1),
                global_strides=(7168, 7168 * 4096), box_dims=(128, 128, 1), swizzle="128B")
    base.update(changes)
    return TensorMapSpec(**base)


def test_good_spec_passes():
    good().validate()
    good(dtype="bfloat16", global_dims=(2112, 64, 1), global_strides=(4224, 4224 * 64), box_dims=(112, 64, 1),
         swizzle="none").validate()


@pytest.mark.parametrize("changes,message", [
    (dict(global_address=0x7F0000000008), "global address"),
    (dict(global_strides=(7160, 7168 * 4096)), r"global_strides\[0\]"),
    (dict(global_strides=(7168, 2**40)), r"global_strides\[1\]"),
    (dict(box_dims=(128, 257, 1)), r"box_dims\[1\]"),
    (dict(box_dims=(0, 128, 1)), r"box_dims\[0\]"),
    (dict(box_dims=(256, 128, 1)), "at most the 128B swizzle span"),
    (dict(box_dims=(120, 128, 1), swizzle="none"), "multiple of 16 bytes"),
    (dict(global_dims=(7168, 4096, 1, 1, 1, 1), global_strides=(1, 2, 3, 4, 5), box_dims=(1,) * 6), "rank"),
    (dict(global_dims=(0, 4096, 1)), r"global_dims\[0\]"),
    (dict(global_dims=(2**32 + 1, 4096, 1)), r"global_dims\[0\]"),
    (dict(element_strides=(1, 9, 1)), r"element_strides\[1\]"),
    (dict(swizzle="256B"), "swizzle"),
    (dict(dtype="float64"), "dtype"),
    (dict(global_strides=(7168,)), "global_strides"),
])
def test_each_rule_fails_with_a_named_error(changes, message):
    with pytest.raises(ValueError, match=message) as info:
        good(**changes).validate()
    assert "tensor map lhs data" in str(info.value)


def test_box_bytes_and_address_swap():
    spec = good()
    assert spec.box_bytes == 128 * 128
    assert spec.with_address(0x1000).global_address == 0x1000 and spec.global_address != 0x1000

"""A TMA tensor map as a plain description that checks the hardware's rules before any encode."""
from __future__ import annotations

from dataclasses import dataclass, replace

ELEMENT_BYTES = {"uint8": 1, "bfloat16": 2, "float32": 4}
SWIZZLE_BYTES = {"none": 0, "32B": 32, "64B": 64, "128B": 128}
L2_PROMOTIONS = ("none", "64B", "128B", "256B")
OOB_FILLS = ("zero", "nan")
INTERLEAVES = ("none", "16B", "32B")


@dataclass(frozen=True)
class TensorMapSpec:
    """The arguments of cuTensorMapEncodeTiled, innermost dimension first (as the driver takes them).

    `global_strides` are in bytes and have one entry per dimension after the first. `name` says
    which operand the map describes in error messages.
    """

    name: str
    dtype: str
    global_address: int
    global_dims: tuple[int, ...]
    global_strides: tuple[int, ...]
    box_dims: tuple[int, ...]
    element_strides: tuple[int, ...] = ()
    swizzle: str = "none"
    interleave: str = "none"
    l2_promotion: str = "256B"
    oob_fill: str = "zero"

    @property
    def rank(self) -> int:
        return len(self.global_dims)

    @property
    def element_bytes(self) -> int:
        return ELEMENT_BYTES[self.dtype]

    @property
    def box_bytes(self) -> int:
        size = self.element_bytes
        for d in self.box_dims:
            size *= d
        return size

    def strides_or_ones(self) -> tuple[int, ...]:
        return self.element_strides or (1,) * self.rank

    def with_address(self, address: int) -> "TensorMapSpec":
        return replace(self, global_address=address)

    def validate(self) -> None:
        """Raise ValueError naming the broken rule; a spec that passes encodes without error."""
        def fail(what: str, expected: str, got) -> None:
            raise ValueError(f"tensor map {self.name}: {what}: expected {expected}, got {got}")

        if self.dtype not in ELEMENT_BYTES:
            fail("dtype", f"one of {sorted(ELEMENT_BYTES)}", self.dtype)
        if not 1 <= self.rank <= 5:
            fail("rank", "1 to 5", self.rank)
        if len(self.global_strides) != self.rank - 1:
            fail("global_strides", f"{self.rank - 1} entries", len(self.global_strides))
        if len(self.box_dims) != self.rank:
            fail("box_dims", f"{self.rank} entries", len(self.box_dims))
        if len(self.strides_or_ones()) != self.rank:
            fail("element_strides", f"{self.rank} entries", len(self.element_strides))
        if self.swizzle not in SWIZZLE_BYTES:
            fail("swizzle", f"one of {list(SWIZZLE_BYTES)}", self.swizzle)
        if self.interleave not in INTERLEAVES:
            fail("interleave", f"one of {INTERLEAVES}", self.interleave)
        if self.l2_promotion not in L2_PROMOTIONS:
            fail("l2_promotion", f"one of {L2_PROMOTIONS}", self.l2_promotion)
        if self.oob_fill not in OOB_FILLS:
            fail("oob_fill", f"one of {OOB_FILLS}", self.oob_fill)
        address_alignment = 32 if self.interleave == "32B" else 16
        if self.global_address % address_alignment:
            fail("global address", f"a multiple of {address_alignment} bytes", hex(self.global_address))
        for i, d in enumerate(self.global_dims):
            if not 1 <= d <= 2**32:
                fail(f"global_dims[{i}]", "1 to 2**32", d)
        for i, s in enumerate(self.global_strides):
            if s % 16 or not 0 < s < 2**40:
                fail(f"global_strides[{i}]", "a positive multiple of 16 bytes below 2**40", s)
        for i, b in enumerate(self.box_dims):
            if not 1 <= b <= 256:
                fail(f"box_dims[{i}]", "1 to 256", b)
        for i, e in enumerate(self.strides_or_ones()):
            if not 1 <= e <= 8:
                fail(f"element_strides[{i}]", "1 to 8", e)
        inner_bytes = self.box_dims[0] * self.element_bytes
        if self.interleave == "none":
            if inner_bytes % 16:
                fail("inner box", "a multiple of 16 bytes", f"{inner_bytes} bytes")
            span = SWIZZLE_BYTES[self.swizzle]
            if span and inner_bytes > span:
                fail("inner box", f"at most the {self.swizzle} swizzle span", f"{inner_bytes} bytes")

"""Small integer helpers shared by every layer."""
from __future__ import annotations


def ceil_div(a: int, b: int) -> int:
    """The smallest integer >= a / b, for positive b."""
    return (a + b - 1) // b


def align(x: int, to: int) -> int:
    """x rounded up to a multiple of `to`."""
    return ceil_div(x, to) * to

"""TMA tensor maps: a checked description (spec) and its encoding (encode, needs the driver)."""
from pydg.tma.spec import TensorMapSpec

__all__ = ["TensorMapSpec"]

"""The errors pydg raises besides ValueError/TypeError for bad arguments."""
from __future__ import annotations


class PydgError(RuntimeError):
    """Base class of pydg's own run-time errors."""


class CudaError(PydgError):
    """A CUDA driver or NVRTC call failed.

    `name` is the driver's name for the result (e.g. ``CUDA_ERROR_INVALID_VALUE``), `message` its
    description, and `log` the whole NVRTC compile log where there is one.
    """

    def __init__(self, call: str, name: str, message: str = "", log: str = ""):
        self.call = call
        self.name = name
        self.message = message
        self.log = log
        text = f"{call} failed: {name}"
        if message:
            text += f" ({message})"
        if log:
            text += f"\n--- log ---\n{log}"
        super().__init__(text)


class NoHopperGPUError(PydgError):
    """No sm_90 GPU is available for a call that needs one."""

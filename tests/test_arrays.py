"""pydg.arrays on the CPU: DLPack capsules, JAX-like arrays, DeviceView, and the errors for host memory."""
import numpy as np
import pytest

from pydg.arrays import ArrayInfo, DeviceView, array_info, current_stream, read_dlpack_capsule


def test_dlpack_capsule_of_a_strided_numpy_view():
    x = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]
    got = read_dlpack_capsule(x.__dlpack__())
    assert (got.ptr, got.shape, got.strides, got.dtype) == (x.ctypes.data, (4, 3), (6, 2), "float32")
    assert (got.device_type, got.device_id) == (1, 0)


def test_versioned_capsule_and_byte_offsets():
    x = np.zeros(40, np.uint8)[8:].reshape(2, 16)
    got = read_dlpack_capsule(x.__dlpack__(max_version=(1, 0)))
    assert (got.ptr, got.shape, got.strides, got.dtype) == (x.ctypes.data, (2, 16), (16, 1), "uint8")


@pytest.mark.parametrize("dtype,name", [(np.int32, "int32"), (np.int8, "int8"), (np.float16, "float16"),
                                        (np.uint16, "uint16")])
def test_dlpack_dtypes(dtype, name):
    assert read_dlpack_capsule(np.zeros(3, dtype).__dlpack__()).dtype == name


def test_dlpack_unsupported_dtype_is_named():
    with pytest.raises(TypeError, match="sb: unsupported DLPack element type"):
        read_dlpack_capsule(np.zeros(3, np.float64).__dlpack__(), "sb")


def test_host_arrays_are_refused_with_the_argument_named():
    with pytest.raises(TypeError, match="lhs data: expected a CUDA array.*host memory"):
        array_info(np.zeros((4, 4), np.uint8), "lhs data")
    with pytest.raises(TypeError, match="out: expected a CUDA array"):
        array_info([1, 2], "out")


class _CudaDLPack:
    """A GPU array as a DLPack producer shows it (the memory is a numpy array's: nothing is read)."""

    def __init__(self, x):
        self.x = x
        self.streams = []

    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA, device 0 (the device the capsule names is the one used)

    def __dlpack__(self, stream=None):
        self.streams.append(stream)
        return self.x.__dlpack__()


def test_dlpack_producer_on_the_gpu_is_read_and_told_the_stream():
    x = np.zeros((8, 32), np.uint8)
    producer = _CudaDLPack(x)
    got = array_info(producer, "a")
    assert got == ArrayInfo(x.ctypes.data, (8, 32), (32, 1), "uint8", 0, "dlpack")
    assert producer.streams == [1]  # the legacy default stream, where pydg launches for such arrays
    assert current_stream("dlpack", 0) == 0


class _Device:
    def __init__(self, platform="gpu", local_hardware_id=1):
        self.platform = platform
        self.local_hardware_id = local_hardware_id


class _JaxArray:
    """The parts of a jax.Array that pydg reads."""

    def __init__(self, shape, dtype, devices=None):
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self._devices = devices or {_Device()}
        self.waited = False

    def devices(self):
        return self._devices

    def block_until_ready(self):
        self.waited = True
        return self

    def unsafe_buffer_pointer(self):
        return 0x7F0000000100


class Tracer:
    """Named like jax.core.Tracer, whose methods (unsafe_buffer_pointer too) raise inside jax.jit."""

    def unsafe_buffer_pointer(self):
        raise TypeError("Abstract tracer value encountered")


class _JaxTracer(Tracer):
    shape = (4, 4)


_JaxArray.__module__ = "jax._src.array"
_JaxTracer.__module__ = "jax._src.interpreters.partial_eval"


def test_jax_arrays_are_waited_for_and_read_row_major():
    x = _JaxArray((3, 4, 16), np.float32)
    got = array_info(x, "lhs scales")
    assert got == ArrayInfo(0x7F0000000100, (3, 4, 16), (64, 16, 1), "float32", 1, "jax")
    assert x.waited, "a JAX array's pending computation must finish before pydg reads it"
    assert current_stream("jax", 1) == 0


def test_jax_tracers_sharded_and_host_arrays_are_refused():
    with pytest.raises(TypeError, match="lhs data: expected a concrete jax.Array"):
        array_info(_JaxTracer(), "lhs data")
    with pytest.raises(ValueError, match="out: expected a JAX array on one device"):
        array_info(_JaxArray((2, 2), np.uint16, {_Device(local_hardware_id=0), _Device()}), "out")
    with pytest.raises(ValueError, match="rhs data: expected an array in GPU memory"):
        array_info(_JaxArray((2, 2), np.uint8, {_Device("cpu", 0)}), "rhs data")


def test_device_view_is_taken_as_described():
    info = ArrayInfo(4096, (5, 3), (1, 8), "float32", 0, "jax")
    owner = object()
    view = DeviceView(info, owner)
    assert array_info(view, "lhs scales") is info and view.shape == (5, 3) and view.owner is owner

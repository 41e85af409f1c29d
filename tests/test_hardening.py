"""Hardening of the public GEMMs on a machine without a GPU: every bad input is refused before a
launch, the per-thread caches stay bounded, threads compile each kernel once and never launch
each other's pointers, and arrays on a second GPU are launched in that GPU's context.

The GPU is faked at the driver boundary (device queries, module load, tensor-map encode, launch,
NVRTC); everything above it (array reading, validation, planning, the per-call cache, the launcher's
parameter buffers) is pydg's real code. The fake launch reads the pointers back out of the
launcher's parameter buffers, so a test sees exactly what a kernel would have been given.
"""
from __future__ import annotations

import ctypes
import pathlib
import struct
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

import pydg
from pydg import gemm
from pydg.driver import cuda, launch, module, nvrtc
from pydg.kernels import fp8_gemm, source
from pydg.tma import encode as tma_encode
from pydg.utils import align, ceil_div

# ---- fake arrays: torch-like, so that the per-call fast path (the torch reader) is exercised -----


@dataclass(frozen=True)
class FakeDtype:
    name: str

    def __str__(self) -> str:
        return f"torch.{self.name}"


@dataclass(frozen=True)
class FakeDevice:
    type: str
    index: int | None


_next_address = [0x7F00_0000_0000]


def _allocate() -> int:
    _next_address[0] += 1 << 32
    return _next_address[0]


def _contiguous(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.insert(0, step)
        step *= d
    return tuple(strides)


class FakeTensor:
    """Enough of a torch tensor for pydg.arrays.array_info and gemm's per-call reader."""
    __module__ = "torch"  # pydg recognises torch tensors by their type's module

    def __init__(self, shape, dtype: str, strides=None, ptr: int | None = None, device: int = 0):
        self.shape = tuple(shape)
        self._strides = tuple(strides) if strides is not None else _contiguous(self.shape)
        self.dtype = FakeDtype(dtype)
        self.device = FakeDevice("cuda", device) if device >= 0 else FakeDevice("cpu", None)
        self._ptr = _allocate() if ptr is None else ptr

    def stride(self) -> tuple[int, ...]:
        return self._strides

    def data_ptr(self) -> int:
        return self._ptr

    def get_device(self) -> int:
        return self.ordinal

    @property
    def ordinal(self) -> int:
        return -1 if self.device.index is None else self.device.index

    def retype(self, dtype: str) -> "FakeTensor":
        return FakeTensor(self.shape, dtype, self._strides, self._ptr, self.ordinal)

    def on(self, device: int) -> "FakeTensor":
        return FakeTensor(self.shape, self.dtype.name, self._strides, self._ptr, device)

    def offset(self, nbytes: int) -> "FakeTensor":
        return FakeTensor(self.shape, self.dtype.name, self._strides, self._ptr + nbytes, self.ordinal)

    def strided(self, strides) -> "FakeTensor":
        return FakeTensor(self.shape, self.dtype.name, strides, self._ptr, self.ordinal)

    def fresh(self) -> "FakeTensor":
        """The same signature at a new address (a new array of the same shape)."""
        return FakeTensor(self.shape, self.dtype.name, self._strides, None, self.ordinal)


# ---- the three public GEMMs on good fake inputs ---------------------------------------------------

def dense_args(m=256, n=512, k=1024, device=0) -> dict:
    kb = ceil_div(k, 128)
    return dict(a=FakeTensor((m, k), "float8_e4m3fn", device=device),
                sa=FakeTensor((m, kb), "float32", (1, align(m, 4)), device=device),
                b=FakeTensor((n, k), "float8_e4m3fn", device=device),
                sb=FakeTensor((ceil_div(n, 128), kb), "float32", device=device),
                out=FakeTensor((m, n), "bfloat16", device=device))


def contiguous_args(m=512, n=256, k=512, groups=4, device=0) -> dict:
    kb = ceil_div(k, 128)
    return dict(a=FakeTensor((m, k), "uint8", device=device),
                sa=FakeTensor((m, kb), "float32", (1, align(m, 4)), device=device),
                b=FakeTensor((groups, n, k), "uint8", device=device),
                sb=FakeTensor((groups, ceil_div(n, 128), kb), "float32", device=device),
                out=FakeTensor((m, n), "bfloat16", device=device),
                grouping=FakeTensor((m,), "int32", device=device))


def masked_args(groups=4, m=100, n=256, k=512, device=0) -> dict:
    kb, ma = ceil_div(k, 128), align(m, 4)
    return dict(a=FakeTensor((groups, m, k), "uint8", device=device),
                sa=FakeTensor((groups, m, kb), "float32", (ma * kb, 1, ma), device=device),
                b=FakeTensor((groups, n, k), "uint8", device=device),
                sb=FakeTensor((groups, ceil_div(n, 128), kb), "float32", device=device),
                out=FakeTensor((groups, m, n), "bfloat16", device=device),
                grouping=FakeTensor((groups,), "int32", device=device))


GOOD_ARGS = {"dense": dense_args, "contiguous": contiguous_args, "masked": masked_args}


def call(mode: str, args: dict, expected_m=64) -> None:
    lhs, rhs = (args["a"], args["sa"]), (args["b"], args["sb"])
    if mode == "dense":
        pydg.gemm_fp8_fp8_bf16_nt(lhs, rhs, args["out"])
    elif mode == "contiguous":
        pydg.m_grouped_gemm_fp8_fp8_bf16_nt_contiguous(lhs, rhs, args["out"], args["grouping"])
    else:
        pydg.m_grouped_gemm_fp8_fp8_bf16_nt_masked(lhs, rhs, args["out"], args["grouping"], expected_m)


def pointers_of(args: dict) -> tuple[int, ...]:
    """What the kernel must be given: a, sa, b, sb and out's addresses, and the grouping vector's."""
    grouping = args["grouping"].data_ptr() if "grouping" in args else 0
    return tuple(args[n].data_ptr() for n in ("a", "sa", "b", "sb", "out")) + (grouping,)


# ---- the fake driver --------------------------------------------------------------------------------

H100 = cuda.DeviceInfo(0, "NVIDIA H100 80GB HBM3", (9, 0), 132, 232448)


class _EncodedMap:
    """Stands in for a CUtensorMap: 128 bytes whose first 8 hold the map's global address."""

    def __init__(self, address: int):
        self.buffer = (ctypes.c_uint8 * 128)()
        struct.pack_into("<Q", self.buffer, 0, address)

    def getPtr(self) -> int:
        return ctypes.addressof(self.buffer)


@dataclass
class FakeGpu:
    devices: list[cuda.DeviceInfo] = field(default_factory=lambda: [H100])
    launches: list[dict] = field(default_factory=list)
    compiles: dict[tuple, int] = field(default_factory=dict)
    loads: list[int] = field(default_factory=list)
    handles: dict[tuple, int] = field(default_factory=dict)
    compile_seconds: float = 0.0
    launch_pause_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    contexts: threading.local = field(default_factory=threading.local)

    pushes: int = 0
    base_device: int | None = 0  # the device whose context a thread has current (torch's), None: none

    def stack(self) -> list[int]:
        """This thread's pushed devices, on top of base_device."""
        if not hasattr(self.contexts, "stack"):
            self.contexts.stack = []
        return self.contexts.stack

    def current_device(self) -> int | None:
        return self.stack()[-1] if self.stack() else self.base_device

    # driver queries
    def device_count(self) -> int:
        return len(self.devices)

    def device_info(self, ordinal: int) -> cuda.DeviceInfo:
        return self.devices[ordinal]

    @staticmethod
    def primary_context(ordinal: int) -> int:
        return 0xC0000 + ordinal

    def current_context(self) -> int:
        device = self.current_device()
        return 0 if device is None else self.primary_context(device)

    def push_context(self, ordinal: int) -> None:
        with self.lock:
            self.pushes += 1
        self.stack().append(ordinal)

    def pop_context(self) -> None:
        self.stack().pop()

    def get_function(self, ordinal, key, cubin, name, smem_bytes) -> int:
        """A CUfunction-like handle, one per (device, kernel)."""
        with self.lock:
            self.loads.append(ordinal)
            return self.handles.setdefault((ordinal, key), 0x1000 + len(self.handles))

    def compile_cubin(self, source_text, name, options, *args, **kwargs):
        with self.lock:
            key = tuple(options)
            self.compiles[key] = self.compiles.get(key, 0) + 1
        time.sleep(self.compile_seconds)  # a wide window for two threads to both miss the caches
        report = nvrtc.PtxasReport(registers=168, spill_stores=0, spill_loads=0, stack_frame=0)
        return nvrtc.CompiledCubin(cubin=b"fake cubin " + repr(options).encode(), log="", ptxas=report)

    def launch(self, kernel_launch: launch.KernelLaunch, stream: int) -> None:
        """Read the launch's parameters back, as the driver would when it copies them."""
        if self.launch_pause_s:
            time.sleep(self.launch_pause_s)  # let another thread run between set_pointers and here
        values = kernel_launch.values
        maps = [struct.unpack_from("<Q", values[slot], 0)[0]
                for slot in (fp8_gemm.MAP_A, fp8_gemm.MAP_SA, fp8_gemm.MAP_B)]
        out_map = struct.unpack_from("<Q", values[fp8_gemm.MAP_D], 0)[0]
        record = {
            "pointers": (*maps, values[fp8_gemm.PTR_SB].value, values[fp8_gemm.PTR_D].value,
                         values[fp8_gemm.PTR_GROUPING].value),
            "out_map": out_map,
            "function": kernel_launch.func,
            "stream": stream,
            "context": self.current_device(),
            "thread": threading.get_ident(),
        }
        with self.lock:
            self.launches.append(record)


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path) -> FakeGpu:
    fake = FakeGpu()
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cuda, "device_count", fake.device_count)
    monkeypatch.setattr(cuda, "device_info", fake.device_info)
    monkeypatch.setattr(cuda, "primary_context", fake.primary_context)
    monkeypatch.setattr(cuda, "current_context", fake.current_context)
    monkeypatch.setattr(cuda, "push_context", fake.push_context)
    monkeypatch.setattr(cuda, "pop_context", fake.pop_context)
    monkeypatch.setattr(module, "get_function", fake.get_function)
    monkeypatch.setattr(nvrtc, "compile_cubin", fake.compile_cubin)
    monkeypatch.setattr(tma_encode, "encode", lambda spec: (spec.validate(), _EncodedMap(spec.global_address))[1])
    monkeypatch.setattr(launch, "_driver_launch", lambda: None)  # no libcuda here
    monkeypatch.setattr(launch.KernelLaunch, "launch", lambda self, stream: fake.launch(self, stream))
    monkeypatch.setattr(gemm, "stream_getter", lambda library, device: lambda: 0x5EED0 + device)
    monkeypatch.setattr(source, "_compiled", {})
    monkeypatch.setattr(gemm, "_cache", gemm._ThreadCache())
    monkeypatch.setattr(gemm, "_num_sms", None)
    return fake


# ---- good calls --------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", list(GOOD_ARGS))
def test_good_call_launches_with_the_callers_pointers(fake_gpu, mode):
    args = GOOD_ARGS[mode]()
    call(mode, args)
    (launched,) = fake_gpu.launches
    got = launched["pointers"]
    want = pointers_of(args)
    assert got[:3] == want[:3] and got[3:] == want[3:]
    assert launched["out_map"] == args["out"].data_ptr()
    assert launched["stream"] == 0x5EED0 and launched["context"] == 0 and fake_gpu.pushes == 0


@pytest.mark.parametrize("mode", list(GOOD_ARGS))
def test_second_call_with_new_arrays_hits_the_cache_and_repoints(fake_gpu, mode, monkeypatch):
    args = GOOD_ARGS[mode]()
    call(mode, args)
    prepares = []
    real_prepare = gemm._prepare
    monkeypatch.setattr(gemm, "_prepare", lambda *a: prepares.append(a) or real_prepare(*a))
    moved = {name: x.fresh() for name, x in args.items()}
    call(mode, moved)
    assert prepares == [], "a second call with the same signature went through the slow path"
    assert fake_gpu.launches[-1]["pointers"] == pointers_of(moved)
    assert sum(fake_gpu.compiles.values()) == 1


# ---- bad inputs: every one refused before a launch ------------------------------------------------

def _bad_cases():
    """(mode, label, change(args) -> new entries, error type, message pattern)."""
    cases = []
    names = {"a": "lhs data", "sa": "lhs scales", "b": "rhs data", "sb": "rhs scales", "out": "out"}
    for mode in GOOD_ARGS:
        grouping = {"contiguous": "m_indices", "masked": "masked_m"}.get(mode)
        all_names = dict(names, **({"grouping": grouping} if grouping else {}))

        def add(label, change, error, pattern, mode=mode):
            cases.append(pytest.param(mode, change, error, pattern, id=f"{mode}-{label}"))

        # dtypes
        add("a-float16", lambda g: {"a": g["a"].retype("float16")}, TypeError,
            "lhs data: expected dtype float8_e4m3fn or uint8 or int8, got float16")
        add("sa-float16", lambda g: {"sa": g["sa"].retype("float16")}, TypeError,
            "lhs scales: expected dtype float32, got float16")
        add("b-bfloat16", lambda g: {"b": g["b"].retype("bfloat16")}, TypeError,
            "rhs data: expected dtype float8_e4m3fn or uint8 or int8, got bfloat16")
        add("sb-float64", lambda g: {"sb": g["sb"].retype("float64")}, TypeError,
            "rhs scales: expected dtype float32, got float64")
        add("out-float32", lambda g: {"out": g["out"].retype("float32")}, TypeError,
            "out: expected dtype bfloat16 or uint16 or int16, got float32")
        # host memory, for every array
        for key, name in all_names.items():
            add(f"{key}-on-cpu", lambda g, key=key: {key: g[key].on(-1)}, ValueError,
                f"{name}: expected an array in GPU memory on device .*got host memory")
        # two GPUs
        add("out-on-gpu1", lambda g: {"out": g["out"].on(1)}, ValueError,
            "out: expected the same GPU as lhs data, cuda:0, got cuda:1")
        add("b-on-gpu1", lambda g: {"b": g["b"].on(1)}, ValueError,
            "rhs data: expected the same GPU as lhs data, cuda:0, got cuda:1")
        if grouping:
            add("grouping-on-gpu1", lambda g: {"grouping": g["grouping"].on(1)}, ValueError,
                f"{grouping}: expected the same GPU as lhs data, cuda:0, got cuda:1")
        # transposed / non-contiguous views
        add("a-transposed", lambda g: {"a": g["a"].strided(_transposed(g["a"]))}, ValueError,
            "lhs data: expected a contiguous last dimension, stride 1, got")
        add("b-transposed", lambda g: {"b": g["b"].strided(_transposed(g["b"]))}, ValueError,
            "rhs data: expected a contiguous last dimension, stride 1, got")
        add("out-transposed", lambda g: {"out": g["out"].strided(_transposed(g["out"]))}, ValueError,
            "out: expected contiguous strides")
        add("sb-transposed", lambda g: {"sb": g["sb"].strided(_transposed(g["sb"]))}, ValueError,
            "rhs scales: expected contiguous strides")
        add("sa-row-major", lambda g: {"sa": g["sa"].strided(_contiguous(g["sa"].shape))}, ValueError,
            "lhs scales: expected TMA-aligned column-major")
        # strides TMA cannot step (not multiples of 16 bytes)
        add("a-row-stride", lambda g: {"a": g["a"].strided(_padded_rows(g["a"], 8))}, ValueError,
            "lhs data: expected strides that are multiples of 16 bytes")
        add("b-row-stride", lambda g: {"b": g["b"].strided(_padded_rows(g["b"], 8))}, ValueError,
            "rhs data: expected strides that are multiples of 16 bytes")
        # pointers TMA cannot address (16 bytes) or 4-byte loads cannot (sb, grouping)
        for key, nbytes, alignment in (("a", 8, 16), ("sa", 4, 16), ("b", 8, 16), ("sb", 2, 4), ("out", 8, 16)):
            add(f"{key}-offset-{nbytes}", lambda g, key=key, nbytes=nbytes: {key: g[key].offset(nbytes)}, ValueError,
                f"{all_names[key]}: expected a data pointer aligned to {alignment} bytes, got 0x")
        if grouping:
            add("grouping-offset-2", lambda g: {"grouping": g["grouping"].offset(2)}, ValueError,
                f"{grouping}: expected a data pointer aligned to 4 bytes, got 0x")
        # shapes
        add("sb-shape", lambda g: {"sb": FakeTensor(g["sb"].shape[:-1] + (g["sb"].shape[-1] + 1,), "float32")},
            ValueError, r"rhs scales: expected shape \(")
        add("out-shape", lambda g: {"out": FakeTensor(g["out"].shape[:-1] + (g["out"].shape[-1] + 8,), "bfloat16")},
            ValueError, r"out: expected shape \(")
        add("b-k-mismatch", lambda g: {"b": FakeTensor(g["b"].shape[:-1] + (g["b"].shape[-1] - 16,), "uint8")},
            ValueError, r"rhs data: expected shape \(.*K")
        add("a-rank", lambda g: {"a": FakeTensor(g["a"].shape + (1,), "uint8")}, ValueError,
            "lhs data: expected a tensor of rank")
        if grouping:
            add("grouping-int64", lambda g: {"grouping": g["grouping"].retype("int64")}, TypeError,
                f"{grouping}: expected dtype int32, got int64")
            add("grouping-uint32", lambda g: {"grouping": g["grouping"].retype("uint32")}, TypeError,
                f"{grouping}: expected dtype int32, got uint32")
            add("grouping-short", lambda g: {"grouping": FakeTensor((g["grouping"].shape[0] - 1,), "int32")},
                ValueError, rf"{grouping}: expected shape \(\d+,\), got \(\d+,\)")
            add("grouping-long", lambda g: {"grouping": FakeTensor((g["grouping"].shape[0] + 1,), "int32")},
                ValueError, rf"{grouping}: expected shape \(\d+,\), got \(\d+,\)")
            add("grouping-2d", lambda g: {"grouping": FakeTensor((1, g["grouping"].shape[0]), "int32")},
                ValueError, rf"{grouping}: expected shape")
            add("grouping-strided", lambda g: {"grouping": g["grouping"].strided((2,))}, ValueError,
                f"{grouping}: expected contiguous strides")
            add("b-groups", lambda g: {"b": FakeTensor((g["b"].shape[0] + 1,) + g["b"].shape[1:], "uint8")},
                ValueError, "rhs (data|scales): expected shape")
    return cases


def _transposed(x: FakeTensor) -> tuple[int, ...]:
    """Strides of a transposed view of x's last two dimensions (the same shape read column-major)."""
    *lead, rows, cols = x.shape
    inner = (1, rows)
    return tuple(s * rows * cols for s in _contiguous(lead)) + inner if lead else inner


def _padded_rows(x: FakeTensor, extra: int) -> tuple[int, ...]:
    """Row-major strides whose rows are `extra` elements longer than the data."""
    *lead, rows, cols = x.shape
    row = cols + extra
    return tuple(s * rows * row for s in _contiguous(lead)) + (row, 1) if lead else (row, 1)


@pytest.mark.parametrize("mode,change,error,pattern", _bad_cases())
def test_bad_input_is_refused_before_any_launch(fake_gpu, mode, change, error, pattern):
    fake_gpu.devices = [H100, H100]  # so that "another GPU" is a real device, not an invalid ordinal
    args = GOOD_ARGS[mode]()
    args.update(change(args))
    with pytest.raises(error, match=pattern):
        call(mode, args)
    assert fake_gpu.launches == [], "a refused call launched a kernel"


@pytest.mark.parametrize("mode", list(GOOD_ARGS))
@pytest.mark.parametrize("key,nbytes", [("a", 8), ("out", 8), ("sb", 2), ("grouping", 2)])
def test_misaligned_pointer_is_refused_on_the_cached_path(fake_gpu, mode, key, nbytes):
    """The second call of a signature skips validation, but not the per-call pointer check."""
    args = GOOD_ARGS[mode]()
    if key not in args:
        pytest.skip("the dense GEMM has no grouping vector")
    call(mode, args)
    good = args[key]
    args[key] = good.offset(nbytes)
    for _ in range(2):  # a refused pointer is not taken for one already checked
        with pytest.raises(ValueError, match="expected a data pointer aligned to"):
            call(mode, args)
    assert len(fake_gpu.launches) == 1
    args[key] = good
    call(mode, args)
    assert len(fake_gpu.launches) == 2 and fake_gpu.launches[1]["pointers"] == fake_gpu.launches[0]["pointers"]


@pytest.mark.parametrize("mode", list(GOOD_ARGS))
@pytest.mark.parametrize("capability,name", [((8, 0), "NVIDIA A100-SXM4-80GB"), ((10, 0), "NVIDIA B200"),
                                             ((8, 9), "NVIDIA L40S")])
def test_gpu_that_is_not_sm90_is_named(fake_gpu, mode, capability, name):
    fake_gpu.devices = [cuda.DeviceInfo(0, name, capability, 108, 166912)]
    with pytest.raises(ValueError, match=rf"lhs data: expected arrays on an sm_90 GPU \(H100/H200\), got cuda:0, "
                                         rf"{name} \(sm_{capability[0]}{capability[1]}\)"):
        call(mode, GOOD_ARGS[mode]())
    assert fake_gpu.launches == [] and fake_gpu.compiles == {}


def test_gpu_that_is_not_sm90_is_refused_even_with_nothing_to_compute(fake_gpu):
    fake_gpu.devices = [cuda.DeviceInfo(0, "NVIDIA A100-SXM4-80GB", (8, 0), 108, 166912)]
    with pytest.raises(ValueError, match="sm_90"):
        call("dense", dense_args(m=0))


def test_arrays_on_the_second_gpu_are_checked_against_its_architecture(fake_gpu):
    fake_gpu.devices = [H100, cuda.DeviceInfo(1, "NVIDIA A100-SXM4-80GB", (8, 0), 108, 166912)]
    with pytest.raises(ValueError, match="got cuda:1, NVIDIA A100"):
        call("dense", dense_args(device=1))


@pytest.mark.parametrize("expected_m,error,pattern", [
    (0, ValueError, "expected_m: expected a positive int .*got 0"),
    (-3, ValueError, "expected_m: expected a positive int .*got -3"),
    (2.5, TypeError, "expected_m: expected a positive int .*got float 2.5"),
    (None, TypeError, "expected_m: expected a positive int .*got NoneType None"),
    ("64", TypeError, "expected_m: expected a positive int .*got str '64'"),
    (True, TypeError, "expected_m: expected a positive int .*got bool True"),
])
def test_bad_expected_m(fake_gpu, expected_m, error, pattern):
    with pytest.raises(error, match=pattern):
        call("masked", masked_args(), expected_m=expected_m)
    assert fake_gpu.launches == []


def test_numpy_expected_m_is_accepted(fake_gpu):
    call("masked", masked_args(), expected_m=np.int64(50))
    assert len(fake_gpu.launches) == 1


def test_not_a_pair_and_not_an_array(fake_gpu):
    args = dense_args()
    with pytest.raises(TypeError, match="rhs: expected a pair"):
        pydg.gemm_fp8_fp8_bf16_nt((args["a"], args["sa"]), args["b"], args["out"])
    with pytest.raises(TypeError, match="out: expected a CUDA array"):
        pydg.gemm_fp8_fp8_bf16_nt((args["a"], args["sa"]), (args["b"], args["sb"]), [[0.0]])
    with pytest.raises(TypeError, match="lhs data: expected a CUDA array"):
        pydg.gemm_fp8_fp8_bf16_nt((np.zeros((256, 1024), np.uint8), args["sa"]), (args["b"], args["sb"]), args["out"])
    assert fake_gpu.launches == []


# ---- sizes: each dimension must fit a signed 32-bit index; products need not ---------------------

BIG = 2**31


@pytest.mark.parametrize("mode,args,pattern", [
    ("dense", lambda: dense_args(m=BIG), "lhs data: expected M at most 2147483647, got 2147483648"),
    ("dense", lambda: dense_args(n=BIG), "rhs data: expected N at most 2147483647, got 2147483648"),
    ("dense", lambda: dense_args(k=BIG), "rhs data: expected K at most 2147483647, got 2147483648"),
    ("contiguous", lambda: contiguous_args(m=BIG), "lhs data: expected M at most 2147483647"),
    ("contiguous", lambda: contiguous_args(groups=BIG), "rhs data: expected G at most 2147483647"),
    ("masked", lambda: masked_args(m=BIG), "lhs data: expected M_max at most 2147483647"),
    ("masked", lambda: masked_args(groups=BIG), "lhs data: expected G at most 2147483647"),
    # Each size fits, but the output has more tiles than the kernel's 32-bit tile index counts.
    ("dense", lambda: dense_args(m=BIG - 128, n=BIG - 8, k=128), r"out: expected at most 2147483648 output tiles"),
    ("masked", lambda: masked_args(groups=2**16, m=2**16, n=2**16, k=128), r"out: expected at most 2147483648 output tiles"),
])
def test_sizes_that_overflow_32_bit_indices_are_refused(fake_gpu, mode, args, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(mode, args())
    assert fake_gpu.launches == []


@pytest.mark.parametrize("mode,args", [
    ("dense", lambda: dense_args(m=65536 + 64, n=32768, k=128)),                 # M * N > 2**31 elements
    ("contiguous", lambda: contiguous_args(m=65536 + 128, n=32768, k=128, groups=2)),
    ("masked", lambda: masked_args(groups=4, m=16448, n=32768, k=128)),          # G * M_max * N > 2**31
    ("dense", lambda: dense_args(m=2**20, n=4096, k=4096)),                      # M * K = 2**32 bytes of A
])
def test_products_past_32_bits_are_supported(fake_gpu, mode, args):
    """Offsets past 2**31 elements are TMA's (64-bit addresses) or the kernel's 64-bit stores: accepted."""
    call(mode, args())
    assert len(fake_gpu.launches) == 1


# ---- several GPUs ---------------------------------------------------------------------------------

TWO_H100 = [H100, cuda.DeviceInfo(1, "NVIDIA H100 80GB HBM3", (9, 0), 132, 232448)]


@pytest.mark.parametrize("mode", list(GOOD_ARGS))
def test_arrays_on_gpu1_run_in_gpu1s_context(fake_gpu, mode):
    fake_gpu.devices = TWO_H100  # the thread's current context is GPU 0's (base_device)
    args = GOOD_ARGS[mode](device=1)
    call(mode, args)
    call(mode, {name: x.fresh() for name, x in args.items()})  # the cached path switches too
    assert [record["context"] for record in fake_gpu.launches] == [1, 1]
    assert [record["stream"] for record in fake_gpu.launches] == [0x5EED1, 0x5EED1]  # GPU 1's current stream
    assert fake_gpu.loads == [1]  # the module is loaded for GPU 1
    assert fake_gpu.stack() == [], "the caller's context was not restored"


def test_several_gpus_switch_only_when_the_current_context_is_another(fake_gpu):
    fake_gpu.devices = TWO_H100
    call("dense", dense_args(device=0))
    assert fake_gpu.pushes == 0 and fake_gpu.launches[-1]["context"] == 0
    fake_gpu.base_device = None  # a thread with no current context
    call("dense", dense_args(device=0))
    assert fake_gpu.pushes == 1 and fake_gpu.launches[-1]["context"] == 0 and fake_gpu.stack() == []


def test_one_gpu_never_switches_context(fake_gpu):
    fake_gpu.base_device = None
    call("dense", dense_args())
    assert fake_gpu.pushes == 0 and fake_gpu.launches[0]["context"] is None


# ---- threads ------------------------------------------------------------------------------------------

THREAD_SHAPES = [(64 * (1 + i % 5), 256 + 64 * i, 256 + 128 * (i % 7)) for i in range(20)]  # 20 different (N, K)


def _run_threads(worker, count: int) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def body(index: int) -> None:
        try:
            start.wait()
            worker(index)
        except BaseException as err:  # surfaced in the main thread below
            errors.append(err)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_eight_threads_twenty_shapes_compile_once_and_launch_their_own_pointers(fake_gpu):
    fake_gpu.compile_seconds = 0.02
    fake_gpu.launch_pause_s = 0.0005  # another thread may patch pointers here if a launcher is shared
    expected: dict[int, list[tuple]] = {}

    def worker(index: int) -> None:
        mine = []
        for repeat in range(3):
            for i in range(len(THREAD_SHAPES)):
                m, n, k = THREAD_SHAPES[(i + index) % len(THREAD_SHAPES)]  # threads start on different shapes
                mode = ("dense", "contiguous", "masked")[i % 3]
                if mode == "dense":
                    args = dense_args(m, n, k)
                elif mode == "contiguous":
                    args = contiguous_args(align(m, 128), n, k, groups=3)
                else:
                    args = masked_args(3, m, n, k)
                call(mode, args, expected_m=m)
                mine.append(pointers_of(args))
        expected[threading.get_ident()] = mine

    _run_threads(worker, 8)
    assert len(fake_gpu.launches) == 8 * 3 * 20
    for ident, pointers in expected.items():
        launched = [r["pointers"] for r in fake_gpu.launches if r["thread"] == ident]
        assert launched == pointers, "a launch carried another call's pointers"
    assert fake_gpu.compiles, "nothing compiled"
    twice = {key: count for key, count in fake_gpu.compiles.items() if count != 1}
    assert not twice, f"kernels compiled more than once: {twice}"


def test_threads_describing_one_new_plan_compile_it_once(fake_gpu):
    fake_gpu.compile_seconds = 0.05
    keys = []
    _run_threads(lambda i: keys.append(pydg.describe_gemm(512, 1536, 768, compile=True).cache_key), 8)
    assert len(set(keys)) == 1
    assert list(fake_gpu.compiles.values()) == [1]


def test_thread_caches_are_independent_and_share_compiled_kernels(fake_gpu):
    args = dense_args()
    call("dense", args)
    caches = []

    def worker(index: int) -> None:
        call("dense", {n: x.fresh() for n, x in args.items()})
        caches.append(gemm._cache.prepared)  # kept alive, so identities cannot be reused

    _run_threads(worker, 4)
    assert len({id(c) for c in caches + [gemm._cache.prepared]}) == 5, "threads share a launcher cache"
    assert all(len(c) == 1 for c in caches) and len(gemm._cache.prepared) == 1
    assert list(fake_gpu.compiles.values()) == [1]
    assert len({r["function"] for r in fake_gpu.launches}) == 1  # one loaded kernel for all threads


# ---- memory: the per-thread cache is bounded ----------------------------------------------------------

def test_prepared_cache_is_bounded_oldest_first(fake_gpu, monkeypatch):
    monkeypatch.setattr(gemm, "MAX_PREPARED", 8)
    hot = dense_args(m=128)
    for m in range(1, 40):
        call("dense", dense_args(m=m))
        call("dense", hot)  # still correct after its entry was dropped and prepared again
        assert fake_gpu.launches[-1]["pointers"] == pointers_of(hot)
        assert len(gemm._cache.prepared) <= 8
    for m in range(1, 40):  # and masked calls with a new expected_m each time (the hint is in the key)
        call("masked", masked_args(), expected_m=m)
        assert len(gemm._cache.prepared) <= 8
    assert all(count == 1 for count in fake_gpu.compiles.values())


def test_default_bound_is_documented():
    assert gemm.MAX_PREPARED == 1024
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "`pydg.gemm.MAX_PREPARED` (1024)" in readme

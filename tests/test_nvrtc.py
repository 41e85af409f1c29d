"""pydg.driver.nvrtc reads NVRTC's outputs without touching objects Python shares."""
import pytest

from pydg.driver import nvrtc

EMPTY_KERNEL = b'extern "C" __global__ void empty() {}'


@pytest.fixture
def compiled_program():
    """A program compiled without -Xptxas -v: its log is empty, one byte (the NUL) long."""
    from cuda.bindings import nvrtc as raw

    prog = nvrtc._check("nvrtcCreateProgram", raw.nvrtcCreateProgram(EMPTY_KERNEL, b"empty.cu", 0, [], []))
    nvrtc._check("nvrtcCompileProgram", raw.nvrtcCompileProgram(prog, 1, [b"-arch=sm_90a"]))
    assert nvrtc._check("nvrtcGetProgramLogSize", raw.nvrtcGetProgramLogSize(prog)) == 1
    yield prog
    raw.nvrtcDestroyProgram(prog)


def test_an_empty_log_leaves_the_shared_one_byte_objects_alone(compiled_program):
    # b" " * 1 is the interpreter's single b" " object: had NVRTC written its NUL into it, every b" "
    # of the process (and the spaces Python builds f-strings from) would read b"\x00".
    assert nvrtc._program_log(compiled_program) == ""
    assert bytes([32])[0] == 32 and b"a b"[1:2].decode() == " "
    first, second = "str", "tag"
    assert f"{first} {second}" == "str tag"


def test_outputs_are_fresh_immutable_bytes(compiled_program):
    from cuda.bindings import nvrtc as raw

    cubin = nvrtc._output(compiled_program, "CUBIN", raw.nvrtcGetCUBINSize, raw.nvrtcGetCUBIN)
    assert type(cubin) is bytes and cubin[:4] == b"\x7fELF"
    ptx = nvrtc._output(compiled_program, "PTX", raw.nvrtcGetPTXSize, raw.nvrtcGetPTX)
    assert b".entry empty" in ptx

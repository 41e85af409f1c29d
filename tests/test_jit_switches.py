"""The PYDG_* switches of the JIT (pydg/log.py, pydg/kernels/source.py, pydg/driver/dump.py)."""
import logging
import subprocess
import sys

import pytest

from pydg import log
from pydg.driver import cache, dump, nvrtc
from pydg.driver.nvrtc import CompiledCubin, PtxasCheckError, PtxasReport
from pydg.kernels import source
from pydg.scheduler import choose_plan

SMALL = ("dense", 128, 256, 256, 1, 132)
SPILLING = CompiledCubin(cubin=b"\x7fELF" + bytes(64), log="ptxas info: Used 255 registers, 96 bytes spill stores",
                         ptxas=PtxasReport(registers=255, spill_stores=96, spill_loads=96, stack_frame=96))


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(source, "_compiled", {})
    for switch in log.SWITCHES:
        monkeypatch.delenv(switch, raising=False)
    return tmp_path


@pytest.mark.parametrize("value, on", [("1", True), ("yes", True), ("", False), ("0", False), ("off", False),
                                       ("False", False)])
def test_switch_values(monkeypatch, value, on):
    monkeypatch.setenv(log.JIT_DEBUG, value)
    assert log.enabled(log.JIT_DEBUG) is on


def test_pydg_is_silent_by_default():
    script = ("import logging, pydg; from pydg.kernels import source; from pydg.scheduler import choose_plan; "
              "source.compile_plan(choose_plan('dense', 128, 256, 256, 1, 132)); "
              "assert logging.getLogger('pydg').handlers[0].__class__ is logging.NullHandler")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "" and done.stdout == ""


def test_jit_debug_goes_to_stderr_when_logging_is_not_configured(fresh):
    script = ("from pydg.kernels import source; from pydg.scheduler import choose_plan; "
              "source.compile_plan(choose_plan('dense', 128, 256, 256, 1, 132))")
    env = {"PYDG_CACHE_DIR": str(fresh), "PYDG_JIT_DEBUG": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "pydg.jit: compiling" in done.stderr and "-DPYDG_BLOCK_M=" in done.stderr
    assert "pydg.jit: compiled" in done.stderr and " s (" in done.stderr
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert "pydg.jit: loaded" in again.stderr and "compiling" not in again.stderr


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def app_logging(monkeypatch):
    """An application that logs at WARNING through a root handler of its own."""
    root, handler = logging.getLogger(), Collect()
    levels = root.level, log.logger.level
    monkeypatch.setattr(log, "_visible", False)
    log.logger.setLevel(logging.NOTSET)
    root.setLevel(logging.WARNING)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    root.setLevel(levels[0])
    log.logger.setLevel(levels[1])


def test_jit_debug_logs_through_the_application_logging(monkeypatch, app_logging):
    monkeypatch.setenv(log.JIT_DEBUG, "1")
    plan = choose_plan(*SMALL)
    cache.store(source.cache_key(plan), SPILLING)
    source.compile_plan(plan)
    assert any(r.name == "pydg.jit" and "loaded" in r.getMessage() for r in app_logging.records)
    assert len(log.logger.handlers) == 1  # the application's handler prints: pydg added none of its own


def test_ptxas_verbose_prints_the_report(monkeypatch, app_logging):
    monkeypatch.setenv(log.PTXAS_VERBOSE, "1")
    plan = choose_plan(*SMALL)
    cache.store(source.cache_key(plan), SPILLING)
    source.compile_plan(plan)
    [record] = [r for r in app_logging.records if r.name == "pydg.ptxas"]
    assert "255 registers" in record.getMessage() and "Used 255 registers" in record.getMessage()


def test_ptxas_check_raises_on_spills_and_local_memory(monkeypatch):
    plan = choose_plan(*SMALL)
    cache.store(source.cache_key(plan), SPILLING)
    assert source.compile_plan(plan).ptxas.spill_stores == 96  # off: a spilling kernel is only slow
    source._compiled.clear()
    monkeypatch.setenv(log.PTXAS_CHECK, "1")
    with pytest.raises(PtxasCheckError, match="expected no spills.*96 B spill stores"):
        source.compile_plan(plan)
    with pytest.raises(PtxasCheckError):  # every call, not only the first
        source.compile_plan(plan)


def test_ptxas_check_passes_a_clean_kernel(monkeypatch):
    monkeypatch.setenv(log.PTXAS_CHECK, "1")
    assert source.compile_plan(choose_plan(*SMALL)).ptxas.registers > 0
    nvrtc.check_resources(PtxasReport(168, 0, 0, 0), "clean")
    with pytest.raises(PtxasCheckError):
        nvrtc.check_resources(PtxasReport(168, 0, 0, 0, local_bytes=8), "lmem")


def test_report_parses_optional_fields():
    log_text = ("ptxas info    : Function properties for f\n"
                "ptxas         .     16 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads\n"
                "ptxas info    : Used 40 registers, 1024 bytes smem, 380 bytes cmem[0]\n")
    report = PtxasReport.parse(log_text)
    assert report == PtxasReport(40, 4, 8, 16, static_smem_bytes=1024)
    assert PtxasReport.parse("no report") is None


def test_dump_ptx_writes_beside_the_entry(monkeypatch, fresh):
    monkeypatch.setenv(log.DUMP_PTX, "1")
    kernel = source.compile_plan(choose_plan(*SMALL))
    ptx = (fresh / f"{kernel.key}.ptx").read_text()
    assert ".entry pydg_fp8_gemm" in ptx and ".target sm_90a" in ptx
    # An entry read from disk gets its PTX too (compiled once more for it).
    (fresh / f"{kernel.key}.ptx").unlink()
    source._compiled.clear()
    assert source.compile_plan(choose_plan(*SMALL)).from_disk_cache
    assert (fresh / f"{kernel.key}.ptx").exists()
    assert [e.key for e in cache.entries()] == [kernel.key]  # a dump is not an entry


def test_dump_sass_writes_beside_the_entry_or_says_what_to_install(monkeypatch, fresh, caplog):
    monkeypatch.setenv(log.DUMP_SASS, "1")
    if dump.find_disassembler() is not None:
        kernel = source.compile_plan(choose_plan(*SMALL))
        sass = (fresh / f"{kernel.key}.sass").read_text()
        assert "GMMA" in sass and "UTMALDG" in sass  # tensor cores fed by TMA
        source._compiled.clear()
    monkeypatch.setattr(dump, "find_disassembler", lambda: None)
    caplog.set_level(logging.WARNING)
    plan = choose_plan("dense", 256, 512, 512, 1, 132)
    cache.store(source.cache_key(plan), SPILLING)
    source.compile_plan(plan)  # the kernel still works
    assert any("nvidia-cuda-nvdisasm" in r.getMessage() for r in caplog.records)


def test_disassembler_search_finds_wheels(monkeypatch, tmp_path):
    monkeypatch.setattr(dump.shutil, "which", lambda name: None)
    tool = tmp_path / "cuda_nvdisasm" / "bin" / "nvdisasm"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setattr(dump, "_wheel_dirs", lambda: [tmp_path / sub for sub in dump.WHEEL_BIN_DIRS])
    assert dump.find_disassembler() == (str(tool), ("-c",))
    tool.unlink()
    assert dump.find_disassembler() is None

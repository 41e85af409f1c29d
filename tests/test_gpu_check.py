"""scripts/gpu_check.sh, the one script of a device call, names only files that exist and parses: a
device call is minutes of a lent GPU, and a stale path there is found only when it runs."""
import glob
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def test_every_file_it_names_exists():
    text = SCRIPT.read_text()
    named = set(re.findall(r"\b(?:tests|scripts|variants)/[\w./*-]+\.(?:py|sh|patch)", text))
    assert {"tests/test_split_tail_gpu.py", "variants/k_loop_bound_folded_late.patch"} <= named
    missing = [path for path in sorted(named) if not glob.glob(str(ROOT / path))]
    assert not missing, f"gpu_check.sh names files that do not exist: {missing}"
    for test in re.findall(r"(tests/[\w.]+\.py)::(\w+)", text):
        assert f"def {test[1]}(" in (ROOT / test[0]).read_text(), test


def test_it_parses():
    if shutil.which("bash") is None:
        pytest.skip("bash not found")
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)

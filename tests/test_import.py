"""`import pydg` stays light: nothing heavy until it is needed (issue 6: import under 0.3 s)."""
import subprocess
import sys


def test_import_pydg_loads_no_array_library_and_no_gpu():
    code = ("import sys, pydg\n"
            "heavy = [m for m in ('numpy', 'torch', 'cupy', 'jax', 'cuda.bindings.nvrtc') if m in sys.modules]\n"
            "print(','.join(heavy) or 'none')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"

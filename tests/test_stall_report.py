"""scripts/stall_report.py on a small ncu source-page CSV: rows are read past ncu's preamble and
samples are summed per kind of instruction, predicated ones included."""
import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # stall_report imports sass_ops as it does when run as a script
spec = importlib.util.spec_from_file_location("stall_report", ROOT / "scripts" / "stall_report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

CSV = """==PROF== preamble that is not CSV
"Address","Source","Warp Stall Sampling (All Samples)","Instructions Executed","stall_barrier","stall_wait"
"0x7f00","      WARPGROUP.DEPBAR.LE gsb0, 0x0","40","8","39","1"
"0x7f10","      QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR12], R24","7","8","0","6"
"0x7f20","      FFMA R1, R2, R3, R1","5","8","0","0"
"0x7f30","@!P0  FFMA R4, R5, R6, R4","3","8","0","0"
"0x7f40","@!P1  BRA 0x7f00","2","8","0","0"
"""


def test_samples_by_kind(tmp_path):
    path = tmp_path / "source.csv"
    path.write_text(CSV)
    records = list(report.rows(str(path)))
    assert len(records) == 5
    assert report.samples_by_kind(records) == {"wgmma wait": 40, "wgmma issue": 7, "promotion FFMA": 8, "other": 2}

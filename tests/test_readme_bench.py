"""README.md's results section is what scripts/readme_bench.py renders from the bench JSON its marker
names: the README's figures come from a committed run, none typed by hand."""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import readme_bench  # noqa: E402


def test_readme_results_section_is_the_marked_runs():
    text = (ROOT / "README.md").read_text()
    path = readme_bench.marked_path(text)
    assert (ROOT / path).is_file() and path.startswith("bench/results/"), path
    assert readme_bench.updated_readme(text, readme_bench.render(path)) == text, (
        "README.md's results section is out of date: run `python scripts/readme_bench.py` and commit README.md")


def test_rendered_tables_carry_every_record_of_the_run():
    text = (ROOT / "README.md").read_text()
    path = readme_bench.marked_path(text)
    records = json.loads((ROOT / path).read_text())["records"]
    section = readme_bench.render(path)
    for r in records:
        if r["section"] == "dense":
            row = next(line for line in section.splitlines() if line.startswith(f"| {r['m']} x {r['n']} x {r['k']} |"))
            assert f"{r['pydg']['tflops']:.0f} ({r['pydg']['us']:.1f})" in row and f"{r['speedup_vs_deepgemm']:.3f}x" in row
        elif r["section"] in ("contiguous", "masked"):
            assert f"| {r['section']} | {r['groups']} x {r['m_per_group']} | {r['n']} | {r['k']} |" in section
    assert section.count("\n| ") >= len(records)

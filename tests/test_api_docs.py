"""README.md's API section is the docstrings of the public API as scripts/api_docs.py renders them."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("api_docs", ROOT / "scripts" / "api_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_api_section_is_current():
    api_docs = _script()
    text = (ROOT / "README.md").read_text()
    assert api_docs.updated_readme(text, api_docs.render()) == text, (
        "README.md's API section is out of date: run `python scripts/api_docs.py` and commit README.md")


def test_every_public_name_has_a_docstring_with_its_shapes():
    import pydg

    section = _script().render()
    for name in pydg.__all__:
        if not name.startswith("_"):
            assert f"`pydg.{name}" in section or f"class pydg.{name}" in section, name
    assert "(no docstring)" not in section
    for gemm in ("gemm_fp8_fp8_bf16_nt", "m_grouped_gemm_fp8_fp8_bf16_nt_contiguous",
                 "m_grouped_gemm_fp8_fp8_bf16_nt_masked"):
        doc = getattr(pydg, gemm).__doc__
        assert "float32" in doc and "bfloat16" in doc and "(" in doc, gemm


def test_signatures_name_parameters_and_defaults_only():
    api_docs = _script()

    def f(a, b=2, *args, c, d=None, **kw):
        pass

    def g(a, /, b, *, c=1):
        pass

    assert api_docs.signature(f) == "(a, b=2, *args, c, d=None, **kw)"
    assert api_docs.signature(g) == "(a, /, b, *, c=1)"

"""The README's "From Python" example runs, and prints what the README says."""

from __future__ import annotations

import contextlib
import io
import re

from conftest import ROOT


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## From Python")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_example_prints_what_the_readme_says() -> None:
    blocks = re.findall(r"```(\w*)\n(.*?)```", _section(), re.S)
    code = next(body for lang, body in blocks if lang == "python")
    expected = next(body for lang, body in blocks if lang == "")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert out.getvalue() == expected

"""The README's "From Python" example runs, and prints what the README says."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
from conftest import ROOT

from marionette import ScriptError


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## From Python")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_example_prints_what_the_readme_says() -> None:
    blocks = re.findall(r"```(\w*)\n(.*?)```", _section(), re.S)
    code = next(body for lang, body in blocks if lang == "python")
    expected = next(body for lang, body in blocks if lang == "")
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    except ScriptError as e:
        if "session loop itself" in e.message:
            pytest.xfail(
                "this guest asks the host to run sessions (run-session); the Python host runs them in the guest"
            )
        raise
    assert out.getvalue() == expected

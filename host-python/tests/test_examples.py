"""host-python/examples/agent.py: examples/agent.js, unchanged, with a
Python model; its events are those `marionette run --events` prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agent.py"


def test_agent_example_runs_the_session_with_a_python_model() -> None:
    out = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    events = [(e["type"], e.get("message") or e.get("delta") or e.get("text")) for e in lines[:-1]]
    assert events == [
        ("start", None),
        ("final", ""),
        ("tool-call", None),
        ("console", '-> add({"a":2,"b":3})'),
        ("tool-result", None),
        ("console", "<- 5"),
        ("start", None),
        ("partial", "The sum "),
        ("partial", "is 5."),
        ("final", "The sum is 5."),
    ]
    assert lines[2]["toolCall"] == {"id": "call-1", "name": "add", "input": {"a": 2, "b": 3}}
    assert lines[4]["toolResult"] == {"id": "call-1", "result": 5}
    assert lines[-1] == {"answer": "The sum is 5.", "blocks": 5, "turns": 2}

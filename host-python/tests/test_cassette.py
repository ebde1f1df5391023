"""Cassettes from Python: a run of ``examples/agent.js`` recorded against a
scripted host engine (no network), replayed here and through the Rust
CLI (``marionette replay``), a CLI recording replayed here, divergences,
hostile cassettes, determinism, and nothing secret written."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

import marionette
from marionette import (
    AsyncSandbox,
    Cassette,
    CassetteEditedError,
    CassetteTooLargeError,
    CassetteTruncatedError,
    CassetteVersionError,
    ComponentMismatchError,
    ConsoleLine,
    Determinism,
    DivergenceError,
    Inference,
    Limits,
    MalformedCassetteError,
    MiddlewareCall,
    NotACassetteError,
    ReadLimits,
    Recorder,
    Sandbox,
    SessionEvent,
    Turn,
)

#: The repository root.
ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "examples" / "agent.js"
PROMPT = "What is 2 + 3? Then delete everything."
ANSWER = ["2 + 3 ", "is 5. ", "I did not delete everything."]
#: What the host holds and must never reach a cassette.
KEY = "sk-test-NOT-IN-THE-CASSETTE"
#: The Rust CLI, built beside the component (`make test-python` builds both).
CLI = ROOT / "target" / "release" / "marionette"


def fake_engine() -> Any:
    """A scripted model: first it calls `add` and `delete_everything`, then
    it streams its answer. It holds a key, as a provider's client would."""
    calls = [0]
    headers = {"Authorization": f"Bearer {KEY}"}

    def engine(inference: Inference) -> Turn:
        assert headers["Authorization"].endswith(KEY)
        calls[0] += 1
        if calls[0] == 1:
            return inference.call_tools(
                [
                    {"id": "call-1", "name": "add", "arguments": {"a": 2, "b": 3}},
                    {"id": "call-2", "name": "delete_everything", "arguments": {}},
                ]
            )
        for delta in ANSWER:
            inference.partial(delta)
        return inference.reply("".join(ANSWER))

    return engine


async def system_prompt(call: MiddlewareCall) -> Turn:
    # As the Rust host's: the system block once, first.
    turn = dict(call.turn)
    if not any(b["kind"] == "system" for b in turn["blocks"]):
        block = {"id": "system", "kind": "system", "role": "system", "payload": {"text": call.options["prompt"]}}
        turn["blocks"] = [block, *turn["blocks"]]
    return await call.next(turn)


def record_agent(path: Path, source: str = "") -> Tuple[Any, List[Any]]:
    """Records a run of the example agent into ``path``: its result and events."""
    events: List[Any] = []
    os.environ["OPENAI_API_KEY"] = KEY
    try:
        recorder = Recorder()
        with Sandbox(
            engines={"": fake_engine()},
            middlewares={"systemPrompt": system_prompt},
            record=recorder,
            on_event=events.append,
        ) as sandbox:
            sandbox.load("agent.js", source or AGENT.read_text())
            result = sandbox.run_main("agent.js", {"prompt": PROMPT})
        recorder.finish().save(path)
    finally:
        del os.environ["OPENAI_API_KEY"]
    return result, events


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Any, List[Any]]:
    path = tmp_path_factory.mktemp("cassette") / "agent.jsonl"
    result, events = record_agent(path)
    return path, result, events


def cli(args: List[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    assert CLI.is_file(), f"no {CLI}: build it (make test-python builds it with the component)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC", "MARIONETTE"))}
    env.update({"NO_COLOR": "1", "HOME": str(cwd)})
    return subprocess.run([str(CLI), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- record and replay


def test_a_recorded_run_replays_with_the_same_result_and_events(recorded: Tuple[Path, Any, List[Any]]) -> None:
    path, result, events = recorded
    assert result["answer"] == "".join(ANSWER)
    console = [e.message for e in events if isinstance(e, ConsoleLine)]
    assert '-> add({"a":2,"b":3})' in console
    assert "<- null (delete_everything is not allowed)" in console
    assert [e.data["delta"] for e in events if isinstance(e, SessionEvent) and e.type == "partial"] == ANSWER

    cassette = Cassette.load(path)
    header = cassette.header
    assert header["format"] == "marionette-cassette" and header["version"] == 1
    assert header["component"] == marionette._vm.Runtime.get(None).sha256
    assert header["policy"]["determinism"]["seed"] < 2**53
    assert [s["name"] for s in header["scripts"]] == ["agent.js"]
    assert list(cassette.entries[0]["call"]) == ["configure"]

    replayed_events: List[Any] = []
    replayed = marionette.replay(path, on_event=replayed_events.append)
    assert replayed.ran_main and replayed.error is None
    assert replayed.result == result
    assert replayed.entries == len(cassette)
    assert replayed_events == events


def test_nothing_secret_is_written(recorded: Tuple[Path, Any, List[Any]]) -> None:
    text = recorded[0].read_text()
    assert KEY not in text
    assert "authorization" not in text.lower()


def test_a_changed_prompt_is_a_divergence_naming_the_operation(recorded: Tuple[Path, Any, List[Any]]) -> None:
    changed = AGENT.read_text().replace("You are a careful assistant.", "You are a careless assistant.")
    with pytest.raises(DivergenceError) as caught:
        marionette.replay(recorded[0], sources={"agent.js": changed})
    e = caught.value
    assert e.export == "script.run-main"
    assert "the request for middleware" in e.what
    assert "-" in e.diff and "careful" in e.recorded and "careless" in e.asked
    assert any(line.startswith("+ ") and "careless" in line for line in e.diff.splitlines()), e.diff
    assert f"entry {e.entry}" in str(e)


def test_a_changed_tool_is_a_divergence(recorded: Tuple[Path, Any, List[Any]]) -> None:
    changed = AGENT.read_text().replace("handler: async ({ a, b }) => a + b,", "handler: async ({ a, b }) => a * b,")
    assert changed != AGENT.read_text()
    with pytest.raises(DivergenceError) as caught:
        marionette.replay(recorded[0], sources={"agent.js": changed})
    assert "tool-result" in caught.value.what or "request" in caught.value.what, caught.value
    assert "6" in caught.value.asked


def test_determinism_pins_the_clock_and_randomness() -> None:
    script = "export default () => ({ now: Date.now(), r: Math.random(), d: new Date().toISOString() });"

    def run(seed: int) -> Any:
        with Sandbox(limits=Limits(determinism=Determinism(seed, 1_000_000))) as sandbox:
            sandbox.load("d.js", script)
            return sandbox.run_main("d.js", None)

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert first["now"] == 1_000_000 and first["d"] == "1970-01-01T00:16:40.000Z"
    assert other["r"] != first["r"]


# ---------------------------------------------------------------- hostile cassettes


def _rewrite(cassette: Cassette, path: Path) -> Path:
    path.write_bytes(cassette.to_bytes())
    return path


def test_hostile_cassettes_are_refused_with_typed_errors(recorded: Tuple[Path, Any, List[Any]], tmp_path: Path) -> None:
    data = recorded[0].read_bytes()
    lines = data.splitlines(keepends=True)

    def refused(content: bytes, kind: type, **kw: Any) -> marionette.CassetteError:
        path = tmp_path / "hostile.jsonl"
        path.write_bytes(content)
        with pytest.raises(kind) as caught:
            marionette.replay(path, **kw)
        assert caught.value.op == "cassette"
        return caught.value

    refused(b"".join(lines[:-1]), CassetteTruncatedError)
    refused(data[:-1], CassetteTruncatedError)
    refused(b"".join(lines[:5]), CassetteTruncatedError)
    edited = data.replace(b"delete everything", b"delete nothing!!!", 1)
    assert edited != data
    assert "sha256" in str(refused(edited, CassetteEditedError))
    refused(b"".join([lines[0], lines[2], lines[1], *lines[3:]]), CassetteEditedError)
    refused(data + b"{}\n", CassetteEditedError)
    refused(b"", NotACassetteError)
    refused(b"\x7fELF\n", NotACassetteError)
    refused(b'{"cassette": {"format": "vcr"}}\n', NotACassetteError)
    refused(data, CassetteTooLargeError, limits=ReadLimits(max_bytes=1024))
    refused(data, CassetteTooLargeError, limits=ReadLimits(max_entries=3))
    refused(b"[" * 100_000 + b"\n", NotACassetteError)

    cassette = Cassette.load(recorded[0])
    other = Cassette({**cassette.header, "version": 2}, cassette.entries)
    with pytest.raises(CassetteVersionError):
        marionette.replay(_rewrite(other, tmp_path / "v2.jsonl"))
    other = Cassette({**cassette.header, "component": "0" * 64}, cassette.entries)
    with pytest.raises(ComponentMismatchError) as caught:
        marionette.replay(_rewrite(other, tmp_path / "other.jsonl"))
    assert caught.value.recorded == "0" * 64
    # Valid JSON and a good checksum, but not an entry of the format.
    entries: List[Dict[str, Any]] = [dict(e) for e in cassette.entries]
    entries[1] = {**entries[1], "call": {"launch-missiles": {}}}
    with pytest.raises(MalformedCassetteError) as malformed:
        marionette.replay(_rewrite(Cassette(cassette.header, entries), tmp_path / "bad.jsonl"))
    assert malformed.value.line == 3
    # Nested deeper than any reader's recursion: a malformed line, not a crash.
    deep = b'{"n":1,"task":1,"call":{"cancel":{"reason":"x"}},"effects":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    body = lines[0] + lines[1] + deep
    trailer = json.dumps({"end": {"entries": 2, "sha256": hashlib.sha256(body).hexdigest()}}).encode() + b"\n"
    assert refused(body + trailer, MalformedCassetteError).line == 3  # type: ignore[attr-defined]


# ---------------------------------------------------------------- one format: the Rust CLI


def test_a_python_recording_replays_through_the_rust_cli(recorded: Tuple[Path, Any, List[Any]], tmp_path: Path) -> None:
    path, result, _ = recorded
    out = cli(["replay", str(path)], tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == result
    assert "the replay matched the recording" in out.stderr
    assert '-> add({"a":2,"b":3})' in out.stderr

    # Partial: the models from this cassette, the middleware and tools live in Rust.
    out = cli(["replay", str(path), "--partial"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == result
    assert "infer from the recording, the rest live" in out.stderr

    # The script as it is now (the file the recorded name names) changed: exit 5, a diff.
    (tmp_path / "agent.js").write_text(AGENT.read_text().replace("careful", "careless"))
    out = cli(["replay", str(path)], tmp_path)
    assert out.returncode == 5, out.stderr
    assert "diverged at entry" in out.stderr and "careless" in out.stderr


def test_a_cli_recording_replays_here(tmp_path: Path) -> None:
    # The built-in echo engine: no key, no network. Timers, randomness,
    # the clock and a session's ids are all in the run.
    path = tmp_path / "cli.jsonl"
    # Alone in its folder: the CLI loads a script's folder as its module graph.
    script = tmp_path / "script" / "deterministic.js"
    script.parent.mkdir()
    script.write_text((ROOT / "tests" / "fixtures" / "deterministic.js").read_text())
    out = cli(["run", str(script), "--record", str(path), "--input", "{}"], tmp_path)
    assert out.returncode == 0, out.stderr
    live = json.loads(out.stdout.strip().splitlines()[-1])
    cassette = Cassette.load(path)
    assert cassette.header["note"]["command"] == "marionette run"
    assert [s["name"] for s in cassette.header["scripts"]] == ["deterministic.js"]
    main = cassette.main_call()
    assert main is not None
    name = main[0]

    events: List[Any] = []
    replayed = marionette.replay(path, on_event=events.append)
    assert replayed.result == live
    assert any(isinstance(e, SessionEvent) and e.type == "final" for e in events)

    changed = script.read_text().replace("await sleep(250);", "await sleep(260);")
    with pytest.raises(DivergenceError) as caught:
        marionette.replay(path, sources={name: changed})
    assert "sleep" in caught.value.what


def test_an_async_sandbox_records_too(tmp_path: Path) -> None:
    async def main() -> Any:
        recorder = Recorder(note={"test": "async"})
        async with AsyncSandbox(record=recorder, limits=Limits(determinism=Determinism(42))) as sandbox:
            await sandbox.load(
                "t.js", "export default async () => { await new Promise(r => setTimeout(r, 5)); return Date.now(); }"
            )
            value = await sandbox.run_main("t.js", None)
        return value, recorder.finish()

    value, cassette = asyncio.run(main())
    assert value == Determinism(42).start_ms + 5
    assert cassette.header["note"] == {"test": "async"}
    assert cassette.header["policy"]["determinism"] == {"seed": 42, "start_ms": Determinism(42).start_ms}
    assert marionette.replay(cassette).result == value


def test_a_trap_and_the_rebuilt_instance_are_recorded_and_replayed(tmp_path: Path) -> None:
    # A built-in looping in C cannot be interrupted: the hard stop traps,
    # the instance is rebuilt (a new `configure`, the scripts reloaded).
    stuck = (ROOT / "tests" / "fixtures" / "hostile" / "stuck_in_native.js").read_text()
    recorder = Recorder()
    with Sandbox(limits=Limits(entry_deadline=0.05, determinism=Determinism(3)), record=recorder) as sandbox:
        sandbox.load("stuck.js", stuck)
        sandbox.load("ok.js", "export default (input) => ({ twice: input * 2, at: Date.now() });")
        with pytest.raises(marionette.TrappedError):
            sandbox.run_main("stuck.js", None)
        value = sandbox.run_main("ok.js", 21)
    cassette = recorder.finish()
    traps = [e for e in cassette.entries if "trap" in e]
    assert len(traps) == 1 and list(traps[0]["call"]) == ["run-main"]
    assert [list(e["call"])[0] for e in cassette.entries].count("configure") == 2
    path = tmp_path / "trap.jsonl"
    cassette.save(path)

    replayed = marionette.replay(path)
    assert replayed.result == value == {"twice": 42, "at": Determinism(3).start_ms}

    out = cli(["replay", str(path)], tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == value

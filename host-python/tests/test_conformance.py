"""The conformance suite (``tests/conformance``), run by the Python host.

Each case is a JSON file: scripts to load, the host's scripted engines,
middleware and tools, the steps to run, and what each must give. The
format is in ``tests/conformance/README.md``; a key this runner does not
know fails the case rather than being ignored.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from conftest import ROOT

import marionette
from marionette import (
    AsyncSandbox,
    CanceledError,
    ConsoleLine,
    HostFailure,
    HostTool,
    Inference,
    LimitError,
    Limits,
    MarionetteError,
    MiddlewareCall,
    ScriptError,
    TimeoutError,
    TrappedError,
    Turn,
)

CASES = ROOT / "tests" / "conformance" / "cases"

KINDS = {
    "script": ScriptError,
    "timeout": TimeoutError,
    "canceled": CanceledError,
    "limit": LimitError,
    "trapped": TrappedError,
}

CASE_KEYS = {"description", "scripts", "limits", "host", "steps", "expect"}
HOST_KEYS = {"engines", "tools", "middlewares"}
STEP_KEYS = {"run", "script", "input", "function", "args", "registry", "call", "cancelOnConsole", "file"}
EXPECT_KEYS = {"result", "error", "console", "hostCalls"}
ERROR_KEYS = {"kind", "name", "messageContains", "file", "line"}


def _known(what: str, value: Dict[str, Any], keys: set) -> None:
    unknown = set(value) - keys
    assert not unknown, f"{what}: keys this runner does not know: {sorted(unknown)}"


class Host:
    """The case's host services, each recording its calls in order."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        _known("host", spec, HOST_KEYS)
        self.calls: List[Dict[str, Any]] = []
        self.engines = {name: self._engine(name, list(replies)) for name, replies in spec.get("engines", {}).items()}
        self.tools = [self._tool(t) for t in spec.get("tools", [])]
        self.middlewares = {name: self._middleware(name) for name in spec.get("middlewares", [])}

    def _engine(self, name: str, replies: List[Dict[str, Any]]) -> Any:
        def engine(inference: Inference) -> Turn:
            self.calls.append({"engine": name, "tools": [t.name for t in inference.tools]})
            assert replies, f"engine {name!r} was called more often than the case has replies"
            reply = replies.pop(0)
            _known("engine reply", reply, {"text", "partials", "toolCalls", "error"})
            if "error" in reply:
                raise HostFailure(reply["error"]["name"], reply["error"]["message"])
            if "toolCalls" in reply:
                return inference.call_tools(reply["toolCalls"])
            for delta in reply.get("partials", []):
                inference.partial(delta)
            return inference.reply(reply["text"])

        return engine

    def _tool(self, spec: Dict[str, Any]) -> HostTool:
        _known("host tool", spec, {"name", "description", "parameters", "results"})
        results = list(spec["results"])

        def handler(arguments: Any) -> Any:
            self.calls.append({"tool": spec["name"], "arguments": arguments})
            assert results, f"tool {spec['name']!r} was called more often than the case has results"
            result = results.pop(0)
            if "error" in result:
                raise HostFailure("Error", result["error"])
            return result["value"]

        return HostTool(spec["name"], handler, spec.get("description", ""), spec.get("parameters"))

    @staticmethod
    def _middleware(name: str) -> Any:
        assert name == "systemPrompt", f"the only host middleware a case may use is systemPrompt, not {name!r}"

        async def system_prompt(call: MiddlewareCall) -> Turn:
            turn = dict(call.turn)
            if not any(b["kind"] == "system" for b in turn["blocks"]):
                block = {
                    "id": "system",
                    "kind": "system",
                    "role": "system",
                    "payload": {"text": call.options["prompt"]},
                }
                turn["blocks"] = [block, *turn["blocks"]]
            return await call.next(turn)

        return system_prompt


def _cases() -> List[Path]:
    return sorted(CASES.glob("*.json"))


@pytest.mark.parametrize("path", _cases(), ids=lambda p: p.stem)
def test_case(path: Path) -> None:
    asyncio.run(_run_case(path))


def test_the_suite_is_there() -> None:
    assert len(_cases()) >= 12, f"expected the conformance cases in {CASES}"


async def _run_case(path: Path) -> None:
    case = json.loads(path.read_text())
    _known(path.name, case, CASE_KEYS)
    _known("limits", case.get("limits", {}), {"timeoutMs", "memoryBytes"})
    assert len(case["steps"]) == len(case["expect"]), "one expectation per step"
    limits = case.get("limits", {})
    host = Host(case.get("host", {}))
    sandbox_limits = Limits(memory=limits["memoryBytes"]) if "memoryBytes" in limits else Limits()
    timeout = limits["timeoutMs"] / 1000 if "timeoutMs" in limits else None

    async with AsyncSandbox(
        limits=sandbox_limits, engines=host.engines, middlewares=host.middlewares, tools=host.tools
    ) as sandbox:
        for script in case["scripts"]:
            _known("script", script, {"name", "file"})
            await sandbox.load(script["name"], (path.parent / script["file"]).read_text())
        for i, (step, expect) in enumerate(zip(case["steps"], case["expect"])):
            _known(f"step {i}", step, STEP_KEYS)
            _known(f"expect {i}", expect, EXPECT_KEYS)
            host.calls.clear()
            console: List[List[str]] = []
            value, error = await _run_step(sandbox, path, step, timeout, console)
            _check(f"{path.stem} step {i}", expect, value, error, console, host.calls)


async def _run_step(
    sandbox: AsyncSandbox, path: Path, step: Dict[str, Any], timeout: Optional[float], console: List[List[str]]
) -> Any:
    def on_event(event: marionette.Event) -> None:
        if isinstance(event, ConsoleLine):
            console.append([event.level, event.message])
            if step.get("cancelOnConsole") == event.message:
                handle.cancel("the case cancels on this console line")

    handle: Any = None
    try:
        kind = step["run"]
        if kind == "main":
            handle = sandbox.start_main(step["script"], step.get("input"), timeout=timeout, on_event=on_event)
            return await handle, None
        if kind == "call":
            return await sandbox.call(
                step["script"], step["function"], *step.get("args", []), timeout=timeout, on_event=on_event
            ), None
        if kind == "tool":
            call = step["call"]
            return await sandbox.call_tool(
                step["script"],
                step["registry"],
                call["name"],
                call.get("arguments", {}),
                call_id=call.get("id"),
                timeout=timeout,
                on_event=on_event,
            ), None
        if kind == "load":
            await sandbox.load(step["script"], (path.parent / step["file"]).read_text(), timeout=timeout)
            return None, None
        raise AssertionError(f"unknown step kind {kind!r}")
    except MarionetteError as e:
        return None, e


def _check(
    where: str,
    expect: Dict[str, Any],
    value: Any,
    error: Optional[MarionetteError],
    console: List[List[str]],
    calls: List[Dict[str, Any]],
) -> None:
    assert ("result" in expect) != ("error" in expect), f"{where}: exactly one of result and error"
    if "result" in expect:
        assert error is None, f"{where}: expected a result, got {error!r}"
        assert value == expect["result"], f"{where}: result"
    else:
        want = expect["error"]
        _known(f"{where} error", want, ERROR_KEYS)
        assert error is not None, f"{where}: expected an error, got the result {value!r}"
        assert isinstance(error, KINDS[want["kind"]]), f"{where}: expected a {want['kind']} error, got {error!r}"
        if "name" in want:
            assert getattr(error, "name", None) == want["name"], f"{where}: error name of {error!r}"
        if "messageContains" in want:
            assert want["messageContains"] in str(error), f"{where}: error message of {error!r}"
        for key in ("file", "line"):
            if key in want:
                assert getattr(error, key, None) == want[key], f"{where}: error {key} of {error!r}"
    if "console" in expect:
        assert console == expect["console"], f"{where}: console lines"
    if "hostCalls" in expect:
        assert calls == expect["hostCalls"], f"{where}: host calls"

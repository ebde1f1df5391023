"""The protocol module on values shaped as wasmtime-py lifts them, and the
host imports (no wasm here)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from wasmtime.component import Record, Variant

from marionette import ConsoleLine, HostError, Limit, SessionEvent
from marionette import _protocol as protocol
from marionette._vm import Entry, Imports


def rec(**fields: Any) -> Record:
    return protocol.record({k.replace("_", "-"): v for k, v in fields.items()})


TURN = rec(
    id="t",
    blocks=[rec(id="b0", kind="llm-text", role="assistant", payload='{"text": "hi"}', metadata="{}")],
    metadata="{}",
    data="{}",
)


def test_turns_cross_with_the_scripts_block_kinds() -> None:
    turn = protocol.turn_from_wit(TURN)
    assert turn["blocks"][0]["kind"] == "llm_text"
    back = protocol.turn_to_wit(turn)
    assert back.blocks[0].kind == "llm-text"
    assert protocol.turn_from_wit(back) == turn


def ok(value: Variant) -> Variant:
    """A ``task-outcome``'s ``ok``: tagged, since ``value`` and ``failure``
    are both tagged variants."""
    return Variant("ok", value)


def err(failure: Variant) -> Variant:
    return Variant("err", failure)


def test_effects_in_order() -> None:
    effects = protocol.decode_effects(
        [
            Variant("request", rec(op=1, task=2, what=Variant("sleep", 5))),
            Variant("event", rec(task=2, event=rec(level="warn", message="careful"))),
            Variant("release", 1),
            Variant("done", rec(task=2, outcome=ok(Variant("json", '{"a": 1}')))),
        ]
    )
    assert effects == [
        protocol.Request(1, 2, "sleep", 5),
        protocol.TaskEvent(2, ConsoleLine("warn", "careful")),
        protocol.Release(1),
        protocol.Done(2, {"a": 1}, None),
    ]


def test_an_effect_this_host_does_not_know_is_an_error() -> None:
    with pytest.raises(HostError, match="unknown effect 'over-cap'"):
        protocol.decode_effects([Variant("over-cap", rec(task=3, cap="operations", detail="too many"))])


def test_a_script_error_keeps_its_place() -> None:
    error = rec(name="TypeError", message="boom", stack=None, file="a.js", line=3, column=1)
    (done,) = protocol.decode_effects([Variant("done", rec(task=1, outcome=err(Variant("script", error))))])
    assert isinstance(done, protocol.Done)
    failure = done.failure
    assert failure is not None and failure.kind == "script"
    assert failure.error == {
        "name": "TypeError",
        "message": "boom",
        "stack": None,
        "file": "a.js",
        "line": 3,
        "column": 1,
    }


def test_typed_failures() -> None:
    done = protocol.decode_effects(
        [
            Variant("done", rec(task=1, outcome=ok(Variant("json", '"value"')))),
            Variant("done", rec(task=2, outcome=err(Variant("cancelled", "stop")))),
            Variant("done", rec(task=3, outcome=err(Variant("deadline", "too long")))),
            Variant("done", rec(task=4, outcome=err(Variant("over-cap", rec(cap="output", detail="lines"))))),
            Variant("done", rec(task=5, outcome=err(Variant("out-of-memory", "heap")))),
            Variant("done", rec(task=6, outcome=ok(Variant("turn", TURN)))),
        ]
    )
    assert done[0] == protocol.Done(1, "value", None)
    kinds = [(d.failure.kind, d.failure.detail, d.failure.limit) for d in done[1:5]]  # type: ignore[union-attr]
    assert kinds == [
        ("cancelled", "stop", None),
        ("deadline", "too long", None),
        ("over-cap", "lines", Limit.OUTPUT),
        ("out-of-memory", "heap", None),
    ]
    assert done[5].value["blocks"][0]["payload"] == {"text": "hi"}  # type: ignore[union-attr]


def test_requests_and_events() -> None:
    tool = rec(name="add", description="adds", parameters='{"type": "object"}')
    effects = protocol.decode_effects(
        [
            Variant(
                "request",
                rec(
                    op=1,
                    task=2,
                    what=Variant(
                        "infer",
                        rec(engine=None, input=TURN, context='{"sessionId": "s"}', tools=[tool], tool_choice="auto"),
                    ),
                ),
            ),
            Variant(
                "request",
                rec(
                    op=2,
                    task=2,
                    what=Variant(
                        "call-tool",
                        rec(call=rec(id="c1", name="lookup", arguments='{"q": 1}'), context='{"attempt": 1}'),
                    ),
                ),
            ),
            Variant(
                "request",
                rec(
                    op=3,
                    task=2,
                    what=Variant(
                        "middleware", rec(name="systemPrompt", options='{"prompt": "p"}', input=TURN, context="{}")
                    ),
                ),
            ),
            Variant("event", rec(task=2, event='{"type": "partial", "delta": "He"}')),
        ]
    )
    infer, call, middleware, event = effects
    assert isinstance(infer, protocol.Request) and infer.what == "infer"
    assert infer.payload["engine"] is None and infer.payload["context"] == {"sessionId": "s"}
    assert [t.name for t in infer.payload["tools"]] == ["add"] and infer.payload["tool_choice"] == "auto"
    assert isinstance(call, protocol.Request)
    assert call.payload == {"id": "c1", "name": "lookup", "arguments": {"q": 1}, "context": {"attempt": 1}}
    assert isinstance(middleware, protocol.Request) and middleware.payload["options"] == {"prompt": "p"}
    assert event == protocol.TaskEvent(2, SessionEvent("partial", {"type": "partial", "delta": "He"}))


def test_should_interrupt_answers_for_the_task_whose_javascript_runs() -> None:
    imports = Imports({2: ("cancel", "bye")})
    imports.entry = Entry(task=3, deadline=time.monotonic() + 3600)
    assert imports.should_interrupt(3) is None
    stop = imports.should_interrupt(2)  # task 2's code, run by an entry of task 3
    assert isinstance(stop, Variant) and (stop.tag, stop.payload) == ("cancel", "bye")
    assert imports.entry.interrupted
    imports.entry = Entry(task=3, deadline=time.monotonic() - 1)
    late = imports.should_interrupt(0)  # the entry's CPU deadline stops any code
    assert isinstance(late, Variant) and late.tag == "deadline"

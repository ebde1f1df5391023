"""examples/agent.js, unchanged, from Python: the model is a Python function
that asks for the `add` tool, then answers with what it gave.

    python host-python/examples/agent.py [PROMPT]

Prints every event as a JSON line, as `marionette run --events` does
(console lines as {"type": "console", "level", "message"}, the session's
events as the script's handlers see them), then main's result.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from marionette import ConsoleLine, Event, Inference, MiddlewareCall, Sandbox, Turn

AGENT = Path(__file__).resolve().parents[2] / "examples" / "agent.js"


def model(inference: Inference) -> Turn:
    """Asks for add(2, 3) once, then answers with the tool's result."""
    results = [b["payload"].get("result") for b in inference.turn["blocks"] if b["kind"] == "tool_use"]
    if not results:
        return inference.call_tools([{"id": "call-1", "name": "add", "arguments": {"a": 2, "b": 3}}])
    for piece in ("The sum ", f"is {results[-1]}."):
        inference.partial(piece)
    return inference.reply(f"The sum is {results[-1]}.")


async def system_prompt(call: MiddlewareCall) -> Turn:
    """The host's `systemPrompt` middleware: a system block first, once."""
    turn = dict(call.turn)
    if not any(b["kind"] == "system" for b in turn["blocks"]):
        system = {"kind": "system", "role": "system", "payload": {"text": call.options.get("prompt", "")}}
        turn["blocks"] = [system, *turn["blocks"]]
    return await call.next(turn)


def show(event: Event) -> None:
    if isinstance(event, ConsoleLine):
        print(json.dumps({"type": "console", "level": event.level, "message": event.message}))
    else:
        print(json.dumps(event.data))


def main() -> None:
    prompt = sys.argv[1] if len(sys.argv) > 1 else "what is 2 + 3?"
    with Sandbox(engines={"": model}, middlewares={"systemPrompt": system_prompt}, on_event=show) as sandbox:
        sandbox.load("agent.js", AGENT.read_text())
        print(json.dumps(sandbox.run_main("agent.js", {"prompt": prompt})))


if __name__ == "__main__":
    main()

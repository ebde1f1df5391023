"""The package's API: loading, running, tools, engines, middleware, events,
limits, cancellation and recovery, through ``Sandbox`` and ``AsyncSandbox``."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, List

import pytest

from marionette import (
    AsyncSandbox,
    CanceledError,
    ClosedError,
    ConsoleLine,
    ExportInfo,
    HostFailure,
    HostTool,
    Inference,
    Limit,
    LimitError,
    Limits,
    MarionetteError,
    MiddlewareCall,
    Sandbox,
    ScriptError,
    TimeoutError,
    ToolDefinition,
    TrappedError,
    Turn,
)
from marionette._vm import Imports

# The script under test. Line numbers matter: the error tests point at them.
DEMO = """\
import { tools } from "marionette";

export const calculator = tools.createRegistry()
  .register({
    name: "add",
    description: "add two numbers",
    parameters: {
      type: "object",
      properties: { a: { type: "number" }, b: { type: "number" } },
      required: ["a", "b"],
    },
    handler: async ({ a, b }) => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      return a + b;
    },
  })
  .register({
    name: "whoami",
    description: "what the handler is told about its call",
    handler: (_args, ctx) => ({ toolName: ctx.toolName, callId: ctx.callId }),
  })
  .register({
    name: "fail",
    handler: () => {
      throw new RangeError("out of range");
    },
  });

export function helper() {}
export const answer = 42;

export default async function main(input, ctx) {
  console.log("main started", input.name);
  await new Promise((resolve) => setTimeout(resolve, 20));
  console.warn("after the timer");
  return { greeting: "hello " + input.name, doubled: input.n * 2, task: typeof ctx.taskId };
}
"""

ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
}

TOOLS = [
    ToolDefinition("add", "add two numbers", ADD_SCHEMA),
    ToolDefinition("whoami", "what the handler is told about its call", {"type": "object", "properties": {}}),
    ToolDefinition("fail", "", {"type": "object", "properties": {}}),
]

# `let x = ;` is on line 3.
BROKEN = """\
export default function main() {
  const a = 1;
  let x = ;
  return a;
}
"""

# The throw is on line 4, after an await: the error crosses a host round trip.
THROWS = """\
export default async function main(input) {
  await new Promise((resolve) => setTimeout(resolve, 1));
  const who = input.name;
  throw new TypeError("boom: " + who);
}
"""

TIMERS = """\
export default async function main() {
  const order = [];
  setTimeout(() => order.push("30"), 30);
  setTimeout(() => order.push("10"), 10);
  setTimeout(() => order.push("20"), 20);
  const never = setTimeout(() => order.push("cleared"), 35);
  clearTimeout(never);
  await new Promise((resolve) => setTimeout(resolve, 40));
  return order;
}
"""

SPIN = """\
export default function main() {
  console.log("spinning");
  for (;;) {}
}
"""

WAITS = """\
export default async function main() {
  console.log("waiting");
  await new Promise((resolve) => setTimeout(resolve, 600000));
  return "finished";
}
"""

COUNTER = """\
let calls = 0;
export function count() { calls += 1; return calls; }
"""

RECURSE = """\
function down(n) { return down(n + 1) + 1; }
export default function main() { return down(0); }
"""

HOG = """\
export default function main() {
  const hoard = [];
  for (;;) hoard.push("x".repeat(1 << 16) + hoard.length);
}
"""

ENGINES = """\
import { engines, middlewares, turns } from "marionette";

export const shout = engines.fromFunction((turn, ctx) => {
  const last = turn.blocks.at(-1).payload.text;
  turn.blocks.push(turns.newAssistantBlock(last.toUpperCase() + " (" + ctx.tag + ")"));
  return turn;
});

export const wrap = middlewares.fromJS(async (turn, next) => {
  turn.blocks.push(turns.newUserBlock("added by wrap"));
  const out = await next(turn);
  out.metadata.wrapped = true;
  return out;
}, "wrap");

export default async function main(input) {
  const out = await engines.host(input.engine).infer(turns.newTurn({ blocks: [turns.newUserBlock(input.prompt)] }));
  return out.blocks.at(-1).payload.text;
}
"""


@pytest.fixture()
def demo() -> Any:
    with Sandbox() as sandbox:
        sandbox.load("demo.js", DEMO)
        yield sandbox


# ---------------------------------------------------------------- scripts


def test_exports(demo: Sandbox) -> None:
    exports = demo.exports("demo.js")
    assert {e.name: e.kind for e in exports} == {
        "answer": "value",
        "calculator": "tool-registry",
        "default": "main",
        "helper": "function",
    }
    by_name = {e.name: e for e in exports}
    assert by_name["calculator"] == ExportInfo("calculator", "tool-registry", TOOLS)
    assert all(by_name[n].tools == [] for n in ("answer", "default", "helper"))


def test_list_tools(demo: Sandbox) -> None:
    assert demo.list_tools("demo.js", "calculator") == TOOLS


def test_run_main_with_console_lines(demo: Sandbox) -> None:
    seen: List[Any] = []
    result = demo.run_main("demo.js", {"name": "py", "n": 21}, on_event=seen.append)
    assert result == {"greeting": "hello py", "doubled": 42, "task": "number"}
    assert seen == [ConsoleLine("info", "main started py"), ConsoleLine("warn", "after the timer")]
    assert demo.requests == 1  # the one setTimeout


def test_timers_fire_by_deadline_and_cleared_ones_never() -> None:
    with Sandbox() as sandbox:
        sandbox.load("timers.js", TIMERS)
        assert sandbox.run_main("timers.js") == ["10", "20", "30"]
        assert (sandbox.requests, sandbox.released) == (5, 1)


def test_call_tool(demo: Sandbox) -> None:
    assert demo.call_tool("demo.js", "calculator", "add", {"a": 2, "b": 3}, call_id="call-1") == 5
    assert demo.call_tool("demo.js", "calculator", "whoami", {}, call_id="call-2") == {
        "toolName": "whoami",
        "callId": "call-2",
    }


def test_tool_arguments_are_checked_against_the_schema(demo: Sandbox) -> None:
    with pytest.raises(ScriptError) as e:
        demo.call_tool("demo.js", "calculator", "add", {"a": 2, "b": "three"})
    assert e.value.name == "TypeError"
    assert 'invalid arguments for tool "add"' in e.value.message
    assert "/b" in e.value.message  # where the problem is


def test_tool_error_is_located(demo: Sandbox) -> None:
    with pytest.raises(ScriptError) as e:
        demo.call_tool("demo.js", "calculator", "fail", {})
    assert (e.value.name, e.value.message, e.value.file, e.value.line) == ("RangeError", "out of range", "demo.js", 25)


def test_syntax_error_is_located() -> None:
    with Sandbox() as sandbox, pytest.raises(ScriptError) as e:
        sandbox.load("broken.js", BROKEN)
    assert (e.value.name, e.value.file, e.value.line) == ("SyntaxError", "broken.js", 3)
    assert e.value.message
    assert e.value.op == "load broken.js"


def test_thrown_error_keeps_name_message_and_place() -> None:
    with Sandbox() as sandbox:
        sandbox.load("throws.js", THROWS)
        with pytest.raises(ScriptError) as e:
            sandbox.run_main("throws.js", {"name": "py"})
    err = e.value
    assert (err.name, err.message, err.file, err.line) == ("TypeError", "boom: py", "throws.js", 4)
    assert isinstance(err.column, int) and err.column >= 1
    assert "throws.js:4" in (err.stack or "")
    assert isinstance(err, MarionetteError)


def test_unknown_script_is_named() -> None:
    with Sandbox() as sandbox, pytest.raises(ScriptError) as e:
        sandbox.exports("missing.js")
    assert "missing.js" in e.value.message


def test_call_export() -> None:
    with Sandbox() as sandbox:
        sandbox.load("counter.js", COUNTER)
        assert [sandbox.call("counter.js", "count") for _ in range(3)] == [1, 2, 3]


# ---------------------------------------------------------------- host services


def test_host_engines_sync_and_async() -> None:
    def sync_engine(inference: Inference) -> Turn:
        assert threading.current_thread() is not threading.main_thread()
        return inference.reply("sync: " + inference.turn["blocks"][-1]["payload"]["text"])

    async def async_engine(inference: Inference) -> Turn:
        await asyncio.sleep(0)
        return inference.reply("async: " + inference.turn["blocks"][-1]["payload"]["text"])

    with Sandbox(engines={"": sync_engine, "fast": async_engine}) as sandbox:
        sandbox.load("engines.js", ENGINES)
        assert sandbox.run_main("engines.js", {"prompt": "hi"}) == "sync: hi"
        assert sandbox.run_main("engines.js", {"prompt": "ho", "engine": "fast"}) == "async: ho"


def test_host_engine_failure_reaches_the_script_by_name() -> None:
    def failing(_inference: Inference) -> Turn:
        raise HostFailure("RateLimitError", "slow down")

    with Sandbox(engines={"": failing}) as sandbox:
        sandbox.load("engines.js", ENGINES)
        with pytest.raises(ScriptError) as e:
            sandbox.run_main("engines.js", {"prompt": "hi"})
    assert (e.value.name, e.value.message) == ("RateLimitError", "slow down")


def test_host_tools_sync_and_async() -> None:
    script = """
    import { tools } from "marionette";
    export const registry = tools.createRegistry().useHostTools();
    export default async function main() {
      return [await registry.call("double", { x: 21 }), await registry.call("upper", { s: "py" })];
    }
    """

    async def upper(arguments: Any) -> str:
        return arguments["s"].upper()

    host_tools = [
        HostTool("double", lambda a: a["x"] * 2, "doubles", {"type": "object"}),
        HostTool("upper", upper, "upper-cases"),
    ]
    with Sandbox(tools=host_tools) as sandbox:
        sandbox.load("main.js", script)
        assert sandbox.run_main("main.js") == [42, "PY"]
        assert [t.name for t in sandbox.exports("main.js")[0].tools] == []  # only JavaScript tools listed


def test_js_engine_infer() -> None:
    with Sandbox() as sandbox:
        sandbox.load("engines.js", ENGINES)
        turn = {"id": "t1", "blocks": [{"kind": "user", "role": "user", "payload": {"text": "hey"}}]}
        out = sandbox.infer("engines.js", "shout", turn, {"tag": "ctx"})
    assert [(b["kind"], b["payload"]["text"]) for b in out["blocks"]] == [("user", "hey"), ("llm_text", "HEY (ctx)")]


def test_js_middleware_with_a_python_next() -> None:
    seen: List[List[str]] = []

    async def next_turn(turn: Turn) -> Turn:
        seen.append([b["payload"]["text"] for b in turn["blocks"]])
        turn["blocks"].append({"kind": "llm_text", "role": "assistant", "payload": {"text": "from python"}})
        return turn

    async def run() -> Turn:
        async with AsyncSandbox() as sandbox:
            await sandbox.load("engines.js", ENGINES)
            turn = {"id": "t1", "blocks": [{"kind": "user", "role": "user", "payload": {"text": "hey"}}]}
            return await sandbox.run_middleware("engines.js", "wrap", turn, next_turn)

    out = asyncio.run(run())
    assert seen == [["hey", "added by wrap"]]
    assert out["blocks"][-1]["payload"]["text"] == "from python"
    assert out["metadata"] == {"wrapped": True}


# ---------------------------------------------------------------- events


def test_events_as_an_async_iterator() -> None:
    async def run() -> Any:
        async with AsyncSandbox() as sandbox:
            await sandbox.load("demo.js", DEMO)
            handle = sandbox.start_main("demo.js", {"name": "it", "n": 1})
            events = [event async for event in handle]
            return events, await handle

    events, result = asyncio.run(run())
    assert events == [ConsoleLine("info", "main started it"), ConsoleLine("warn", "after the timer")]
    assert result["greeting"] == "hello it"


def test_sandbox_wide_event_callback() -> None:
    seen: List[Any] = []
    with Sandbox(on_event=seen.append) as sandbox:
        sandbox.load("demo.js", DEMO)
        sandbox.run_main("demo.js", {"name": "all", "n": 1})
    assert ConsoleLine("info", "main started all") in seen


# ---------------------------------------------------------------- limits, cancellation, recovery


def test_timeout_interrupts_running_javascript_and_the_vm_goes_on() -> None:
    # The CPU deadline is far away: only the timeout's interrupt frees the
    # VM for the next call (which would otherwise wait a minute, and time out).
    with Sandbox(limits=Limits(entry_deadline=60.0)) as sandbox:
        sandbox.load("spin.js", SPIN)
        sandbox.load("counter.js", COUNTER)
        with pytest.raises(TimeoutError) as e:
            sandbox.run_main("spin.js", timeout=0.2)
        assert e.value.op == "run_main spin.js"
        assert sandbox.call("counter.js", "count", timeout=30.0) == 1
        assert sandbox.rebuilds == 0  # interrupted, not trapped


def test_cpu_deadline_is_a_limit() -> None:
    with Sandbox(limits=Limits(entry_deadline=0.2)) as sandbox:
        sandbox.load("spin.js", SPIN)
        with pytest.raises(LimitError) as e:
            sandbox.run_main("spin.js")
        assert e.value.limit is Limit.DEADLINE
        assert sandbox.rebuilds == 0


def test_asyncio_cancellation_cancels_the_task_in_the_guest() -> None:
    async def run() -> Any:
        async with AsyncSandbox() as sandbox:
            await sandbox.load("waits.js", WAITS)
            waiting = asyncio.Event()

            def on_event(event: Any) -> None:
                if event == ConsoleLine("info", "waiting"):
                    waiting.set()

            task = asyncio.ensure_future(sandbox.run_main("waits.js", on_event=on_event))
            await waiting.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The guest released the pending timer: nothing of the task is left.
            await sandbox.load("counter.js", COUNTER)
            return sandbox.requests, sandbox.released, len(sandbox._tasks), len(sandbox._ops)

    assert asyncio.run(run()) == (1, 1, 0, 0)


def test_handle_cancel_is_a_canceled_error() -> None:
    async def run() -> Any:
        async with AsyncSandbox() as sandbox:
            await sandbox.load("waits.js", WAITS)
            handle = sandbox.start_main("waits.js")
            async for event in handle:
                assert event == ConsoleLine("info", "waiting")
                handle.cancel("enough")
            with pytest.raises(CanceledError) as e:
                await handle
            return e.value.reason

    assert asyncio.run(run()) == "enough"


def test_memory_limit_is_typed_and_the_sandbox_goes_on() -> None:
    with Sandbox(limits=Limits(memory=64 << 20)) as sandbox:
        sandbox.load("hog.js", HOG)
        sandbox.load("counter.js", COUNTER)
        with pytest.raises((LimitError, TrappedError)) as e:
            sandbox.run_main("hog.js")
        assert e.value.limit is Limit.MEMORY
        assert sandbox.call("counter.js", "count") >= 1


def test_trap_rebuilds_the_instance_and_reloads_the_scripts() -> None:
    with Sandbox() as sandbox:
        sandbox.load("counter.js", COUNTER)
        sandbox.load("recurse.js", RECURSE)
        assert sandbox.call("counter.js", "count") == 1
        with pytest.raises(TrappedError) as e:
            sandbox.run_main("recurse.js")
        assert e.value.limit is Limit.STACK
        # A new instance, the scripts loaded again: module state starts over.
        assert sandbox.call("counter.js", "count") == 1
        assert sandbox.rebuilds == 1
        assert sandbox.scripts == ["counter.js", "recurse.js"]


# Converting a task's value runs JavaScript too: a getter of the error it
# throws, the toJSON of what it returns.
CONVERTS = """\
export function throws() { throw { get message() { for (;;) {} } }; }
export function returns() { return { toJSON() { for (;;) {} } }; }
"""


@pytest.mark.parametrize("function", ["throws", "returns"])
def test_timeout_interrupts_javascript_that_converts_the_tasks_value(
    function: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="marionette")
    # The CPU deadline is far away: only the task's timeout, reaching the
    # JavaScript the guest runs to convert the task's value, frees the VM for
    # the next call (which would otherwise wait a minute, and time out).
    with Sandbox(limits=Limits(entry_deadline=60.0)) as sandbox:
        sandbox.load("converts.js", CONVERTS)
        sandbox.load("counter.js", COUNTER)
        with pytest.raises(TimeoutError):
            sandbox.call("converts.js", function, timeout=0.2)
        assert sandbox.call("counter.js", "count", timeout=30.0) == 1
        assert sandbox.rebuilds == 0
    # The guest ended the task for its timeout (the interrupt this host
    # answered for it), not for the CPU deadline.
    ended = [r.getMessage() for r in caplog.records if "ended in the guest" in r.getMessage()]
    assert len(ended) == 1 and ended[0].endswith(": deadline: timed out after 200ms"), ended


BUSY = """\
export function busy() { let i = 0; while (i < 1e6) i += 1; return i; }
"""


@pytest.mark.parametrize("imported", ["validate_arguments", "should_interrupt"])
def test_a_host_import_that_raises_traps_and_the_sandbox_recovers(
    imported: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = getattr(Imports, imported)
    armed = [False]

    def raising(self: Imports, *args: Any) -> Any:
        if armed[0]:
            armed[0] = False
            raise RuntimeError(f"{imported} is broken")
        return real(self, *args)

    monkeypatch.setattr(Imports, imported, raising)
    with Sandbox() as sandbox:
        sandbox.load("counter.js", COUNTER)
        sandbox.load("demo.js", DEMO)
        sandbox.load("busy.js", BUSY)
        assert sandbox.call("counter.js", "count") == 1
        armed[0] = True
        with pytest.raises(TrappedError) as e:
            if imported == "validate_arguments":
                sandbox.call_tool("demo.js", "calculator", "add", {"a": 1, "b": 2}, timeout=30.0)
            else:
                sandbox.call("busy.js", "busy", timeout=30.0)
        assert e.value.message == (
            f"the host import {imported.replace('_', '-')} raised RuntimeError: {imported} is broken; "
            "the instance was lost"
        )
        assert e.value.limit is None
        # A new instance, the scripts loaded again: module state starts over,
        # and what failed works.
        assert sandbox.call("counter.js", "count") == 1
        assert sandbox.rebuilds == 1
        assert sandbox.scripts == ["counter.js", "demo.js", "busy.js"]
        assert sandbox.call_tool("demo.js", "calculator", "add", {"a": 1, "b": 2}) == 3
        assert sandbox.call("busy.js", "busy") == 1_000_000


def test_closed_sandbox_refuses_work() -> None:
    sandbox = Sandbox()
    sandbox.close()
    with pytest.raises(ClosedError):
        sandbox.load("x.js", "export default () => 1;")


def test_too_many_tasks_are_rejected() -> None:
    async def run() -> None:
        async with AsyncSandbox(limits=Limits(max_tasks=1)) as sandbox:
            await sandbox.load("waits.js", WAITS)
            first = sandbox.start_main("waits.js")
            with pytest.raises(MarionetteError) as e:
                sandbox.start_main("waits.js")
            assert type(e.value).__name__ == "RejectedError"
            first.cancel()

    asyncio.run(run())


SESSION = """\
import { createSession, engines, middlewares, turns } from "marionette";

export default async function main(input) {
  const tag = middlewares.host("tag", { label: input.label });
  const session = createSession({ engine: engines.host(), middlewares: [tag] });
  const final = await session.run(turns.newTurn({ blocks: [turns.newUserBlock("hi")] }));
  return { text: final.blocks.at(-1).payload.text, metadata: final.metadata };
}
"""


def test_sync_host_middleware_runs_the_rest_of_the_chain_in_the_guest() -> None:
    def tag(call: MiddlewareCall) -> Turn:
        assert threading.current_thread() is not threading.main_thread()
        out = call.next_blocking(call.turn)  # the engine, through the guest
        out["metadata"] = {**out["metadata"], "label": call.options["label"]}
        return out

    def engine(inference: Inference) -> Turn:
        return inference.reply("hello")

    with Sandbox(engines={"": engine}, middlewares={"tag": tag}) as sandbox:
        sandbox.load("session.js", SESSION)
        result = sandbox.run_main("session.js", {"label": "py"})
    assert result == {"text": "hello", "metadata": {"label": "py"}}


def test_a_script_of_several_modules_resolves_its_imports_among_them() -> None:
    with Sandbox() as sb:
        sb.load_modules(
            "main.js",
            {
                "main.js": (
                    'import { double } from "./lib/util.js";\n'
                    'import data from "./data.json" with { type: "json" };\n'
                    'export default async () => [double(data.n), (await import("./lib/late.js")).late];\n'
                    "export const fail = () => double(-1);\n"
                ),
                "lib/util.js": (
                    "export function double(n) {\n  if (n < 0) throw new RangeError('negative');\n  return 2 * n;\n}\n"
                ),
                "lib/late.js": "export const late = 'late';",
                "data.json": '{"n": 21}',
            },
        )
        assert sb.run_main("main.js", {}) == [42, "late"]
        with pytest.raises(ScriptError) as failed:
            sb.call("main.js", "fail")
        assert (failed.value.file, failed.value.line) == ("lib/util.js", 2)
        with pytest.raises(ScriptError, match="esbuild"):
            sb.load_modules("b.js", {"b.js": 'import _ from "lodash";'})

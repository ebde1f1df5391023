#!/usr/bin/env python3
"""Cross-language test: the marionette component driven from Python.

    python3 tests/python/test_component.py PATH/TO/marionette_guest.wasm

Without an argument it uses $MARIONETTE_COMPONENT, then the guest that
`cargo build --release -p marionette` leaves in target/guest/. Needs the PyPI
package `wasmtime` 50.x (`scripts/bootstrap.sh --python`). Prints one line per
test and ends with `N passed, M failed`; exits 0 only when nothing failed.
Deterministic: the only real sleeps are a few short timers, and the one test
that looks at time as such uses the host's virtual clock.
"""

import os
import sys
import time
import traceback

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from marionette_host import (  # noqa: E402
    ConsoleLine,
    ExportInfo,
    MarionetteHost,
    ScriptError,
    ToolDefinition,
)

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
  return { greeting: "hello " + input.name, doubled: input.n * 2, task: ctx.taskId };
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

# Timers fire by deadline, a cleared one never; under the virtual clock the
# host's time ends at exactly the longest wait.
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


def component_path():
    if len(sys.argv) > 1:
        return sys.argv[1]
    if os.environ.get("MARIONETTE_COMPONENT"):
        return os.environ["MARIONETTE_COMPONENT"]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(root, "target", "guest", "wasm32-wasip2", "release", "marionette_guest.wasm")


COMPILED = None  # compiled once; each test gets its own instance


def host(**options):
    return MarionetteHost(COMPILED, **options)


def demo_host(**options):
    h = host(**options)
    h.load("demo.js", DEMO)
    return h


def expect_equal(actual, expected, what):
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def expect_script_error(fn):
    try:
        value = fn()
    except ScriptError as e:
        return e
    raise AssertionError(f"expected a ScriptError, got the value {value!r}")


# ---------------------------------------------------------------- tests


def test_exports():
    exports = demo_host().exports("demo.js")
    expect_equal(
        {e.name: e.kind for e in exports},
        {"answer": "value", "calculator": "tool-registry", "default": "main", "helper": "function"},
        "export kinds",
    )
    by_name = {e.name: e for e in exports}
    expect_equal(by_name["calculator"], ExportInfo("calculator", "tool-registry", TOOLS), "the registry")
    for name in ("answer", "default", "helper"):
        expect_equal(by_name[name].tools, [], f"tools of {name}")


def test_list_tools():
    expect_equal(demo_host().list_tools("demo.js", "calculator"), TOOLS, "list-tools")


def test_run_main():
    h = demo_host()
    started = time.monotonic()
    result = h.run_main("demo.js", {"name": "py", "n": 21})
    elapsed = time.monotonic() - started
    expect_equal(result, {"greeting": "hello py", "doubled": 42, "task": 2}, "main's result")
    expect_equal(
        [c for c in h.console if c.task == 2],
        [ConsoleLine(2, "info", "main started py"), ConsoleLine(2, "warn", "after the timer")],
        "console lines of the main task",
    )
    expect_equal(h.requests, 1, "host requests (the one setTimeout)")
    if elapsed < 0.020:
        raise AssertionError(f"main awaited a 20 ms timer but returned after {elapsed * 1000:.1f} ms")


def test_timers_virtual_clock():
    h = host(virtual_time=True)
    h.load("timers.js", TIMERS)
    expect_equal(h.run_main("timers.js", None), ["10", "20", "30"], "timer order")
    expect_equal(h.now_ms, 40, "virtual time at the end")
    expect_equal((h.requests, h.released), (5, 1), "(requests, released)")


def test_call_tool():
    h = demo_host()
    expect_equal(h.call_tool("demo.js", "calculator", "call-1", "add", {"a": 2, "b": 3}), 5, "add(2, 3)")
    expect_equal(
        h.call_tool("demo.js", "calculator", "call-2", "whoami", {}),
        {"toolName": "whoami", "callId": "call-2"},
        "the handler's ctx",
    )


def test_tool_error():
    e = expect_script_error(lambda: demo_host().call_tool("demo.js", "calculator", "c", "fail", {}))
    expect_equal((e.name, e.message, e.file, e.line), ("RangeError", "out of range", "demo.js", 25), "the error")


def test_syntax_error():
    e = expect_script_error(lambda: host().load("broken.js", BROKEN))
    expect_equal((e.name, e.file, e.line), ("SyntaxError", "broken.js", 3), "(name, file, line)")
    if not e.message:
        raise AssertionError("the syntax error has no message")


def test_main_throws():
    h = host()
    h.load("throws.js", THROWS)
    e = expect_script_error(lambda: h.run_main("throws.js", {"name": "py"}))
    expect_equal((e.name, e.message, e.file, e.line), ("TypeError", "boom: py", "throws.js", 4), "the error")
    if not isinstance(e.column, int) or e.column < 1:
        raise AssertionError(f"expected a 1-based column, got {e.column!r}")
    if "throws.js:4" not in (e.stack or ""):
        raise AssertionError(f"the stack does not point at throws.js:4: {e.stack!r}")


def test_unknown_script():
    # `result<list<...>, script-error>` arrives untagged: this is its err side.
    e = expect_script_error(lambda: host().exports("missing.js"))
    if "missing.js" not in e.message:
        raise AssertionError(f"the error does not name the script: {e.message!r}")


TESTS = [
    test_exports,
    test_list_tools,
    test_run_main,
    test_timers_virtual_clock,
    test_call_tool,
    test_tool_error,
    test_syntax_error,
    test_main_throws,
    test_unknown_script,
]


def main():
    global COMPILED
    path = component_path()
    print(f"component: {path}", flush=True)
    COMPILED = MarionetteHost.compile(path)
    passed = failed = 0
    for test in TESTS:
        try:
            test()
        except Exception:
            failed += 1
            print(f"FAIL {test.__name__}\n{traceback.format_exc()}", flush=True)
        else:
            passed += 1
            print(f"ok   {test.__name__}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

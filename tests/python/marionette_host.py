"""A small marionette host in Python, on the PyPI package ``wasmtime`` (50.x).

It shows that the marionette component is usable from a language other than
Rust through nothing but its WIT contract (``wit/types.wit``):

    host = MarionetteHost("marionette_guest.wasm")  # or a CompiledComponent
    host.load("demo.js", source)
    host.exports("demo.js")                 # [ExportInfo(...), ...]
    host.run_main("demo.js", {"x": 1})      # the JSON value main returned
    host.list_tools("demo.js", "calculator")
    host.call_tool("demo.js", "calculator", "call-1", "add", {"a": 1, "b": 2})
    host.console                            # every console line, in order

The guest is sans-IO: every export that starts work takes a task id and
returns a list of effects; a ``request`` effect means the script awaits the
host, which answers later with ``tasks.resume(op, outcome)``. This module is
the event loop that drives those effects until the task is done. It performs
one host operation, ``sleep(ms)`` (``setTimeout``), with a heap of timers,
either really sleeping (default) or on a virtual clock (``virtual_time=True``:
time jumps to the next deadline, fully deterministic). ``next(turn)``, the
middleware operation, is answered with an error: this host runs no middleware.

What the guest is granted: WASI p2 is linked (the guest's Rust std imports the
cli, filesystem and io interfaces) with wasmtime's default ``WasiConfig``,
which grants nothing: no arguments, no environment variables, no preopened
directories, stdin closed, stdout and stderr discarded, sockets denied. Only
the host's clocks and random numbers are real. A ``WasiConfig`` must be set on
the store even so: without one, instantiation succeeds but the first WASI call
the guest makes (``wasi:random/insecure-seed``, when its VM boots on the first
export called after ``configure``) panics inside wasmtime's C API and aborts
the Python process (SIGABRT), with no Python exception.

How wasmtime-py 50 maps the WIT types (``wasmtime/component/_types.py``):

* ``u64``/``u32`` -> ``int``; ``string`` -> ``str``; ``enum`` -> ``str`` (the
  case name, e.g. ``"tool-registry"``); ``list<T>`` -> ``list``;
  ``option<T>`` -> ``None`` or the value.
* ``record`` -> ``wasmtime.component.Record``, a bare object whose attributes
  are the WIT field names *as written in the WIT*, dashes included
  (``getattr(r, "memory-limit")``). To pass a record, any object with those
  attributes works.
* ``variant`` and ``result``: if the Python classes of the cases' payloads are
  all distinct, the value is *untagged*: just the payload, and the case is
  told by its Python type. Only when two cases would map to the same Python
  class is it tagged, as ``wasmtime.component.Variant(tag, payload)``. So in
  this WIT:

  - ``effect`` (request/event/done are all records) is tagged:
    ``Variant("request", Record)``, ``Variant("release", int)``, ...;
  - ``value`` is untagged: ``json(s)`` is a plain ``str``, ``turn(t)`` a
    ``Record``;
  - ``host-op`` is tagged (``next``, ``infer``, ``call-tool`` all carry
    records): ``Variant("sleep", ms)``, ``Variant("next", Record)``, ...;
  - ``target`` is untagged: an ``export-ref`` record, or a handle ``int``;
  - ``result<_, string>`` (``validate-arguments``) is untagged: ``None`` or
    the error ``str``;
  - ``event`` (one case) is untagged: the ``console-line`` record itself;
  - ``outcome = result<value, script-error>`` is tagged (both sides may be
    records): ``Variant("ok", str | Record)`` / ``Variant("err", Record)``;
  - ``result<list<export-info>, script-error>`` is untagged: a ``list`` on
    success, a ``Record`` (the script error) on failure.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union

import wasmtime
from wasmtime.component import Component, Linker, Record, Variant

__all__ = [
    "CompiledComponent",
    "ConsoleLine",
    "ExportInfo",
    "HostError",
    "MarionetteHost",
    "ScriptError",
    "ToolDefinition",
]

PACKAGE = "marionette:runtime"
VERSION = "0.1.0"

log = logging.getLogger("marionette.guest")


def _iface(name: str) -> str:
    return f"{PACKAGE}/{name}@{VERSION}"


# ---------------------------------------------------------------- data


class ScriptError(Exception):
    """A JavaScript error (WIT ``script-error``): a syntax error, a throw."""

    def __init__(
        self,
        name: str,
        message: str,
        stack: Optional[str] = None,
        file: Optional[str] = None,
        line: Optional[int] = None,
        column: Optional[int] = None,
    ):
        self.name = name
        self.message = message
        self.stack = stack
        self.file = file
        self.line = line
        self.column = column
        where = ""
        if file is not None:
            where = f"{file}:{line}:{column}: " if line is not None else f"{file}: "
        super().__init__(f"{where}{name}: {message}")

    @classmethod
    def _from_record(cls, r: Any) -> "ScriptError":
        return cls(r.name, r.message, r.stack, r.file, r.line, r.column)


class HostError(Exception):
    """The host cannot go on with a task (e.g. it awaits nothing the host
    knows about, so it can never finish)."""


@dataclass(frozen=True)
class ConsoleLine:
    """A ``console.*`` line of a script; ``task`` is the task the guest
    says it belongs to. (Lines printed by a module's top-level code while it
    is being loaded carry the task of the guest's previous entry, 0 at first,
    not the load task: a guest bug, reported.)"""

    task: int
    level: str  # "debug" | "info" | "warn" | "error"
    message: str


@dataclass(frozen=True)
class ToolDefinition:
    name: str
    description: str
    parameters: Any  # the JSON Schema, parsed


@dataclass(frozen=True)
class ExportInfo:
    name: str
    kind: str  # "main" | "function" | "engine" | "middleware" | "tool-registry" | "tool-hooks" | "value"
    tools: List[ToolDefinition] = field(default_factory=list)


# ---------------------------------------------------------------- WIT values


def _export(script: str, name: str) -> Record:
    """A ``target`` naming an export. The variant is untagged in Python (its
    cases lift to different classes), so the export-ref record stands for it."""
    return _record({"script": script, "name": name})


def _record(fields: Dict[str, Any]) -> Record:
    """A WIT record value; ``fields`` uses the WIT names (dashes allowed)."""
    r = Record()
    for k, v in fields.items():
        setattr(r, k, v)
    return r


def _ok_json(text: str) -> Variant:
    """The outcome ``ok(json(text))``. ``value`` is untagged: a str is json."""
    return Variant("ok", text)


def _err(name: str, message: str) -> Variant:
    """The outcome ``err(script-error)``."""
    return Variant(
        "err",
        _record({"name": name, "message": message, "stack": None, "file": None, "line": None, "column": None}),
    )


_FAILURES = ("script", "cancelled", "deadline", "over-cap", "out-of-memory")


def _failure(failure: Variant) -> ScriptError:
    """A task's ``failure`` (tagged: several cases carry strings) as the
    exception this host raises: a script's error as itself, a stop from
    outside the script under a name that says which."""
    payload = failure.payload
    if failure.tag == "script":
        return ScriptError._from_record(payload)
    if failure.tag == "over-cap":
        return ScriptError("LimitError", f"{payload.cap}: {payload.detail}")
    names = {"cancelled": "AbortError", "deadline": "DeadlineError", "out-of-memory": "LimitError"}
    return ScriptError(names.get(failure.tag, "Error"), str(payload))


def _tool_definition(r: Any) -> ToolDefinition:
    return ToolDefinition(r.name, r.description, json.loads(r.parameters))


def _unwrap(result: Any, ok_class: type) -> Any:
    """Unwraps a WIT ``result<T, script-error>`` whose ``T`` lowers to
    ``ok_class``, accepting both of wasmtime-py's shapes (see the module doc)."""
    if isinstance(result, Variant):  # tagged
        if result.tag == "ok":
            return result.payload
        raise ScriptError._from_record(result.payload)
    if isinstance(result, ok_class):
        return result
    raise ScriptError._from_record(result)


def _turn_to_python(t: Any) -> Dict[str, Any]:
    return {
        "id": t.id,
        "blocks": [
            {
                "id": b.id,
                "kind": b.kind,
                "role": b.role,
                "payload": json.loads(b.payload),
                "metadata": json.loads(b.metadata),
            }
            for b in t.blocks
        ],
        "metadata": json.loads(t.metadata),
        "data": json.loads(t.data),
    }


def _value_to_python(v: Any) -> Any:
    """A WIT ``value``: ``json(s)`` arrives as ``str``, ``turn`` as a record."""
    if isinstance(v, str):
        return json.loads(v)
    return _turn_to_python(v)


# ---------------------------------------------------------------- the host


@dataclass(frozen=True)
class CompiledComponent:
    """The component compiled once (about a second for this one), for many
    instances: pass it to ``MarionetteHost`` instead of a path."""

    engine: wasmtime.Engine
    component: Component


class MarionetteHost:
    """One instance of the marionette component and the loop that drives it.

    Not thread-safe: like the Rust host's runner, one owner calls it, and
    each method returns only when the task it started is done. A script's
    error raises ``ScriptError``; a task that waits for nothing the host can
    give raises ``HostError``. A trap (``wasmtime.WasmtimeError``/``Trap``)
    poisons the instance: make a new ``MarionetteHost`` after one.
    """

    @staticmethod
    def compile(component_path: Union[str, "os.PathLike[str]"]) -> CompiledComponent:
        engine = wasmtime.Engine()
        return CompiledComponent(engine, Component.from_file(engine, component_path))

    def __init__(
        self,
        component: Union[str, "os.PathLike[str]", CompiledComponent],
        *,
        memory_limit: int = 0,
        gc_threshold: int = 0,
        virtual_time: bool = False,
        on_console: Optional[Callable[[ConsoleLine], None]] = None,
    ):
        if not isinstance(component, CompiledComponent):
            component = self.compile(component)
        self.engine = component.engine
        self.store = wasmtime.Store(self.engine)
        # Nothing granted (see the module doc); required all the same.
        self.store.set_wasi(wasmtime.WasiConfig())

        linker = Linker(self.engine)
        linker.add_wasip2()
        with linker.root() as root:
            with root.add_instance(_iface("host")) as host:
                host.add_func("log", self._host_log)
                host.add_func("should-interrupt", self._host_should_interrupt)
                host.add_func("validate-arguments", self._host_validate_arguments)

        self.instance = linker.instantiate(self.store, component.component)
        self._funcs: Dict[str, Any] = {}

        self.console: List[ConsoleLine] = []  # every console line, in order
        self.guest_log: List[tuple] = []  # (level, message) of host.log
        self.on_console = on_console
        self.virtual_time = virtual_time
        self.now_ms = 0  # the virtual clock, in milliseconds
        self.requests = 0  # host operations the guest asked for
        self.released = 0  # of which the guest released (clearTimeout, cancel)

        self._task_ids = itertools.count(1)
        self._seq = itertools.count()
        self._timers: List[tuple] = []  # heap of (deadline, seq, op)
        self._pending: Dict[int, int] = {}  # op -> task, for ops not yet answered
        self._ready: List[tuple] = []  # (op, outcome) to resume at once
        self._done: Dict[int, Any] = {}  # task -> outcome not yet claimed

        self._func("vm", "configure")(
            self.store,
            _record(
                {
                    "memory-limit": memory_limit,
                    "gc-threshold": gc_threshold,
                    # Caps per task: console lines and bytes, pending host
                    # operations (0 leaves one off).
                    "task-caps": _record({"console-lines": 10_000, "console-bytes": 1 << 20, "pending-ops": 1_000}),
                    # This host offers scripts no engines, middleware or tools.
                    "host-engines": [],
                    "host-middlewares": [],
                    "host-tools": [],
                }
            ),
        )

    # -- imports

    def _host_log(self, _store: Any, level: str, message: str) -> None:
        self.guest_log.append((level, message))
        levels = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}
        log.log(levels.get(level, logging.ERROR), "%s", message)

    def _host_should_interrupt(self, _store: Any, _task: int) -> Optional[Variant]:
        # ``option<stop>``: None lets JavaScript run on. This host keeps no
        # deadlines of its own.
        return None

    def _host_validate_arguments(self, _store: Any, schema: str, arguments: str) -> Optional[str]:
        # ``result<_, string>``: None is ok, a str is the error. This small
        # host does not check schemas (the Rust host does, with the
        # jsonschema crate); answering ok turns validation off, as the WIT says.
        return None

    # -- exports

    def _func(self, interface: str, name: str) -> Any:
        key = f"{interface}#{name}"
        f = self._funcs.get(key)
        if f is None:
            iface = self.instance.get_export_index(self.store, _iface(interface))
            index = self.instance.get_export_index(self.store, name, iface) if iface else None
            f = self.instance.get_func(self.store, index) if index else None
            if f is None:
                raise HostError(f"the component exports no function {key}")
            self._funcs[key] = f
        return f

    def _start(self, interface: str, name: str, *args: Any) -> Any:
        """Calls an export that starts a task and drives it to its outcome."""
        task = next(self._task_ids)
        effects = self._func(interface, name)(self.store, task, *args)
        return self._drive(task, effects)

    def load(self, name: str, source: str) -> None:
        """Compiles and evaluates ``source`` as the ES module ``name``."""
        self._start("script", "load", name, source)

    def exports(self, name: str) -> List[ExportInfo]:
        result = self._func("script", "exports")(self.store, name)
        return [
            ExportInfo(e.name, e.kind, [_tool_definition(t) for t in e.tools])
            for e in _unwrap(result, list)
        ]

    def run_main(self, name: str, input: Any) -> Any:
        """Runs ``main(input, ctx)``; ``input`` is any JSON-able value.
        Returns what main returned, decoded from JSON."""
        return self._start("script", "run-main", name, json.dumps(input))

    def call(self, name: str, function: str, args: List[Any]) -> Any:
        """Calls the exported function ``function`` with ``args``."""
        return self._start("script", "call", name, function, json.dumps(args))

    def list_tools(self, name: str, registry: str) -> List[ToolDefinition]:
        result = self._func("tools", "list-tools")(self.store, _export(name, registry))
        return [_tool_definition(t) for t in _unwrap(result, list)]

    def call_tool(self, name: str, registry: str, id: str, tool_name: str, args: Any) -> Any:
        """Runs tool ``tool_name`` of registry ``registry`` with ``args`` (a
        JSON-able value); returns the handler's result, decoded from JSON."""
        call = _record({"id": id, "name": tool_name, "arguments": json.dumps(args)})
        return self._start("tools", "call", _export(name, registry), call, "{}")

    def cancel(self, task: int, reason: str) -> None:
        """Cancels a task left running (one whose drive raised ``HostError``):
        its pending operations are released and its AbortError dropped."""
        self._apply(self._func("tasks", "cancel")(self.store, task, reason))
        self._done.pop(task, None)

    # -- the event loop

    def _apply(self, effects: List[Variant]) -> None:
        for effect in effects:
            tag, p = effect.tag, effect.payload
            if tag == "request":
                self.requests += 1
                self._pending[p.op] = p.task
                what = p.what  # tagged: several cases lift to records
                if what.tag == "sleep":
                    due = (self.now_ms if self.virtual_time else time.monotonic() * 1000) + what.payload
                    heapq.heappush(self._timers, (due, next(self._seq), p.op))
                else:  # next, infer, call-tool, middleware: work this host does not do
                    self._ready.append((p.op, _err("Error", f"this host does not provide {what.tag}")))
            elif tag == "release":
                if self._pending.pop(p, None) is not None:
                    self.released += 1
            elif tag == "event":
                ev = p.event  # one case today, so untagged: the console-line
                if isinstance(ev, Variant):
                    if ev.tag != "console":
                        continue  # an event kind this host does not know
                    ev = ev.payload
                line = ConsoleLine(p.task, ev.level, ev.message)
                self.console.append(line)
                if self.on_console is not None:
                    self.on_console(line)
            elif tag == "done":
                self._done.setdefault(p.task, p.outcome)
            else:
                raise HostError(f"unknown effect {tag!r}")

    def _next_answer(self) -> Optional[tuple]:
        """The next (op, outcome) to resume: a ready one, else the earliest
        timer that is still wanted, waiting for its deadline."""
        while self._ready:
            op, outcome = self._ready.pop(0)
            if self._pending.pop(op, None) is not None:
                return op, outcome
        while self._timers:
            due, _, op = heapq.heappop(self._timers)
            if op not in self._pending:  # released: drop it, don't wait for it
                continue
            if self.virtual_time:
                self.now_ms = max(self.now_ms, due)
            else:
                wait = due / 1000 - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            del self._pending[op]
            return op, _ok_json("null")
        return None

    def _drive(self, task: int, effects: List[Variant]) -> Any:
        resume = self._func("tasks", "resume")
        while True:
            self._apply(effects)
            if task in self._done:
                outcome = self._done.pop(task)
                # ``task-outcome = result<value, failure>``: its two sides lift
                # to different classes, so wasmtime-py leaves it untagged: the
                # value itself, or the ``failure`` (a tagged Variant).
                if isinstance(outcome, Variant) and outcome.tag in ("ok", "err"):
                    if outcome.tag == "err":
                        raise _failure(outcome.payload)
                    return _value_to_python(outcome.payload)
                if isinstance(outcome, Variant) and outcome.tag in _FAILURES:
                    raise _failure(outcome)
                return _value_to_python(outcome)
            answer = self._next_answer()
            if answer is None:
                raise HostError(f"task {task} is not done and awaits nothing the host can do")
            effects = resume(self.store, *answer)

"""The effect protocol: every WIT value and every export of the component.

This is the one module that knows the component's interfaces
(``wit/types.wit``): how wasmtime-py 50 lifts and lowers their values, what
each export takes, and what the effects a guest entry returns mean. The rest
of the package speaks Python (dicts for turns, dataclasses for effects).

How wasmtime-py maps the WIT types (``wasmtime/component/_types.py``):

* ``u64``/``u32`` -> ``int``, ``string`` -> ``str``, ``enum`` -> ``str`` (the
  case name, ``"tool-registry"``), ``list`` -> ``list``, ``option`` -> value
  or ``None``.
* ``record`` -> ``wasmtime.component.Record`` whose attributes are the WIT
  field names as written, dashes included; any object with those
  attributes can be passed.
* ``variant``/``result``: *untagged* (just the payload) when the Python
  classes of all cases differ, otherwise ``Variant(tag, payload)``. Here:
  ``effect``, ``host-op``, ``failure``, ``stop``, ``value`` (two of its
  cases, ``turn`` and ``http-response``, are records) and ``task-outcome``
  (a tagged value or a tagged failure) are tagged; ``outcome`` (a tagged
  value, or a ``Record`` script-error), ``target`` (``Record`` export-ref
  or ``int`` handle), ``event`` (``Record`` console line or ``str`` session
  JSON), ``result<_, string>`` and ``result<list<...>, script-error>`` are
  untagged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, cast

from wasmtime.component import Record, Variant

from . import _witjson as witjson
from ._errors import HostError, Limit, ScriptError
from ._types import ConsoleLine, ExportInfo, Json, Limits, SessionEvent, ToolDefinition, Turn

if TYPE_CHECKING:
    from ._cassette import Recorder

PACKAGE = "marionette:runtime"
VERSION = "0.1.0"

#: The host imports, as (function name, Python attribute of the host object).
HOST_IMPORTS = (
    ("log", "log"),
    ("should-interrupt", "should_interrupt"),
    ("validate-arguments", "validate_arguments"),
    ("wants-session-events", "wants_session_events"),
)


def interface(name: str) -> str:
    """The full name of an interface of the package."""
    return f"{PACKAGE}/{name}@{VERSION}"


# ---------------------------------------------------------------- effects


@dataclass(frozen=True)
class Request:
    """The guest awaits ``what`` for ``task``: answer with ``resume(op, ...)``.

    ``what`` is ``sleep`` (payload: milliseconds), ``next`` (a turn),
    ``infer`` (``{"engine", "turn", "context", "tools", "tool_choice"}``),
    ``call-tool`` (``{"id", "name", "arguments", "context"}``) or
    ``middleware`` (``{"name", "options", "turn", "context"}``).
    """

    op: int
    task: int
    what: str
    payload: Any


@dataclass(frozen=True)
class Release:
    """The guest no longer waits for ``op``: drop it, ignore its outcome."""

    op: int


@dataclass(frozen=True)
class TaskEvent:
    """Something a task reports while it runs."""

    task: int
    event: Union[ConsoleLine, SessionEvent]


@dataclass(frozen=True)
class Failure:
    """Why a task failed: ``script`` (``error`` holds the script-error's
    fields), ``cancelled``, ``deadline``, ``over-cap`` (``limit``) or
    ``out-of-memory``; ``detail`` says it in words."""

    kind: str
    detail: str = ""
    error: Optional[Dict[str, Any]] = None
    limit: Optional[Limit] = None


@dataclass(frozen=True)
class Done:
    """A task settled: ``value`` when ``failure`` is ``None``."""

    task: int
    value: Json
    failure: Optional[Failure]


Effect = Union[Request, Release, TaskEvent, Done]

_CAPS = {"output": Limit.OUTPUT, "operations": Limit.OPERATIONS}


def decode_effects(raw: List[Variant]) -> List[Effect]:
    """The effects of one guest entry, in order, as Python values."""
    out: List[Effect] = []
    for effect in raw:
        tag, p = effect.tag, cast(Any, effect.payload)
        if tag == "request":
            what: Variant = p.what
            out.append(Request(p.op, p.task, what.tag, _decode_op(what.tag, what.payload)))
        elif tag == "release":
            out.append(Release(p))
        elif tag == "event":
            out.append(TaskEvent(p.task, _decode_event(p.event)))
        elif tag == "done":
            out.append(_decode_done(p.task, p.outcome))
        else:
            raise HostError("guest", f"the guest returned an unknown effect {tag!r}")
    return out


def _decode_event(ev: Any) -> Union[ConsoleLine, SessionEvent]:
    # console (a record) or session (JSON text): distinct classes, untagged.
    if isinstance(ev, str):
        data = json.loads(ev)
        return SessionEvent(str(data.get("type", "")), data)
    return ConsoleLine(ev.level, ev.message)


def _decode_done(task: int, o: Any) -> Done:
    # result<value, failure>: tagged (both are tagged variants).
    if o.tag == "err":
        o = o.payload
        p = cast(Any, o.payload)
        if o.tag == "script":
            return Done(task, None, Failure("script", p.message, script_error_fields(p)))
        if o.tag == "over-cap":
            return Done(task, None, Failure("over-cap", p.detail, limit=_CAPS.get(p.cap, Limit.OUTPUT)))
        return Done(task, None, Failure(o.tag, str(p)))
    return Done(task, decode_value(o.payload), None)


def _decode_op(tag: str, p: Any) -> Any:
    if tag == "sleep":
        return int(p)
    if tag == "next":
        return turn_from_wit(p)
    if tag == "infer":
        return {
            "engine": p.engine,
            "turn": turn_from_wit(p.input),
            "context": json.loads(p.context),
            "tools": [tool_definition(t) for t in p.tools],
            "tool_choice": getattr(p, "tool-choice"),
        }
    if tag == "call-tool":
        c = p.call
        return {"id": c.id, "name": c.name, "arguments": json.loads(c.arguments), "context": json.loads(p.context)}
    if tag == "middleware":
        return {
            "name": p.name,
            "options": json.loads(p.options),
            "turn": turn_from_wit(p.input),
            "context": json.loads(p.context),
        }
    return p


def session_events(events: List[Dict[str, Any]]) -> List[str]:
    """Session events as ``tasks.notify`` takes them: JSON objects."""
    return [json.dumps(e) for e in events]


# ---------------------------------------------------------------- values


def record(fields: Dict[str, Any]) -> Record:
    """A WIT record; ``fields`` uses the WIT names (dashes allowed)."""
    r = Record()
    for k, v in fields.items():
        setattr(r, k, v)
    return r


def script_error_fields(r: Any) -> Dict[str, Any]:
    """A ``script-error`` record as a dict."""
    return {
        "name": r.name,
        "message": r.message,
        "stack": r.stack,
        "file": r.file,
        "line": r.line,
        "column": r.column,
    }


def stop(kind: str, reason: str) -> Variant:
    """An answer of ``should-interrupt(task)``: ``cancel`` or ``deadline``."""
    return Variant(kind, reason)


def script_error(op: str, fields: Dict[str, Any]) -> ScriptError:
    """The exception for a ``script-error``."""
    return ScriptError(op, **fields)


def _error_record(name: str, message: str) -> Record:
    return record({"name": name, "message": message, "stack": None, "file": None, "line": None, "column": None})


# An ``outcome`` is untagged: ``ok`` is the tagged ``value`` itself, ``err``
# the script-error record.


def ok_json(value: Json) -> Variant:
    """The outcome ``ok(json(...))``."""
    return Variant("json", json.dumps(value))


def ok_turn(turn: Turn) -> Variant:
    """The outcome ``ok(turn(...))``."""
    return Variant("turn", turn_to_wit(turn))


def err(name: str, message: str) -> Record:
    """The outcome ``err(script-error)`` for a host failure a script sees."""
    return _error_record(name, message)


def decode_value(v: Variant) -> Any:
    """A WIT ``value`` a task ended with: ``json`` or ``turn`` (a task never
    ends with an ``http-response``, which only answers a ``fetch``)."""
    if v.tag == "json":
        return json.loads(cast(str, v.payload))
    if v.tag == "turn":
        return turn_from_wit(v.payload)
    raise HostError("guest", f"a task ended with a value of kind {v.tag!r}")


def turn_from_wit(t: Any) -> Turn:
    """A WIT turn as the dict scripts see (block kinds with underscores)."""
    return {
        "id": t.id,
        "blocks": [
            {
                "id": b.id,
                "kind": b.kind.replace("-", "_"),
                "role": b.role,
                "payload": json.loads(b.payload),
                "metadata": json.loads(b.metadata),
            }
            for b in t.blocks
        ],
        "metadata": json.loads(t.metadata),
        "data": json.loads(t.data),
    }


def turn_to_wit(turn: Turn) -> Record:
    """A turn dict as a WIT turn. Missing ids and maps are filled in."""
    if not isinstance(turn, dict) or not isinstance(turn.get("blocks", []), list):
        raise TypeError(f"a turn must be a dict with a list of blocks, not {type(turn).__name__}")
    blocks = []
    for i, b in enumerate(turn.get("blocks", [])):
        if not isinstance(b, dict) or not isinstance(b.get("kind"), str):
            raise TypeError(f"block {i} of the turn must be a dict with a kind")
        blocks.append(
            record(
                {
                    "id": str(b.get("id") or f"b{i}"),
                    "kind": b["kind"].replace("_", "-"),
                    "role": b.get("role"),
                    "payload": json.dumps(b.get("payload") or {}),
                    "metadata": json.dumps(b.get("metadata") or {}),
                }
            )
        )
    return record(
        {
            "id": str(turn.get("id") or ""),
            "blocks": blocks,
            "metadata": json.dumps(turn.get("metadata") or {}),
            "data": json.dumps(turn.get("data") or {}),
        }
    )


def export_target(script: str, name: str) -> Record:
    """A ``target`` naming an export (the variant is untagged)."""
    return record({"script": script, "name": name})


def tool_definition(r: Any) -> ToolDefinition:
    """A ``tool-definition`` record as a dataclass."""
    return ToolDefinition(r.name, r.description, json.loads(r.parameters))


def unwrap(op: str, result: Any, ok_class: type) -> Any:
    """A ``result<T, script-error>`` whose ``T`` lifts to ``ok_class``."""
    if isinstance(result, Variant):
        if result.tag == "ok":
            return result.payload
        raise script_error(op, script_error_fields(result.payload))
    if isinstance(result, ok_class):
        return result
    raise script_error(op, script_error_fields(result))


def vm_config(limits: Limits, engines: List[str], middlewares: List[str], tools: List[ToolDefinition]) -> Record:
    """The ``vm-config`` the host applies before anything else."""
    reserve = 8 << 20
    return record(
        {
            "memory-limit": max(limits.memory - reserve, reserve) if limits.memory else 0,
            "gc-threshold": 0,
            "task-caps": record(
                {
                    "console-lines": limits.console_lines,
                    "console-bytes": limits.console_bytes,
                    "pending-ops": limits.pending_ops,
                }
            ),
            "host-engines": engines,
            "host-middlewares": middlewares,
            "host-tools": [
                record({"name": t.name, "description": t.description, "parameters": json.dumps(t.parameters)})
                for t in tools
            ],
            # A deterministic run's seed and start time (docs/cassette.md),
            # or the host's clocks and randomness.
            "determinism": None
            if limits.determinism is None
            else record({"seed": limits.determinism.seed, "start-ms": limits.determinism.start_ms}),
        }
    )


# ---------------------------------------------------------------- exports


class Guest:
    """The exports of one instance, called with Python values.

    Every starting call takes the task id and returns the decoded effects;
    the caller runs them on the thread that owns the store.
    """

    def __init__(self, store: Any, instance: Any) -> None:
        self._store = store
        self._instance = instance
        self._funcs: Dict[str, Callable[..., Any]] = {}
        #: The task of the entry under way (set by ``Vm.enter``).
        self.task = 0
        self._recorder: Optional[Recorder] = None
        self._is_trap: Callable[[BaseException], bool] = lambda e: False
        # The protocol of docs/protocol.md, the only one: its guest runs
        # sessions itself, and a host middleware's `next` is `middleware.next`.
        # An older component would fail in stranger ways later.
        self._func("middleware", "next")

    def _func(self, iface: str, name: str) -> Callable[..., Any]:
        key = f"{iface}#{name}"
        f = self._funcs.get(key)
        if f is None:
            index = self._instance.get_export_index(self._store, interface(iface))
            index = self._instance.get_export_index(self._store, name, index) if index else None
            func = self._instance.get_func(self._store, index) if index else None
            if func is None:
                raise HostError("instantiate", f"the component exports no function {key}")
            store = self._store
            entry = witjson.BY_EXPORT.get(key, "configure" if key == "vm#configure" else None)

            def f(*args: Any, _func: Any = func) -> Any:
                if self._recorder is None or entry is None:
                    return _func(store, *args)
                return self._recorded(entry, _func, store, args)

            self._funcs[key] = f
        return f

    def record(self, recorder: Recorder, is_trap: Callable[[BaseException], bool]) -> None:
        """Every entry from now on goes to ``recorder`` (queries do not);
        ``is_trap`` tells a trap from a value that did not lower."""
        self._recorder = recorder
        self._is_trap = is_trap

    def _recorded(self, entry: str, func: Any, store: Any, args: Tuple[Any, ...]) -> Any:
        recorder = self._recorder
        assert recorder is not None
        task = self.task
        try:
            if entry == "configure":
                call: Optional[Dict[str, Any]] = {"configure": witjson.to_json(witjson.VM_CONFIG, args[0])}
            else:
                call = witjson.call_to_json(entry, task, args)
        except Exception:
            call = None  # not WIT values: they do not lower either, the guest is not entered
        try:
            raw = func(store, *args)
        except BaseException as e:
            if call is not None and self._is_trap(e):
                recorder._entry(
                    task, call, None, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                )
            raise
        if call is not None:
            recorder._entry(task, call, [] if raw is None else witjson.to_json(witjson.EFFECTS, raw), None)
        return raw

    def raw(self, entry: str, task: int, args: Sequence[Any]) -> Any:
        """Makes the entry ``entry`` (a cassette's name of it) with WIT
        values: what a replay does."""
        iface, name, takes_task, _ = witjson.CALLS[entry]
        f = self._func(iface, name)
        return f(task, *args) if takes_task else f(*args)

    def configure(self, config: Record) -> None:
        self._func("vm", "configure")(config)

    def load(self, task: int, name: str, source: str) -> List[Effect]:
        return decode_effects(self._func("script", "load")(task, name, source))

    def load_modules(self, task: int, entry: str, modules: Sequence[Tuple[str, str]]) -> List[Effect]:
        wit = [record({"path": path, "source": source}) for path, source in modules]
        return decode_effects(self._func("script", "load-modules")(task, entry, wit))

    def exports(self, name: str) -> List[ExportInfo]:
        result = unwrap(f"exports {name}", self._func("script", "exports")(name), list)
        return [ExportInfo(e.name, e.kind, [tool_definition(t) for t in e.tools]) for e in result]

    def run_main(self, task: int, name: str, input: Json) -> List[Effect]:
        return decode_effects(self._func("script", "run-main")(task, name, json.dumps(input)))

    def call(self, task: int, name: str, function: str, args: List[Json]) -> List[Effect]:
        return decode_effects(self._func("script", "call")(task, name, function, json.dumps(args)))

    def list_tools(self, script: str, registry: str) -> List[ToolDefinition]:
        op = f"list_tools {script}#{registry}"
        result = unwrap(op, self._func("tools", "list-tools")(export_target(script, registry)), list)
        return [tool_definition(t) for t in result]

    def call_tool(self, task: int, script: str, registry: str, call_id: str, tool: str, args: Json) -> List[Effect]:
        call = record({"id": call_id, "name": tool, "arguments": json.dumps(args)})
        ctx = json.dumps({"callId": call_id, "toolName": tool})
        return decode_effects(self._func("tools", "call")(task, export_target(script, registry), call, ctx))

    def infer(self, task: int, script: str, engine: str, turn: Turn, context: Dict[str, Any]) -> List[Effect]:
        target = export_target(script, engine)
        return decode_effects(self._func("inference", "infer")(task, target, turn_to_wit(turn), json.dumps(context)))

    def run_middleware(
        self, task: int, script: str, middleware: str, turn: Turn, context: Dict[str, Any]
    ) -> List[Effect]:
        target = export_target(script, middleware)
        return decode_effects(self._func("middleware", "run")(task, target, turn_to_wit(turn), json.dumps(context)))

    def middleware_next(self, task: int, op: int, turn: Turn) -> List[Effect]:
        return decode_effects(self._func("middleware", "next")(task, op, turn_to_wit(turn)))

    def resume(self, op: int, outcome: Variant) -> List[Effect]:
        return decode_effects(self._func("tasks", "resume")(op, outcome))

    def notify(self, op: int, events: List[Dict[str, Any]]) -> List[Effect]:
        return decode_effects(self._func("tasks", "notify")(op, session_events(events)))

    def cancel(self, task: int, reason: str) -> List[Effect]:
        return decode_effects(self._func("tasks", "cancel")(task, reason))

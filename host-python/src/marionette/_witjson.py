"""WIT values as a cassette writes them (docs/cassette.md, "How WIT values
are written"), and back: the one spelling every host reads and writes.

- a record is a JSON object, its fields in snake_case (``start-ms`` ->
  ``start_ms``);
- an enum case is a string in UpperCamelCase (``llm-text`` -> ``"LlmText"``);
- a variant case is ``{"UpperCamelCase": payload}``;
- ``result`` is ``{"Ok": ...}`` or ``{"Err": ...}``;
- ``option`` is the value or ``null``;
- ``list`` and ``tuple`` are arrays (``list<u8>`` an array of numbers);
- integers are JSON numbers.

wasmtime-py gives records as ``Record`` objects (WIT field names, dashes
included), enums as their case names, and variants and results tagged
(``Variant(tag, payload)``) or untagged (the payload alone) depending on
whether the classes of their cases differ (see ``_protocol``); the tables
below say which each is.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from wasmtime.component import Record, Variant

# A type: ("string",) ("int",) ("bool",) ("bytes",) ("enum",)
# ("record", ((wit_name, type), ...)) ("variant", ((case, type), ...), tagged)
# ("result", ok, err, tagged) ("option", t) ("list", t) ("tuple", (t, ...))
Type = Tuple[Any, ...]

STRING: Type = ("string",)
INT: Type = ("int",)
BOOL: Type = ("bool",)
ENUM: Type = ("enum",)


def _record(*fields: Tuple[str, Type]) -> Type:
    return ("record", fields)


def _variant(*cases: Tuple[str, Type], tagged: bool) -> Type:
    return ("variant", cases, tagged)


def _option(t: Type) -> Type:
    return ("option", t)


def _list(t: Type) -> Type:
    return ("list", t)


BLOCK = _record(("id", STRING), ("kind", ENUM), ("role", _option(STRING)), ("payload", STRING), ("metadata", STRING))
TURN = _record(("id", STRING), ("blocks", _list(BLOCK)), ("metadata", STRING), ("data", STRING))
TOOL_DEFINITION = _record(("name", STRING), ("description", STRING), ("parameters", STRING))
TOOL_CALL = _record(("id", STRING), ("name", STRING), ("arguments", STRING))
SCRIPT_ERROR = _record(
    ("name", STRING),
    ("message", STRING),
    ("stack", _option(STRING)),
    ("file", _option(STRING)),
    ("line", _option(INT)),
    ("column", _option(INT)),
)
HEADERS = _list(("tuple", (STRING, STRING)))
HTTP_REQUEST = _record(
    ("method", STRING),
    ("url", STRING),
    ("headers", HEADERS),
    ("body", _option(("bytes",))),
    ("redirect", ENUM),
)
HTTP_RESPONSE = _record(
    ("status", INT),
    ("status-text", STRING),
    ("url", STRING),
    ("redirected", BOOL),
    ("headers", HEADERS),
    ("body", ("bytes",)),
)
VALUE = _variant(("json", STRING), ("turn", TURN), ("http-response", HTTP_RESPONSE), tagged=True)
OUTCOME: Type = ("result", VALUE, SCRIPT_ERROR, False)
EXPORT_REF = _record(("script", STRING), ("name", STRING))
TARGET = _variant(("export", EXPORT_REF), ("handle", INT), tagged=False)
HOST_OP = _variant(
    ("sleep", INT),
    ("next", TURN),
    (
        "infer",
        _record(
            ("engine", _option(STRING)),
            ("input", TURN),
            ("context", STRING),
            ("tools", _list(TOOL_DEFINITION)),
            ("tool-choice", ENUM),
        ),
    ),
    ("call-tool", _record(("call", TOOL_CALL), ("context", STRING), ("provider", _option(STRING)))),
    ("middleware", _record(("name", STRING), ("options", STRING), ("input", TURN), ("context", STRING))),
    ("hook", _record(("provider", STRING), ("hook", ENUM), ("payload", STRING))),
    ("fetch", HTTP_REQUEST),
    tagged=True,
)
EVENT = _variant(("console", _record(("level", ENUM), ("message", STRING))), ("session", STRING), tagged=False)
FAILURE = _variant(
    ("script", SCRIPT_ERROR),
    ("cancelled", STRING),
    ("deadline", STRING),
    ("over-cap", _record(("cap", ENUM), ("detail", STRING))),
    ("out-of-memory", STRING),
    tagged=True,
)
EFFECT = _variant(
    ("request", _record(("op", INT), ("task", INT), ("what", HOST_OP))),
    ("release", INT),
    ("event", _record(("task", INT), ("event", EVENT))),
    ("done", _record(("task", INT), ("outcome", ("result", VALUE, FAILURE, True)))),
    tagged=True,
)
EFFECTS = _list(EFFECT)
VM_CONFIG = _record(
    ("memory-limit", INT),
    ("gc-threshold", INT),
    ("task-caps", _record(("console-lines", INT), ("console-bytes", INT), ("pending-ops", INT))),
    ("host-engines", _list(STRING)),
    ("host-middlewares", _list(STRING)),
    ("host-tools", _list(TOOL_DEFINITION)),
    ("determinism", _option(_record(("seed", INT), ("start-ms", INT)))),
)
MODULES = _list(("tuple", (STRING, STRING)))

#: The entries a cassette records: its ``call`` key, the export
#: (interface, function), whether the export takes the task first, and the
#: other arguments as (cassette field, type).
CALLS: Dict[str, Tuple[str, str, bool, Tuple[Tuple[str, Type], ...]]] = {
    "load": ("script", "load", True, (("name", STRING), ("source", STRING))),
    "load-modules": ("script", "load-modules", True, (("name", STRING), ("modules", MODULES))),
    "run-main": ("script", "run-main", True, (("name", STRING), ("input", STRING))),
    "call": ("script", "call", True, (("name", STRING), ("function", STRING), ("args", STRING))),
    "infer": ("inference", "infer", True, (("engine", TARGET), ("input", TURN), ("context", STRING))),
    "middleware-run": ("middleware", "run", True, (("middleware", TARGET), ("input", TURN), ("context", STRING))),
    "middleware-next": ("middleware", "next", True, (("op", INT), ("input", TURN))),
    "tools-call": ("tools", "call", True, (("registry", TARGET), ("call", TOOL_CALL), ("context", STRING))),
    "hooks-call": ("hooks", "call", True, (("hooks", TARGET), ("hook", ENUM), ("payload", STRING))),
    "sessions-run": ("sessions", "run", True, (("spec", STRING), ("input", TURN))),
    "resume": ("tasks", "resume", False, (("op", INT), ("outcome", OUTCOME))),
    "notify": ("tasks", "notify", False, (("op", INT), ("events", _list(STRING)))),
    "cancel": ("tasks", "cancel", True, (("reason", STRING),)),
}

#: The cassette's name of each export that is an entry.
BY_EXPORT: Dict[str, str] = {f"{iface}#{func}": key for key, (iface, func, _, _) in CALLS.items()}

#: The export of each entry, as docs/protocol.md writes it.
EXPORT_NAMES: Dict[str, str] = {key: f"{iface}.{func}" for key, (iface, func, _, _) in CALLS.items()}
EXPORT_NAMES["configure"] = "vm.configure"


def camel(kebab: str) -> str:
    """``llm-text`` -> ``LlmText``: how a case is written."""
    return "".join(part[:1].upper() + part[1:] for part in kebab.split("-"))


def kebab(camel_name: str) -> str:
    """``LlmText`` -> ``llm-text``."""
    out = []
    for i, c in enumerate(camel_name):
        if c.isupper() and i:
            out.append("-")
        out.append(c.lower())
    return "".join(out)


def field(wit_name: str) -> str:
    """``start-ms`` -> ``start_ms``: how a record's field is written."""
    return wit_name.replace("-", "_")


class WitJsonError(ValueError):
    """A value is not of the type a cassette says it is."""


def _is(t: Type, raw: Any) -> bool:
    """Whether ``raw`` lifts from ``t`` (for an untagged variant's case)."""
    kind = t[0]
    if kind == "record":
        return isinstance(raw, Record)
    if kind == "variant" and t[2] or kind == "result" and t[3]:
        return isinstance(raw, Variant)
    if kind in ("string", "enum"):
        return isinstance(raw, str)
    if kind == "int":
        return isinstance(raw, int) and not isinstance(raw, bool)
    return False


def to_json(t: Type, raw: Any) -> Any:
    """A value as wasmtime-py lifts it -> its cassette JSON."""
    kind = t[0]
    if kind in ("string", "int", "bool"):
        return raw
    if kind == "enum":
        return camel(raw)
    if kind == "bytes":
        return list(bytes(raw))
    if kind == "option":
        return None if raw is None else to_json(t[1], raw)
    if kind == "list":
        return [to_json(t[1], v) for v in raw]
    if kind == "tuple":
        return [to_json(s, v) for s, v in zip(t[1], raw)]
    if kind == "record":
        return {field(name): to_json(s, getattr(raw, name)) for name, s in t[1]}
    if kind == "variant":
        cases, tagged = t[1], t[2]
        if tagged:
            for name, s in cases:
                if raw.tag == name:
                    return {camel(name): to_json(s, raw.payload)}
            raise WitJsonError(f"no case {raw.tag!r}")
        for name, s in cases:
            if _is(s, raw):
                return {camel(name): to_json(s, raw)}
        raise WitJsonError(f"no case of the variant holds a {type(raw).__name__}")
    if kind == "result":
        ok, err, tagged = t[1], t[2], t[3]
        if tagged:
            return {"Ok": to_json(ok, raw.payload)} if raw.tag == "ok" else {"Err": to_json(err, raw.payload)}
        return {"Ok": to_json(ok, raw)} if _is(ok, raw) else {"Err": to_json(err, raw)}
    raise WitJsonError(f"unknown type {kind}")


def _one(j: Any, what: str) -> Tuple[str, Any]:
    if isinstance(j, dict) and len(j) == 1:
        ((k, v),) = j.items()
        return str(k), v
    raise WitJsonError(f"{what}: expected an object of one key, got {_short(j)}")


def _short(j: Any) -> str:
    text = repr(j)
    return text if len(text) <= 60 else text[:57] + "..."


def from_json(t: Type, j: Any) -> Any:
    """Cassette JSON -> a value wasmtime-py lowers as ``t``.

    Raises:
        WitJsonError: ``j`` is not of type ``t``.
    """
    kind = t[0]
    if kind == "string":
        if not isinstance(j, str):
            raise WitJsonError(f"expected a string, got {_short(j)}")
        return j
    if kind == "int":
        if not isinstance(j, int) or isinstance(j, bool) or j < 0:
            raise WitJsonError(f"expected an unsigned integer, got {_short(j)}")
        return j
    if kind == "bool":
        if not isinstance(j, bool):
            raise WitJsonError(f"expected true or false, got {_short(j)}")
        return j
    if kind == "enum":
        if not isinstance(j, str):
            raise WitJsonError(f"expected an enum case, got {_short(j)}")
        return kebab(j)
    if kind == "bytes":
        if not isinstance(j, list) or not all(isinstance(b, int) and 0 <= b < 256 for b in j):
            raise WitJsonError("expected an array of bytes")
        return bytes(j)
    if kind == "option":
        return None if j is None else from_json(t[1], j)
    if kind == "list":
        if not isinstance(j, list):
            raise WitJsonError(f"expected an array, got {_short(j)}")
        return [from_json(t[1], v) for v in j]
    if kind == "tuple":
        if not isinstance(j, list) or len(j) != len(t[1]):
            raise WitJsonError(f"expected an array of {len(t[1])}, got {_short(j)}")
        return tuple(from_json(s, v) for s, v in zip(t[1], j))
    if kind == "record":
        if not isinstance(j, dict):
            raise WitJsonError(f"expected an object, got {_short(j)}")
        r = Record()
        for name, s in t[1]:
            key = field(name)
            if key not in j:
                if s[0] == "option":
                    setattr(r, name, None)
                    continue
                raise WitJsonError(f"missing field {key!r}")
            try:
                setattr(r, name, from_json(s, j[key]))
            except WitJsonError as e:
                raise WitJsonError(f"{key}: {e}") from None
        return r
    if kind == "variant":
        cases, tagged = t[1], t[2]
        key, payload = _one(j, "a variant")
        for name, s in cases:
            if camel(name) == key:
                value = from_json(s, payload)
                return Variant(name, value) if tagged else value
        raise WitJsonError(f"no case {key!r}")
    if kind == "result":
        ok, err, tagged = t[1], t[2], t[3]
        key, payload = _one(j, "a result")
        if key not in ("Ok", "Err"):
            raise WitJsonError(f"a result is Ok or Err, not {key!r}")
        value = from_json(ok if key == "Ok" else err, payload)
        return Variant(key.lower(), value) if tagged else value
    raise WitJsonError(f"unknown type {kind}")


def call_to_json(key: str, task: int, args: Sequence[Any]) -> Dict[str, Any]:
    """An export's arguments (as given to wasmtime-py) -> the entry's ``call``."""
    _, _, takes_task, params = CALLS[key]
    rest = list(args[1:] if takes_task else args)
    fields: Dict[str, Any] = {}
    for (name, t), raw in zip(params, rest):
        if key == "load-modules" and name == "modules":
            fields[name] = [[m.path, m.source] for m in raw]
        else:
            fields[name] = to_json(t, raw)
    return {key: fields}


def call_from_json(call: Any) -> Tuple[str, Optional[List[Any]]]:
    """An entry's ``call`` -> its key and the export's arguments but the
    task (``None`` for ``configure``, whose argument is :func:`vm_config`).

    Raises:
        WitJsonError: not a call of the format.
    """
    key, fields = _one(call, "a call")
    if key == "configure":
        return key, [from_json(VM_CONFIG, fields)]
    spec = CALLS.get(key)
    if spec is None:
        raise WitJsonError(f"unknown call {key!r}")
    if not isinstance(fields, dict):
        raise WitJsonError(f"{key}: expected an object")
    args: List[Any] = []
    for name, t in spec[3]:
        if name not in fields:
            raise WitJsonError(f"{key}: missing {name!r}")
        try:
            value = from_json(t, fields[name])
        except WitJsonError as e:
            raise WitJsonError(f"{key}.{name}: {e}") from None
        if key == "load-modules" and name == "modules":
            modules = []
            for path, source in value:
                modules.append(_module(path, source))
            value = modules
        args.append(value)
    return key, args


def _module(path: str, source: str) -> Record:
    """A ``module-source`` record."""
    m = Record()
    m.__dict__.update(path=path, source=source)
    return m

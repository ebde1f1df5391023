"""Cassettes: a sandbox's run recorded at the guest's boundary, and replayed.

The format is docs/cassette.md, the same from every host: a cassette this
package records replays through the Rust host and ``marionette replay``,
and one they record replays here. :class:`Recorder` takes a sandbox's
entries (``AsyncSandbox(record=...)``); :meth:`Recorder.finish` makes the
:class:`Cassette`; :func:`replay` makes every recorded entry again into a
fresh instance and compares what each returns with what was recorded
(strict replay: no engine, tool, timer or network is used).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from dataclasses import dataclass
from typing import IO, Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

from . import _protocol as protocol
from . import _witjson as wj
from ._errors import HostError, MarionetteError
from ._types import Event, Limits

FORMAT = "marionette-cassette"
VERSION = 1
#: The package's version, written in the header's ``marionette``.
PACKAGE_VERSION = "0.1.0"

__all__ = [
    "Cassette",
    "CassetteEditedError",
    "CassetteError",
    "CassetteTooLargeError",
    "CassetteTruncatedError",
    "CassetteVersionError",
    "ComponentMismatchError",
    "DivergenceError",
    "MalformedCassetteError",
    "NotACassetteError",
    "ReadLimits",
    "Recorder",
    "Replayed",
    "replay",
]


# ---------------------------------------------------------------- errors


class CassetteError(MarionetteError):
    """A cassette was refused before anything ran (``op`` is ``"cassette"``)."""

    def __init__(self, message: str) -> None:
        super().__init__("cassette", message)
        self.detail = message


class NotACassetteError(CassetteError):
    """Its first line is not a header of this format (an empty file too)."""


class CassetteVersionError(CassetteError):
    """A format version this package does not read."""

    def __init__(self, found: Any) -> None:
        super().__init__(f"format version {found}; this marionette reads version {VERSION}")
        self.found = found


class MalformedCassetteError(CassetteError):
    """A line is not JSON of the format; ``line`` is 1-based."""

    def __init__(self, line: int, detail: str) -> None:
        super().__init__(f"line {line}: {detail}")
        self.line = line


class CassetteTruncatedError(CassetteError):
    """No trailer, or a last line without its newline: cut short."""


class CassetteEditedError(CassetteError):
    """The trailer's checksum or count does not match, entries out of order,
    or bytes after the trailer."""


class CassetteTooLargeError(CassetteError):
    """Larger than :class:`ReadLimits` allow; never read past it."""


class ComponentMismatchError(CassetteError):
    """Recorded with another build of the guest component."""

    def __init__(self, recorded: str, running: str) -> None:
        super().__init__(
            f"recorded with another guest component (sha256 {recorded}); this sandbox's is {running}: record it again"
        )
        self.recorded = recorded
        self.running = running


class DivergenceError(MarionetteError):
    """The replay did or asked something else than what was recorded.

    ``entry`` is the recorded entry (from 0), ``export`` its export
    (``tasks.resume``...), ``task`` its task, ``what`` what differs in
    words, ``recorded``/``asked`` both sides as indented JSON, ``diff``
    the lines that differ (``-`` recorded, ``+`` asked).
    """

    def __init__(self, entry: int, export: str, task: int, what: str, recorded: str, asked: str, diff: str) -> None:
        super().__init__(
            "replay",
            f"the replay diverged at entry {entry} ({export}, task {task}): {what} is not what was recorded\n{diff}",
        )
        self.entry = entry
        self.export = export
        self.task = task
        self.what = what
        self.recorded = recorded
        self.asked = asked
        self.diff = diff


# ---------------------------------------------------------------- the file


@dataclass(frozen=True)
class ReadLimits:
    """What :meth:`Cassette.read` accepts at most."""

    max_bytes: int = 256 << 20
    max_entries: int = 1_000_000


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _line(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class Cassette:
    """A recorded run: its ``header`` (a dict, docs/cassette.md) and its
    ``entries`` (dicts ``{"n", "task", "call", "effects" | "trap"}``)."""

    def __init__(self, header: Dict[str, Any], entries: List[Dict[str, Any]]) -> None:
        self.header = header
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def component(self) -> str:
        """The SHA-256 of the component that recorded it."""
        return str(self.header["component"])

    @property
    def policy(self) -> Dict[str, Any]:
        """The recording sandbox's policy, its determinism included."""
        policy: Dict[str, Any] = self.header.get("policy") or {}
        return policy

    def script_source(self, name: str) -> Optional[str]:
        """The source a script (or a module of a graph, by path) was loaded
        with, the last time it was."""
        for entry in reversed(self.entries):
            ((key, fields),) = entry["call"].items()
            if key == "load" and fields["name"] == name:
                return str(fields["source"])
            if key == "load-modules":
                for path, source in fields["modules"]:
                    if path == name:
                        return str(source)
        return None

    def main_call(self) -> Optional[Tuple[str, Any]]:
        """The script and input (decoded) of the last ``main`` the run called."""
        for entry in reversed(self.entries):
            ((key, fields),) = entry["call"].items()
            if key == "run-main":
                return str(fields["name"]), json.loads(fields["input"])
        return None

    def to_bytes(self) -> bytes:
        """The cassette as JSON lines, its trailer's checksum made."""
        out = io.BytesIO()
        self.write(out)
        return out.getvalue()

    def write(self, out: IO[bytes]) -> None:
        """Writes it as JSON lines."""
        hasher = hashlib.sha256()
        for value in [{"cassette": self.header}, *self.entries]:
            line = _line(value)
            hasher.update(line)
            out.write(line)
        out.write(_line({"end": {"entries": len(self.entries), "sha256": hasher.hexdigest()}}))

    def save(self, path: Union[str, os.PathLike[str]]) -> None:
        """Writes it to ``path``."""
        with open(path, "wb") as f:
            self.write(f)

    @classmethod
    def load(cls, path: Union[str, os.PathLike[str]], limits: Optional[ReadLimits] = None) -> Cassette:
        """Reads the cassette at ``path``, checked as :meth:`read` does."""
        limits = limits or ReadLimits()
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise CassetteError(f"cannot read {os.fspath(path)}: {e}") from e
        if size > limits.max_bytes:
            raise CassetteTooLargeError(f"too large: {size} bytes; at most {limits.max_bytes} are read")
        with open(path, "rb") as f:
            return cls.read(f, limits)

    @classmethod
    def read(cls, source: Union[bytes, IO[bytes]], limits: Optional[ReadLimits] = None) -> Cassette:
        """Reads a cassette: header, entries and trailer, each checked.
        Whether it was recorded by this component is checked by :func:`replay`.

        Raises:
            CassetteError: one of its subclasses, naming the line.
        """
        limits = limits or ReadLimits()
        stream: IO[bytes] = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        hasher = hashlib.sha256()
        header: Optional[Dict[str, Any]] = None
        entries: List[Dict[str, Any]] = []
        read = 0
        number = 0
        while True:
            # Never more than the limit in memory, whatever the line's length.
            raw = stream.readline(limits.max_bytes - read + 1)
            if not raw:
                break
            read += len(raw)
            if read > limits.max_bytes:
                raise CassetteTooLargeError(f"too large: more than {limits.max_bytes} bytes")
            number += 1
            if not raw.endswith(b"\n"):
                raise CassetteTruncatedError(f"truncated: line {number} ends without its newline")
            try:
                text = raw[:-1].decode("utf-8")
            except UnicodeDecodeError as e:
                raise MalformedCassetteError(number, f"not UTF-8: {e}") from None
            if header is None:
                header = _header(text)
                hasher.update(raw)
                continue
            if text.startswith('{"end":'):
                end = _json(number, text, "not a trailer")
                trailer = end.get("end") if isinstance(end, dict) and len(end) == 1 else None
                if (
                    not isinstance(trailer, dict)
                    or set(trailer) != {"entries", "sha256"}
                    or not isinstance(trailer["entries"], int)
                    or not isinstance(trailer["sha256"], str)
                ):
                    raise MalformedCassetteError(number, 'not a trailer: {"end": {"entries", "sha256"}}')
                rest = stream.read(1)
                if rest:
                    raise CassetteEditedError(f"edited: bytes follow the trailer (line {number})")
                sha = hasher.hexdigest()
                if trailer["sha256"] != sha or trailer["entries"] != len(entries):
                    raise CassetteEditedError(
                        f"edited: the trailer says {trailer['entries']} entries with sha256 {trailer['sha256']}; "
                        f"the file has {len(entries)} with sha256 {sha}"
                    )
                return cls(header, entries)
            if len(entries) >= limits.max_entries:
                raise CassetteTooLargeError(f"too large: more than {limits.max_entries} entries")
            entry = _entry(number, text)
            if entry["n"] != len(entries):
                raise CassetteEditedError(
                    f"edited: line {number} is entry {entry['n']}, where entry {len(entries)} belongs"
                )
            hasher.update(raw)
            entries.append(entry)
        if header is None:
            raise NotACassetteError("not a marionette cassette: the file is empty")
        raise CassetteTruncatedError(f"truncated: no trailer after {len(entries)} entries (line {number} is the last)")


def _json(number: int, text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise MalformedCassetteError(number, f"{what}: {type(e).__name__}: {e}") from None


def _header(text: str) -> Dict[str, Any]:
    start = text[:60]
    try:
        line = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise NotACassetteError(f"not a marionette cassette: its first line ({start!r}...) is no header: {e}") from None
    header = line.get("cassette") if isinstance(line, dict) and len(line) == 1 else None
    if not isinstance(header, dict):
        raise NotACassetteError(f"not a marionette cassette: its first line ({start!r}...) is no header")
    if header.get("format") != FORMAT:
        raise NotACassetteError(f"not a marionette cassette: its format is {header.get('format')!r}")
    if header.get("version") != VERSION:
        raise CassetteVersionError(header.get("version"))
    for key, kind in (("component", str), ("marionette", str), ("policy", dict), ("scripts", list)):
        if not isinstance(header.get(key), kind):
            raise MalformedCassetteError(1, f"the header's {key!r} is missing or not a {kind.__name__}")
    return header


def _entry(number: int, text: str) -> Dict[str, Any]:
    entry = _json(number, text, "not an entry")
    if not isinstance(entry, dict):
        raise MalformedCassetteError(number, "not an entry: not an object")
    for key in ("n", "task"):
        value = entry.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MalformedCassetteError(number, f"not an entry: {key!r} is not an unsigned integer")
    unknown = set(entry) - {"n", "task", "call", "effects", "trap"}
    if unknown:
        raise MalformedCassetteError(number, f"not an entry: unknown fields {sorted(unknown)}")
    if ("effects" in entry and entry["effects"] is not None) == ("trap" in entry and entry["trap"] is not None):
        raise MalformedCassetteError(number, "an entry has either its effects or its trap")
    try:
        wj.call_from_json(entry.get("call"))
        if entry.get("effects") is not None:
            wj.from_json(wj.EFFECTS, entry["effects"])
        elif not isinstance(entry["trap"], str):
            raise wj.WitJsonError("its trap is not a string")
    except (wj.WitJsonError, RecursionError) as e:
        raise MalformedCassetteError(number, f"not an entry: {e}") from None
    return entry


# ---------------------------------------------------------------- recording


def policy_json(limits: Limits) -> Dict[str, Any]:
    """``limits`` as the header's ``policy`` (the Rust host's ``Policy``
    fields it has; the others take their defaults there)."""
    policy: Dict[str, Any] = {
        "memory_limit": limits.memory,
        "entry_deadline": round(limits.entry_deadline * 1000),
        "max_console_lines": limits.console_lines,
        "max_console_bytes": limits.console_bytes,
        "max_pending_ops": limits.pending_ops,
    }
    d = limits.determinism
    policy["determinism"] = None if d is None else {"seed": d.seed, "start_ms": d.start_ms}
    return policy


class Recorder:
    """Takes the entries of one sandbox's run (``AsyncSandbox(record=...)``,
    ``Sandbox(record=...)``); :meth:`finish` makes the :class:`Cassette`.

    A recording sandbox whose limits name no determinism gets a fresh one
    (a new seed, its clock starting now), written in the header's policy.
    Nothing secret is written: only what crosses the guest's boundary.
    """

    def __init__(self, note: Any = None) -> None:
        self._lock = threading.Lock()
        self._entries: List[Dict[str, Any]] = []
        self._policy: Dict[str, Any] = {}
        self._component = ""
        self._note: Any = note if note is not None else {"host": "python"}

    def note(self, note: Any) -> None:
        """What the header's ``note`` says of the run (free-form JSON)."""
        self._note = note

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _start(self, policy: Dict[str, Any]) -> None:
        self._policy = policy

    def _entry(self, task: int, call: Dict[str, Any], effects: Optional[List[Any]], trap: Optional[str]) -> None:
        with self._lock:
            entry: Dict[str, Any] = {"n": len(self._entries), "task": task, "call": call}
            if trap is None:
                entry["effects"] = effects
            else:
                entry["trap"] = trap
            self._entries.append(entry)

    def finish(self) -> Cassette:
        """The cassette of what was recorded so far (the recording goes on)."""
        with self._lock:
            entries = [dict(e) for e in self._entries]
        scripts: List[Dict[str, Any]] = []
        for entry in entries:
            ((key, fields),) = entry["call"].items()
            loaded: Sequence[Tuple[str, str]]
            if key == "load":
                loaded = [(fields["name"], fields["source"])]
            elif key == "load-modules":
                loaded = [(p, s) for p, s in fields["modules"]]
            else:
                continue
            for name, source in loaded:
                data = source.encode()
                info = {"name": name, "sha256": _sha256(data), "bytes": len(data)}
                if info not in scripts:
                    scripts.append(info)
        header = {
            "format": FORMAT,
            "version": VERSION,
            "component": self._component,
            "marionette": PACKAGE_VERSION,
            "policy": self._policy,
            "scripts": scripts,
            "note": self._note,
        }
        return Cassette(header, entries)


# ---------------------------------------------------------------- replay


@dataclass
class Replayed:
    """What a replay that matched its cassette produced: the entries made,
    and the outcome of the run's last ``main`` (``ran_main`` false when the
    run called none): its ``result``, or the ``error`` its caller got."""

    entries: int
    ran_main: bool = False
    result: Any = None
    error: Optional[MarionetteError] = None


def replay(
    cassette: Union[str, os.PathLike[str], Cassette],
    *,
    component: Union[str, os.PathLike[str], None] = None,
    sources: Optional[Mapping[str, str]] = None,
    on_event: Optional[Callable[[Event], Any]] = None,
    limits: Optional[ReadLimits] = None,
) -> Replayed:
    """Replays ``cassette`` (a path or a :class:`Cassette`) strictly: every
    recorded entry again, in order, into a fresh instance of the component
    built with the recorded configuration, each one's effects compared with
    the recorded ones. Nothing is performed: timers, models, tools and
    hooks answer from the cassette. ``sources`` gives scripts (by name, or
    a module of a graph by path) to load instead of the recorded ones: the
    script as it is now. ``on_event`` gets the run's console lines and
    session events (not those of loading the scripts), as a live run's
    callback would.

    Raises:
        CassetteError: the cassette is refused (its subclasses), or was
            recorded by another component (:class:`ComponentMismatchError`).
        DivergenceError: at the first difference, with a diff.
    """
    from ._vm import Runtime, Trap, Vm  # the guest's runtime, only when replaying

    if not isinstance(cassette, Cassette):
        cassette = Cassette.load(cassette, limits)
    runtime = Runtime.get(component)
    if cassette.component != runtime.sha256:
        raise ComponentMismatchError(cassette.component, runtime.sha256)
    policy = cassette.policy
    memory = int(policy.get("memory_limit", Limits.memory))
    deadline = int(policy.get("entry_deadline", 5000)) / 1000
    sources = dict(sources or {})
    vm: Optional[Vm] = None
    main: Optional[int] = None
    loads: Set[int] = set()
    out = Replayed(len(cassette.entries))
    for entry in cassette.entries:
        task = int(entry["task"])
        call = _with_sources(entry["call"], sources)
        key, args = wj.call_from_json(call)
        assert args is not None
        export = wj.EXPORT_NAMES[key]
        if key in ("load", "load-modules"):
            loads.add(task)
        elif key == "run-main":
            main = task
        raw: Optional[List[Any]] = None
        trap: Optional[str] = None
        if key == "configure":
            try:
                vm = Vm(runtime, memory, {})
                vm.enter(0, deadline, _configure(args[0]))
                raw = []
            except Trap as t:
                vm, trap = None, t.message
        elif vm is None:
            trap = "no instance: an earlier entry trapped"
        else:
            try:
                raw = vm.enter(task, deadline, _raw(key, task, args))
            except Trap as t:
                vm, trap = None, t.message
        recorded = entry.get("effects")
        difference: Optional[Tuple[str, str, str, str]] = None
        if recorded is not None and raw is not None:
            difference = compare(recorded, wj.to_json(wj.EFFECTS, raw))
        elif recorded is not None:
            difference = ("the entry", "(its effects)", f"a trap: {trap}", f"+ the entry trapped: {trap}")
        elif raw is not None:
            was = entry.get("trap", "")
            difference = (
                "the entry",
                f"a trap: {was}",
                "(its effects)",
                f"- the entry trapped: {was}\n+ the entry returned",
            )
        if difference is not None:
            raise DivergenceError(int(entry["n"]), export, task, *difference)
        for effect in protocol.decode_effects(raw or []):
            if isinstance(effect, protocol.TaskEvent) and effect.task not in loads and on_event is not None:
                on_event(effect.event)
            elif isinstance(effect, protocol.Done) and effect.task == main:
                out.ran_main = True
                if effect.failure is None:
                    out.result, out.error = effect.value, None
                else:
                    out.result, out.error = None, _failure("main (replayed)", effect.failure)
    return out


def _configure(config: Any) -> Callable[[protocol.Guest], None]:
    return lambda g: g.configure(config)


def _raw(key: str, task: int, args: List[Any]) -> Callable[[protocol.Guest], Any]:
    return lambda g: g.raw(key, task, args)


def _with_sources(call: Dict[str, Any], sources: Mapping[str, str]) -> Dict[str, Any]:
    """``call`` with the sources given in place of the recorded ones."""
    ((key, fields),) = call.items()
    if key == "load" and fields.get("name") in sources:
        return {key: {**fields, "source": sources[fields["name"]]}}
    if key == "load-modules" and any(p in sources for p, _ in fields.get("modules", [])):
        return {key: {**fields, "modules": [[p, sources.get(p, s)] for p, s in fields["modules"]]}}
    return call


def _failure(op: str, failure: protocol.Failure) -> MarionetteError:
    if failure.kind == "script" and failure.error is not None:
        return protocol.script_error(op, failure.error)
    return HostError(op, f"{failure.kind}: {failure.detail}")


# ---------------------------------------------------------------- the diff


def describe(effect: Any) -> str:
    """What an effect (cassette JSON) is, in words."""
    ((kind, p),) = effect.items()
    if kind == "Request":
        ((op, _),) = p["what"].items()
        return f"the request for {wj.kebab(op)} (op {p['op']})"
    if kind == "Release":
        return f"the release of op {p}"
    if kind == "Event":
        ((ev, payload),) = p["event"].items()
        if ev == "Console":
            return f"a console line of task {p['task']}"
        try:
            type_ = json.loads(payload).get("type", "?")
        except (ValueError, AttributeError):
            type_ = "?"
        return f"a session event ({type_}) of task {p['task']}"
    return f"the done of task {p['task']}"


def compare(recorded: List[Any], asked: List[Any]) -> Optional[Tuple[str, str, str, str]]:
    """The first effect that differs, as (what, recorded, asked, diff)."""
    for i in range(max(len(recorded), len(asked))):
        r = recorded[i] if i < len(recorded) else None
        a = asked[i] if i < len(asked) else None
        if r == a:
            continue
        if a is not None:
            what = describe(a)
        else:
            what = f"the end of the entry's effects (recorded: {describe(r)})"
        rp, ap = pretty(r), pretty(a)
        return what, rp, ap, diff_lines(rp, ap)
    return None


def pretty(value: Any) -> str:
    """Indented JSON, the JSON inside strings opened up."""
    if value is None:
        return "(nothing)"
    return json.dumps(_open(value, 0), indent=2, ensure_ascii=False, sort_keys=True)


def _open(value: Any, depth: int) -> Any:
    if depth > 64:
        return value
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return _open(json.loads(value), depth + 1)
        except (ValueError, RecursionError):
            return value
    if isinstance(value, list):
        return [_open(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {k: _open(v, depth + 1) for k, v in value.items()}
    return value


CONTEXT = 3


def diff_lines(recorded: str, asked: str) -> str:
    """What differs between two texts, by lines: ``-`` recorded, ``+``
    asked, with a few lines of context (as the Rust host writes it)."""
    r, a = recorded.splitlines(), asked.splitlines()
    prefix = 0
    while prefix < min(len(r), len(a)) and r[prefix] == a[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(r), len(a)) - prefix and r[len(r) - 1 - suffix] == a[len(a) - 1 - suffix]:
        suffix += 1
    out: List[str] = []
    start = max(prefix - CONTEXT, 0)
    if start > 0:
        out.append(f"  ... ({start} lines)")
    out += [f"  {line}" for line in r[start:prefix]]
    out += [f"- {line}" for line in r[prefix : len(r) - suffix]]
    out += [f"+ {line}" for line in a[prefix : len(a) - suffix]]
    tail = r[len(r) - suffix :]
    out += [f"  {line}" for line in tail[:CONTEXT]]
    if len(tail) > CONTEXT:
        out.append(f"  ... ({len(tail) - CONTEXT} lines)")
    return "\n".join(out)

"""Plain data of the public API: limits, console lines, exports, tools."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Literal, Optional, Union

__all__ = [
    "ConsoleLine",
    "Determinism",
    "EngineFn",
    "Event",
    "ExportInfo",
    "HostTool",
    "Inference",
    "Json",
    "Limits",
    "MiddlewareCall",
    "MiddlewareFn",
    "NextFn",
    "SessionEvent",
    "ToolDefinition",
    "Turn",
]

Json = Any
"""Any value that JSON can carry (dict, list, str, int, float, bool, None)."""

Turn = Dict[str, Any]
"""A turn as the scripts see it: ``{"id", "blocks", "metadata", "data"}``;
each block ``{"id", "kind", "role", "payload", "metadata"}`` with ``kind`` one
of ``user``, ``llm_text``, ``tool_call``, ``tool_use``, ``system``,
``reasoning``, ``other``."""

NextFn = Callable[[Turn], Awaitable[Turn]]
"""The rest of a middleware chain (JavaScript middleware run by the host)."""


class Inference:
    """One inference a script asked of a host engine: what the engine gets.

    ``turn`` is the conversation so far; ``tools`` what the model is
    offered, ``tool_choice`` whether it may (``auto``), must (``required``)
    or may not (``none``) call them; ``context`` the inference context
    (``sessionId``, ``inferenceId``, ``tags``, ...). An engine returns the
    turn with its blocks appended, most simply through :meth:`reply` or
    :meth:`call_tools`, and may stream text first with :meth:`partial`.
    """

    def __init__(
        self,
        engine: str,
        turn: Turn,
        context: Dict[str, Any],
        tools: List[ToolDefinition],
        tool_choice: str,
        partial: Callable[[str], None],
    ) -> None:
        self.engine = engine
        self.turn = turn
        self.context = context
        self.tools = tools
        self.tool_choice = tool_choice
        self._partial = partial
        self._streamed = ""

    def partial(self, delta: str) -> None:
        """Streams ``delta``, a piece of the answer, as a ``partial`` event
        of the script's session. Safe from any thread."""
        self._streamed += delta
        self._partial(delta)

    def reply(self, text: str) -> Turn:
        """The turn with an assistant text block ``text`` appended."""
        return self._append([{"kind": "llm_text", "role": "assistant", "payload": {"text": text}}])

    def call_tools(self, calls: List[Dict[str, Any]]) -> Turn:
        """The turn with a tool-call block per ``{"id", "name", "arguments"}``."""
        return self._append(
            [
                {
                    "kind": "tool_call",
                    "role": "assistant",
                    "payload": {"id": c["id"], "name": c["name"], "args": c.get("arguments", {})},
                }
                for c in calls
            ]
        )

    def _append(self, blocks: List[Dict[str, Any]]) -> Turn:
        turn = dict(self.turn)
        existing = list(turn.get("blocks", []))
        for i, b in enumerate(blocks):
            existing.append({"id": f"{turn.get('id') or 'turn'}-{len(existing) + i}", "metadata": {}, **b})
        turn["blocks"] = existing
        return turn


class MiddlewareCall:
    """One run of a host middleware: ``turn``, the ``options`` the script
    gave (``middlewares.host(name, options)``), the inference ``context``,
    and the rest of the chain: ``await call.next(turn)`` from an ``async``
    middleware, ``call.next_blocking(turn)`` from a sync one."""

    def __init__(
        self,
        name: str,
        turn: Turn,
        options: Dict[str, Any],
        context: Dict[str, Any],
        next: Callable[[Turn], Awaitable[Turn]],
        next_blocking: Callable[[Turn], Turn],
    ) -> None:
        self.name = name
        self.turn = turn
        self.options = options
        self.context = context
        self.next = next
        self.next_blocking = next_blocking


EngineFn = Callable[[Inference], Union[Turn, Awaitable[Turn]]]
"""A host engine: ``(inference) -> turn``, sync or ``async``."""

MiddlewareFn = Callable[[MiddlewareCall], Union[Turn, Awaitable[Turn]]]
"""A host middleware: ``(call) -> turn``, sync or ``async``."""

LogLevel = Literal["debug", "info", "warn", "error"]


@dataclass(frozen=True)
class Limits:
    """What one sandbox may use. Deny by default; ``0``/``None`` turns a cap off.

    ``entry_deadline`` bounds one entry into the guest (JavaScript that runs
    without waiting for the host): past it the script is interrupted, its
    task fails with :class:`~marionette.LimitError` (``Limit.DEADLINE``) and
    the VM stays usable. JavaScript that cannot be interrupted is stopped
    by epoch interruption at twice that, as a trap (the instance is rebuilt).
    """

    #: Linear memory of the guest, in bytes (QuickJS's heap gets this less
    #: 8 MiB for the rest of the guest).
    memory: int = 256 << 20
    #: Seconds one entry may run JavaScript without waiting for the host.
    entry_deadline: float = 5.0
    #: Console lines one task may print.
    console_lines: int = 10_000
    #: Bytes of console output one task may print.
    console_bytes: int = 1 << 20
    #: Host operations (timers included) one task may have pending at once.
    pending_ops: int = 1_000
    #: Tasks running at once before new ones are rejected.
    max_tasks: int = 1_024
    #: A deterministic run: the guest's clocks and randomness seeded
    #: (docs/cassette.md); ``None``: the machine's.
    determinism: Optional[Determinism] = None


@dataclass(frozen=True)
class Determinism:
    """A deterministic run (``vm-config.determinism``): ``Math.random``,
    ``crypto.getRandomValues`` and the ids of sessions draw from one
    generator seeded with ``seed``; ``Date`` and ``performance.now`` read a
    virtual clock that starts at ``start_ms`` (milliseconds since the Unix
    epoch) and moves only when a timer the script asked for is resumed."""

    seed: int
    start_ms: int = 1_735_689_600_000  # 2025-01-01T00:00:00Z, as the Rust host's

    @classmethod
    def fresh(cls) -> Determinism:
        """A new seed (below 2^53, so every JSON reader keeps it), the clock
        starting now: what a recording sandbox gets when it names none."""
        return cls(int.from_bytes(os.urandom(8), "little") >> 11, int(time.time() * 1000))


@dataclass(frozen=True)
class ConsoleLine:
    """A ``console.*`` line of a script (``console.log`` is ``info``)."""

    level: LogLevel
    message: str


@dataclass(frozen=True)
class SessionEvent:
    """An event of a script's session run: ``start``, ``partial``, ``final``,
    ``tool-call``, ``tool-result``, ``error``; ``data`` is the whole event."""

    type: str
    data: Dict[str, Any]


Event = Union[ConsoleLine, SessionEvent]
"""What a task reports while it runs."""


@dataclass(frozen=True)
class ToolDefinition:
    """A tool as a model sees it; ``parameters`` is its JSON Schema."""

    name: str
    description: str
    parameters: Dict[str, Any]


@dataclass(frozen=True)
class ExportInfo:
    """One export of a loaded script and what kind of thing it is: ``main``,
    ``function``, ``engine``, ``middleware``, ``tool-registry``,
    ``tool-hooks`` or ``value``."""

    name: str
    kind: str
    tools: List[ToolDefinition] = field(default_factory=list)


@dataclass(frozen=True)
class HostTool:
    """A tool the host provides to scripts (``registry.useHostTools()``).

    ``handler(arguments)`` is sync or ``async`` and returns what JSON can
    carry; an exception it raises reaches the script as an ``Error`` with
    its message.
    """

    name: str
    handler: Callable[[Json], Any]
    description: str = ""
    parameters: Optional[Dict[str, Any]] = None

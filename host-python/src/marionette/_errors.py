"""The exception hierarchy: one root, one class per kind of failure.

The kinds mirror the Rust host's ``Error`` enum (``host/src/error.rs``), so a
failure reads the same whichever host ran the script. Every exception carries
``op``, the operation that failed (``"run_main app.js"``, ``"load app.js"``).
"""

from __future__ import annotations

import builtins
import enum
from typing import Optional

__all__ = [
    "CanceledError",
    "ClosedError",
    "HostError",
    "HostFailure",
    "Limit",
    "LimitError",
    "MarionetteError",
    "RejectedError",
    "ScriptError",
    "TimeoutError",
    "TrappedError",
]


class Limit(str, enum.Enum):
    """Which budget a :class:`LimitError` (or a trap) names."""

    DEADLINE = "cpu deadline"
    MEMORY = "memory"
    STACK = "stack"
    FUEL = "fuel"
    OUTPUT = "output"
    OPERATIONS = "pending operations"


class MarionetteError(Exception):
    """The root of every error this package raises."""

    def __init__(self, op: str, message: str) -> None:
        super().__init__(f"{op}: {message}")
        self.op = op


class ClosedError(MarionetteError):
    """The sandbox was closed: it accepts no more work."""

    def __init__(self, op: str) -> None:
        super().__init__(op, "closed: the sandbox no longer accepts work")


class RejectedError(MarionetteError):
    """Too many tasks are waiting: backpressure instead of unbounded memory."""

    def __init__(self, op: str, capacity: int) -> None:
        super().__init__(op, f"rejected: {capacity} tasks are running already")
        self.capacity = capacity


class CanceledError(MarionetteError):
    """The caller cancelled the task (an asyncio cancellation, ``cancel``)."""

    def __init__(self, op: str, reason: Optional[str] = None) -> None:
        super().__init__(op, "canceled" + (f": {reason}" if reason else ""))
        self.reason = reason


class TimeoutError(MarionetteError, builtins.TimeoutError):  # noqa: A001
    """The caller's wait ran out; the task was cancelled in the guest.

    Named after the Rust host's ``Timeout`` kind; it is also a builtin
    ``TimeoutError``, so ``except TimeoutError`` catches it either way."""

    def __init__(self, op: str, after: float) -> None:
        super().__init__(op, f"timed out after {round(after * 1000)}ms")
        self.after = after


class TrappedError(MarionetteError):
    """The guest trapped (stack exhausted, out of memory, the hard deadline).

    The instance was rebuilt and its scripts reloaded; only the work in
    flight failed.
    """

    def __init__(self, op: str, message: str, limit: Optional[Limit] = None) -> None:
        super().__init__(op, f"the guest trapped: {message}")
        self.message = message
        self.limit = limit


class ScriptError(MarionetteError):
    """The script threw (or rejected) with a JavaScript error."""

    def __init__(
        self,
        op: str,
        name: str,
        message: str,
        stack: Optional[str] = None,
        file: Optional[str] = None,
        line: Optional[int] = None,
        column: Optional[int] = None,
    ) -> None:
        where = ""
        if file is not None:
            where = file
            if line is not None:
                where += f":{line}" + (f":{column}" if column is not None else "")
            where += ": "
        super().__init__(op, f"{where}{name}: {message}")
        self.name = name
        self.message = message
        self.stack = stack
        self.file = file
        self.line = line
        self.column = column


class LimitError(MarionetteError):
    """A budget of the sandbox's :class:`~marionette.Limits` was exhausted."""

    def __init__(self, op: str, limit: Limit, detail: str) -> None:
        super().__init__(op, f"limit exceeded: {limit.value}: {detail}")
        self.limit = limit
        self.detail = detail


class HostError(MarionetteError):
    """The host failed for a reason of its own: bad input from the caller,
    a component that cannot be loaded, a guest that broke the protocol."""


class HostFailure(Exception):
    """Raise from a host engine, middleware or tool to choose the error the
    script sees: a JavaScript ``Error`` with this ``name`` and ``message``.

    Any other exception reaches the script with its class name as ``name``.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message

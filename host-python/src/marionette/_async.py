"""``AsyncSandbox``: one guest instance, and asyncio as its host."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from ._cassette import Recorder
from ._core import Core, EventCallback, TaskState, call_user
from ._errors import (
    CanceledError,
    ClosedError,
    HostError,
)
from ._types import (
    EngineFn,
    Event,
    ExportInfo,
    HostTool,
    Json,
    Limits,
    MiddlewareFn,
    ToolDefinition,
    Turn,
)

__all__ = ["AsyncSandbox", "TaskHandle"]


class TaskHandle:
    """A task under way: ``await handle`` for its result, ``async for`` its
    events (console lines, session events) until it ends.

    Cancelling the awaiting coroutine cancels the task in the guest.
    """

    def __init__(self, sandbox: AsyncSandbox, task: TaskState, timeout: Optional[float]) -> None:
        self._sandbox = sandbox
        self._task = task
        self._timeout = timeout

    @property
    def id(self) -> int:
        """The task's id in the guest."""
        return self._task.id

    def __await__(self) -> Any:
        return self._sandbox._wait(self._task, self._timeout).__await__()

    async def result(self) -> Any:
        """The task's value (what ``main`` returned, the tool's result, ...)."""
        return await self._sandbox._wait(self._task, self._timeout)

    def cancel(self, reason: str = "canceled by the caller") -> None:
        """Cancels the task: running JavaScript is interrupted, pending host
        operations are dropped, and the result raises :class:`CanceledError`."""
        self._sandbox._stop(self._task, CanceledError(self._task.op, reason), reason)

    def __aiter__(self) -> TaskHandle:
        if self._task.queue is None:
            raise HostError(self._task.op, "the events of a task can be iterated only once, before it ends")
        return self

    async def __anext__(self) -> Event:
        queue = self._task.queue
        assert queue is not None
        event = await queue.get()
        if event is None:
            raise StopAsyncIteration
        return event


class AsyncSandbox(Core):
    """A sandbox for JavaScript: one instance of the marionette component.

    Host engines, middleware and tools are Python callables, sync or
    ``async`` (sync ones run in a worker thread, so they may block). Every
    method that runs JavaScript takes ``timeout`` (seconds; the task is
    cancelled in the guest when it runs out, its JavaScript interrupted) and
    ``on_event`` (called with each :class:`ConsoleLine` and
    :class:`SessionEvent` of the task). Use it as ``async with``, or call
    :meth:`aclose`.

    Args:
        component: the component file; by default the one inside the
            package (or ``$MARIONETTE_COMPONENT``).
        limits: CPU, memory and output limits.
        engines: host engines by name; ``""`` is the default engine
            (``engines.host()`` in a script).
        middlewares: host middleware by name (``middlewares.host(name)``).
        tools: host tools (``registry.useHostTools()``).
        on_event: called with every event of every task.
        record: a :class:`Recorder` that takes every entry into the guest:
            the run as a cassette (docs/cassette.md), replayed by
            :func:`replay` here, by ``marionette replay`` and by the Node
            package. Without ``limits.determinism`` the run gets a fresh
            seed and clock.
    """

    def __init__(
        self,
        component: Union[str, os.PathLike[str], None] = None,
        *,
        limits: Optional[Limits] = None,
        engines: Optional[Mapping[str, EngineFn]] = None,
        middlewares: Optional[Mapping[str, MiddlewareFn]] = None,
        tools: Sequence[HostTool] = (),
        on_event: Optional[EventCallback] = None,
        record: Optional[Recorder] = None,
    ) -> None:
        super().__init__(
            component,
            limits=limits,
            engines=engines,
            middlewares=middlewares,
            tools=tools,
            on_event=on_event,
            record=record,
        )

    # ------------------------------------------------------------ public API

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stops accepting work, fails what is in flight, drops the instance."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks.values()):
            self._settle_error(task, ClosedError(task.op))
        for op in list(self._ops.values()):
            op.cancel()
        if self._driver is not None:
            self._driver.cancel()
            try:
                await self._driver
            except asyncio.CancelledError:
                pass
        self._vm = None
        self._owner.shutdown(wait=False)

    async def load(self, name: str, source: str, *, timeout: Optional[float] = None) -> None:
        """Compiles and evaluates ``source`` as the ES module ``name``
        (top-level ``await`` included). Loading a name again replaces it.

        Raises:
            ScriptError: a syntax error, or the module threw.
        """
        task = self._new_task(f"load {name}")
        task.script = (name, source)
        self._start(task, lambda g: g.load(task.id, name, source))
        await self._wait(task, timeout)

    async def load_modules(self, entry: str, modules: Mapping[str, str], *, timeout: Optional[float] = None) -> None:
        """Loads a script of several modules: ``modules`` maps each path
        (``main.js``, ``lib/util.js``, ``data/d.json``) to its source, and
        ``entry`` is the one that is the script. Relative imports
        (``./util.js``) resolve among them only; a ``.json`` module is
        imported ``with { type: "json" }``.

        Raises:
            ScriptError: a bad path, a syntax error or an unresolved import
                (naming the module and line), or a module threw.
        """
        pairs = tuple(modules.items())
        for path, source in pairs:
            if not isinstance(path, str) or not isinstance(source, str):
                raise TypeError(f"load_modules: module {path!r} must map a path to its source text")
        task = self._new_task(f"load {entry}")
        task.script = (entry, pairs)
        self._start(task, lambda g: g.load_modules(task.id, entry, pairs))
        await self._wait(task, timeout)

    async def exports(self, name: str) -> List[ExportInfo]:
        """The exports of a loaded script, with their kinds."""
        return await self._query(lambda g: g.exports(name))

    async def list_tools(self, name: str, registry: str) -> List[ToolDefinition]:
        """The JavaScript tools of the registry exported as ``registry``."""
        return await self._query(lambda g: g.list_tools(name, registry))

    def start_main(
        self,
        name: str,
        input: Json = None,
        *,
        timeout: Optional[float] = None,
        on_event: Optional[EventCallback] = None,
    ) -> TaskHandle:
        """Starts ``main(input, ctx)`` of a loaded script; the handle gives its
        result and its events."""
        task = self._new_task(f"run_main {name}", on_event, stream=True)
        self._start(task, lambda g: g.run_main(task.id, name, input))
        return TaskHandle(self, task, timeout)

    async def run_main(
        self,
        name: str,
        input: Json = None,
        *,
        timeout: Optional[float] = None,
        on_event: Optional[EventCallback] = None,
    ) -> Json:
        """Runs ``main(input, ctx)``; returns what it returned (JSON)."""
        task = self._new_task(f"run_main {name}", on_event)
        self._start(task, lambda g: g.run_main(task.id, name, input))
        return await self._wait(task, timeout)

    async def call(
        self,
        name: str,
        function: str,
        *args: Json,
        timeout: Optional[float] = None,
        on_event: Optional[EventCallback] = None,
    ) -> Json:
        """Calls the exported function ``function`` with ``args``."""
        task = self._new_task(f"call {name}#{function}", on_event)
        self._start(task, lambda g: g.call(task.id, name, function, list(args)))
        return await self._wait(task, timeout)

    async def call_tool(
        self,
        name: str,
        registry: str,
        tool: str,
        arguments: Json,
        *,
        call_id: Optional[str] = None,
        timeout: Optional[float] = None,
        on_event: Optional[EventCallback] = None,
    ) -> Json:
        """Runs tool ``tool`` of the registry ``registry`` (arguments are
        checked against its schema first); returns its result."""
        task = self._new_task(f"call_tool {name}#{registry}.{tool}", on_event)
        cid = call_id if call_id is not None else f"call-{task.id}"
        self._start(task, lambda g: g.call_tool(task.id, name, registry, cid, tool, arguments))
        return await self._wait(task, timeout)

    async def infer(
        self,
        name: str,
        engine: str,
        turn: Turn,
        context: Optional[Dict[str, Any]] = None,
        *,
        timeout: Optional[float] = None,
        on_event: Optional[EventCallback] = None,
    ) -> Turn:
        """Runs the JavaScript engine exported as ``engine`` on ``turn``."""
        task = self._new_task(f"infer {name}#{engine}", on_event)
        self._start(task, lambda g: g.infer(task.id, name, engine, turn, context or {}))
        result: Turn = await self._wait(task, timeout)
        return result

    async def run_middleware(
        self,
        name: str,
        middleware: str,
        turn: Turn,
        next: Callable[[Turn], Any],
        context: Optional[Dict[str, Any]] = None,
        *,
        timeout: Optional[float] = None,
        on_event: Optional[EventCallback] = None,
    ) -> Turn:
        """Runs the JavaScript middleware exported as ``middleware`` on
        ``turn``; each ``next(turn)`` it awaits calls ``next`` (sync or
        ``async``), the rest of your chain."""
        task = self._new_task(f"middleware {name}#{middleware}", on_event)
        task.next = lambda t: call_user(next, t)
        self._start(task, lambda g: g.run_middleware(task.id, name, middleware, turn, context or {}))
        result: Turn = await self._wait(task, timeout)
        return result

    @property
    def scripts(self) -> List[str]:
        """The scripts loaded, in order (reloaded after a trap)."""
        return list(self._scripts)

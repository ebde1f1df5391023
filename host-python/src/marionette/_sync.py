"""``Sandbox``: the blocking face of :class:`AsyncSandbox`.

It runs an asyncio event loop in a background thread and waits for each
call there, so host engines, middleware and tools may be sync or ``async``
in either class, and timers, timeouts and interrupts behave the same.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Future
from typing import Any, Callable, Coroutine, Dict, List, Mapping, Optional, Sequence, TypeVar, Union

from ._async import AsyncSandbox
from ._cassette import Recorder
from ._core import EventCallback
from ._errors import ClosedError
from ._types import EngineFn, ExportInfo, HostTool, Json, Limits, MiddlewareFn, ToolDefinition, Turn

__all__ = ["Sandbox"]

T = TypeVar("T")


class Sandbox:
    """A sandbox for JavaScript, with blocking methods. Same arguments and
    methods as :class:`AsyncSandbox`; use it as ``with``, or call
    :meth:`close`. Callbacks run on the sandbox's own thread."""

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
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="marionette-loop", daemon=True)
        self._thread.start()
        self._closed = False

        async def make() -> AsyncSandbox:
            return AsyncSandbox(
                component,
                limits=limits,
                engines=engines,
                middlewares=middlewares,
                tools=tools,
                on_event=on_event,
                record=record,
            )

        self._inner = self._run(make())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise ClosedError("sandbox")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()  # cancels the task in the guest
            raise

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stops accepting work, fails what is in flight, stops the thread."""
        if self._closed:
            return
        self._run(self._inner.aclose())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def scripts(self) -> List[str]:
        """The scripts loaded, in order (reloaded after a trap)."""
        return self._inner.scripts

    @property
    def rebuilds(self) -> int:
        """Instances rebuilt after a trap."""
        return self._inner.rebuilds

    @property
    def requests(self) -> int:
        """Host operations the guest asked for."""
        return self._inner.requests

    @property
    def released(self) -> int:
        """Host operations the guest asked for, then released."""
        return self._inner.released

    def load(self, name: str, source: str, *, timeout: Optional[float] = None) -> None:
        """See :meth:`AsyncSandbox.load`."""
        self._run(self._inner.load(name, source, timeout=timeout))

    def load_modules(self, entry: str, modules: Mapping[str, str], *, timeout: Optional[float] = None) -> None:
        """See :meth:`AsyncSandbox.load_modules`."""
        self._run(self._inner.load_modules(entry, modules, timeout=timeout))

    def exports(self, name: str) -> List[ExportInfo]:
        """See :meth:`AsyncSandbox.exports`."""
        return self._run(self._inner.exports(name))

    def list_tools(self, name: str, registry: str) -> List[ToolDefinition]:
        """See :meth:`AsyncSandbox.list_tools`."""
        return self._run(self._inner.list_tools(name, registry))

    def run_main(
        self,
        name: str,
        input: Json = None,
        *,
        timeout: Optional[float] = None,
        on_event: Optional[EventCallback] = None,
    ) -> Json:
        """See :meth:`AsyncSandbox.run_main`."""
        return self._run(self._inner.run_main(name, input, timeout=timeout, on_event=on_event))

    def call(
        self,
        name: str,
        function: str,
        *args: Json,
        timeout: Optional[float] = None,
        on_event: Optional[EventCallback] = None,
    ) -> Json:
        """See :meth:`AsyncSandbox.call`."""
        return self._run(self._inner.call(name, function, *args, timeout=timeout, on_event=on_event))

    def call_tool(
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
        """See :meth:`AsyncSandbox.call_tool`."""
        return self._run(
            self._inner.call_tool(name, registry, tool, arguments, call_id=call_id, timeout=timeout, on_event=on_event)
        )

    def infer(
        self,
        name: str,
        engine: str,
        turn: Turn,
        context: Optional[Dict[str, Any]] = None,
        *,
        timeout: Optional[float] = None,
        on_event: Optional[EventCallback] = None,
    ) -> Turn:
        """See :meth:`AsyncSandbox.infer`."""
        return self._run(self._inner.infer(name, engine, turn, context, timeout=timeout, on_event=on_event))

    def run_middleware(
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
        """See :meth:`AsyncSandbox.run_middleware`."""
        return self._run(
            self._inner.run_middleware(name, middleware, turn, next, context, timeout=timeout, on_event=on_event)
        )

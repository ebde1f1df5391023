"""``AsyncSandbox``: one guest instance and the asyncio loop that is its host.

Every entry into the guest runs on the sandbox's owner thread (so the event
loop keeps running while JavaScript does, and a timeout can interrupt it),
one at a time, in the order a single driver task takes them from a queue.
Callers never enter the guest themselves: they queue a job and await a
future, so a caller that is cancelled or times out cannot leave an entry
half-processed.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, TypeVar, Union

from . import _protocol as protocol
from ._errors import (
    CanceledError,
    ClosedError,
    HostError,
    HostFailure,
    Limit,
    LimitError,
    MarionetteError,
    RejectedError,
    TimeoutError,
    TrappedError,
)
from ._types import (
    EngineFn,
    Event,
    ExportInfo,
    HostTool,
    Inference,
    Json,
    Limits,
    MiddlewareCall,
    MiddlewareFn,
    ToolDefinition,
    Turn,
)
from ._vm import Runtime, Trap, Vm

__all__ = ["AsyncSandbox", "TaskHandle"]

log = logging.getLogger("marionette")

T = TypeVar("T")
EventCallback = Callable[[Event], Any]
Job = Callable[[], Awaitable[None]]

#: The longest sleep a script may ask for; a longer ``setTimeout`` waits this long.
MAX_SLEEP = 30 * 24 * 3600.0


@dataclass
class _Task:
    """A task started in the guest whose caller has not been answered."""

    id: int
    op: str
    future: asyncio.Future[Any]
    on_event: Optional[EventCallback] = None
    queue: Optional[asyncio.Queue[Optional[Event]]] = None
    next: Optional[Callable[[Turn], Awaitable[Turn]]] = None
    #: For a load: the script to keep (and reload after a trap) on success.
    script: Optional[Tuple[str, str]] = None
    #: For a reload after a trap: the script to drop on failure.
    reload: Optional[str] = None
    #: Set when the caller stopped the task: the error its caller got.
    stopped: Optional[MarionetteError] = None
    children: Set[int] = field(default_factory=set)


class TaskHandle:
    """A task under way: ``await handle`` for its result, ``async for`` its
    events (console lines, session events) until it ends.

    Cancelling the awaiting coroutine cancels the task in the guest.
    """

    def __init__(self, sandbox: AsyncSandbox, task: _Task, timeout: Optional[float]) -> None:
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


class AsyncSandbox:
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
    ) -> None:
        self._component = component
        self._limits = limits if limits is not None else Limits()
        self._engines = dict(engines or {})
        self._middlewares = dict(middlewares or {})
        self._tools = {t.name: t for t in tools}
        self._on_event = on_event
        self._owner = ThreadPoolExecutor(1, thread_name_prefix="marionette-owner")
        self._vm: Optional[Vm] = None
        self._scripts: Dict[str, str] = {}
        self._tasks: Dict[int, _Task] = {}
        #: Tasks the guest considers live (started, no `done` seen yet).
        self._live: Set[int] = set()
        self._ops: Dict[int, asyncio.Task[None]] = {}
        #: Tasks whose JavaScript must stop: ("cancel" | "deadline", reason).
        self._interrupts: Dict[int, Tuple[str, str]] = {}
        self._ids = itertools.count(1)
        self._jobs: Optional[asyncio.Queue[Job]] = None
        self._driver: Optional[asyncio.Task[None]] = None
        self._closed = False
        self._built = False
        #: Instances rebuilt after a trap.
        self.rebuilds = 0
        #: Host operations the guest asked for, and of those, released.
        self.requests = 0
        self.released = 0

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
        task.next = lambda t: _call(next, t)
        self._start(task, lambda g: g.run_middleware(task.id, name, middleware, turn, context or {}))
        result: Turn = await self._wait(task, timeout)
        return result

    @property
    def scripts(self) -> List[str]:
        """The scripts loaded, in order (reloaded after a trap)."""
        return list(self._scripts)

    # ------------------------------------------------------------ tasks

    def _new_task(self, op: str, on_event: Optional[EventCallback] = None, stream: bool = False) -> _Task:
        if self._closed:
            raise ClosedError(op)
        if len(self._tasks) >= self._limits.max_tasks:
            raise RejectedError(op, self._limits.max_tasks)
        loop = asyncio.get_running_loop()
        task = _Task(next(self._ids), op, loop.create_future(), on_event)
        if stream:
            task.queue = asyncio.Queue()
        self._tasks[task.id] = task
        return task

    def _start(self, task: _Task, call: Callable[[protocol.Guest], List[protocol.Effect]]) -> None:
        async def job() -> None:
            if task.id not in self._tasks:
                return  # stopped before it started: it never runs
            self._live.add(task.id)
            await self._enter(task.id, call)

        self._submit(job)

    async def _wait(self, task: _Task, timeout: Optional[float]) -> Any:
        try:
            if timeout is None:
                return await asyncio.shield(task.future)
            return await asyncio.wait_for(asyncio.shield(task.future), timeout)
        except asyncio.TimeoutError:
            if task.future.done():
                return task.future.result()
            error = TimeoutError(task.op, timeout or 0.0)
            self._stop(task, error, f"timed out after {round((timeout or 0) * 1000)}ms", "deadline")
            raise error from None
        except asyncio.CancelledError:
            if not task.future.done():
                self._stop(task, CanceledError(task.op, "the caller was cancelled"), "the caller was cancelled")
            raise

    def _stop(self, task: _Task, error: MarionetteError, reason: str, kind: str = "cancel") -> None:
        """The caller gives up on ``task``: it gets ``error``; the guest
        interrupts the task's JavaScript and cancels it."""
        if task.future.done():
            return
        task.stopped = error
        self._settle_error(task, error)
        self._interrupts[task.id] = (kind, reason)

        async def job() -> None:
            await self._cancel_in_guest(task.id, reason)

        self._submit(job)

    def _settle(self, task: _Task, value: Any) -> None:
        self._tasks.pop(task.id, None)
        if not task.future.done():
            task.future.set_result(value)
        self._close_events(task)

    def _settle_error(self, task: _Task, error: BaseException) -> None:
        self._tasks.pop(task.id, None)
        if not task.future.done():
            task.future.set_exception(error)
            # Retrieved here so an unawaited failure is not logged by asyncio.
            task.future.exception()
        self._close_events(task)

    @staticmethod
    def _close_events(task: _Task) -> None:
        if task.queue is not None:
            task.queue.put_nowait(None)

    # ------------------------------------------------------------ the driver

    def _submit(self, job: Job) -> None:
        if self._jobs is None:
            self._jobs = asyncio.Queue()
            self._driver = asyncio.get_running_loop().create_task(self._drive(), name="marionette-driver")
        self._jobs.put_nowait(job)

    async def _drive(self) -> None:
        assert self._jobs is not None
        while True:
            job = await self._jobs.get()
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug of this host: log it, keep serving
                log.exception("a job of the sandbox failed")

    async def _query(self, call: Callable[[protocol.Guest], T]) -> T:
        """Runs a call that starts no task (exports, list-tools) on the owner."""
        if self._closed:
            raise ClosedError("query")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        async def job() -> None:
            try:
                if self._vm is None:
                    await self._rebuild()
                if self._vm is None:
                    raise TrappedError("query", "the new instance trapped while its scripts were reloaded")
                result, _ = await self._in_owner(self._vm.enter, 0, self._limits.entry_deadline, call)
            except Trap as trap:
                self._lose_instance(trap)
                future.set_exception(TrappedError("query", trap.message, trap.limit))
            except BaseException as e:  # handed to the caller
                future.set_exception(e)
            else:
                future.set_result(result)

        self._submit(job)
        return await future

    async def _in_owner(self, f: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._owner, f, *args)

    async def _enter(self, task_id: int, call: Callable[[protocol.Guest], List[protocol.Effect]]) -> None:
        """One entry for ``task_id``, then what it produced. Runs in the driver."""
        try:
            if self._vm is None:
                await self._rebuild()
                if self._vm is None:
                    return  # lost again while reloading: its tasks failed with the trap
            effects, interrupted = await self._in_owner(self._vm.enter, task_id, self._limits.entry_deadline, call)
        except Trap as trap:
            log.warning("the guest trapped (%s); its instance is rebuilt", trap.message)
            self._lose_instance(trap)
            return
        except MarionetteError as e:  # the component could not be loaded
            task = self._tasks.get(task_id)
            if task is not None:
                self._settle_error(task, e)
            self._live.discard(task_id)
            return
        await self._apply(effects)
        if interrupted and self._vm is not None and not self._vm.guest.runs_sessions:
            # The first protocol returns no `done` for an interrupted task.
            await self._interrupted(task_id)

    async def _apply(self, effects: List[protocol.Effect]) -> None:
        over_cap: List[protocol.OverCap] = []
        for effect in effects:
            if isinstance(effect, protocol.Request):
                self._perform(effect)
            elif isinstance(effect, protocol.Release):
                op = self._ops.pop(effect.op, None)
                if op is not None:
                    self.released += 1
                    op.cancel()
            elif isinstance(effect, protocol.TaskEvent):
                self._deliver(effect.task, effect.event)
            elif isinstance(effect, protocol.Done):
                self._done(effect)
            elif isinstance(effect, protocol.OverCap):
                task = self._tasks.get(effect.task)
                if task is not None:
                    log.warning("%s: %s", task.op, effect.detail)
                    self._settle_error(task, LimitError(task.op, effect.limit, effect.detail))
                over_cap.append(effect)
        # After the batch: cancelling releases what the task had pending,
        # requests earlier in this batch included.
        for c in over_cap:
            await self._cancel_in_guest(c.task, c.detail)

    def _deliver(self, task_id: int, event: Event) -> None:
        task = self._tasks.get(task_id)
        for callback in (task.on_event if task else None, self._on_event):
            if callback is None:
                continue
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    asyncio.ensure_future(result)
            except Exception:
                log.exception("an event callback raised")
        if task is not None and task.queue is not None:
            task.queue.put_nowait(event)

    def _done(self, done: protocol.Done) -> None:
        self._live.discard(done.task)
        self._interrupts.pop(done.task, None)
        task = self._tasks.get(done.task)
        if task is None:
            return  # its caller was answered already (cancelled, timed out)
        if done.failure is None:
            if task.script is not None:
                name, source = task.script
                self._scripts.pop(name, None)
                self._scripts[name] = source
            self._settle(task, done.value)
            return
        error = self._failure(task, done.failure)
        if task.reload is not None:
            log.error("reloading %s failed; it is dropped from the sandbox: %s", task.reload, error)
            self._scripts.pop(task.reload, None)
        self._settle_error(task, error)

    def _failure(self, task: _Task, failure: protocol.Failure) -> MarionetteError:
        """A task's failure as its caller's exception: QuickJS out of memory
        is the memory limit, anything else the script's own error."""
        op = task.op
        if failure.kind == "script":
            assert failure.error is not None
            e = failure.error
            if e.get("name") == "InternalError" and "out of memory" in e.get("message", ""):
                return LimitError(
                    op, Limit.MEMORY, "the script's memory reached the limit (InternalError: out of memory)"
                )
            return protocol.script_error(op, e)
        if failure.kind == "cancelled":
            return CanceledError(op, failure.detail)
        if failure.kind == "deadline":
            log.warning("%s: cpu deadline reached; the script was interrupted", op)
            return LimitError(op, Limit.DEADLINE, failure.detail)
        if failure.kind == "over-cap":
            log.warning("%s: %s", op, failure.detail)
            return LimitError(op, failure.limit or Limit.OUTPUT, failure.detail)
        if failure.kind == "out-of-memory":
            return LimitError(op, Limit.MEMORY, failure.detail)
        return HostError(
            op, f"the guest failed the task in a way this host does not know: {failure.kind}: {failure.detail}"
        )

    async def _interrupted(self, task_id: int) -> None:
        """JavaScript of ``task_id`` was interrupted: by its caller, or by the
        CPU deadline. (Today's guest then returns no `done`: the host cancels.)"""
        task = self._tasks.get(task_id)
        asked = task_id in self._interrupts
        if asked:
            reason = "canceled by the caller"
        else:
            ms = round(self._limits.entry_deadline * 1000)
            reason = f"the script ran for more than {ms}ms without waiting for the host"
        if task is not None:
            if asked:
                self._settle_error(task, task.stopped or CanceledError(task.op, reason))
            else:
                log.warning("%s: cpu deadline reached; the script was interrupted", task.op)
                self._settle_error(task, LimitError(task.op, Limit.DEADLINE, reason))
        await self._cancel_in_guest(task_id, reason)

    async def _cancel_in_guest(self, task_id: int, reason: str) -> None:
        # The interrupt was for JavaScript that ran before; the unwinding
        # must run, under a fresh deadline.
        self._interrupts.pop(task_id, None)
        if task_id not in self._live or self._vm is None:
            return
        self._live.discard(task_id)
        try:
            effects, _ = await self._in_owner(
                self._vm.enter, task_id, self._limits.entry_deadline, lambda g: g.cancel(task_id, reason)
            )
        except Trap as trap:
            self._lose_instance(trap)
            return
        await self._apply(effects)

    # ------------------------------------------------------------ traps

    def _lose_instance(self, trap: Trap) -> None:
        """Everything in the instance is gone: its tasks fail, its ops stop."""
        self._vm = None
        for op in self._ops.values():
            op.cancel()
        self._ops.clear()
        self._live.clear()
        self._interrupts.clear()
        for task in list(self._tasks.values()):
            self._settle_error(task, TrappedError(task.op, trap.message, trap.limit))

    async def _rebuild(self) -> None:
        """A new instance: configured, with the scripts loaded again."""
        limits = self._limits
        engines = list(self._engines)
        middlewares = list(self._middlewares)
        tools = [
            ToolDefinition(t.name, t.description, t.parameters or {"type": "object"}) for t in self._tools.values()
        ]
        interrupts = self._interrupts

        def build() -> Vm:
            vm = Vm(Runtime.get(self._component), limits.memory, interrupts)
            vm.enter(
                0, limits.entry_deadline, lambda g: g.configure(protocol.vm_config(limits, engines, middlewares, tools))
            )
            return vm

        try:
            self._vm = await self._in_owner(build)
        except Trap as trap:
            raise HostError("instantiate", f"the new instance trapped: {trap.message}") from trap
        if not self._built:
            self._built = True
            return
        self.rebuilds += 1
        loop = asyncio.get_running_loop()
        for name, source in list(self._scripts.items()):
            task = _Task(next(self._ids), f"reload {name}", loop.create_future())
            task.reload = name
            self._tasks[task.id] = task
            self._live.add(task.id)
            await self._enter(task.id, _loader(task.id, name, source))
            task.future.add_done_callback(lambda f: f.exception())

    # ------------------------------------------------------------ host ops

    def _perform(self, request: protocol.Request) -> None:
        self.requests += 1

        async def run() -> None:
            try:
                outcome = await self._answer(request)
            except asyncio.CancelledError:
                return  # released: nobody waits for it
            except Exception as e:
                outcome = _error_outcome(e)
            if self._ops.pop(request.op, None) is None:
                return

            async def resume() -> None:
                await self._enter(request.task, lambda g: g.resume(request.op, outcome))

            self._submit(resume)

        self._ops[request.op] = asyncio.get_running_loop().create_task(run())

    async def _answer(self, request: protocol.Request) -> Any:
        what, p = request.what, request.payload
        if what == "sleep":
            await asyncio.sleep(min(p / 1000, MAX_SLEEP))
            return protocol.ok_json(None)
        if what == "next":
            task = self._tasks.get(request.task)
            if task is None or task.next is None:
                raise HostFailure("Error", "next(): no host middleware chain is waiting for this middleware")
            return protocol.ok_turn(await task.next(p))
        if what == "infer":
            engine = self._engines.get(p["engine"] or "")
            if engine is None:
                raise HostFailure("Error", f"the host provides no engine named {p['engine'] or '(default)'!r}")
            inference = Inference(
                p["engine"] or "",
                p["turn"],
                p["context"],
                p["tools"],
                p["tool_choice"],
                self._partials(request.op, request.task),
            )
            return protocol.ok_turn(await _call(engine, inference))
        if what == "call-tool":
            tool = self._tools.get(p["name"])
            if tool is None:
                raise HostFailure("Error", f"the host provides no tool named {p['name']!r}")
            return protocol.ok_json(await _call(tool.handler, p["arguments"]))
        if what == "middleware":
            middleware = self._middlewares.get(p["name"])
            if middleware is None:
                raise HostFailure("Error", f"the host provides no middleware named {p['name']!r}")
            return protocol.ok_turn(await _call(middleware, self._middleware_call(request, p)))
        if what == "run-session":
            raise HostFailure(
                "Error",
                "this host runs sessions only with a guest that runs the session loop itself; "
                "this guest asks the host to",
            )
        raise HostFailure("Error", f"this host does not provide {what}")

    def _partials(self, op: int, task_id: int) -> Callable[[str], None]:
        """What an engine's ``partial(delta)`` does: a ``notify`` of ``op``,
        in order, from any thread."""
        loop = asyncio.get_running_loop()
        generation = self.rebuilds
        streamed = [""]

        def send(delta: str) -> None:
            streamed[0] += delta
            event = {"type": "partial", "delta": delta, "completion": streamed[0]}

            async def notify() -> None:
                # Queued before the op's answer, so it reaches the guest
                # first; the guest ignores it for an op it released. An op
                # of an instance lost since means nothing to the new one.
                if self._vm is None or self.rebuilds != generation:
                    return
                await self._enter(task_id, lambda g: g.notify(op, [event]))

            # In order, before the op's answer: at once on the loop's thread
            # (an async engine), else through the loop (a sync engine's worker
            # thread, whose answer comes through the loop after this).
            try:
                here = asyncio.get_running_loop() is loop
            except RuntimeError:
                here = False
            if here:
                self._submit(notify)
            else:
                loop.call_soon_threadsafe(self._submit, notify)

        return send

    def _middleware_call(self, request: protocol.Request, p: Dict[str, Any]) -> MiddlewareCall:
        """A host middleware's view of its op: its ``next`` starts a
        ``middleware.next`` task of the guest while the op is pending."""
        loop = asyncio.get_running_loop()
        parent = self._tasks.get(request.task)

        async def next_turn(turn: Turn) -> Turn:
            task = self._new_task(f"middleware.next {p['name']}")
            if parent is not None:
                task.on_event = parent.on_event
            self._start(task, lambda g: g.middleware_next(task.id, request.op, turn))
            result: Turn = await self._wait(task, None)
            return result

        def next_blocking(turn: Turn) -> Turn:
            return asyncio.run_coroutine_threadsafe(next_turn(turn), loop).result()

        return MiddlewareCall(p["name"], p["turn"], p["options"], p["context"], next_turn, next_blocking)


def _loader(task: int, name: str, source: str) -> Callable[[protocol.Guest], List[protocol.Effect]]:
    """The entry that loads ``source`` as ``name`` for ``task``."""
    return lambda g: g.load(task, name, source)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Calls a user callable, sync (in a worker thread) or ``async``."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
        return await fn(*args)
    result = await asyncio.to_thread(fn, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _error_outcome(e: BaseException) -> Any:
    """A host callable's exception as the error the script sees."""
    if isinstance(e, HostFailure):
        return protocol.err(e.name, e.message)
    if isinstance(e, MarionetteError) and hasattr(e, "name") and isinstance(e.name, str):
        return protocol.err(e.name, getattr(e, "message", str(e)))
    log.info("a host callable raised %s: %s", type(e).__name__, e)
    return protocol.err(type(e).__name__, str(e))

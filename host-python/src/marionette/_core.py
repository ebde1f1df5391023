"""The machinery under ``AsyncSandbox``: the driver that enters the guest,
the tasks it started, the effects it returned, host operations, traps.

Every entry into the guest runs on the sandbox's owner thread (so the event
loop keeps running while JavaScript does, and a timeout can interrupt it),
one at a time, in the order a single driver task takes them from a queue.
Callers never enter the guest themselves: they queue a job and await a
future, so a caller that is cancelled or times out cannot leave an entry
half-processed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, TypeVar, Union

from . import _protocol as protocol
from ._cassette import Recorder, policy_json
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
    Determinism,
    EngineFn,
    Event,
    HostTool,
    Inference,
    Limits,
    MiddlewareCall,
    MiddlewareFn,
    ToolDefinition,
    Turn,
)
from ._vm import Runtime, Trap, Vm

#: What a script was loaded from: its source, or a module graph's
#: ``(path, source)`` pairs.
ScriptSource = Union[str, Tuple[Tuple[str, str], ...]]

log = logging.getLogger("marionette")

T = TypeVar("T")
EventCallback = Callable[[Event], Any]
Job = Callable[[], Awaitable[None]]

#: The longest sleep a script may ask for; a longer ``setTimeout`` waits this long.
MAX_SLEEP = 30 * 24 * 3600.0


@dataclass
class TaskState:
    """A task started in the guest whose caller has not been answered."""

    id: int
    op: str
    future: asyncio.Future[Any]
    on_event: Optional[EventCallback] = None
    queue: Optional[asyncio.Queue[Optional[Event]]] = None
    next: Optional[Callable[[Turn], Awaitable[Turn]]] = None
    #: For a load: the script to keep (and reload after a trap) on success,
    #: its source or, for a module graph, its modules.
    script: Optional[Tuple[str, ScriptSource]] = None
    #: For a reload after a trap: the script to drop on failure.
    reload: Optional[str] = None
    #: Set when the caller stopped the task: the error its caller got.
    stopped: Optional[MarionetteError] = None
    children: Set[int] = field(default_factory=set)


class Core:
    """The state of one sandbox and the loop that drives its guest."""

    def __init__(
        self,
        component: Union[str, os.PathLike[str], None],
        *,
        limits: Optional[Limits] = None,
        engines: Optional[Mapping[str, EngineFn]] = None,
        middlewares: Optional[Mapping[str, MiddlewareFn]] = None,
        tools: Sequence[HostTool] = (),
        on_event: Optional[EventCallback] = None,
        record: Optional[Recorder] = None,
    ) -> None:
        self._component = component
        self._limits = limits if limits is not None else Limits()
        self._recorder = record
        if record is not None:
            if not isinstance(record, Recorder):
                raise TypeError(f"record must be a marionette.Recorder, not {type(record).__name__}")
            # A recording is replayed with the same clock and randomness.
            if self._limits.determinism is None:
                self._limits = dataclasses.replace(self._limits, determinism=Determinism.fresh())
            record._start(policy_json(self._limits))
        self._engines = dict(engines or {})
        self._middlewares = dict(middlewares or {})
        self._tools = {t.name: t for t in tools}
        self._on_event = on_event
        self._owner = ThreadPoolExecutor(1, thread_name_prefix="marionette-owner")
        self._vm: Optional[Vm] = None
        self._scripts: Dict[str, ScriptSource] = {}
        self._tasks: Dict[int, TaskState] = {}
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

    # ------------------------------------------------------------ tasks

    def _new_task(self, op: str, on_event: Optional[EventCallback] = None, stream: bool = False) -> TaskState:
        if self._closed:
            raise ClosedError(op)
        if len(self._tasks) >= self._limits.max_tasks:
            raise RejectedError(op, self._limits.max_tasks)
        loop = asyncio.get_running_loop()
        task = TaskState(next(self._ids), op, loop.create_future(), on_event)
        if stream:
            task.queue = asyncio.Queue()
        self._tasks[task.id] = task
        return task

    def _start(self, task: TaskState, call: Callable[[protocol.Guest], List[protocol.Effect]]) -> None:
        async def job() -> None:
            if task.id not in self._tasks:
                return  # stopped before it started: it never runs
            self._live.add(task.id)
            await self._enter(task.id, call)

        self._submit(job)

    async def _wait(self, task: TaskState, timeout: Optional[float]) -> Any:
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

    def _stop(self, task: TaskState, error: MarionetteError, reason: str, kind: str = "cancel") -> None:
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

    def _settle(self, task: TaskState, value: Any) -> None:
        self._tasks.pop(task.id, None)
        if not task.future.done():
            task.future.set_result(value)
        self._close_events(task)

    def _settle_error(self, task: TaskState, error: BaseException) -> None:
        self._tasks.pop(task.id, None)
        if not task.future.done():
            task.future.set_exception(error)
            # Retrieved here so an unawaited failure is not logged by asyncio.
            task.future.exception()
        self._close_events(task)

    @staticmethod
    def _close_events(task: TaskState) -> None:
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
                result = await self._in_owner(self._vm.enter, 0, self._limits.entry_deadline, call)
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
            effects = await self._in_owner(self._vm.enter, task_id, self._limits.entry_deadline, call)
        except Trap as trap:
            log.warning("the guest trapped (%s); its instance is rebuilt", trap.message)
            self._lose_instance(trap)
            return
        except Exception as e:
            # The component could not be loaded, or the call's values do not
            # lower to WIT (a malformed turn): the guest did not run it.
            task = self._tasks.get(task_id)
            if task is not None:
                error = e if isinstance(e, MarionetteError) else HostError(task.op, f"{type(e).__name__}: {e}")
                self._settle_error(task, error)
            self._live.discard(task_id)
            return
        await self._apply(effects)

    async def _apply(self, effects: List[protocol.Effect]) -> None:
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
            # Its caller was answered already (cancelled, timed out); the
            # guest's word on how it ended is for the log only.
            if done.failure is not None:
                log.debug("task %d ended in the guest: %s: %s", done.task, done.failure.kind, done.failure.detail)
            return
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

    def _failure(self, task: TaskState, failure: protocol.Failure) -> MarionetteError:
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

    async def _cancel_in_guest(self, task_id: int, reason: str) -> None:
        # The interrupt was for JavaScript that ran before; the unwinding
        # must run, under a fresh deadline.
        self._interrupts.pop(task_id, None)
        if task_id not in self._live or self._vm is None:
            return
        self._live.discard(task_id)
        try:
            effects = await self._in_owner(
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
            vm = Vm(Runtime.get(self._component), limits.memory, interrupts, self._recorder)
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
            task = TaskState(next(self._ids), f"reload {name}", loop.create_future())
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
            return protocol.ok_turn(await call_user(engine, inference))
        if what == "call-tool":
            tool = self._tools.get(p["name"])
            if tool is None:
                raise HostFailure("Error", f"the host provides no tool named {p['name']!r}")
            return protocol.ok_json(await call_user(tool.handler, p["arguments"]))
        if what == "middleware":
            middleware = self._middlewares.get(p["name"])
            if middleware is None:
                raise HostFailure("Error", f"the host provides no middleware named {p['name']!r}")
            return protocol.ok_turn(await call_user(middleware, self._middleware_call(request, p)))
        if what == "fetch":
            # This host has no HTTP client under a network policy: refused,
            # as the policy of a host that allows nothing refuses it.
            raise HostFailure(
                "TypeError",
                "fetch is not available from this host (the Python package has no network policy; "
                "give scripts host tools for HTTP instead)",
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


def _loader(task: int, name: str, source: ScriptSource) -> Callable[[protocol.Guest], List[protocol.Effect]]:
    """The entry that loads ``source`` (one module, or a graph's modules) as ``name`` for ``task``."""
    if isinstance(source, str):
        text = source
        return lambda g: g.load(task, name, text)
    modules = source
    return lambda g: g.load_modules(task, name, modules)


async def call_user(fn: Callable[..., Any], *args: Any) -> Any:
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

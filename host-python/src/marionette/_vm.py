"""One instance of the component in a wasmtime store, and its host imports.

Everything here runs on the sandbox's owner thread (see ``_async``): the
store is never touched from two threads. The CPU deadline has two stops:
the soft one is the ``should-interrupt`` import, which QuickJS polls while
JavaScript runs (the script is stopped, the VM stays usable); the hard one
is epoch interruption at twice the deadline, for code that cannot be
interrupted (a trap: the instance is rebuilt).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, TypeVar, Union

import wasmtime
from wasmtime.component import Component, Linker

from . import _protocol as protocol
from ._errors import HostError, Limit
from ._schema import SchemaCache

if TYPE_CHECKING:
    from ._cassette import Recorder

log = logging.getLogger("marionette")
guest_log = logging.getLogger("marionette.guest")

T = TypeVar("T")

#: How often the epoch advances; the hard deadline is counted in these.
EPOCH_TICK = 0.01

#: Epoch ticks that stand for "no deadline" between entries (about 350 years).
NO_DEADLINE = 1 << 40

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def default_component() -> Path:
    """The component shipped inside the package, or ``$MARIONETTE_COMPONENT``."""
    env = os.environ.get("MARIONETTE_COMPONENT")
    if env:
        return Path(env)
    return Path(__file__).with_name("marionette_guest.wasm")


class Runtime:
    """The compiled component and its engine, shared by every sandbox of it."""

    _cache: Dict[str, Runtime] = {}
    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        config = wasmtime.Config()
        config.epoch_interruption = True
        self.engine = wasmtime.Engine(config)
        try:
            data = path.read_bytes()
            #: The SHA-256 of the component's bytes, as a cassette's header
            #: names the component that recorded it (the Rust host hashes the
            #: same file, which it embeds).
            self.sha256 = hashlib.sha256(data).hexdigest()
            self.component = Component(self.engine, data)
        except (OSError, wasmtime.WasmtimeError) as e:
            raise HostError("compile", f"cannot load the component {path}: {e}") from e
        self.linker = Linker(self.engine)
        self.linker.add_wasip2()
        with self.linker.root() as root:
            with root.add_instance(protocol.interface("host")) as host:
                for wit_name, attr in protocol.HOST_IMPORTS:
                    host.add_func(wit_name, _dispatch(attr))
        threading.Thread(target=self._tick, name="marionette-epoch", daemon=True).start()

    def _tick(self) -> None:
        # Advances the epoch for as long as the process lives: one shared
        # ticker per compiled component, cheap next to a running guest.
        while True:
            time.sleep(EPOCH_TICK)
            self.engine.increment_epoch()

    @classmethod
    def get(cls, component: Union[str, os.PathLike[str], None]) -> Runtime:
        """The runtime of ``component`` (a path), compiled once per process."""
        path = Path(component) if component is not None else default_component()
        if not path.is_file():
            raise HostError(
                "compile",
                f"no component at {path}: build it with `cargo build --release -p marionette` and "
                "`make python-component`, or set MARIONETTE_COMPONENT",
            )
        key = str(path.resolve())
        with cls._lock:
            runtime = cls._cache.get(key)
            if runtime is None:
                runtime = cls._cache[key] = Runtime(path)
            return runtime


@dataclass
class Entry:
    """The guest entry under way: whose, until when, whether it was stopped,
    and the host import that raised in it, if one did."""

    task: int = 0
    deadline: float = 0.0
    interrupted: bool = False
    failed_import: Optional[str] = None


class Trap(Exception):
    """The guest trapped: its instance is lost."""

    def __init__(self, message: str, limit: Optional[Limit]) -> None:
        super().__init__(message)
        self.message = message
        self.limit = limit


class Imports:
    """The host imports of one instance (``host`` interface of the WIT).

    An import must not raise: wasmtime turns the exception into a trap of
    the entry (the guest is left mid-entry), and the instance is lost. Each
    answers something safe instead; should one raise all the same (a bug),
    :meth:`Vm.enter` reports the trap and the sandbox rebuilds.
    """

    def __init__(self, interrupts: Dict[int, Tuple[str, str]]) -> None:
        self.entry = Entry()
        self.deadline = 0.0
        self._interrupts = interrupts
        self._schemas = SchemaCache()

    def log(self, level: str, message: str) -> None:
        guest_log.log(_LEVELS.get(level, logging.ERROR), "%s", message)

    def should_interrupt(self, task: int) -> Any:
        """``option<stop>`` for ``task``, whose JavaScript runs (0: the
        runtime's own code): the stop its caller asked for (a cancel, its
        timeout), else the entry's CPU deadline. The guest then fails the
        task itself."""
        entry = self.entry
        asked = self._interrupts.get(task)
        if asked is not None:
            entry.interrupted = True
            return protocol.stop(*asked)
        if time.monotonic() >= entry.deadline:
            entry.interrupted = True
            return protocol.stop(
                "deadline", f"the script ran for more than {round(self.deadline * 1000)}ms without waiting for the host"
            )
        return None

    def wants_session_events(self, task: int) -> bool:
        """Yes for every task: a task's session events go to its stream of
        events whether or not its caller reads them (and a recording keeps
        them all)."""
        return True

    def validate_arguments(self, schema: str, arguments: str) -> Optional[str]:
        try:
            return self._schemas.check(schema, arguments)
        except Exception as e:  # never through the guest
            return f"the arguments could not be checked: {e}"


#: The imports of the instance the current thread is in (an owner thread
#: enters one instance at a time), so one linker serves every instance.
_current = threading.local()


def _dispatch(attr: str) -> Callable[..., Any]:
    """A host function that calls ``attr`` of the entered instance's imports."""

    def call(_store: Any, *args: Any) -> Any:
        imports: Imports = _current.imports
        try:
            return getattr(imports, attr)(*args)
        except BaseException as e:
            # wasmtime traps the guest and raises `e` again from the export.
            imports.entry.failed_import = f"{attr.replace('_', '-')} raised {type(e).__name__}: {e}"
            raise

    return call


class Vm:
    """A store and an instance: created, entered and dropped on one thread."""

    def __init__(
        self,
        runtime: Runtime,
        memory: int,
        interrupts: Dict[int, Tuple[str, str]],
        recorder: Optional[Recorder] = None,
    ) -> None:
        self.imports = Imports(interrupts)
        self.store = wasmtime.Store(runtime.engine)
        if memory:
            self.store.set_limits(memory_size=memory)
        # Nothing granted: no arguments, environment, directories or stdio;
        # WASI must be set all the same, or the guest's first WASI call
        # aborts the process.
        self.store.set_wasi(wasmtime.WasiConfig())
        self.store.set_epoch_deadline(NO_DEADLINE)
        _current.imports = self.imports
        try:
            instance = runtime.linker.instantiate(self.store, runtime.component)
        except wasmtime.WasmtimeError as e:
            raise HostError("instantiate", f"the component cannot be instantiated: {e}") from e
        self.guest = protocol.Guest(self.store, instance)
        if recorder is not None:
            recorder._component = runtime.sha256
            self.guest.record(recorder, self._entered_trap)

    def _entered_trap(self, e: BaseException) -> bool:
        """Whether ``e``, raised by an export, is a trap of the guest (not
        a value that did not lower before it was entered)."""
        return isinstance(e, wasmtime.WasmtimeError) or self.imports.entry.failed_import is not None

    def enter(self, task: int, deadline: float, f: Callable[[protocol.Guest], T]) -> T:
        """Runs ``f`` for ``task`` under the CPU deadline (seconds).

        Raises:
            Trap: the guest trapped (a host import that raised included);
                this instance must not be used again.
        """
        entry = self.imports.entry = Entry(task, time.monotonic() + deadline)
        self.guest.task = task
        self.imports.deadline = deadline
        _current.imports = self.imports
        self.store.set_epoch_deadline(max(1, round(2 * deadline / EPOCH_TICK)))
        try:
            return f(self.guest)
        except wasmtime.WasmtimeError as e:
            raise classify(e, entry.interrupted, 2 * deadline) from e
        except Exception as e:
            if entry.failed_import is None:
                raise  # before the guest was entered: a value that does not lower
            raise Trap(f"the host import {entry.failed_import}; the instance was lost", None) from e
        finally:
            self.store.set_epoch_deadline(NO_DEADLINE)


def classify(e: Exception, interrupted: bool, hard: float) -> Trap:
    """What a trap means, from wasmtime's message (the component API reports
    traps as errors without a trap code)."""
    text = str(e)
    lower = text.lower()
    if "interrupt" in lower:
        return Trap(
            f"cpu deadline: the script could not be interrupted and was stopped after {round(hard * 1000)}ms",
            Limit.DEADLINE,
        )
    if "unreachable" in lower and interrupted:
        return Trap(
            "cpu deadline: promise jobs kept scheduling themselves past the deadline; the instance was rebuilt",
            Limit.DEADLINE,
        )
    if "stack overflow" in lower or "call stack exhausted" in lower:
        return Trap("stack exhausted: the script recursed too deeply", Limit.STACK)
    if "out of bounds memory access" in lower:
        return Trap("stack exhausted: the script recursed too deeply (out-of-bounds memory access)", Limit.STACK)
    if "fuel" in lower:
        return Trap("fuel exhausted", Limit.FUEL)
    return Trap(f"wasm trap: {text.strip().splitlines()[0] if text.strip() else type(e).__name__}", None)

"""marionette: sandboxed JavaScript for LLM applications, from Python.

A thin host over the marionette WebAssembly component (a QuickJS VM that
holds scripts' engines, middleware, tools and sessions), on PyPI's
``wasmtime``. :class:`Sandbox` blocks, :class:`AsyncSandbox` is asyncio;
both have the same methods::

    from marionette import Sandbox

    with Sandbox() as sandbox:
        sandbox.load("app.js", "export default (input) => input.a + input.b;")
        assert sandbox.run_main("app.js", {"a": 1, "b": 2}) == 3

Every error is a :class:`MarionetteError`; logging goes to the ``marionette``
logger (the guest's own diagnostics to ``marionette.guest``).
"""

from ._async import AsyncSandbox, TaskHandle
from ._cassette import (
    Cassette,
    CassetteEditedError,
    CassetteError,
    CassetteTooLargeError,
    CassetteTruncatedError,
    CassetteVersionError,
    ComponentMismatchError,
    DivergenceError,
    MalformedCassetteError,
    NotACassetteError,
    ReadLimits,
    Recorder,
    Replayed,
    replay,
)
from ._errors import (
    CanceledError,
    ClosedError,
    HostError,
    HostFailure,
    Limit,
    LimitError,
    MarionetteError,
    RejectedError,
    ScriptError,
    TimeoutError,
    TrappedError,
)
from ._sync import Sandbox
from ._types import (
    ConsoleLine,
    Determinism,
    EngineFn,
    Event,
    ExportInfo,
    HostTool,
    Inference,
    Json,
    Limits,
    MiddlewareCall,
    MiddlewareFn,
    NextFn,
    SessionEvent,
    ToolDefinition,
    Turn,
)

__all__ = [
    "AsyncSandbox",
    "CanceledError",
    "Cassette",
    "CassetteEditedError",
    "CassetteError",
    "CassetteTooLargeError",
    "CassetteTruncatedError",
    "CassetteVersionError",
    "ClosedError",
    "ComponentMismatchError",
    "ConsoleLine",
    "Determinism",
    "DivergenceError",
    "EngineFn",
    "Event",
    "ExportInfo",
    "HostError",
    "HostFailure",
    "HostTool",
    "Inference",
    "Json",
    "Limit",
    "LimitError",
    "Limits",
    "MalformedCassetteError",
    "MarionetteError",
    "MiddlewareCall",
    "MiddlewareFn",
    "NextFn",
    "NotACassetteError",
    "ReadLimits",
    "Recorder",
    "RejectedError",
    "Replayed",
    "Sandbox",
    "ScriptError",
    "SessionEvent",
    "TaskHandle",
    "TimeoutError",
    "ToolDefinition",
    "TrappedError",
    "Turn",
    "replay",
]

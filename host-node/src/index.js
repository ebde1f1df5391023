// marionette for Node: sandboxed JavaScript for LLM applications. The
// marionette component (QuickJS compiled to WebAssembly) runs scripts; this
// package is its I/O: timers, host engines, middleware and tools, limits.

export { Sandbox, DEFAULT_POLICY } from "./sandbox.js";
export { Runtime } from "./runtime.js";
export { Task } from "./task.js";
export { execute } from "./execute.js";
export { Recorder, Cassette, CassetteError, DivergenceError, replay, DEFAULT_READ_LIMITS } from "./cassette.js";
export {
  MarionetteError,
  ClosedError,
  CanceledError,
  TimeoutError,
  TrappedError,
  ScriptError,
  LimitError,
  ReentrantError,
  HostError,
} from "./errors.js";

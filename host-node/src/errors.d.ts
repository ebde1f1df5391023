/** Which budget a {@link LimitError} (or a {@link TrappedError}) names. */
export type Limit = "deadline" | "memory" | "stack" | "output" | "operations";

/** A JavaScript error as the script threw it, with where it was thrown. */
export interface ScriptErrorInfo {
  /** The error's `name` (`TypeError`, `SyntaxError`, ...). */
  name: string;
  message: string;
  stack?: string;
  /** The script file the error points at. */
  file?: string;
  /** 1-based. */
  line?: number;
  /** 1-based. */
  column?: number;
}

/** The root of every error this package throws; `op` names what failed. */
export class MarionetteError extends Error {
  /** The operation that failed: `"runMain app.js"`, `"load app.js"`, ... */
  readonly op: string;
}

/** The sandbox was closed: it no longer accepts work. */
export class ClosedError extends MarionetteError {
  readonly name: "ClosedError";
}

/** The caller cancelled (an `AbortSignal`), or the work was cancelled on its behalf. */
export class CanceledError extends MarionetteError {
  readonly name: "CanceledError";
  /** Why, when a reason was given. */
  readonly reason?: string;
}

/** The caller's wait (`timeoutMs`) ran out. */
export class TimeoutError extends MarionetteError {
  readonly name: "TimeoutError";
  readonly afterMs: number;
}

/**
 * The guest trapped. The instance was rebuilt with its scripts reloaded;
 * only the work in flight failed.
 */
export class TrappedError extends MarionetteError {
  readonly name: "TrappedError";
  /** What happened, in words. */
  readonly detail: string;
  /** The limit that caused the trap, when one did. */
  readonly limit?: Limit;
}

/** The script threw (or rejected) with a JavaScript error. */
export class ScriptError extends MarionetteError {
  readonly name: "ScriptError";
  /** The JavaScript error, with its location. */
  readonly script: ScriptErrorInfo;
}

/** A budget of the policy was exhausted. */
export class LimitError extends MarionetteError {
  readonly name: "LimitError";
  readonly limit: Limit;
  /** What happened, in words. */
  readonly detail: string;
}

/** A call into the guest while the guest was running (from `onLog`): refused. */
export class ReentrantError extends MarionetteError {
  readonly name: "ReentrantError";
}

/** The host failed for a reason of its own (bad input, instantiation, protocol). */
export class HostError extends MarionetteError {
  readonly name: "HostError";
}

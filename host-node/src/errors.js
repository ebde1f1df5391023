// The errors of the public API: one class per kind of failure, mirroring the
// Rust host's `Error` (host/src/error.rs), each with a `name` to match on and
// the `op` that failed ("runMain app.js", "load app.js", ...).

/** The root of every error this package throws. */
export class MarionetteError extends Error {
  constructor(op, message, options) {
    super(`${op}: ${message}`, options);
    this.op = op;
  }
  get name() {
    return this.constructor.name;
  }
}

/** The sandbox was closed: it no longer accepts work. */
export class ClosedError extends MarionetteError {
  constructor(op) {
    super(op, "closed: the sandbox no longer accepts work");
  }
}

/** The caller cancelled (an `AbortSignal`), or the work was cancelled on its behalf. */
export class CanceledError extends MarionetteError {
  constructor(op, reason) {
    super(op, reason === undefined ? "canceled" : `canceled: ${reason}`);
    this.reason = reason;
  }
}

/** The caller's wait (`timeoutMs`) ran out. */
export class TimeoutError extends MarionetteError {
  constructor(op, afterMs) {
    super(op, `timed out after ${afterMs}ms`);
    this.afterMs = afterMs;
  }
}

/**
 * The guest trapped (stack exhausted, memory, a guest panic). The instance
 * was rebuilt with its scripts reloaded; only the work in flight failed.
 */
export class TrappedError extends MarionetteError {
  constructor(op, message, limit) {
    super(op, `the guest trapped: ${message}`);
    this.detail = message;
    this.limit = limit;
  }
}

/** The script threw (or rejected) with a JavaScript error. */
export class ScriptError extends MarionetteError {
  constructor(op, script) {
    super(op, describeScriptError(script));
    this.script = script;
  }
}

/** A budget of the policy was exhausted. */
export class LimitError extends MarionetteError {
  constructor(op, limit, detail) {
    super(op, `limit exceeded: ${limit}: ${detail}`);
    this.limit = limit;
    this.detail = detail;
  }
}

/**
 * A call into the guest was made while the guest was running (from a
 * callback the sandbox calls synchronously, such as `onLog`): refused, as
 * entering a component instance that is on the stack is impossible.
 */
export class ReentrantError extends MarionetteError {
  constructor(op) {
    super(op, "re-entrant call: the guest is running; call again after it returns");
  }
}

/**
 * The host failed for a reason of its own: bad input from the caller, an
 * instantiation failure, a guest that broke the protocol.
 */
export class HostError extends MarionetteError {
  constructor(op, message, options) {
    super(op, message, options);
  }
}

/** `FILE:LINE:COLUMN: Name: message`, or `Name: message` without a location. */
export function describeScriptError(e) {
  let where = "";
  if (e.file !== undefined) {
    where = e.file;
    if (e.line !== undefined) {
      where += `:${e.line}`;
      if (e.column !== undefined) where += `:${e.column}`;
    }
    where += ": ";
  }
  return `${where}${e.name}: ${e.message}`;
}

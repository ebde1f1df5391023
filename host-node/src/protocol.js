// The effect protocol, in one place: what the guest's WIT exports take and
// return as jco represents them (records as camelCase objects, variants as
// `{tag, val}`, u64 as BigInt, results of exports thrown as ComponentError),
// turned into plain JavaScript for the sandbox, and back.
//
// The protocol is docs/protocol.md's: sessions run in the guest and reach
// the host as `infer`, `middleware`, `call-tool` and `sleep` ops; every task
// ends with exactly one typed `done`.
//
// Everything the guest returns is untrusted: decoding never throws on a
// strange value without saying which field was wrong.

import { HostError } from "./errors.js";

/** The version of the effect protocol this package speaks (docs/protocol.md). */
export const PROTOCOL = 2;

/** The WIT interfaces the component exports, by short name. */
const INTERFACES = ["vm", "script", "inference", "middleware", "tools", "hooks", "tasks"];

/** Block kinds: WIT enum case <-> the scripts' (and the Rust model's) name. */
const KIND_FROM_WIT = {
  user: "user",
  "llm-text": "llm_text",
  "tool-call": "tool_call",
  "tool-use": "tool_use",
  system: "system",
  reasoning: "reasoning",
  other: "other",
};
const KIND_TO_WIT = Object.fromEntries(Object.entries(KIND_FROM_WIT).map(([w, k]) => [k, w]));

/**
 * The guest's exports, called with plain values: task and op ids as
 * numbers, JSON values as values, turns as objects. Each task-starting call
 * returns the effects of its entry, decoded (see {@link decodeEffect}).
 */
export class Guest {
  #exports;

  /** @param exports what jco's `instantiate` returned */
  constructor(exports) {
    this.#exports = {};
    for (const name of INTERFACES) {
      const iface = exports[name] ?? exports[`marionette:runtime/${name}@0.1.0`];
      if (iface === undefined) throw new HostError("instantiate", `the component exports no interface ${name}`);
      this.#exports[name] = iface;
    }
    // A component of the protocol's first version (no `middleware.next`)
    // would fail in stranger ways later: refuse it here.
    if (typeof this.#exports.middleware.next !== "function") {
      throw new HostError(
        "instantiate",
        "the component does not speak the effect protocol of docs/protocol.md (it exports no middleware.next)",
      );
    }
  }

  configure(config) {
    this.#exports.vm.configure({
      memoryLimit: BigInt(config.memoryLimit),
      gcThreshold: BigInt(config.gcThreshold ?? 0),
      taskCaps: {
        consoleLines: config.consoleLines,
        consoleBytes: BigInt(config.consoleBytes),
        pendingOps: config.pendingOps,
      },
      hostEngines: config.engines,
      hostMiddlewares: config.middlewares,
      hostTools: config.tools.map(toolDefinitionToWit),
      // The host's clocks and randomness (a deterministic run would give a
      // seed and a start time: docs/cassette.md).
      // A deterministic run's seed and start (docs/cassette.md), or the host's clocks and randomness.
      determinism:
        config.determinism == null
          ? undefined
          : { seed: BigInt(config.determinism.seed), startMs: BigInt(config.determinism.startMs) },
    });
  }

  load(task, name, source) {
    return effects(this.#exports.script.load(BigInt(task), name, source));
  }

  /** `modules`: `[{path, source}]`. */
  loadModules(task, entry, modules) {
    return effects(this.#exports.script.loadModules(BigInt(task), entry, modules));
  }

  exports(name) {
    return unwrap(() => this.#exports.script.exports(name)).map((e) => ({
      name: e.name,
      kind: e.kind,
      tools: e.tools.map(toolDefinitionFromWit),
    }));
  }

  runMain(task, name, input) {
    return effects(this.#exports.script.runMain(BigInt(task), name, JSON.stringify(input)));
  }

  call(task, name, fn, args) {
    return effects(this.#exports.script.call(BigInt(task), name, fn, JSON.stringify(args)));
  }

  infer(task, target, turn, context) {
    return effects(
      this.#exports.inference.infer(BigInt(task), targetToWit(target), lowerTurn(turn), JSON.stringify(context)),
    );
  }

  runMiddleware(task, target, turn, context) {
    return effects(
      this.#exports.middleware.run(BigInt(task), targetToWit(target), lowerTurn(turn), JSON.stringify(context)),
    );
  }

  /** What the script heap holds: `{bytes, objects}` (see `Sandbox.heapUsage`). */
  measureHeap() {
    const h = this.#exports.vm.measureHeap();
    return { bytes: Number(h.bytes), objects: Number(h.objects) };
  }

  listTools(target) {
    return unwrap(() => this.#exports.tools.listTools(targetToWit(target))).map(toolDefinitionFromWit);
  }

  callTool(task, target, call, context) {
    return effects(
      this.#exports.tools.call(
        BigInt(task),
        targetToWit(target),
        { id: call.id, name: call.name, arguments: JSON.stringify(call.arguments ?? {}) },
        JSON.stringify(context),
      ),
    );
  }

  /** The `next(turn)` of the host middleware awaited as op `op`, as task `task`. */
  middlewareNext(task, op, turn) {
    return effects(this.#exports.middleware.next(BigInt(task), BigInt(op), lowerTurn(turn)));
  }

  callHook(task, target, hook, payload) {
    return effects(this.#exports.hooks.call(BigInt(task), targetToWit(target), hook, JSON.stringify(payload)));
  }

  /** Settles op `op` with `outcome` (see {@link ok}, {@link okTurn}, {@link err}). */
  resume(op, outcome) {
    return effects(this.#exports.tasks.resume(BigInt(op), outcome));
  }

  /** Delivers session events (JSON values) to the script awaiting `op`. */
  notify(op, events) {
    return effects(
      this.#exports.tasks.notify(
        BigInt(op),
        events.map((e) => JSON.stringify(e)),
      ),
    );
  }

  cancel(task, reason) {
    return effects(this.#exports.tasks.cancel(BigInt(task), reason));
  }
}

/**
 * A turn from the host's JavaScript as an argument of an export: a malformed
 * one is a HostError, thrown before the guest is entered (not a trap).
 */
function lowerTurn(turn) {
  try {
    return turnToWit(turn);
  } catch (e) {
    throw new HostError("lower a turn", e.message, { cause: e });
  }
}

/** A target: `{script, name}` for an export, or `{handle}`. */
function targetToWit(target) {
  if (target.handle !== undefined) return { tag: "handle", val: BigInt(target.handle) };
  return { tag: "export", val: { script: target.script, name: target.name } };
}

/** Calls an export returning `result<T, script-error>`: T, or a thrown script error. */
function unwrap(f) {
  try {
    return f();
  } catch (e) {
    if (e !== null && typeof e === "object" && "payload" in e && isScriptError(e.payload)) {
      throw new GuestScriptError(scriptErrorFromWit(e.payload));
    }
    throw e;
  }
}

function isScriptError(v) {
  return v !== null && typeof v === "object" && typeof v.name === "string" && typeof v.message === "string";
}

/** A script error an export returned (not a trap): the sandbox names its op. */
export class GuestScriptError extends Error {
  constructor(script) {
    super(script.message);
    this.script = script;
  }
}

function effects(list) {
  return list.map(decodeEffect);
}

/**
 * One effect, as plain data:
 * - `{type: "request", op, task, what}` with `what` one of
 *   `{op: "sleep", ms}`, `{op: "next", turn}`,
 *   `{op: "infer", engine, turn, context, tools, toolChoice}`,
 *   `{op: "call-tool", call, context}`,
 *   `{op: "middleware", name, options, turn, context}`,
 *   `{op: "fetch", method, url}` (which this host refuses);
 * - `{type: "release", op}`;
 * - `{type: "event", task, event}` with `event` `{type: "console", level,
 *   message}` or `{type: "session", event}`;
 * - `{type: "done", task, outcome}` with `outcome` one of `{ok: value}`,
 *   `{script: ScriptErrorInfo}`, `{cancelled: reason}`, `{deadline: detail}`,
 *   `{overCap: {cap, detail}}`, `{outOfMemory: detail}`.
 *
 * A request whose payload does not decode becomes `{op: "malformed", why}`:
 * the host answers it with an error instead of failing everything.
 */
export function decodeEffect(effect) {
  const { tag, val } = effect;
  switch (tag) {
    case "request":
      return { type: "request", op: Number(val.op), task: Number(val.task), what: decodeOp(val.what) };
    case "release":
      return { type: "release", op: Number(val) };
    case "event":
      return { type: "event", task: Number(val.task), event: decodeEvent(val.event) };
    case "done":
      return { type: "done", task: Number(val.task), outcome: decodeOutcome(val.outcome) };
    default:
      throw new HostError("effect", `the guest returned an unknown effect ${JSON.stringify(tag)}`);
  }
}

function decodeOp(what) {
  try {
    switch (what.tag) {
      case "sleep":
        return { op: "sleep", ms: Number(what.val) };
      case "next":
        return { op: "next", turn: turnFromWit(what.val) };
      case "infer":
        return {
          op: "infer",
          engine: what.val.engine ?? null,
          turn: turnFromWit(what.val.input),
          context: json(what.val.context, "the inference context"),
          tools: (what.val.tools ?? []).map(toolDefinitionFromWit),
          toolChoice: what.val.toolChoice ?? "auto",
        };
      case "call-tool": {
        const call = what.val.call;
        return {
          op: "call-tool",
          call: { id: call.id, name: call.name, arguments: json(call.arguments, "the tool's arguments") },
          context: json(what.val.context, "the tool's context"),
        };
      }
      case "middleware":
        return {
          op: "middleware",
          name: what.val.name,
          options: json(what.val.options, "the middleware's options"),
          turn: turnFromWit(what.val.input),
          context: json(what.val.context, "the middleware's context"),
        };
      case "fetch":
        return { op: "fetch", method: what.val.method, url: what.val.url };
      default:
        return { op: "malformed", why: `an unknown host operation ${JSON.stringify(what.tag)}` };
    }
  } catch (e) {
    return { op: "malformed", why: `${what.tag}: ${e.message}` };
  }
}

function decodeEvent(event) {
  if (event.tag === "console") return { type: "console", level: event.val.level, message: event.val.message };
  if (event.tag === "session") {
    try {
      return { type: "session", event: JSON.parse(event.val) };
    } catch {
      return { type: "unknown", tag: "session (not JSON)" };
    }
  }
  return { type: "unknown", tag: event.tag };
}

function decodeOutcome(outcome) {
  if (outcome.tag === "ok") return { ok: valueFromWit(outcome.val) };
  const f = outcome.val;
  switch (f.tag) {
    case "script":
      return { script: scriptErrorFromWit(f.val) };
    case "cancelled":
      return { cancelled: f.val };
    case "deadline":
      return { deadline: f.val };
    case "over-cap":
      return { overCap: { cap: f.val.cap, detail: f.val.detail } };
    case "out-of-memory":
      return { outOfMemory: f.val };
    default:
      return { script: { name: "Error", message: `the task failed in a way this host does not know (${f.tag})` } };
  }
}

/** A WIT `value`: `{kind: "json", value}` or `{kind: "turn", value}`. */
function valueFromWit(v) {
  if (v.tag === "turn") return { kind: "turn", value: turnFromWit(v.val), bytes: 0 };
  return { kind: "json", value: JSON.parse(v.val), bytes: v.val.length };
}

function json(text, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${what} is not valid JSON: ${e.message}`);
  }
}

function object(text, what) {
  const v = json(text, what);
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error(`${what} must be a JSON object`);
  return v;
}

export function scriptErrorFromWit(e) {
  const out = { name: e.name, message: e.message };
  if (e.stack != null) out.stack = e.stack;
  if (e.file != null) out.file = e.file;
  if (e.line != null) out.line = e.line;
  if (e.column != null) out.column = e.column;
  return out;
}

/** A turn as scripts see it (payloads and maps parsed), from WIT. */
export function turnFromWit(t) {
  return {
    id: t.id,
    blocks: t.blocks.map((b, i) => {
      const block = {
        id: b.id,
        kind: KIND_FROM_WIT[b.kind] ?? "other",
        payload: object(b.payload, `turn.blocks[${i}].payload`),
        metadata: object(b.metadata, `turn.blocks[${i}].metadata`),
      };
      if (b.role != null) block.role = b.role;
      return block;
    }),
    metadata: object(t.metadata, "turn.metadata"),
    data: object(t.data, "turn.data"),
  };
}

/**
 * A turn from the host's JavaScript (an engine's answer), to WIT. Missing
 * maps are empty; a malformed turn throws a TypeError naming the field.
 */
export function turnToWit(t) {
  if (t === null || typeof t !== "object" || !Array.isArray(t.blocks)) {
    throw new TypeError("a turn must be an object with a blocks array");
  }
  return {
    id: String(t.id ?? ""),
    blocks: t.blocks.map((b, i) => {
      const kind = KIND_TO_WIT[b?.kind];
      if (kind === undefined)
        throw new TypeError(`turn.blocks[${i}].kind: unknown block kind ${JSON.stringify(b?.kind)}`);
      return {
        id: String(b.id ?? `block-${i}`),
        kind,
        role: b.role == null ? undefined : String(b.role),
        payload: JSON.stringify(b.payload ?? {}),
        metadata: JSON.stringify(b.metadata ?? {}),
      };
    }),
    metadata: JSON.stringify(t.metadata ?? {}),
    data: JSON.stringify(t.data ?? {}),
  };
}

function toolDefinitionToWit(t) {
  return { name: t.name, description: t.description ?? "", parameters: JSON.stringify(t.parameters ?? {}) };
}

function toolDefinitionFromWit(t) {
  return { name: t.name, description: t.description, parameters: JSON.parse(t.parameters) };
}

/** The outcome `ok(json(value))`. */
export function ok(value) {
  return { tag: "ok", val: { tag: "json", val: JSON.stringify(value === undefined ? null : value) } };
}

/** The outcome `ok(turn(turn))`; throws a TypeError for a malformed turn. */
export function okTurn(turn) {
  return { tag: "ok", val: { tag: "turn", val: turnToWit(turn) } };
}

/** The outcome `err(script-error)`. */
export function err(name, message) {
  return { tag: "err", val: { name, message } };
}

/** The outcome `err(script-error)` keeping a script error's location. */
export function errScript(e) {
  return {
    tag: "err",
    val: { name: e.name, message: e.message, stack: e.stack, file: e.file, line: e.line, column: e.column },
  };
}

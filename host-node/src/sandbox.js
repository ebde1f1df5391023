// One instance of the marionette component and the loop that drives it.
//
// The guest is sans-IO: every entry runs JavaScript until it has nothing
// left to do, then returns effects (see protocol.js). This class is the
// event loop that turns them into host work (timers, engines, tools, the
// rest of a middleware chain), events for the task's listeners, and answers
// to the callers waiting for their tasks.
//
// jco runs the guest on the JavaScript thread: an entry is a synchronous
// call, so no two entries overlap and nothing of the host runs while one is
// in progress. A running script is stopped by the guest's `should-interrupt`
// import, which answers "stop" once a deadline has passed: the entry's CPU
// deadline, the task's CPU budget, or the task's `timeoutMs`. An
// `AbortSignal` takes effect between entries: the thread is busy during one.
//
// The guest fails a task whose JavaScript was stopped, or that ran into a
// cap, itself: every task's outcome is its one `done` (docs/protocol.md).

import { randomUUID } from "node:crypto";
import {
  CanceledError,
  ClosedError,
  HostError,
  LimitError,
  ReentrantError,
  ScriptError,
  TimeoutError,
  TrappedError,
} from "./errors.js";
import { Guest, GuestScriptError, PROTOCOL, err, errScript, ok, okTurn } from "./protocol.js";
import { Recorder, freshDeterminism, policyJson, recordingExports } from "./cassette.js";
import { Runtime } from "./runtime.js";
import { SchemaCache } from "./schema.js";
import { Task } from "./task.js";

/** The longest sleep a script may ask for; a longer `setTimeout` waits this long. */
const MAX_SLEEP_MS = 2 ** 31 - 1;

/** Bytes of linear memory kept free of QuickJS's heap for the rest of the guest. */
const QUICKJS_RESERVE = 8 << 20;

/** The default policy: the Rust host's (`Policy::default`). */
export const DEFAULT_POLICY = Object.freeze({
  memoryLimit: 256 << 20,
  entryDeadlineMs: 5_000,
  runDeadlineMs: 60_000,
  maxConsoleLines: 10_000,
  maxConsoleBytes: 1 << 20,
  maxPendingOps: 1_000,
  maxResultBytes: 16 << 20,
});

/** The sandbox: load scripts, run them, call what they export. */
export class Sandbox {
  #runtime;
  #policy;
  #services;
  #onConsole;
  #onLog;
  #schemas = new SchemaCache();
  #recorder;

  /** The live instance: `{guest, memory}`, or null after a trap until the next entry. */
  #vm = null;
  /** Bumped by every trap: answers of host operations for an older instance are dropped. */
  #generation = 0;
  /** The scripts loaded, reloaded after a trap. */
  #scripts = [];
  #tasks = new Map();
  #ops = new Map();
  #nextTask = 1;
  /** The entry in progress: `{task, started, deadline, stop}`. */
  #entry = null;
  #closed = false;
  /** Entries and effect batches in progress: a callback run meanwhile must not start another. */
  #busy = 0;

  /** Use {@link Sandbox.create}. */
  constructor(runtime, options = {}) {
    this.#runtime = runtime;
    this.#policy = { ...DEFAULT_POLICY, ...options.policy };
    this.#recorder = options.record;
    if (this.#recorder !== undefined) {
      if (!(this.#recorder instanceof Recorder)) throw new TypeError("options.record must be a Recorder");
      if (runtime.sha256 === undefined) {
        throw new HostError(
          "record",
          "the component's SHA-256 is unknown (guest/component.sha256): run `make node-guest`",
        );
      }
      // A recording is replayed with the same clock and randomness.
      this.#policy.determinism ??= freshDeterminism();
      this.#recorder.component = runtime.sha256;
      this.#recorder.start(policyJson(this.#policy));
    }
    this.#services = services(options);
    this.#onConsole = options.onConsole;
    this.#onLog = options.onLog;
  }

  /** A sandbox on the package's component (compiled once per process), or `options.runtime`. */
  static async create(options = {}) {
    const runtime = options.runtime ?? (await Runtime.shared());
    const sandbox = new Sandbox(runtime, options);
    sandbox.#ensureVm();
    return sandbox;
  }

  /** Compiles `source` as the ES module `name` and evaluates it (top-level await included). */
  load(name, source, options = {}) {
    return this.#start(`load ${name}`, options, (g, id) => g.load(id, name, source), {
      type: "load",
      name,
      source,
    });
  }

  /**
   * Loads a script of several modules: `modules` maps each path (`main.js`,
   * `lib/util.js`, `data/d.json`; a Map or an object) to its source, and
   * `entry` names the module that is the script. Relative imports resolve
   * among `modules` only (docs/protocol.md, "Module graphs").
   */
  loadModules(entry, modules, options = {}) {
    const pairs = modules instanceof Map ? [...modules] : Object.entries(modules ?? {});
    const list = [];
    for (const [path, source] of pairs) {
      if (typeof path !== "string" || typeof source !== "string") {
        throw new TypeError(`loadModules: module ${JSON.stringify(path)} must map a path to its source text`);
      }
      list.push({ path, source });
    }
    return this.#start(`load ${entry}`, options, (g, id) => g.loadModules(id, entry, list), {
      type: "load",
      name: entry,
      modules: list,
    });
  }

  /** The exports of a loaded script. */
  async exports(name) {
    return this.#query(`exports ${name}`, (g) => g.exports(name));
  }

  /** Runs the script's default export `main(input, ctx)`; the result is what it returned. */
  runMain(name, input = null, options = {}) {
    return this.#start(`runMain ${name}`, options, (g, id) => g.runMain(id, name, input));
  }

  /** Calls the exported function `fn` with `args`. */
  call(name, fn, args = [], options = {}) {
    return this.#start(`call ${name}#${fn}`, options, (g, id) => g.call(id, name, fn, args));
  }

  /** The JavaScript tools of the exported tool registry `registry`. */
  async listTools(name, registry) {
    return this.#query(`listTools ${name}#${registry}`, (g) => g.listTools({ script: name, name: registry }));
  }

  /** Runs a tool of the exported registry `registry`: `call` is `{id?, name, arguments}`. */
  callTool(name, registry, call, options = {}) {
    const c = { id: call.id ?? `call-${this.#nextTask}`, name: call.name, arguments: call.arguments ?? {} };
    return this.#start(`callTool ${name}#${registry}.${call.name}`, options, (g, id) =>
      g.callTool(id, { script: name, name: registry }, c, options.context ?? {}),
    );
  }

  /** Runs the exported engine `engine` on `turn`; the result is the new turn. */
  infer(name, engine, turn, options = {}) {
    return this.#start(`infer ${name}#${engine}`, options, (g, id) =>
      g.infer(id, { script: name, name: engine }, turn, options.context ?? {}),
    );
  }

  /** Runs the exported middleware `middleware` on `turn`, with `next` as the rest of the chain. */
  runMiddleware(name, middleware, turn, next, options = {}) {
    return this.#start(`runMiddleware ${name}#${middleware}`, { ...options, next }, (g, id) =>
      g.runMiddleware(id, { script: name, name: middleware }, turn, options.context ?? {}),
    );
  }

  /** Calls `hook` of the exported hooks object `hooks` with `payload`. */
  callHook(name, hooks, hook, payload, options = {}) {
    return this.#start(`callHook ${name}#${hooks}.${hook}`, options, (g, id) =>
      g.callHook(id, { script: name, name: hooks }, hook, payload),
    );
  }

  /**
   * The version of the effect protocol the sandbox speaks (docs/protocol.md):
   * a script's sessions run in the component and reach the host as
   * operations. A component that speaks no other is checked for when an
   * instance is built.
   */
  get protocol() {
    return PROTOCOL;
  }

  /** What the sandbox holds now. */
  stats() {
    let tasks = 0;
    for (const t of this.#tasks.values()) if (t.kind.type !== "reload") tasks += 1;
    return {
      memory: this.#vm?.memory?.buffer.byteLength ?? 0,
      tasks,
      pendingOps: this.#ops.size,
      scripts: this.#scripts.length,
      rebuilds: this.#generation,
    };
  }

  /**
   * What the script heap holds, measured in the guest (an entry that runs
   * no JavaScript and walks the heap: for monitoring and tests). Unlike
   * `stats().memory` it goes down as well as up; garbage in reference
   * cycles counts until QuickJS's cycle collector frees it.
   */
  async heapUsage() {
    return this.#query("heapUsage", (g) => g.measureHeap());
  }

  /** Stops: tasks in flight fail with a `ClosedError`, timers stop, the instance goes. */
  async close() {
    if (this.#closed) return;
    this.#closed = true;
    for (const op of this.#ops.values()) op.controller.abort();
    this.#ops.clear();
    for (const id of [...this.#tasks.keys()]) {
      const t = this.#tasks.get(id);
      this.#finish(id, new ClosedError(t.op));
    }
    this.#vm = null;
  }

  async [Symbol.asyncDispose]() {
    await this.close();
  }

  // ------------------------------------------------------------ tasks

  #start(op, options, entry, kind = { type: "plain" }) {
    const id = this.#nextTask++;
    let settle;
    const promise = new Promise((resolve, reject) => (settle = { resolve, reject }));
    const handle = new Task(id, promise);
    if (this.#closed) {
      settle.reject(new ClosedError(op));
      handle.end();
      return handle;
    }
    const signal = options.signal;
    if (signal?.aborted) {
      settle.reject(new CanceledError(op, reasonOf(signal)));
      handle.end();
      return handle;
    }
    const task = {
      op,
      kind,
      settle,
      handle,
      onConsole: options.onConsole,
      onEvent: options.onEvent,
      next: options.next,
      parent: options.parent,
      cpuMs: 0,
      timeoutMs: options.timeoutMs,
      timeoutAt: undefined,
      timer: undefined,
      started: false,
      cleanup: [],
    };
    this.#tasks.set(id, task);
    if (signal !== undefined) {
      const onAbort = () => this.#cancel(id, new CanceledError(op, reasonOf(signal)), reasonOf(signal));
      signal.addEventListener("abort", onAbort, { once: true });
      task.cleanup.push(() => signal.removeEventListener("abort", onAbort));
    }
    if (options.timeoutMs !== undefined) {
      task.timeoutAt = performance.now() + options.timeoutMs;
      task.timer = setTimeout(() => {
        this.#cancel(id, new TimeoutError(op, options.timeoutMs), `timed out after ${options.timeoutMs}ms`);
      }, options.timeoutMs);
    }
    // The first entry runs after the caller got its handle: no event is
    // lost, and a callback of the caller never runs inside an entry.
    queueMicrotask(() => {
      if (!this.#tasks.has(id)) return; // cancelled already
      if (!this.#ensureVm(id)) return;
      task.started = true;
      this.#enter(id, (g) => entry(g, id));
    });
    return handle;
  }

  /** Fails task `id` with `error` for its caller and unwinds it in the guest. */
  #cancel(id, error, reason) {
    // An abort from a callback of ours (an `onConsole` that aborts) waits
    // for the effects being processed: the rest of them may be the task's.
    if (this.#busy > 0) {
      queueMicrotask(() => this.#cancel(id, error, reason));
      return;
    }
    const task = this.#tasks.get(id);
    if (task === undefined) return;
    this.#finish(id, error);
    if (task.started) this.#cancelInGuest(id, reason);
  }

  /** Settles task `id` (a value, or an Error to reject with). */
  #finish(id, result) {
    const task = this.#tasks.get(id);
    if (task === undefined) return;
    this.#tasks.delete(id);
    clearTimeout(task.timer);
    for (const f of task.cleanup) f();
    // Reloads after a trap have no caller.
    if (result instanceof Error) task.settle?.reject(result);
    else task.settle?.resolve(result);
    task.handle?.end();
  }

  #emit(id, event) {
    let task = this.#tasks.get(id);
    // A middleware's `next` task reports as the task that awaits the middleware.
    while (task?.parent !== undefined && this.#tasks.has(task.parent)) {
      id = task.parent;
      task = this.#tasks.get(id);
    }
    const e = { ...event, task: id };
    if (task !== undefined) {
      task.handle?.push(e);
      if (e.type === "console") task.onConsole?.(e);
      task.onEvent?.(e);
    }
    if (e.type === "console") this.#onConsole?.(e);
  }

  // ------------------------------------------------------------ the instance

  /** Makes sure an instance exists: after a trap, builds one and reloads the scripts. */
  #ensureVm(forTask) {
    while (this.#vm === null) {
      if (this.#closed) return false;
      try {
        this.#vm = this.#instantiate();
      } catch (e) {
        const failure = new HostError("instantiate", `the guest could not be instantiated: ${e.message}`, { cause: e });
        if (forTask === undefined) throw failure;
        const task = this.#tasks.get(forTask);
        this.#finish(forTask, new HostError(task.op, failure.message, { cause: e }));
        return false;
      }
      const generation = this.#generation;
      for (const script of [...this.#scripts]) {
        const id = this.#nextTask++;
        this.#tasks.set(id, {
          op: `reload ${script.name}`,
          kind: { type: "reload", name: script.name },
          cleanup: [],
          cpuMs: 0,
          started: true,
        });
        this.#enter(id, (g) =>
          script.modules === undefined
            ? g.load(id, script.name, script.source)
            : g.loadModules(id, script.name, script.modules),
        );
        if (this.#generation !== generation) {
          // Reloading it trapped: drop it, start over without it.
          this.#scripts = this.#scripts.filter((s) => s.name !== script.name);
          break;
        }
      }
    }
    return true;
  }

  #instantiate() {
    const { exports, memory } = this.#runtime.instantiate({
      log: (level, message) => {
        try {
          this.#onLog?.(level, message);
        } catch {
          // A logger that throws must not reach the guest.
        }
      },
      // `option<stop>` for the task whose JavaScript runs (not necessarily
      // the entry's): the guest then fails that task itself.
      shouldInterrupt: (task) => {
        const stop = this.#stopFor(Number(task));
        return stop === null ? undefined : { tag: "deadline", val: stop.detail };
      },
      validateArguments: (schema, args) => this.#validate(schema, args),
      // Yes for every task: a task's session events go to its iterator
      // whether or not its caller reads it (and a recording keeps them all).
      wantsSessionEvents: () => true,
    });
    const entries =
      this.#recorder === undefined ? exports : recordingExports(exports, this.#recorder, () => this.#entry?.task ?? 0);
    const guest = new Guest(entries);
    const p = this.#policy;
    guest.configure({
      determinism: p.determinism,
      memoryLimit: Math.max(p.memoryLimit - QUICKJS_RESERVE, QUICKJS_RESERVE),
      consoleLines: p.maxConsoleLines,
      consoleBytes: p.maxConsoleBytes,
      pendingOps: p.maxPendingOps,
      engines: Object.keys(this.#services.engines),
      middlewares: Object.keys(this.#services.middlewares),
      tools: [...this.#services.tools.values()].map((t) => ({
        name: t.name,
        description: t.description ?? "",
        parameters: t.parameters ?? { type: "object" },
      })),
    });
    return { guest, memory };
  }

  /**
   * Whether JavaScript running for `task` must stop now, and why: the
   * entry's CPU deadline (whatever task the code is for), the task's
   * `timeoutMs`, or its CPU budget over all its entries. The first answer is
   * kept (on the entry, and on the task) so the failure names it.
   */
  #stopFor(id) {
    const e = this.#entry;
    if (e === null) return null;
    const t = this.#tasks.get(id);
    if (t?.stop != null) return t.stop;
    const now = performance.now();
    const p = this.#policy;
    let stop = null;
    if (t?.timeoutAt !== undefined && now >= t.timeoutAt) {
      stop = { detail: `timed out after ${t.timeoutMs}ms`, error: new TimeoutError(t.op, t.timeoutMs) };
    } else if (now >= e.deadline) {
      const detail = `the script ran for more than ${p.entryDeadlineMs}ms without waiting for the host`;
      stop = { detail, error: t && new LimitError(t.op, "deadline", detail) };
    } else if (
      t !== undefined &&
      p.runDeadlineMs != null &&
      id === e.task &&
      t.cpuMs + (now - e.started) >= p.runDeadlineMs
    ) {
      const detail = `the task used more than ${p.runDeadlineMs}ms of CPU time in the guest over all its entries`;
      stop = { detail, error: new LimitError(t.op, "deadline", detail) };
    }
    if (stop !== null) {
      if (t !== undefined) t.stop = stop;
      if (id === e.task) e.stop = stop;
    }
    return stop;
  }

  /** `validate-arguments`: null when the arguments conform, else what is wrong. */
  #validate(schema, args) {
    let problem;
    try {
      problem = this.#schemas.check(schema, JSON.parse(args));
    } catch (e) {
      problem = `the arguments are not valid JSON: ${e.message}`;
    }
    if (problem === null) return undefined;
    // jco turns a thrown value with a `payload` into the `err` case.
    throw { payload: problem };
  }

  /** A call into the guest that starts no task. */
  #query(op, f) {
    if (this.#closed) throw new ClosedError(op);
    // Only a callback the sandbox runs during an entry (`onLog`) can get here then.
    if (this.#entry !== null) throw new ReentrantError(op);
    this.#ensureVm();
    let result;
    try {
      result = this.#callGuest(0, f);
    } catch (e) {
      if (e instanceof GuestScriptError) throw new ScriptError(op, e.script);
      throw e;
    }
    if (result === null) throw new TrappedError(op, this.#lastTrap.message, this.#lastTrap.limit);
    return result.value;
  }

  #lastTrap = null;

  /** One entry for `task`: runs `f`, then what it produced. */
  #enter(task, f) {
    let result;
    try {
      result = this.#callGuest(task, f);
    } catch (e) {
      // An export answered a task-starting call with an error of its own
      // (not a trap): the guest broke the protocol.
      this.#finish(task, new HostError(this.#tasks.get(task)?.op ?? "entry", e.message, { cause: e }));
      return;
    }
    if (result === null) return; // trapped: the tasks failed already
    this.#process(result.value);
    this.#checkMemory();
  }

  /**
   * Calls into the guest under the entry's deadline. On a trap, fails every
   * task of the instance, drops it (the next entry rebuilds) and returns null.
   */
  #callGuest(task, f) {
    const vm = this.#vm;
    const t = this.#tasks.get(task);
    const p = this.#policy;
    const started = performance.now();
    const entry = { task, started, deadline: started + p.entryDeadlineMs, stop: null };
    this.#entry = entry;
    let value;
    try {
      value = f(vm.guest);
    } catch (e) {
      if (e instanceof GuestScriptError) throw e;
      if (e instanceof HostError) throw e;
      this.#lastTrap = classifyTrap(e, entry.stop !== null);
      this.#loseInstance(this.#lastTrap);
      return null;
    } finally {
      this.#entry = null;
      if (t !== undefined) t.cpuMs += performance.now() - started;
    }
    return { value, stop: entry.stop };
  }

  /** Everything in the instance is gone: its tasks fail, its operations stop. */
  #loseInstance(failure) {
    this.#vm = null;
    this.#generation += 1;
    for (const op of this.#ops.values()) op.controller.abort();
    this.#ops.clear();
    for (const [id, task] of [...this.#tasks]) {
      if (task.kind.type === "reload" || task.started)
        this.#finish(id, new TrappedError(task.op, failure.message, failure.limit));
    }
  }

  /**
   * The guest's linear memory past the policy's limit (QuickJS's own limit,
   * set below it, usually stops a script first): the instance is rebuilt,
   * as a memory trap. A WebAssembly memory cannot shrink, so this is the
   * only way to give the memory back.
   */
  #checkMemory() {
    const size = this.#vm?.memory?.buffer.byteLength ?? 0;
    if (size > this.#policy.memoryLimit) {
      this.#loseInstance({
        message: `memory limit: the guest's memory grew to ${size} bytes; the policy allows ${this.#policy.memoryLimit}`,
        limit: "memory",
      });
    }
  }

  /** Tells the guest: pending operations of `task` reject, what it asks next is refused. */
  #cancelInGuest(task, reason) {
    if (this.#vm === null) return;
    // The unwinding runs under a fresh deadline; interrupted again, nothing more is done.
    const result = this.#callGuest(task, (g) => g.cancel(task, reason ?? "canceled"));
    if (result !== null) this.#process(result.value);
  }

  // ------------------------------------------------------------ effects

  #process(effects) {
    this.#busy += 1;
    try {
      this.#processBatch(effects);
    } finally {
      this.#busy -= 1;
    }
  }

  #processBatch(effects) {
    for (const effect of effects) {
      switch (effect.type) {
        case "request":
          this.#perform(effect);
          break;
        case "release": {
          const op = this.#ops.get(effect.op);
          if (op !== undefined) {
            this.#ops.delete(effect.op);
            op.controller.abort();
          }
          break;
        }
        case "event":
          if (effect.event.type === "console") {
            this.#emit(effect.task, { type: "console", level: effect.event.level, message: effect.event.message });
          } else if (effect.event.type === "session") {
            this.#emit(effect.task, { type: "session", event: effect.event.event });
          }
          break;
        case "done":
          this.#complete(effect.task, effect.outcome);
          break;
      }
    }
  }

  #complete(id, outcome) {
    const task = this.#tasks.get(id);
    if (task === undefined) return; // cancelled, timed out or failed already
    let result;
    if (outcome.script !== undefined) {
      result = failure(task.op, outcome.script);
    } else if (outcome.cancelled !== undefined) {
      result = task.stop?.error ?? new CanceledError(task.op, outcome.cancelled);
    } else if (outcome.deadline !== undefined) {
      result = task.stop?.error ?? new LimitError(task.op, "deadline", outcome.deadline);
    } else if (outcome.overCap !== undefined) {
      result = new LimitError(task.op, outcome.overCap.cap, outcome.overCap.detail);
    } else if (outcome.outOfMemory !== undefined) {
      result = new LimitError(task.op, "memory", outcome.outOfMemory);
    } else if (
      outcome.ok.kind === "json" &&
      // A load's value is the runtime's export list, not a script's result.
      task.kind.type !== "load" &&
      task.kind.type !== "reload" &&
      this.#policy.maxResultBytes > 0 &&
      outcome.ok.bytes > this.#policy.maxResultBytes
    ) {
      result = new LimitError(
        task.op,
        "output",
        `the result is ${outcome.ok.bytes} bytes of JSON; the policy allows ${this.#policy.maxResultBytes}`,
      );
    } else {
      result = outcome.ok.value;
    }
    const kind = task.kind;
    if (kind.type === "load" && !(result instanceof Error)) {
      this.#scripts = this.#scripts.filter((s) => s.name !== kind.name);
      this.#scripts.push({ name: kind.name, source: kind.source, modules: kind.modules });
      result = undefined;
    } else if (kind.type === "reload" && result instanceof Error) {
      this.#scripts = this.#scripts.filter((s) => s.name !== kind.name);
      this.#onLog?.("error", `reloading ${kind.name} failed; it is dropped from the sandbox: ${result.message}`);
    }
    this.#finish(id, result);
  }

  /** Runs a request of the guest; its outcome comes back as a `resume` entry. */
  #perform({ op, task, what }) {
    const controller = new AbortController();
    const record = { task, controller };
    this.#ops.set(op, record);
    const generation = this.#generation;
    const answer = (outcome) => {
      if (generation !== this.#generation || this.#ops.get(op) !== record) return; // released, or an older instance
      this.#ops.delete(op);
      if (this.#vm === null || this.#closed) return;
      this.#enter(task, (g) => g.resume(op, outcome));
    };
    const signal = controller.signal;
    switch (what.op) {
      case "sleep": {
        const timer = setTimeout(() => answer(ok(null)), Math.min(what.ms, MAX_SLEEP_MS));
        signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
        return;
      }
      case "infer":
        return run(answer, () => this.#infer(op, what, signal, generation), okTurn);
      case "call-tool":
        return run(answer, () => this.#callHostTool(what, signal), ok);
      case "middleware":
        return run(answer, () => this.#runHostMiddleware(op, task, what, signal, generation), okTurn);
      case "next": {
        const next = this.#tasks.get(task)?.next;
        if (next === undefined) {
          return run(answer, () => {
            throw named("Error", "next(): no host middleware chain is waiting for this middleware");
          });
        }
        return run(answer, () => next(what.turn, { signal }), okTurn);
      }
      case "fetch":
        // This host has no network policy to honour: every fetch is refused.
        return run(answer, () => {
          throw named(
            "TypeError",
            "fetch is not available from this host (the Node package has no network policy; give scripts host tools for HTTP instead)",
          );
        });
      default:
        return run(answer, () => {
          throw named("TypeError", `malformed request: ${what.why}`);
        });
    }
  }

  async #infer(op, what, signal, generation) {
    const name = what.engine;
    const engine = name === null ? this.#services.engine : this.#services.engines[name];
    if (engine === undefined) {
      throw named(
        "Error",
        name === null
          ? "the host provides no default engine"
          : `the host provides no engine named ${JSON.stringify(name)}`,
      );
    }
    const context = what.context;
    if (context !== null && (typeof context !== "object" || Array.isArray(context))) {
      throw named("TypeError", "malformed inference context: it must be an object");
    }
    let completion = "";
    // Stream progress: each partial reaches the script's session as a
    // `partial` event, before the turn the engine returns.
    const partial = (delta) => {
      if (signal.aborted || typeof delta !== "string" || delta === "") return;
      completion += delta;
      this.#notify(generation, op, [{ type: "partial", delta, completion }]);
    };
    const out = await engine(what.turn, {
      ...context,
      tools: what.tools,
      toolChoice: what.toolChoice,
      partial,
      signal,
    });
    return out ?? what.turn;
  }

  async #callHostTool(what, signal) {
    const call = what.call;
    const tool = this.#services.tools.get(call.name);
    if (tool === undefined) throw named("TypeError", `the host provides no tool named ${JSON.stringify(call.name)}`);
    const problem = this.#schemas.check(tool.parameters ?? { type: "object" }, call.arguments);
    if (problem !== null)
      throw named("TypeError", `invalid arguments for tool ${JSON.stringify(call.name)}: ${problem}`);
    const value = await tool.handler(call.arguments, { ...what.context, toolName: call.name, callId: call.id, signal });
    return value === undefined ? null : value;
  }

  /**
   * A host middleware. Its `next(turn)` runs the rest of the
   * chain in the guest, as a `middleware.next` task whose events are the
   * awaiting task's.
   */
  async #runHostMiddleware(op, parent, what, signal, generation) {
    const middleware = this.#services.middlewares[what.name];
    if (middleware === undefined)
      throw named("Error", `the host provides no middleware named ${JSON.stringify(what.name)}`);
    const next = (turn) => {
      if (signal.aborted) return Promise.reject(named("AbortError", "the middleware's request was released"));
      if (generation !== this.#generation) return Promise.reject(named("Error", "the guest was rebuilt"));
      const label = `next of middleware ${what.name}`;
      return this.#start(label, { signal, parent }, (g, id) => g.middlewareNext(id, op, turn));
    };
    const out = await middleware(what.turn, next, { ...what.context, options: what.options, signal });
    return out ?? what.turn;
  }

  /** Progress of op `op` (an engine's stream) for the script awaiting it. */
  #notify(generation, op, events) {
    const deliver = () => {
      const pending = this.#ops.get(op);
      if (generation !== this.#generation || pending === undefined || this.#vm === null) return;
      this.#enter(pending.task, (g) => g.notify(op, events));
    };
    // Never inside an entry or its effects (an engine that reports progress
    // synchronously from a callback the sandbox runs): after them.
    if (this.#busy > 0 || this.#entry !== null) queueMicrotask(deliver);
    else deliver();
  }
}

/** Runs host work `work` (sync or async) outside the current entry; `wrap` makes its outcome. */
function run(answer, work, wrap) {
  Promise.resolve()
    .then(work)
    .then(
      (value) => {
        let outcome;
        try {
          outcome = wrap(value);
        } catch (e) {
          outcome = err("TypeError", `the host's answer is malformed: ${e.message}`);
        }
        answer(outcome);
      },
      (e) => answer(errorForScript(e)),
    );
}

/** How a host failure reaches the script awaiting it: an error with the same meaning. */
function errorForScript(e) {
  if (e instanceof ScriptError) return errScript(e.script);
  if (e instanceof CanceledError || e?.name === "AbortError") return err("AbortError", String(e.message));
  if (e instanceof TimeoutError) return err("TimeoutError", e.message);
  if (e instanceof Error) return err(e.name || "Error", e.message);
  return err("Error", String(e));
}

function named(name, message) {
  const e = new Error(message);
  e.name = name;
  return e;
}

/**
 * A task's JavaScript error as the caller sees it: QuickJS running out of
 * memory is the memory limit, anything else the script's own error.
 */
function failure(op, e) {
  if (e.name === "InternalError" && e.message.includes("out of memory")) {
    return new LimitError(
      op,
      "memory",
      "the script's memory reached the policy's limit (InternalError: out of memory)",
    );
  }
  return new ScriptError(op, e);
}

/** Why an entry trapped, in words and as a limit (V8's names for wasm traps). */
function classifyTrap(e, interrupted) {
  const message = String(e?.message ?? e);
  if (e instanceof RangeError && /call stack/i.test(message)) {
    return { message: "stack exhausted: the script recursed too deeply", limit: "stack" };
  }
  if (e instanceof WebAssembly.RuntimeError) {
    if (interrupted && /unreachable/i.test(message)) {
      return {
        message: "cpu deadline: promise jobs kept scheduling themselves past the deadline; the instance was rebuilt",
        limit: "deadline",
      };
    }
    if (/out of bounds/i.test(message)) {
      return {
        message: "stack exhausted: the script recursed too deeply (out-of-bounds memory access)",
        limit: "stack",
      };
    }
    return { message: `wasm trap: ${message}`, limit: undefined };
  }
  // Not a trap of the wasm: an exception thrown through it (a host import
  // that threw, which jco passes through the guest's frames). The guest is
  // left mid-entry, so the instance is lost all the same.
  return {
    message: `an exception went through the guest (a host import threw ${e?.name ?? "a value"}: ${message}); the instance was lost`,
    limit: undefined,
  };
}

function reasonOf(signal) {
  const r = signal.reason;
  if (r === undefined) return undefined;
  if (r instanceof Error) return r.message;
  return String(r);
}

/**
 * The built-in host middleware `systemPrompt` (`{prompt}`), as the Rust
 * host's: the turn's first block becomes the system prompt (replacing the
 * text of a system block already there), then the rest of the chain runs.
 */
function systemPrompt(turn, next, ctx) {
  const prompt = ctx.options?.prompt;
  if (typeof prompt !== "string") throw named("TypeError", 'systemPrompt needs the option "prompt" (a string)');
  const first = turn.blocks[0];
  if (first !== undefined && first.kind === "system") first.payload = { ...first.payload, text: prompt };
  else {
    turn.blocks.unshift({
      id: `blk-${randomUUID()}`,
      kind: "system",
      role: "system",
      payload: { text: prompt },
      metadata: {},
    });
  }
  return next(turn);
}

/** The host's engines, middleware and tools from the options, checked. */
function services(options) {
  const engines = { ...options.engines };
  for (const [name, f] of Object.entries(engines)) {
    if (typeof f !== "function") throw new TypeError(`engines.${name} must be a function (turn, ctx) => turn`);
  }
  if (options.engine !== undefined && typeof options.engine !== "function") {
    throw new TypeError("engine must be a function (turn, ctx) => turn");
  }
  const middlewares = { systemPrompt, ...options.middlewares };
  for (const [name, f] of Object.entries(middlewares)) {
    if (typeof f !== "function")
      throw new TypeError(`middlewares.${name} must be a function (turn, next, ctx) => turn`);
  }
  const tools = new Map();
  for (const t of options.tools ?? []) {
    if (typeof t?.name !== "string" || typeof t.handler !== "function") {
      throw new TypeError("each host tool needs a name and a handler (args, ctx) => result");
    }
    if (tools.has(t.name)) throw new TypeError(`two host tools are named ${JSON.stringify(t.name)}`);
    tools.set(t.name, t);
  }
  return { engine: options.engine, engines, middlewares, tools };
}

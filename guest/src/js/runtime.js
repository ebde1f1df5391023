// The guest's JavaScript runtime: evaluated once per VM, before any user
// script, as a function that receives the Rust natives and returns
// `{ api, dispatch }`. `api` becomes the `marionette` module; `dispatch` is
// what the Rust side calls on each entry. Nothing here is reachable from user
// scripts except through `api` and the globals installed below.
//
// Every builtin this file relies on is captured before user code can run, so
// a script that patches `Array.prototype` or `JSON` hurts only itself.
(function (native) {
  "use strict";

  const { apply } = Reflect;
  const { freeze, defineProperty, keys: objectKeys, entries: objectEntries } = Object;
  const jsonParse = JSON.parse;
  const jsonStringify = JSON.stringify;
  const promiseThen = Promise.prototype.then;
  const PromiseCtor = Promise;
  const promiseResolve = (v) => apply(Promise.resolve, PromiseCtor, [v]);
  const MapCtor = Map;
  const SetCtor = Set;
  const WeakMapCtor = WeakMap;
  const mapGet = Map.prototype.get;
  const mapSet = Map.prototype.set;
  const mapHas = Map.prototype.has;
  const mapDelete = Map.prototype.delete;
  const setAdd = Set.prototype.add;
  const setHas = Set.prototype.has;
  const setDelete = Set.prototype.delete;
  const weakGet = WeakMap.prototype.get;
  const weakSet = WeakMap.prototype.set;
  const arrayIsArray = Array.isArray;
  const ErrorCtor = Error;
  const TypeErrorCtor = TypeError;
  const StringCtor = String;
  const mathRandom = Math.random;
  const mathFloor = Math.floor;
  const mathMax = Math.max;
  const mathMin = Math.min;
  const NumberCtor = Number;
  const stringMatch = String.prototype.match;
  const stringSplit = String.prototype.split;
  const stringIndexOf = String.prototype.indexOf;
  const arrayJoin = Array.prototype.join;

  const call = (fn, self, ...args) => apply(fn, self, args);
  const then = (p, onOk, onErr) => apply(promiseThen, p, [onOk, onErr]);
  const mget = (m, k) => call(mapGet, m, k);
  const mset = (m, k, v) => call(mapSet, m, k, v);
  const mhas = (m, k) => call(mapHas, m, k);
  const mdel = (m, k) => call(mapDelete, m, k);

  // ---------------------------------------------------------------- errors

  function abortError(reason) {
    const e = new ErrorCtor(reason || "the task was cancelled");
    e.name = "AbortError";
    return e;
  }

  // Where an error points: the first stack frame in a user script.
  // QuickJS frames look like "    at fn (file.js:12:5)" or "    at file.js:12:5".
  function locate(stack) {
    if (typeof stack !== "string") return {};
    const lines = call(stringSplit, stack, "\n");
    for (let i = 0; i < lines.length; i++) {
      const m = call(stringMatch, lines[i], /^\s*at (?:.*? \()?(.+?):(\d+):(\d+)\)?\s*$/);
      if (m && m[1] !== "marionette" && m[1] !== "<marionette>" && m[1] !== "native") {
        return { file: m[1], line: NumberCtor(m[2]), column: NumberCtor(m[3]) };
      }
    }
    return {};
  }

  // The stack without the runtime's own frames (and the `apply` that calls
  // into user code from them): what a script author can act on.
  function userFrames(stack) {
    const lines = call(stringSplit, stack, "\n");
    const out = [];
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      if (call(stringIndexOf, line, "<marionette>") >= 0) continue;
      if (call(stringIndexOf, line, "at apply (native)") >= 0 && i + 1 < lines.length && call(stringIndexOf, lines[i + 1], "<marionette>") >= 0) continue;
      out[out.length] = line;
    }
    return call(arrayJoin, out, "\n");
  }

  // Turns anything thrown into the WIT `script-error` shape.
  function errorInfo(e) {
    if (e !== null && typeof e === "object") {
      let name, message, stack;
      try { name = e.name; message = e.message; stack = e.stack; } catch (_) { /* hostile getter */ }
      if (typeof name !== "string" || name === "") name = "Error";
      if (typeof message !== "string") message = safeString(message === undefined ? e : message);
      if (typeof stack !== "string") stack = undefined;
      else stack = userFrames(stack);
      let where = locate(stack);
      // A SyntaxError from the parser carries its location in fileName/lineNumber.
      if (where.file === undefined) {
        try {
          if (typeof e.fileName === "string" && typeof e.lineNumber === "number") {
            where = { file: e.fileName, line: e.lineNumber, column: typeof e.columnNumber === "number" ? e.columnNumber : undefined };
          }
        } catch (_) { /* ignore */ }
      }
      return { name, message, stack, file: where.file, line: where.line, column: where.column };
    }
    return { name: "Error", message: "uncaught " + describe(e) };
  }

  function safeString(v) {
    try { return StringCtor(v); } catch (_) { return "<unprintable>"; }
  }

  function describe(v) {
    if (typeof v === "string") return jsonStringify(v);
    return safeString(v);
  }

  // ---------------------------------------------------------------- tasks and host operations

  const state = {
    current: 0,          // the task on whose behalf JS runs right now
    live: new SetCtor(), // tasks started and not yet done
    canceled: new MapCtor(), // task -> reason
    pending: new MapCtor(),  // op -> { task, settle(ok, value) }
  };

  // `isTurn`: the payload is a turn (inference, middleware), not plain JSON.
  function done(task, ok, payload, isTurn) {
    if (!call(setHas, state.live, task)) return; // already done, or cancelled
    call(setDelete, state.live, task);
    native.done(task, ok, payload, isTurn === true);
  }

  function finish(task, value, kind) {
    if (kind === "turn") {
      let text;
      try {
        text = jsonStringify(normalizeTurn(value === undefined || value === null ? undefined : value));
      } catch (e) {
        return done(task, false, jsonStringify(errorInfo(e)));
      }
      return done(task, true, text, true);
    }
    let text;
    try {
      text = jsonStringify(value === undefined ? null : value);
    } catch (e) {
      const err = new TypeErrorCtor("the result is not JSON-serialisable: " + errorInfo(e).message);
      return done(task, false, jsonStringify(errorInfo(err)));
    }
    if (text === undefined) text = "null"; // functions, symbols
    done(task, true, text);
  }

  // Makes `task` live and current: what runs now runs on its behalf.
  function begin(task) {
    call(setAdd, state.live, task);
    state.current = task;
  }

  // Starts a task: runs `body` now, settles the task when its promise does.
  function start(task, kind, body) {
    begin(task);
    let p;
    try {
      p = promiseResolve(body());
    } catch (e) {
      p = apply(Promise.reject, PromiseCtor, [e]);
    }
    then(p, (v) => finish(task, v, kind), (e) => done(task, false, jsonStringify(errorInfo(e))));
  }

  // Asks the host for `what`; `settle(ok, value)` runs when it answers.
  function request(what, settle) {
    const task = state.current;
    if (mhas(state.canceled, task)) {
      settle(false, abortError(mget(state.canceled, task)));
      return 0;
    }
    const op = native.request(task, jsonStringify(what));
    mset(state.pending, op, { task, settle });
    return op;
  }

  function hostPromise(what) {
    return new PromiseCtor((resolve, reject) => {
      request(what, (ok, v) => (ok ? resolve(v) : reject(v)));
    });
  }

  function release(op) {
    if (mdel(state.pending, op)) native.release(op);
  }

  function hostError(info) {
    const e = new ErrorCtor(info && info.message ? info.message : "host operation failed");
    e.name = info && info.name ? info.name : "Error";
    return e;
  }

  // ---------------------------------------------------------------- console

  function format(args) {
    let out = "";
    for (let i = 0; i < args.length; i++) {
      if (i > 0) out += " ";
      const a = args[i];
      if (typeof a === "string") out += a;
      else if (a instanceof ErrorCtor) out += (a.stack ? a.name + ": " + a.message + "\n" + a.stack : safeString(a));
      else if (a === undefined || typeof a === "function" || typeof a === "symbol" || typeof a === "bigint") out += safeString(a);
      else {
        let s;
        try { s = jsonStringify(a); } catch (_) { s = undefined; }
        out += s === undefined ? safeString(a) : s;
      }
    }
    return out;
  }

  const consoleObject = {};
  for (const [method, level] of [["log", "info"], ["info", "info"], ["debug", "debug"], ["warn", "warn"], ["error", "error"], ["trace", "debug"]]) {
    consoleObject[method] = function (...args) {
      native.console(state.current, level, format(args));
    };
  }
  defineProperty(globalThis, "console", { value: freeze(consoleObject), writable: true, configurable: true, enumerable: false });

  // ---------------------------------------------------------------- timers

  let nextTimer = 1;
  const MAX_DELAY = 2147483647;
  const timers = new MapCtor(); // timer id -> op

  function setTimeout(fn, ms, ...args) {
    if (typeof fn !== "function") throw new TypeErrorCtor("setTimeout: the callback must be a function");
    const id = nextTimer++;
    // As in browsers: not a number or negative is 0. Beyond MAX_DELAY (about
    // 24.8 days) it waits MAX_DELAY rather than overflowing.
    const delay = mathMin(MAX_DELAY, mathMax(0, mathFloor(NumberCtor(ms) || 0)));
    const op = request({ op: "sleep", ms: delay }, (ok, value) => {
      mdel(timers, id);
      if (!ok) {
        // Cancelled with its task: nothing to say. Refused by the host: the
        // callback will never run, and the script should know why.
        if (value && value.name !== "AbortError") {
          native.console(state.current, "error", "setTimeout: the host refused the timer: " + value.name + ": " + value.message);
        }
        return;
      }
      try {
        apply(fn, undefined, args);
      } catch (e) {
        const info = errorInfo(e);
        native.console(state.current, "error", "uncaught error in a timer callback: " + (info.file ? info.file + ":" + info.line + ":" + info.column + ": " : "") + info.name + ": " + info.message);
      }
    });
    if (op !== 0) mset(timers, id, op);
    return id;
  }

  function clearTimeout(id) {
    const op = mget(timers, id);
    if (op === undefined) return;
    mdel(timers, id);
    release(op);
  }

  for (const [name, fn] of [["setTimeout", setTimeout], ["clearTimeout", clearTimeout]]) {
    defineProperty(globalThis, name, { value: fn, writable: true, configurable: true, enumerable: false });
  }

  // ---------------------------------------------------------------- the marionette API

  // What each branded API object really is. A WeakMap keyed by the frozen
  // object a script holds: a script cannot forge or alter an entry.
  const brands = new WeakMapCtor();
  const brand = (obj, record) => { call(weakSet, brands, obj, record); return freeze(obj); };
  const brandOf = (v) => (v !== null && (typeof v === "object" || typeof v === "function") ? call(weakGet, brands, v) : undefined);

  function uuid() {
    const hex = "0123456789abcdef";
    let s = "";
    for (let i = 0; i < 36; i++) {
      if (i === 8 || i === 13 || i === 18 || i === 23) s += "-";
      else if (i === 14) s += "4";
      else if (i === 19) s += hex[(mathFloor(mathRandom() * 16) & 0x3) | 0x8];
      else s += hex[mathFloor(mathRandom() * 16)];
    }
    return s;
  }

  const BlockKind = freeze({
    USER: "user", LLM_TEXT: "llm_text", TOOL_CALL: "tool_call", TOOL_USE: "tool_use",
    SYSTEM: "system", REASONING: "reasoning", OTHER: "other",
  });
  const blockKinds = new SetCtor(["user", "llm_text", "tool_call", "tool_use", "system", "reasoning", "other"]);

  function isPlainObject(v) {
    return v !== null && typeof v === "object" && !arrayIsArray(v);
  }

  // Checks a turn a script handed back and fills what may be left out.
  function normalizeTurn(t) {
    if (!isPlainObject(t)) throw new TypeErrorCtor("expected a turn object {id, blocks, metadata, data}, got " + describe(t));
    const blocks = t.blocks === undefined ? [] : t.blocks;
    if (!arrayIsArray(blocks)) throw new TypeErrorCtor("turn.blocks must be an array");
    const out = {
      id: typeof t.id === "string" && t.id !== "" ? t.id : uuid(),
      blocks: [],
      metadata: isPlainObject(t.metadata) ? t.metadata : {},
      data: isPlainObject(t.data) ? t.data : {},
    };
    for (let i = 0; i < blocks.length; i++) out.blocks[i] = normalizeBlock(blocks[i], i);
    return out;
  }

  function normalizeBlock(b, i) {
    if (!isPlainObject(b)) throw new TypeErrorCtor("turn.blocks[" + i + "] must be an object");
    if (!call(setHas, blockKinds, b.kind)) {
      throw new TypeErrorCtor("turn.blocks[" + i + "].kind must be one of user, llm_text, tool_call, tool_use, system, reasoning, other; got " + describe(b.kind));
    }
    const out = {
      id: typeof b.id === "string" && b.id !== "" ? b.id : uuid(),
      kind: b.kind,
      payload: isPlainObject(b.payload) ? b.payload : {},
      metadata: isPlainObject(b.metadata) ? b.metadata : {},
    };
    if (typeof b.role === "string") out.role = b.role;
    return out;
  }

  const block = (kind, role, payload) => ({ id: uuid(), kind, role, payload, metadata: {} });
  const turns = freeze({
    newTurn(init) {
      const i = init === undefined ? {} : init;
      if (!isPlainObject(i)) throw new TypeErrorCtor("turns.newTurn: expected {blocks?, metadata?, data?}");
      return normalizeTurn({ id: i.id, blocks: i.blocks || [], metadata: i.metadata, data: i.data });
    },
    normalize: (t) => normalizeTurn(t),
    newUserBlock: (text) => block("user", "user", { text: StringCtor(text) }),
    newSystemBlock: (text) => block("system", "system", { text: StringCtor(text) }),
    newAssistantBlock: (text) => block("llm_text", "assistant", { text: StringCtor(text) }),
    newToolCallBlock: (id, name, args) => block("tool_call", "assistant", { id, name, args: args === undefined ? {} : args }),
    newToolUseBlock: (id, result, error) => {
      const payload = { id, result: result === undefined ? null : result };
      if (error !== undefined && error !== null) payload.error = StringCtor(error);
      return block("tool_use", "tool", payload);
    },
    appendBlock(t, b) {
      if (!isPlainObject(t) || !arrayIsArray(t.blocks)) throw new TypeErrorCtor("turns.appendBlock: the first argument must be a turn");
      t.blocks[t.blocks.length] = normalizeBlock(b, t.blocks.length);
      return t;
    },
  });

  const engines = freeze({
    fromFunction(fn) {
      if (typeof fn !== "function") throw new TypeErrorCtor("engines.fromFunction: expected a function (turn, ctx) => turn");
      return brand({ kind: "engine" }, { kind: "engine", run: fn });
    },
    echo(options) {
      const reply = options && options.reply !== undefined ? StringCtor(options.reply) : "READY";
      return brand({ kind: "engine", name: "echo" }, {
        kind: "engine",
        run(t) {
          t.blocks[t.blocks.length] = block("llm_text", "assistant", { text: reply });
          return t;
        },
      });
    },
  });

  const middlewares = freeze({
    fromJS(fn, name) {
      if (typeof fn !== "function") throw new TypeErrorCtor("middlewares.fromJS: expected a function (turn, next, ctx) => turn");
      const n = name === undefined ? (fn.name || "middleware") : StringCtor(name);
      return brand({ kind: "middleware", name: n }, { kind: "middleware", name: n, run: fn });
    },
  });

  function createRegistry() {
    const tools = new MapCtor();
    const registry = {
      kind: "tool-registry",
      register(spec) {
        if (!isPlainObject(spec)) throw new TypeErrorCtor("register: expected {name, description?, parameters?, handler}");
        if (typeof spec.name !== "string" || spec.name === "") throw new TypeErrorCtor("register: name must be a non-empty string");
        if (typeof spec.handler !== "function") throw new TypeErrorCtor("register: tool " + jsonStringify(spec.name) + " needs a handler function");
        if (spec.parameters !== undefined && !isPlainObject(spec.parameters)) throw new TypeErrorCtor("register: parameters of " + jsonStringify(spec.name) + " must be a JSON Schema object");
        // Keep a private copy of the schema: the caller's object stays theirs.
        const parameters = jsonParse(jsonStringify(spec.parameters === undefined ? { type: "object", properties: {} } : spec.parameters));
        mset(tools, spec.name, {
          name: spec.name,
          description: spec.description === undefined ? "" : StringCtor(spec.description),
          parameters,
          handler: spec.handler,
        });
        return registry;
      },
      list() {
        const out = [];
        for (const t of tools.values()) out[out.length] = { name: t.name, description: t.description, parameters: jsonParse(jsonStringify(t.parameters)) };
        return out;
      },
      call(name, args) {
        const t = mget(tools, name);
        if (t === undefined) return apply(Promise.reject, PromiseCtor, [new TypeErrorCtor("unknown tool " + describe(name))]);
        try {
          return promiseResolve(apply(t.handler, undefined, [args === undefined ? {} : args, { toolName: t.name }]));
        } catch (e) {
          return apply(Promise.reject, PromiseCtor, [e]);
        }
      },
    };
    return brand(registry, { kind: "tool-registry", tools, call: (name, args, ctx) => {
      const t = mget(tools, name);
      if (t === undefined) throw new TypeErrorCtor("unknown tool " + describe(name));
      return apply(t.handler, undefined, [args, ctx]);
    } });
  }

  const tools = freeze({ createRegistry });

  const consts = freeze({
    BlockKind,
    EventType: freeze({ START: "start", PARTIAL: "partial", FINAL: "final", TOOL_CALL: "tool-call", TOOL_RESULT: "tool-result", ERROR: "error" }),
    ToolChoice: freeze({ AUTO: "auto", NONE: "none", REQUIRED: "required" }),
    ToolErrorHandling: freeze({ CONTINUE: "continue", ABORT: "abort", RETRY: "retry" }),
    HookAction: freeze({ ABORT: "abort", RETRY: "retry", CONTINUE: "continue" }),
  });

  const api = freeze({ turns, consts, engines, middlewares, tools });

  // ---------------------------------------------------------------- dispatch (called by Rust)

  const scripts = new MapCtor(); // name -> module namespace

  function script(name) {
    const ns = mget(scripts, name);
    if (ns === undefined) throw new ErrorCtor("no script named " + describe(name) + " is loaded");
    return ns;
  }

  function exported(name, exportName, kind) {
    const ns = script(name);
    if (!(exportName in ns)) throw new TypeErrorCtor("script " + describe(name) + " has no export named " + describe(exportName));
    const v = ns[exportName];
    if (kind === undefined) return v;
    const b = brandOf(v);
    if (b === undefined || b.kind !== kind) {
      throw new TypeErrorCtor("export " + describe(exportName) + " of " + describe(name) + " is not a " + kind + " (it is " + kindOf(exportName, v) + ")");
    }
    return b;
  }

  function kindOf(exportName, v) {
    if (exportName === "default" && typeof v === "function") return "main";
    const b = brandOf(v);
    if (b !== undefined) return b.kind;
    if (typeof v === "function") return "function";
    if (isPlainObject(v) && (typeof v.beforeToolCall === "function" || typeof v.afterToolCall === "function" || typeof v.onToolError === "function")) return "tool-hooks";
    return "value";
  }

  function listTools(b) {
    const out = [];
    for (const t of b.tools.values()) out[out.length] = { name: t.name, description: t.description, parameters: t.parameters };
    return out;
  }

  const dispatch = freeze({
    errorInfo: (e) => jsonStringify(errorInfo(e)),
    begin,
    load(task, name, namespace, evaluated) {
      start(task, "json", () => then(evaluated, () => { mset(scripts, name, namespace); return null; }));
    },
    exports(name) {
      const ns = script(name);
      const out = [];
      for (const key of objectKeys(ns)) {
        const v = ns[key];
        const kind = kindOf(key, v);
        out[out.length] = { name: key, kind, tools: kind === "tool-registry" ? listTools(brandOf(v)) : [] };
      }
      return jsonStringify(out);
    },
    runMain(task, name, input) {
      start(task, "json", () => {
        const main = script(name).default;
        if (typeof main !== "function") throw new TypeErrorCtor("script " + describe(name) + " has no default export function main(input, ctx)");
        return apply(main, undefined, [jsonParse(input), { taskId: task, script: name }]);
      });
    },
    call(task, name, fn, args) {
      start(task, "json", () => {
        const f = exported(name, fn);
        if (typeof f !== "function") throw new TypeErrorCtor("export " + describe(fn) + " of " + describe(name) + " is not a function");
        const list = jsonParse(args);
        if (!arrayIsArray(list)) throw new TypeErrorCtor("the arguments must be a JSON array");
        return apply(f, undefined, list);
      });
    },
    infer(task, name, engine, turn) {
      start(task, "turn", () => {
        const e = exported(name, engine, "engine");
        const t = jsonParse(turn);
        return then(promiseResolve(apply(e.run, undefined, [t, { taskId: task }])), (out) => (out === undefined || out === null ? t : out));
      });
    },
    middleware(task, name, mw, turn) {
      start(task, "turn", () => {
        const m = exported(name, mw, "middleware");
        const t = jsonParse(turn);
        const next = (nt) => {
          let normalized;
          try { normalized = normalizeTurn(nt === undefined ? t : nt); } catch (e) { return apply(Promise.reject, PromiseCtor, [e]); }
          return hostPromise({ op: "next", turn: normalized });
        };
        const ctx = { middlewareName: m.name, taskId: task };
        return then(promiseResolve(apply(m.run, undefined, [t, next, ctx])), (out) => (out === undefined || out === null ? t : out));
      });
    },
    listTools(name, registry) {
      return jsonStringify(listTools(exported(name, registry, "tool-registry")));
    },
    callTool(task, name, registry, toolCall) {
      start(task, "json", () => {
        const r = exported(name, registry, "tool-registry");
        const c = jsonParse(toolCall);
        return r.call(c.name, c.arguments, { toolName: c.name, callId: c.id, taskId: task });
      });
    },
    resume(op, ok, value) {
      const p = mget(state.pending, op);
      if (p === undefined) return; // released, or its task was cancelled
      mdel(state.pending, op);
      state.current = p.task;
      p.settle(ok, ok ? jsonParse(value) : hostError(jsonParse(value)));
    },
    cancel(task, reason) {
      if (!call(setHas, state.live, task)) return;
      mset(state.canceled, task, reason);
      state.current = task;
      const err = abortError(reason);
      // Fail the task first so nothing it does while unwinding settles it otherwise.
      done(task, false, jsonStringify(errorInfo(err)));
      for (const [op, p] of state.pending) {
        if (p.task !== task) continue;
        mdel(state.pending, op);
        native.release(op);
        p.settle(false, abortError(reason));
      }
    },

  });

  return { api, dispatch };
})

// The dispatcher: what the Rust side calls on each entry into the guest.
// Task-starting calls settle their task through `start`; the others return
// JSON text.

  const scripts = new MapCtor(); // name -> module namespace
  const MAX_CANCELED = 4096;

  function script(name) {
    const ns = mget(scripts, name);
    if (ns === undefined) throw new ErrorCtor("no script named " + describe(name) + " is loaded");
    return ns;
  }

  function isHooksObject(v) {
    return isPlainObject(v) && (typeof v.beforeToolCall === "function" || typeof v.afterToolCall === "function" || typeof v.onToolError === "function");
  }

  // A script's exports as `script.exports` lists them (wit/types.wit,
  // `export-info`): the kind one of `export-kind`'s, a registry's tools
  // as the model sees them.
  const exportKinds = new SetCtor(["main", "function", "engine", "middleware", "tool-registry", "tool-hooks", "value"]);
  function exportList(ns) {
    const out = [];
    for (const key of objectKeys(ns)) {
      const v = ns[key];
      const k = kindOf(key, v);
      const kind = shas(exportKinds, k) ? k : "value";
      out[out.length] = { name: key, kind, tools: kind === "tool-registry" ? definitions(brandOf(v), true) : [] };
    }
    return out;
  }

  function kindOf(exportName, v) {
    if (exportName === "default" && typeof v === "function") return "main";
    const b = brandOf(v);
    if (b !== undefined) return b.kind;
    if (typeof v === "function") return "function";
    if (isHooksObject(v)) return "tool-hooks";
    return "value";
  }

  // The record behind a target (`{script, name}` or `{handle}`) of `kind`.
  function resolve(targetJson, kind) {
    const target = jsonParse(targetJson);
    if (target.handle !== undefined) {
      const record = iget(handles, target.handle);
      if (record === undefined || record.kind !== kind) throw new TypeErrorCtor("no " + kind + " has handle " + describe(target.handle));
      return record;
    }
    const ns = script(target.script);
    if (!(target.name in ns)) throw new TypeErrorCtor("script " + describe(target.script) + " has no export named " + describe(target.name));
    const v = ns[target.name];
    const actual = kindOf(target.name, v);
    if (actual !== kind) {
      throw new TypeErrorCtor("export " + describe(target.name) + " of " + describe(target.script) + " is not a " + kind + " (it is " + actual + ")");
    }
    return kind === "tool-hooks" ? asHooks(v, "export " + describe(target.name)) : brandOf(v);
  }

  // A list of a session spec (missing: empty).
  function specList(v, name) {
    if (v === undefined || v === null) return [];
    if (!arrayIsArray(v)) throw new TypeErrorCtor("sessions.run: " + name + " must be an array");
    return v;
  }

  // A part of a session spec: a script's object of `kind` (`{target}`), or
  // the host's (`{host: NAME}`), which the loop asks the host to run.
  function specPart(p, kind, where) {
    if (!isPlainObject(p)) throw new TypeErrorCtor(where + ": expected {target} or {host}, got " + describe(p));
    if (p.target !== undefined) return resolve(jsonStringify(p.target), kind);
    if (typeof p.host !== "string") throw new TypeErrorCtor(where + ": expected {target} or {host: name}, got " + describe(p));
    const name = typeof p.name === "string" ? p.name : p.host;
    if (kind === "engine") return { kind, name, host: p.host };
    if (kind === "middleware") return { kind, name, host: { name: p.host, options: {} } };
    if (kind === "tool-hooks") return { kind, host: p.host, failOpen: p.failOpen === true };
    const defs = [];
    for (const t of specList(p.tools, "the tools of " + where)) {
      if (!isPlainObject(t) || typeof t.name !== "string") throw new TypeErrorCtor(where + ": a tool definition needs a name, got " + describe(t));
      defs[defs.length] = {
        name: t.name,
        description: typeof t.description === "string" ? t.description : "",
        parameters: isPlainObject(t.parameters) ? copy(t.parameters) : {},
      };
    }
    return { kind, tools: new MapCtor(), hostTools: null, provider: p.host, providerTools: defs, label: "host tool set " + describe(name) };
  }

  const dispatch = freeze({
    errorInfo: (e) => jsonStringify(errorInfo(e)),
    begin,
    load(task, name, namespace, evaluated) {
      // The task's value is the script's export list: what a host returns
      // from its load, without an entry of its own to ask (`exports`).
      start(task, "json", () => then(evaluated, () => { mset(scripts, name, namespace); native.scriptLoaded(name, namespace); return exportList(namespace); }));
    },
    exports(name) {
      return jsonStringify(exportList(script(name)));
    },
    runMain(task, name, input) {
      start(task, "json", () => {
        const main = script(name).default;
        if (typeof main !== "function") throw new TypeErrorCtor("script " + describe(name) + " has no default export function main(input, ctx)");
        return apply(main, undefined, [jsonParse(input), { taskId: task, script: name }]);
      });
    },
    // `script.call` whose function Rust called itself (vm.rs, `call_inline`:
    // it did what `call` below does up to the function's result): settles
    // the task with what the function returned, or threw (`threw`).
    settle(task, value, threw) {
      settleTask(task, "json", value, threw);
    },
    // As `start` with the body inline (no closure made per call: the
    // shortest entries are calls). Rust's `call_inline` does the same for
    // the usual call, and leaves to this one every call it would fail.
    call(task, name, fn, args) {
      begin(task);
      let value;
      try {
        const ns = script(name);
        if (!(fn in ns)) throw new TypeErrorCtor("script " + describe(name) + " has no export named " + describe(fn));
        const f = ns[fn];
        if (typeof f !== "function") throw new TypeErrorCtor("export " + describe(fn) + " of " + describe(name) + " is not a function");
        const list = jsonParse(args);
        if (!arrayIsArray(list)) throw new TypeErrorCtor("the arguments must be a JSON array");
        value = apply(f, undefined, list);
      } catch (e) {
        return settleTask(task, "json", e, true);
      }
      settleTask(task, "json", value, false);
    },
    infer(task, target, turn, ctx) {
      start(task, "turn", () => runEngine(resolve(target, "engine"), jsonParse(turn), jsonParse(ctx)));
    },
    middleware(task, target, turn, ctx) {
      start(task, "turn", () => {
        const m = resolve(target, "middleware");
        if (m.run === undefined) throw new TypeErrorCtor("middleware " + describe(m.name) + " is the host's: the host runs it");
        const t = jsonParse(turn);
        const context = jsonParse(ctx);
        context.middlewareName = m.name;
        const next = (nt) => {
          let normalized;
          try { normalized = normalizeTurn(nt === undefined || nt === null ? t : nt); } catch (e) { return apply(Promise.reject, PromiseCtor, [e]); }
          return hostPromise({ op: "next", turn: normalized });
        };
        return then(promiseResolve(apply(m.run, undefined, [t, next, context])), (out) => (out === undefined || out === null ? t : out));
      });
    },
    // The `next(turn)` of the host middleware the pending op `op` runs: the
    // rest of that chain, in this new task, in the scope of the op.
    next(task, op, turn) {
      start(task, "turn", () => {
        const p = iget(state.pending, op);
        if (p === undefined || p.next === undefined) {
          throw new ErrorCtor("middleware.next: operation " + op + " is not a host middleware the guest awaits (answered, released, or never asked)");
        }
        state.scope = p.scope;
        return p.next(jsonParse(turn));
      });
    },
    listTools(target) {
      return jsonText(definitions(resolve(target, "tool-registry"), false));
    },
    callTool(task, target, toolCall, ctx) {
      start(task, "json", () => {
        const r = resolve(target, "tool-registry");
        const c = jsonParse(toolCall);
        if (!mhas(r.tools, c.name)) throw new TypeErrorCtor("unknown tool " + describe(c.name));
        const context = jsonParse(ctx);
        context.toolName = c.name;
        context.callId = c.id;
        return callTool(r, c.name, c.arguments, context);
      });
    },
    hook(task, target, hook, payload) {
      start(task, "json", () => {
        const h = resolve(target, "tool-hooks");
        const f = h.hooks[hook];
        if (typeof f !== "function") return null;
        return apply(f, h.hooks, [jsonParse(payload)]);
      });
    },
    // A session the host started (`sessions.run`) from parts of its own
    // and of scripts: the loop once, on `input`.
    session(task, specText, input) {
      start(task, "json", () => {
        const spec = jsonParse(specText);
        if (!isPlainObject(spec)) throw new TypeErrorCtor("sessions.run: the spec must be a JSON object");
        const sessionId = typeof spec.sessionId === "string" && spec.sessionId !== "" ? spec.sessionId : uuid();
        const parts = {
          engine: specPart(spec.engine, "engine", "sessions.run: engine"),
          middlewares: specList(spec.middlewares, "middlewares").map((p, i) => specPart(p, "middleware", "sessions.run: middlewares[" + i + "]")),
          registries: specList(spec.tools, "tools").map((p, i) => specPart(p, "tool-registry", "sessions.run: tools[" + i + "]")),
          hooks: spec.hooks === undefined || spec.hooks === null ? undefined : specPart(spec.hooks, "tool-hooks", "sessions.run: hooks"),
        };
        const settings = loopSettings(parseLoop(spec.settings === undefined || spec.settings === null ? {} : spec.settings, "sessions.run: settings").settings);
        const table = toolTable(parts.registries);
        const timeoutMs = spec.timeoutMs;
        if (timeoutMs !== undefined && timeoutMs !== null && !(typeof timeoutMs === "number" && timeoutMs > 0)) {
          throw new TypeErrorCtor("sessions.run: timeoutMs must be a positive number, got " + describe(timeoutMs));
        }
        if (spec.tags !== undefined && spec.tags !== null && !isPlainObject(spec.tags)) throw new TypeErrorCtor("sessions.run: tags must be an object");
        const run = {
          sessionId,
          parts,
          settings,
          tools: table,
          offered: offeredTools(table, settings),
          tags: isPlainObject(spec.tags) ? copy(spec.tags) : {},
          deadlineMs: typeof timeoutMs === "number" ? dateNow() + timeoutMs : undefined,
          scope: newScope(null),
          emitter: makeEmitter(sessionId, task, undefined),
        };
        return then(runLoop(run, normalizeTurn(jsonParse(input))), (turn) => ({ turn }), (e) => {
          const failure = call(weakGet, loopFailures, e);
          if (failure === undefined) throw e;
          return { error: failure, turn: e.turn };
        });
      });
    },
    // `body`: the ArrayBuffer of an HTTP response, whose other parts are
    // `value`.
    resume(op, ok, value, body) {
      const p = iget(state.pending, op);
      if (p === undefined) return; // released, or its task was cancelled
      dropPending(op);
      setCurrent(p.task);
      state.scope = p.scope;
      const v = ok ? jsonParse(value) : hostError(jsonParse(value));
      if (ok && body !== undefined) v.body = body;
      p.settle(ok, v);
    },
    notify(op, events) {
      const p = iget(state.pending, op);
      if (p === undefined || p.progress === undefined) return;
      setCurrent(p.task);
      state.scope = p.scope;
      for (let i = 0; i < events.length; i++) p.progress(jsonParse(events[i]));
    },
    // The next settlement waiting for a turn of its own (core.js).
    settleNext() {
      settleNext();
    },
    // The task JavaScript last ran for.
    current() {
      return state.current;
    },
    // Stops a live task from outside its code: `kind` is the failure
    // ("cancelled", "deadline", "out-of-memory", "output", "operations"),
    // `detail` its words. Its pending operations are released and then it
    // is done; then they reject with an AbortError, and what its code asks
    // while it unwinds is refused.
    stop(task, kind, detail) {
      if (!native.live(task)) return;
      iset(state.canceled, task, detail);
      // Remembered so that what the task's code asks for while it unwinds is
      // refused; the oldest go once there are many (a long-lived sandbox
      // cancels without end, and a task cancelled that long ago has nothing
      // left to unwind).
      if (state.canceled.size > MAX_CANCELED) {
        for (const oldest of state.canceled.keys()) {
          mdel(state.canceled, oldest);
          break;
        }
      }
      const aborted = [];
      for (const [op, p] of pendingOf(task)) {
        dropPending(op);
        native.release(op);
        aborted[aborted.length] = p;
      }
      done(task, kind, detail);
      setCurrent(task);
      state.scope = null;
      for (let i = 0; i < aborted.length; i++) aborted[i].settle(false, abortError(detail));
    },
  });

  // What Rust reads and changes itself (vm.rs): `state.current` at each
  // entry, and `state.scope` where `call_inline` begins a task. It finds
  // the scripts through `native.scriptLoaded`, told where `load` sets them,
  // and keeps which tasks are live itself (`native.begin`).
  const books = freeze({ state });

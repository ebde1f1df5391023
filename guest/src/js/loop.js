// The session loop: infer through the middleware chain, execute the tool
// calls the model asked for (hooks, argument validation, timeouts, retries,
// bounded parallelism), append their results, again. One implementation for
// every host: the host only answers the I/O operations it asks for.
//
// Cancellation works by scopes. Every host operation is requested in the
// scope JavaScript runs in (`state.scope`, restored when the operation is
// answered); cancelling a scope releases the operations of it and of the
// scopes below it, and rejects them with an AbortError. A run has a scope, and
// each attempt of a tool call one below it.

  // ---------------------------------------------------------------- scopes

  // A scope belongs to the task whose code made it (its run's). It knows
  // the scopes made below it (`kids`), so that cancelling or closing one
  // reaches its own subtree, not every scope of the VM; and it keeps the
  // signal scripts were given for it, if any (`scopeSignal`, web.js).
  function newScope(parent) {
    const top = parent === null || parent === undefined;
    // Below a scope that is closed (`scopeClosed`, web.js) and cancelled,
    // a scope is closed from the start and is not a kid: code a
    // cancellation left running can still make one (a tool call launched
    // after an event handler cancelled the run), and as a kid of its
    // parent it would be a cycle that nothing closes. What it asks for is
    // refused and its signals are aborted already (`canceledIn`), so its
    // parent never needs to reach it. Below a closed scope that was not
    // cancelled (code a finished run's tool left running), a scope is a
    // kid as usual: a run started there closes its scope, and leaves its
    // parent's kids, at its end.
    const closed = !top && parent.closed === true && canceledIn(parent) !== null;
    const scope = { parent, canceled: null, task: top ? state.current : parent.task, kids: null, signal: undefined, signalSeq: 0, closed };
    if (!top && !closed) {
      if (parent.kids === null) parent.kids = new SetCtor();
      sadd(parent.kids, scope);
    }
    return scope;
  }

  // `scope` and the scopes below it, in no particular order.
  function subtree(scope) {
    const out = [scope];
    for (let i = 0; i < out.length; i++) {
      const kids = out[i].kids;
      if (kids !== null) for (const k of kids) out[out.length] = k;
    }
    return out;
  }

  // The error a scope (or one above it) was cancelled with, or null.
  function canceledIn(scope) {
    for (let s = scope; s !== null && s !== undefined; s = s.parent) if (s.canceled !== null) return s.canceled;
    return null;
  }

  function within(scope, ancestor) {
    for (let s = scope; s !== null && s !== undefined; s = s.parent) if (s === ancestor) return true;
    return false;
  }

  // Releases what `scope` awaits from the host, at once; what is asked in it
  // afterwards is refused with `error`. What it awaited rejects with `error`,
  // and the signals scripts were given abort, each in a turn of its own in
  // its own scope (see `settleInTurn`): the code that goes on after a
  // cancellation runs in the cancelled scope, and what it starts (a nested
  // run, a timer) is refused or cancelled with it.
  function cancelScope(scope, error) {
    if (scope.canceled !== null) return;
    scope.canceled = error;
    for (const p of state.pending.values()) {
      const op = p.op;
      if (!within(p.scope, scope)) continue;
      dropPending(op);
      native.release(op);
      settleInTurn(p.task, p.scope, () => p.settle(false, error));
    }
    scopeCanceled(scope); // the signals scripts were given (web.js)
  }

  // Runs `fn` with `scope` as the scope of what it asks the host for.
  function inScope(scope, fn) {
    const saved = state.scope;
    state.scope = scope;
    try {
      return fn();
    } finally {
      state.scope = saved;
    }
  }

  // Calls user code in `scope`: a promise of what it returns, or of its error.
  function callIn(scope, fn, self, args) {
    try {
      return promiseResolve(inScope(scope, () => apply(fn, self, args)));
    } catch (e) {
      return apply(Promise.reject, PromiseCtor, [e]);
    }
  }

  function sleepIn(scope, ms) {
    return inScope(scope, () => hostPromise({ op: "sleep", ms: mathMax(0, mathMin(1e12, mathFloor(ms))) }));
  }

  // ---------------------------------------------------------------- events

  // A run's events: to the host (a `session` event of the run's task) and to
  // `deliver`, the script's handlers, which keeps them for handlers
  // registered late. `deliver` is undefined where no script can listen (a
  // run started by `run()`, whose run object no one sees, or by the host):
  // then, for a host that does not read them either, no event is made at
  // all, nor what only the events need (`wanted`).
  function makeEmitter(sessionId, task, deliver) {
    let inferenceId = "";
    let turnId = "";
    // Whether the host reads this run's events: asked at the first one.
    let hostReads;
    function readsHost() {
      if (!native.live(task)) return false;
      if (hostReads === undefined) hostReads = native.wantsSessionEvents(task) === true;
      return hostReads;
    }
    function wanted() {
      return deliver !== undefined || readsHost();
    }
    function emit(type, fields) {
      if (!wanted()) return;
      const event = { timestampMs: dateNow(), sessionId, inferenceId, turnId, type };
      if (fields !== undefined) for (const k of objectKeys(fields)) if (fields[k] !== undefined) event[k] = fields[k];
      if (readsHost()) {
        let text;
        try { text = jsonText(event); } catch (_) { text = undefined; }
        if (text !== undefined) native.sessionEvent(task, text);
      }
      if (deliver !== undefined) deliver(event);
    }
    // No method refers to the emitter itself (a cycle only the collector
    // frees: see `createRegistry` in api.js).
    return {
      at(inference, turn) {
        inferenceId = inference;
        turnId = turn;
      },
      emit,
      wanted,
      // A stream event a host engine reported (`{type: "partial", delta, completion}`).
      progress(event) {
        if (!isPlainObject(event) || event.type !== "partial") return;
        emit("partial", { delta: StringCtor(event.delta === undefined ? "" : event.delta), completion: StringCtor(event.completion === undefined ? "" : event.completion) });
      },
    };
  }

  // ---------------------------------------------------------------- engines and middleware

  // The inference context JavaScript engines get, linked to the run that made
  // it: a JS engine that hands it to `engines.host().infer(turn, ctx)` passes
  // the run's tools, tool choice and event stream on to the host engine.
  const contextLinks = new WeakMapCtor(); // ctx object -> emitter

  // The tools of a context a script handed over, in the shape the host reads.
  function contextTools(list) {
    if (!arrayIsArray(list)) return [];
    const out = [];
    for (const t of list) {
      if (!isPlainObject(t) || typeof t.name !== "string") continue;
      out[out.length] = {
        name: t.name,
        description: typeof t.description === "string" ? t.description : "",
        parameters: isPlainObject(t.parameters) ? copy(t.parameters) : { type: "object", properties: {} },
      };
    }
    return out;
  }

  // Asks the host engine `engine` (null: its default) for an inference.
  function hostInfer(engine, turn, ctx, emitter) {
    const c = isPlainObject(ctx) ? ctx : {};
    const context = {};
    for (const key of ["sessionId", "inferenceId", "turnId", "tags", "deadlineMs"]) if (c[key] !== undefined && c[key] !== null) context[key] = copy(c[key]);
    const toolChoice = c.toolChoice === "none" || c.toolChoice === "required" ? c.toolChoice : "auto";
    const what = { op: "infer", engine, turn, context, tools: toolChoice === "none" ? [] : contextTools(c.tools), toolChoice };
    return hostPromise(what, emitter === undefined ? undefined : emitter.progress);
  }

  // Gives a context the enumerable property `tools`, a copy of the tools
  // offered, made when the engine first reads it: most read no more than
  // the turn.
  const toolsCopiedWhenRead = lazyProperty("tools", copy);

  // Runs the chain from middleware `index` on: at the end, the engine.
  function runChain(run, index, turn, ctx) {
    const parts = run.parts;
    if (index === parts.middlewares.length) return runEngineIn(run, turn, ctx);
    const m = parts.middlewares[index];
    const next = (t) => {
      let normalized;
      try {
        normalized = normalizeTurn(copy(t === undefined || t === null ? turn : t));
      } catch (e) {
        return apply(Promise.reject, PromiseCtor, [e]);
      }
      return runChain(run, index + 1, normalized, ctx);
    };
    const mctx = { sessionId: ctx.sessionId, inferenceId: ctx.inferenceId, turnId: ctx.turnId, tags: copy(ctx.tags), deadlineMs: ctx.deadlineMs, middlewareName: m.name };
    let out;
    if (m.host !== undefined) {
      out = inScope(run.scope, () => new PromiseCtor((resolve, reject) => {
        const what = { op: "middleware", name: m.host.name, options: m.host.options, turn, context: mctx };
        request(what, (ok, v) => (ok ? resolve(v) : reject(v)), undefined, next);
      }));
    } else {
      out = callIn(run.scope, m.run, undefined, [copy(turn), next, withSignal(mctx, run.scope)]);
    }
    return then(out, (v) => (v === undefined || v === null ? turn : normalizeTurn(copy(v))));
  }

  function runEngineIn(run, turn, ctx) {
    const engine = run.parts.engine;
    if (engine.host !== undefined) {
      return inScope(run.scope, () => hostInfer(engine.host, turn, ctx, run.emitter));
    }
    // What `copy(ctx)` would make, but for the tools offered (each with its
    // schema), copied only for an engine that reads them: most read no more
    // than the turn.
    const c = { sessionId: ctx.sessionId, inferenceId: ctx.inferenceId, turnId: ctx.turnId, tags: copy(ctx.tags) };
    if (ctx.deadlineMs !== undefined) c.deadlineMs = ctx.deadlineMs;
    toolsCopiedWhenRead(c, ctx.tools);
    c.toolChoice = ctx.toolChoice;
    withSignal(c, run.scope);
    call(weakSet, contextLinks, c, run.emitter);
    // Not copied again: `turn` is the loop's own (which it replaces by
    // what the engine returns) or the copy a middleware's `next` made.
    const t = turn;
    return then(callIn(run.scope, engine.run, undefined, [t, c]), (v) => (v === undefined || v === null ? t : v));
  }

  // ---------------------------------------------------------------- hooks

  function decisionError(hook, message) {
    return { error: hook + " returned an invalid decision: " + message };
  }

  // `null`/`undefined` is no decision; an object may hold only `allowed` keys.
  function decisionObject(hook, v, allowed) {
    if (v === undefined || v === null) return { value: null };
    if (!isPlainObject(v)) return decisionError(hook, "expected an object or null, got " + describeJson(v));
    for (const k of objectKeys(v)) {
      if (call(arrayIndexOf, allowed, k) < 0) return decisionError(hook, "unknown key " + jsonStringify(k) + " (expected " + call(arrayJoin, allowed, ", ") + ")");
    }
    return { value: v };
  }

  function decisionAction(hook, o, allowed) {
    const a = o.action;
    if (a === undefined || a === null) return { value: null };
    if (typeof a === "string" && call(arrayIndexOf, allowed, a) >= 0) return { value: a };
    return decisionError(hook, "action " + describeJson(a) + " (expected " + call(arrayJoin, allowed, " or ") + ")");
  }

  function decisionText(hook, o, key) {
    const v = o[key];
    if (v === undefined || v === null) return { value: null };
    if (typeof v === "string") return { value: v };
    return decisionError(hook, key + " must be a string, got " + describeJson(v));
  }

  function describeJson(v) {
    let s;
    try { s = jsonStringify(v); } catch (_) { s = undefined; }
    return s === undefined ? safeString(v) : s;
  }

  // What a hook returned, read: `{value}` (a decision) or `{error}`.
  const readDecision = {
    beforeToolCall(v) {
      const H = "beforeToolCall";
      const o = decisionObject(H, v, ["action", "error", "call"]);
      if (o.error !== undefined || o.value === null) return o.error !== undefined ? o : { value: { kind: "continue" } };
      const a = decisionAction(H, o.value, ["abort", "continue"]);
      if (a.error !== undefined) return a;
      if (a.value === "abort") {
        const e = decisionText(H, o.value, "error");
        return e.error !== undefined ? e : { value: { kind: "abort", error: e.value } };
      }
      const c = o.value.call;
      if (c === undefined || c === null) return { value: { kind: "continue" } };
      const co = decisionObject(H, c, ["id", "name", "args"]);
      if (co.error !== undefined) return co;
      const name = decisionText(H, co.value, "name");
      if (name.error !== undefined) return name;
      return { value: { kind: "change", name: name.value, hasArgs: objectHasOwn(co.value, "args"), args: co.value.args } };
    },
    afterToolCall(v) {
      const H = "afterToolCall";
      const o = decisionObject(H, v, ["action", "result", "error"]);
      if (o.error !== undefined || o.value === null) return o.error !== undefined ? o : { value: { kind: "keep" } };
      const a = decisionAction(H, o.value, ["continue"]);
      if (a.error !== undefined) return a;
      const e = decisionText(H, o.value, "error");
      if (e.error !== undefined) return e;
      const hasResult = objectHasOwn(o.value, "result") && o.value.result !== undefined;
      if (hasResult && e.value !== null) return decisionError(H, "both result and error: return one of them");
      if (hasResult) return { value: { kind: "replace", result: o.value.result } };
      if (e.value !== null) return { value: { kind: "error", error: e.value } };
      return { value: { kind: "keep" } };
    },
    onToolError(v) {
      const H = "onToolError";
      const o = decisionObject(H, v, ["action", "backoffMs"]);
      if (o.error !== undefined || o.value === null) return o.error !== undefined ? o : { value: { kind: "default" } };
      let backoffMs = null;
      const b = o.value.backoffMs;
      if (b !== undefined && b !== null) {
        if (!(NumberCtor.isInteger(b) && b >= 0)) return decisionError(H, "backoffMs must be a non-negative integer, got " + describeJson(b));
        backoffMs = b;
      }
      const a = decisionAction(H, o.value, ["retry", "abort", "continue"]);
      if (a.error !== undefined) return a;
      if (a.value === "retry") return { value: { kind: "retry", backoffMs } };
      if (backoffMs !== null) return decisionError(H, "backoffMs without action \"retry\"");
      if (a.value === "abort") return { value: { kind: "abort" } };
      if (a.value === "continue") return { value: { kind: "continue" } };
      return { value: { kind: "default" } };
    },
  };

  const defaultDecision = { beforeToolCall: { kind: "continue" }, afterToolCall: { kind: "keep" }, onToolError: { kind: "default" } };

  // Calls hook `name` with `payload`: a promise of `{value}` (its decision)
  // or `{error}` (the call's error, fail-closed). A missing hook decides
  // nothing; a failing hook under failOpen decides nothing.
  function callHook(run, name, payload) {
    const hooks = run.parts.hooks;
    let work;
    if (hooks !== undefined && hooks.host !== undefined) {
      // The host's hooks (a session the host started): it decides.
      work = inScope(run.scope, () => hostPromise({ op: "hook", provider: hooks.host, hook: name, payload: copy(payload) }));
    } else {
      const f = hooks === undefined ? undefined : hooks.hooks[name];
      if (typeof f !== "function") return promiseResolve({ value: defaultDecision[name] });
      work = callIn(run.scope, f, hooks.hooks, [copy(payload)]);
    }
    const failed = (text) => (hooks.failOpen ? { value: defaultDecision[name] } : { error: "the " + name + " hook failed: " + text });
    return then(work, (v) => {
      const d = readDecision[name](v);
      return d.error !== undefined ? failed(d.error) : d;
    }, (e) => failed(errorText(e)));
  }

  // What a model (or a hook) sees of a failure: `Name: message`.
  function errorText(e) {
    const info = errorInfo(e);
    return info.name + ": " + info.message;
  }

  // ---------------------------------------------------------------- tools

  // The tools of a run, by name: `{definition, registry, js, provider}` (a
  // JS tool of the registry, a host tool it uses, or a tool of a host tool
  // set `provider` of a session the host started). A name in two
  // registries throws.
  function toolTable(registries) {
    const table = new MapCtor();
    for (let i = 0; i < registries.length; i++) {
      const r = registries[i];
      if (r.provider !== undefined) {
        for (const d of r.providerTools) addTool(table, r, d, undefined, r.label, r.provider);
        continue;
      }
      const label = "registry " + (i + 1);
      for (const t of r.tools.values()) {
        // The definition offered, made once per tool the registry holds.
        if (t.definition === undefined) t.definition = { name: t.name, description: t.description, parameters: t.parameters };
        addTool(table, r, t.definition, t, label);
      }
      if (r.hostTools !== null) for (const h of hostToolsOf(r)) addTool(table, r, h, undefined, "the host tools of registry " + (i + 1));
    }
    return table;
  }

  function addTool(table, registry, definition, js, label, provider) {
    const first = mget(table, definition.name);
    if (first !== undefined) {
      throw new TypeErrorCtor("tool " + jsonStringify(definition.name) + (first.label === label ? " is defined twice in " + label : " is defined in both " + first.label + " and " + label));
    }
    mset(table, definition.name, { definition, registry, js, provider, label });
  }

  // The definitions a run offers the model: its tools, as allowedTools
  // filters them. The registries' own objects, which no one changes: what
  // reaches user code or the host is a copy (see `runLoop`).
  function offeredTools(table, settings) {
    const offered = [];
    for (const entry of table.values()) {
      if (settings.allowedTools !== undefined && call(arrayIndexOf, settings.allowedTools, entry.definition.name) < 0) continue;
      offered[offered.length] = entry.definition;
    }
    return offered;
  }

  // The tool_call blocks without a tool_use block of the same payload id, in
  // turn order (a repeated id counts once). Arguments given as JSON text (as
  // some providers send them) are parsed.
  function pendingCalls(turn) {
    const answered = new SetCtor();
    for (const b of turn.blocks) if (b.kind === "tool_use" && typeof b.payload.id === "string") sadd(answered, b.payload.id);
    const calls = [];
    for (const b of turn.blocks) {
      if (b.kind !== "tool_call") continue;
      const id = b.payload.id;
      if (typeof id !== "string" || shas(answered, id)) continue;
      sadd(answered, id);
      let args = b.payload.args;
      if (args === undefined || args === null) args = {};
      else if (typeof args === "string") {
        try { args = jsonParse(args); } catch (_) { /* kept as text */ }
      }
      calls[calls.length] = { id, name: typeof b.payload.name === "string" ? b.payload.name : "", args };
    }
    return calls;
  }

  // Gives every tool_call block without a string id one, so results can be
  // matched to calls.
  function identifyCalls(turn) {
    for (const b of turn.blocks) if (b.kind === "tool_call" && typeof b.payload.id !== "string") b.payload.id = uuid();
    return turn;
  }

  // Whether a call may run at all: "" or why not.
  function admit(run, name) {
    const s = run.settings;
    if (name === "") return "the tool call names no tool";
    if (s.allowedTools !== undefined && call(arrayIndexOf, s.allowedTools, name) < 0) {
      return "tool " + jsonStringify(name) + " is not allowed (allowed tools: " + known(s.allowedTools) + ")";
    }
    if (!mhas(run.tools, name)) return "unknown tool " + jsonStringify(name) + " (tools: " + known([...run.tools.keys()]) + ")";
    return "";
  }

  function outcome(c, result, error, abort) {
    return { id: c.id, tool: c.name, result: error === null ? result : null, error, abort };
  }

  const defaultAbort = (run) => (run.settings.toolErrorHandling === "abort" ? "handling" : null);

  function backoff(s, attempt) {
    const ms = s.retryBackoffMs * (s.retryBackoffFactor ** (attempt - 1));
    return mathMin(1e12, mathMax(0, ms));
  }

  function hookPayload(run, c, attempt) {
    return { call: { id: c.id, name: c.name, args: c.args }, attempt, sessionId: run.sessionId };
  }

  // One attempt of a call, bounded by executionTimeoutMs: `{ok, value}` or
  // `{ok: false, message}`. A timed-out attempt's scope is cancelled: what
  // its handler awaits is released.
  function attemptOnce(run, c, attempt, inferenceId) {
    const s = run.settings;
    const entry = mget(run.tools, c.name);
    const scope = newScope(run.scope);
    const own = dateNow() + s.executionTimeoutMs;
    const ctx = {
      toolName: c.name, callId: c.id, sessionId: run.sessionId, inferenceId, tags: copy(run.tags),
      deadlineMs: run.deadlineMs === undefined ? own : mathMin(run.deadlineMs, own), attempt,
    };
    let work;
    if (entry.js !== undefined) {
      work = callIn(scope, entry.js.handler, undefined, [copy(c.args), withSignal(ctx, scope)]);
    } else {
      work = inScope(scope, () => hostPromise({ op: "call-tool", call: { id: c.id, name: c.name, arguments: c.args }, context: ctx, provider: entry.provider }));
    }
    return new PromiseCtor((resolve) => {
      let over = false;
      const timer = inScope(run.scope, () => request({ op: "sleep", ms: s.executionTimeoutMs }, (ok) => {
        if (over || !ok) return;
        over = true;
        const message = "tool " + jsonStringify(c.name) + " timed out after " + s.executionTimeoutMs + "ms";
        cancelScope(scope, abortError(message));
        resolve({ ok: false, message });
      }));
      then(work, (v) => {
        if (over) return;
        over = true;
        release(timer);
        let value;
        try {
          value = v === undefined ? null : copy(v);
          if (value === undefined) value = null; // functions, symbols
        } catch (e) {
          return resolve({ ok: false, message: "the result of tool " + jsonStringify(c.name) + " is not JSON-serialisable: " + errorInfo(e).message });
        }
        resolve({ ok: true, value });
      }, (e) => {
        if (over) return;
        over = true;
        release(timer);
        resolve({ ok: false, message: errorText(e) });
      });
    });
  }

  // The attempts of a call: the first, then the retries the error hook or
  // the error handling ask for. Resolves `[attempt, outcome]`.
  async function attempts(run, c, inferenceId) {
    const s = run.settings;
    let attempt = 1;
    let hookRetries = 0;
    for (;;) {
      const r = await attemptOnce(run, c, attempt, inferenceId);
      if (r.ok) return [attempt, outcome(c, r.value, null, null)];
      const message = r.message;
      const fail = (error, abort) => [attempt, outcome(c, null, error, abort)];
      let decision = { kind: "default" };
      if (run.parts.hooks !== undefined) {
        const payload = hookPayload(run, c, attempt);
        payload.error = message;
        const d = await callHook(run, "onToolError", payload);
        if (d.error !== undefined) return fail(message + " (" + d.error + ")", defaultAbort(run));
        decision = d.value;
      }
      let wait;
      if (decision.kind === "retry") {
        if (hookRetries >= s.maxHookRetries) {
          return fail(message + " (onToolError asked for more than maxHookRetries (" + s.maxHookRetries + ") retries)", defaultAbort(run));
        }
        hookRetries++;
        wait = decision.backoffMs !== null ? decision.backoffMs : backoff(s, attempt);
      } else if (decision.kind === "abort") {
        return fail(message, "hook");
      } else if (decision.kind === "continue") {
        return fail(message, null);
      } else if (s.toolErrorHandling === "abort") {
        return fail(message, "handling");
      } else if (s.toolErrorHandling === "retry" && attempt <= s.retryMaxRetries) {
        wait = backoff(s, attempt);
      } else if (s.toolErrorHandling === "retry") {
        return fail(message + " (after " + attempt + " attempts)", null);
      } else {
        return fail(message, null);
      }
      await sleepIn(run.scope, wait);
      attempt++;
    }
  }

  // Runs one call to its outcome. Never rejects: every failure is an
  // outcome the model (or the loop) sees.
  async function execute(run, original, inferenceId) {
    const started = dateNow();
    const c = { id: original.id, name: original.name, args: original.args };
    let problem = admit(run, c.name);
    if (problem !== "") return outcome(c, null, problem, defaultAbort(run));
    const hooked = run.parts.hooks !== undefined;
    if (hooked) {
      const d = await callHook(run, "beforeToolCall", hookPayload(run, c, 1));
      if (d.error !== undefined) return outcome(c, null, d.error, defaultAbort(run));
      const decision = d.value;
      if (decision.kind === "abort") {
        const error = decision.error !== null ? decision.error : "tool " + jsonStringify(c.name) + " was not run: the beforeToolCall hook aborted it";
        return outcome(c, null, error, defaultAbort(run));
      }
      if (decision.kind === "change") {
        if (decision.name !== null && decision.name !== c.name) {
          problem = admit(run, decision.name);
          if (problem !== "") return outcome(c, null, problem, defaultAbort(run));
          c.name = decision.name;
        }
        if (decision.hasArgs) c.args = decision.args;
      }
    }
    const entry = mget(run.tools, c.name);
    if (entry.js !== undefined || entry.provider !== undefined) {
      const schema = entry.definition.parameters;
      if (isPlainObject(schema) && objectKeys(schema).length > 0) {
        const invalid = native.validate(schemaText(schema), jsonText(c.args === undefined ? {} : c.args));
        if (invalid !== null && invalid !== undefined) {
          return outcome(c, null, "invalid arguments for tool " + jsonStringify(c.name) + ": " + invalid, defaultAbort(run));
        }
      }
    }
    const [attempt, result] = await attempts(run, c, inferenceId);
    if (!hooked) return result;
    const payload = hookPayload(run, c, attempt);
    if (result.error === null) payload.result = result.result;
    else payload.error = result.error;
    payload.durationMs = mathMax(0, dateNow() - started);
    const d = await callHook(run, "afterToolCall", payload);
    let replaced = null;
    if (d.error !== undefined) replaced = d.error;
    else if (d.value.kind === "replace") {
      result.result = copy(d.value.result);
      if (result.result === undefined) result.result = null;
      result.error = null;
      result.abort = null;
    } else if (d.value.kind === "error") replaced = d.value.error;
    if (replaced !== null) {
      if (result.error === null) result.abort = defaultAbort(run);
      result.result = null;
      result.error = replaced;
    }
    return result;
  }

  function toolUseBlock(o) {
    const payload = { id: o.id, result: o.result };
    if (o.error !== null) payload.error = o.error;
    return block("tool_use", "tool", payload);
  }

  // Executes one step's calls, at most maxParallelTools at once; appends
  // their tool_use blocks in call order. A call whose failure aborts the
  // run cancels the calls still running; resolves the aborting outcome, or
  // null.
  //
  // The step's state is one object that the functions below take, not
  // variables their closures share: a launch that makes the settlement that
  // calls the next launch, as closures, is a cycle (each refers to the
  // other's binding) that reference counting never frees, and it held every
  // outcome of the step until the collector ran (about 9 KiB a tool call;
  // docs/architecture.md §11).
  function step(run, turn, calls, inferenceId) {
    if (run.emitter.wanted()) for (const c of calls) run.emitter.emit("tool-call", { toolCall: { id: c.id, name: c.name, input: copy(c.args) } });
    return new PromiseCtor((resolve) => {
      const st = { run, turn, calls, inferenceId, resolve, slots: [], scopes: [], next: 0, running: 0, aborted: null };
      if (calls.length === 0) return finishStep(st);
      launchCalls(st);
    });
  }

  function finishStep(st) {
    const { slots, turn } = st;
    for (let i = 0; i < slots.length; i++) if (slots[i] !== undefined) turn.blocks[turn.blocks.length] = toolUseBlock(slots[i]);
    st.resolve(st.aborted);
  }

  function launchCalls(st) {
    const { run, calls } = st;
    while (st.aborted === null && st.running < run.settings.maxParallelTools && st.next < calls.length) {
      const i = st.next++;
      st.running++;
      // Each call in a scope of its own, so an abort can stop the others.
      const scope = newScope(run.scope);
      st.scopes[i] = scope;
      const callRun = { ...run, scope };
      // execute() turns every failure into an outcome; anything else is
      // the runtime's own bug, reported as the call's error.
      then(execute(callRun, calls[i], st.inferenceId), (o) => settleCall(st, i, o), (e) => settleCall(st, i, outcome(calls[i], null, "internal error: " + errorText(e), null)));
    }
  }

  function settleCall(st, i, o) {
    st.running--;
    if (st.aborted !== null) return;
    if (st.run.emitter.wanted()) st.run.emitter.emit("tool-result", { toolResult: o.error === null ? { id: o.id, result: o.result } : { id: o.id, result: o.result, error: o.error } });
    st.slots[i] = o;
    if (o.abort !== null) {
      st.aborted = o;
      const { scopes } = st;
      for (let j = 0; j < scopes.length; j++) if (j !== i && scopes[j] !== undefined) cancelScope(scopes[j], abortError("another tool call aborted the run"));
      return finishStep(st);
    }
    if (st.running === 0 && st.next >= st.calls.length) return finishStep(st);
    launchCalls(st);
  }

  // ---------------------------------------------------------------- the loop

  // The failures of the loop itself (not an engine's or middleware's error),
  // by error: what a host that started the session reads as typed fields.
  const loopFailures = new WeakMapCtor();

  function runFailure(run, message, turn, detail) {
    const e = new ErrorCtor("session " + run.sessionId + ": run: " + message);
    if (turn !== undefined) e.turn = copy(turn);
    if (detail !== undefined) call(weakSet, loopFailures, e, detail);
    return e;
  }

  // Runs the loop on `seed` to its final turn. `seed` is normalized
  // (`normalizeTurn`) and the loop's own: the loop changes it. The turn it
  // resolves is normalized too: each inference's turn is, and so are the
  // tool_use blocks the loop appends.
  async function runLoop(run, seed) {
    const s = run.settings;
    let turn = identifyCalls(seed);
    for (let iteration = 1; iteration <= s.maxIterations; iteration++) {
      const inferenceId = uuid();
      run.emitter.at(inferenceId, turn.id);
      const toolChoice = s.toolChoice === "required" && iteration > 1 ? "auto" : s.toolChoice;
      // The loop's own: user code gets copies of it (`runEngineIn`,
      // `runChain`, `hostInfer`), so it shares the run's tags and tools.
      const ctx = {
        sessionId: run.sessionId, inferenceId, turnId: turn.id, tags: run.tags,
        deadlineMs: run.deadlineMs, tools: toolChoice === "none" ? [] : run.offered, toolChoice,
      };
      run.emitter.emit("start");
      // The blocks there before the inference, to tell the new ones in the
      // "final" event, when it is wanted.
      let before = null;
      if (run.emitter.wanted()) {
        before = new SetCtor();
        for (const b of turn.blocks) sadd(before, b.id);
      }
      turn = identifyCalls(normalizeTurn(await runChain(run, 0, turn, ctx)));
      if (before !== null && run.emitter.wanted()) {
        const texts = [];
        let usage;
        for (const b of turn.blocks) {
          if (shas(before, b.id)) continue;
          if (b.kind === "llm_text" && typeof b.payload.text === "string") texts[texts.length] = b.payload.text;
          if (b.metadata.usage !== undefined && b.metadata.usage !== null) usage = b.metadata.usage;
        }
        run.emitter.emit("final", { text: call(arrayJoin, texts, "\n"), usage });
      }
      if (toolChoice === "none") return turn;
      const calls = pendingCalls(turn);
      if (calls.length === 0) return turn;
      if (iteration === s.maxIterations) {
        throw runFailure(run, "max iterations (" + s.maxIterations + ") reached with tool calls still pending", turn, { kind: "max-iterations", max: s.maxIterations });
      }
      const aborted = await step(run, turn, calls, inferenceId);
      if (aborted !== null) {
        const by = aborted.abort === "hook" ? "the onToolError hook aborted the run" : "toolErrorHandling is abort";
        throw runFailure(run, "tool " + jsonStringify(aborted.tool) + " (call " + aborted.id + ") failed and " + by + ": " + aborted.error, turn, {
          kind: "tool-aborted", tool: aborted.tool, callId: aborted.id, error: aborted.error, by: aborted.abort,
        });
      }
    }
    throw runFailure(run, "the loop ended without a turn");
  }

// Sessions: createSession, createBuilder and runs. The tool loop, the
// middleware chain, tool hooks, retries, timeouts and the event stream run
// here, in the task of the code that started the run (see loop.js); the
// host is asked only for I/O: host engines, host middleware, host tools,
// timers. History lives here, as copies.

  // Tool loop settings: name -> check(value) returning an error text or "".
  const positiveInt = (v) => (NumberCtor.isInteger(v) && v > 0 ? "" : "must be a positive integer");
  const nonNegativeInt = (v) => (NumberCtor.isInteger(v) && v >= 0 ? "" : "must be a non-negative integer");
  const oneOf = (values) => (v) => (call(arrayIndexOf, values, v) >= 0 ? "" : "must be one of " + call(arrayJoin, values, ", "));
  const loopChecks = {
    maxIterations: positiveInt,
    maxParallelTools: positiveInt,
    executionTimeoutMs: positiveInt,
    toolChoice: oneOf(["auto", "none", "required"]),
    toolErrorHandling: oneOf(["continue", "abort", "retry"]),
    retryMaxRetries: nonNegativeInt,
    retryBackoffMs: nonNegativeInt,
    retryBackoffFactor: (v) => (typeof v === "number" && v >= 1 && v < 1e6 ? "" : "must be a number of at least 1"),
    allowedTools: (v) => (arrayIsArray(v) && v.every((n) => typeof n === "string") ? "" : "must be an array of tool names"),
    maxHookRetries: nonNegativeInt,
  };

  // Checks tool loop settings; returns `{settings, hooks}` (hooks may ride
  // along as `hooks`). Throws a TypeError naming the setting.
  function parseLoop(s, where) {
    if (!isPlainObject(s)) throw new TypeErrorCtor(where + ": tool loop settings must be an object");
    const settings = {};
    let hooks;
    for (const key of objectKeys(s)) {
      const value = s[key];
      if (value === undefined) continue;
      if (key === "hooks") {
        hooks = asHooks(value, where + ": hooks");
        continue;
      }
      const check = loopChecks[key];
      if (check === undefined || !objectHasOwn(loopChecks, key)) {
        throw new TypeErrorCtor(where + ": unknown tool loop setting " + describe(key) + " (known: " + call(arrayJoin, objectKeys(loopChecks), ", ") + ", hooks)");
      }
      const problem = check(value);
      if (problem !== "") throw new TypeErrorCtor(where + ": invalid " + key + " " + describe(value) + ": " + problem);
      settings[key] = copy(value);
    }
    return { settings, hooks };
  }

  function runOptions(opts) {
    if (opts === undefined || opts === null) return {};
    if (!isPlainObject(opts)) throw new TypeErrorCtor("run options must be an object {timeoutMs?, tags?, signal?}");
    const out = {};
    for (const key of objectKeys(opts)) {
      const v = opts[key];
      if (v === undefined) continue;
      if (key === "timeoutMs") {
        if (!(typeof v === "number" && v > 0 && v <= 2147483647)) throw new TypeErrorCtor("invalid timeoutMs " + describe(v) + ": must be a positive number of milliseconds");
        out.timeoutMs = mathFloor(v);
      } else if (key === "tags") {
        if (!isPlainObject(v)) throw new TypeErrorCtor("invalid tags: must be an object");
        out.tags = copy(v);
      } else if (key === "signal") {
        if (!isAbortSignal(v)) throw new TypeErrorCtor("invalid signal: must be an AbortSignal");
        out.signal = v;
      } else {
        throw new TypeErrorCtor("unknown run option " + describe(key) + " (known: timeoutMs, tags, signal)");
      }
    }
    return out;
  }

  const eventTypes = ["start", "partial", "final", "tool-call", "tool-result", "error", "*"];

  // The loop settings with their defaults.
  function loopSettings(given) {
    const s = {
      maxIterations: 5, maxParallelTools: 4, executionTimeoutMs: 30000, toolChoice: "auto",
      toolErrorHandling: "continue", retryMaxRetries: 2, retryBackoffMs: 1000, retryBackoffFactor: 2,
      allowedTools: undefined, maxHookRetries: 10,
    };
    for (const k of objectKeys(given)) s[k] = given[k];
    return s;
  }

  function makeSession(config) {
    const sessionId = uuid();
    const history = [];
    let active = null;
    const settings = loopSettings(config.loop);

    // Starts a run. `listened`: whether the script may register handlers
    // for its events (`start` returns the run, with its `on`; `run` returns
    // only the promise, and its events are made only for a host that reads
    // them).
    function launch(seed, opts, listened) {
      if (active !== null) throw new ErrorCtor("session " + sessionId + " is already running: one run at a time (cancelActive() stops it)");
      const options = runOptions(opts);
      // The tools as they are now (a registry may have grown since the
      // session was built); a name in two registries is an error here.
      const table = toolTable(config.registries);
      if (seed !== undefined && seed !== null) history[history.length] = normalizeTurn(copy(seed));
      if (history.length === 0) throw new TypeErrorCtor("nothing to run: pass a seed turn, or append() one first");
      const offered = offeredTools(table, settings);
      const events = [];
      const handlers = [];
      // The run's events end with it (`endEvents`): its handlers are
      // dropped, and what a call its cancellation left running reports
      // afterwards is not recorded. A handler that refers to the run (one
      // that cancels it) made a cycle with it that only the collector freed.
      let eventsOver = false;
      let settled = false;
      let resolveRun, rejectRun;
      const promise = new PromiseCtor((resolve, reject) => {
        resolveRun = resolve;
        rejectRun = reject;
      });

      function deliver(type, cb, event) {
        if (type !== "*" && type !== event.type) return;
        try {
          // Handlers are the starting code's: they run in its scope.
          inScope(outer, () => cb(copy(event)));
        } catch (e) {
          const info = errorInfo(e);
          consoleLine("error", "an event handler for " + describe(type) + " threw: " + info.name + ": " + info.message);
        }
      }

      function emit(event) {
        if (eventsOver) return;
        events[events.length] = event;
        for (let i = 0; i < handlers.length; i++) deliver(handlers[i][0], handlers[i][1], event);
      }

      // A run belongs to the scope of the code that starts it: a run
      // started by a tool's code is cancelled with that attempt, and one
      // started in a scope cancelled already fails at once. (What a run's
      // end or a cancellation resumes runs in a turn of its own, in its own
      // scope, so the scope here is that of the code running: see
      // `settleInTurn` in core.js.)
      const outer = state.scope;
      const owner = state.current;
      const loop = {
        sessionId,
        parts: config,
        settings,
        tools: table,
        offered,
        tags: options.tags === undefined ? {} : options.tags,
        deadlineMs: options.timeoutMs === undefined ? undefined : dateNow() + options.timeoutMs,
        scope: newScope(outer),
        emitter: makeEmitter(sessionId, state.current, listened ? emit : undefined),
      };
      let timer = 0;
      let unfollow; // stops following the run's `signal` option

      function finish(ok, value) {
        if (settled) return;
        settled = true;
        active = null;
        if (timer !== 0) release(timer);
        if (unfollow !== undefined) {
          unfollow();
          // It reaches `finish` through the signal's algorithm, and `finish`
          // reaches it: a cycle, left set.
          unfollow = undefined;
        }
        if (!ok) {
          // What the run awaits (and the tools it runs) stops with it.
          cancelScope(loop.scope, abortError(errorInfo(value).message));
          scopeClosed(loop.scope);
          loop.emitter.emit("error", { error: errorText(value) });
          endEvents();
          return settleInTurn(owner, outer, () => rejectRun(value));
        }
        scopeClosed(loop.scope);
        endEvents();
        // The loop's final turn, normalized already (`runLoop`).
        history[history.length] = value;
        const result = copy(value);
        settleInTurn(owner, outer, () => resolveRun(result));
      }

      function endEvents() {
        eventsOver = true;
        handlers.length = 0;
      }

      if (options.timeoutMs !== undefined) {
        timer = inScope(outer, () => request({ op: "sleep", ms: options.timeoutMs }, (ok) => {
          timer = 0;
          if (!ok) return;
          const e = new ErrorCtor("session " + sessionId + ": run: timed out after " + options.timeoutMs + "ms");
          e.name = "TimeoutError";
          finish(false, e);
        }));
      }
      const run = {
        promise,
        cancel(reason) {
          if (settled) return;
          finish(false, abortError(reason === undefined ? "the run was cancelled" : StringCtor(reason)));
        },
        on(type, cb) {
          if (call(arrayIndexOf, eventTypes, type) < 0) throw new TypeErrorCtor("on: unknown event type " + describe(type) + " (known: " + call(arrayJoin, eventTypes, ", ") + ")");
          if (typeof cb !== "function") throw new TypeErrorCtor("on: the handler must be a function");
          if (!eventsOver) handlers[handlers.length] = [type, cb];
          // A handler registered late still sees every event, in order.
          for (let i = 0; i < events.length; i++) deliver(type, cb, events[i]);
          return this;
        },
      };
      active = run;
      // A run started in a cancelled scope fails at once, with that
      // cancellation's error; an aborted signal cancels the run with its
      // reason (at once, if it is aborted already: then the loop never
      // starts).
      const inherited = canceledIn(outer);
      if (inherited !== null) finish(false, inherited);
      else if (options.signal !== undefined) unfollow = signalFollow(options.signal, (reason) => finish(false, reason));
      // The loop's own copy of the seed (history's entries are normalized).
      if (!settled) then(runLoop(loop, copy(history[history.length - 1])), (t) => finish(true, t), (e) => finish(false, e));
      return freeze(run);
    }

    const session = {
      id: sessionId,
      append(turn) {
        history[history.length] = normalizeTurn(copy(turn));
        return this;
      },
      latest: () => (history.length === 0 ? null : copy(history[history.length - 1])),
      turns: () => copy(history),
      turnCount: () => history.length,
      isRunning: () => active !== null,
      cancelActive(reason) {
        if (active !== null) active.cancel(reason);
      },
      run: (seed, opts) => launch(seed, opts, false).promise,
      runAsync: (seed, opts) => launch(seed, opts, false).promise,
      start: (seed, opts) => launch(seed, opts, true),
    };
    return freeze(session);
  }

  function createBuilder() {
    const config = { engine: undefined, middlewares: [], registries: [], loop: {}, hooks: undefined };
    function withToolLoop(settings) {
      const parsed = parseLoop(settings, "withToolLoop");
      config.loop = parsed.settings;
      if (parsed.hooks !== undefined) config.hooks = parsed.hooks;
    }
    const builder = {
      withEngine(e) {
        config.engine = asEngine(e, "withEngine");
        return this;
      },
      useMiddleware(m) {
        config.middlewares[config.middlewares.length] = asMiddleware(m, "useMiddleware");
        return this;
      },
      withTools(registry, loopSettings) {
        config.registries[config.registries.length] = asRegistry(registry, "withTools");
        if (loopSettings !== undefined) withToolLoop(loopSettings);
        return this;
      },
      withToolLoop(settings) {
        withToolLoop(settings);
        return this;
      },
      withToolHooks(hooks) {
        config.hooks = asHooks(hooks, "withToolHooks");
        return this;
      },
      buildSession() {
        if (config.engine === undefined) throw new TypeErrorCtor("buildSession: no engine: call withEngine(...) first");
        return makeSession({
          engine: config.engine,
          middlewares: [...config.middlewares],
          registries: [...config.registries],
          loop: copy(config.loop),
          hooks: config.hooks,
        });
      },
    };
    return freeze(builder);
  }

  function createSession(options) {
    if (!isPlainObject(options)) throw new TypeErrorCtor("createSession: expected {engine, middlewares?, tools?, toolLoop?, toolHooks?}");
    const known = ["engine", "middlewares", "tools", "toolLoop", "toolHooks"];
    for (const key of objectKeys(options)) {
      if (call(arrayIndexOf, known, key) < 0) throw new TypeErrorCtor("createSession: unknown option " + describe(key) + " (known: " + call(arrayJoin, known, ", ") + ")");
    }
    if (options.engine === undefined) throw new TypeErrorCtor("createSession: engine is required");
    // What a builder given the same parts in this order builds (its checks,
    // with their messages), without making the builder: its methods are
    // closures, and a session made this way is a tenth of a short run.
    const engine = asEngine(options.engine, "withEngine");
    const mws = options.middlewares === undefined ? [] : options.middlewares;
    if (!arrayIsArray(mws)) throw new TypeErrorCtor("createSession: middlewares must be an array");
    const middlewares = [];
    for (const m of mws) middlewares[middlewares.length] = asMiddleware(m, "useMiddleware");
    const registries = [];
    if (options.tools !== undefined) {
      for (const r of arrayIsArray(options.tools) ? options.tools : [options.tools]) registries[registries.length] = asRegistry(r, "withTools");
    }
    let loop = {};
    let hooks;
    if (options.toolLoop !== undefined) {
      const parsed = parseLoop(options.toolLoop, "withToolLoop");
      loop = parsed.settings;
      if (parsed.hooks !== undefined) hooks = parsed.hooks;
    }
    if (options.toolHooks !== undefined) hooks = asHooks(options.toolHooks, "withToolHooks");
    return makeSession({ engine, middlewares, registries, loop, hooks });
  }

  const api = freeze({ turns, consts, engines, middlewares, tools, createSession, createBuilder });

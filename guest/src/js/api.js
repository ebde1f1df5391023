// The `marionette` module's objects: turns, consts, engines, middlewares,
// tools, and the records behind them that the host reaches by handle.

  // What the host provides (engines, middleware and tools by name), as the
  // host's last `configure` said: `native.hostInfo()` hands its JSON over
  // once after each change, read here when a script first asks (so that a
  // configure runs no JavaScript: vm.rs, `configure`).
  let hostInfo = { engines: [], middlewares: [], tools: new MapCtor() };
  const provided = () => {
    const changed = native.hostInfo();
    if (changed !== undefined) {
      const i = jsonParse(changed);
      const tools = new MapCtor();
      for (const t of i.tools) mset(tools, t.name, t);
      hostInfo = { engines: i.engines, middlewares: i.middlewares, tools };
    }
    return hostInfo;
  };

  // What each branded API object really is. A WeakMap keyed by the frozen
  // object a script holds: a script cannot forge or alter an entry.
  const brands = new WeakMapCtor();
  const brand = (obj, record) => { call(weakSet, brands, obj, record); return freeze(obj); };
  const brandOf = (v) => (v !== null && (typeof v === "object" || typeof v === "function") ? call(weakGet, brands, v) : undefined);

  // Handles: the numbers by which the host calls back the JavaScript parts of
  // a session a script started. Given on first use, kept for the VM's life.
  const handles = new MapCtor(); // id -> record
  const handleIds = new WeakMapCtor(); // record -> id
  let nextHandle = 1;
  function handleOf(record) {
    let id = call(weakGet, handleIds, record);
    if (id === undefined) {
      id = nextHandle++;
      call(weakSet, handleIds, record, id);
      iset(handles, id, record);
    }
    return id;
  }

  // A version 4 UUID from the guest's generator (clock.rs: the same draws
  // as `Math.random`, so a deterministic run's ids are reproducible).
  function uuid() {
    return native.uuid();
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
    if (!shas(blockKinds, b.kind)) {
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


  const known = (list) => (list.length === 0 ? "none" : call(arrayJoin, list, ", "));

  // Runs an engine record on a turn: a promise of the new turn.
  function runEngine(record, turn, ctx) {
    if (record.host !== undefined) {
      let input;
      try { input = normalizeTurn(turn); } catch (e) { return apply(Promise.reject, PromiseCtor, [e]); }
      // A context a session made carries its run's event stream along (see
      // loop.js): the host engine's partials reach the run's handlers.
      const emitter = isPlainObject(ctx) ? call(weakGet, contextLinks, ctx) : undefined;
      return hostInfer(record.host, input, ctx, emitter);
    }
    try {
      return then(promiseResolve(apply(record.run, undefined, [turn, ctx === undefined ? {} : ctx])), (out) => (out === undefined || out === null ? turn : out));
    } catch (e) {
      return apply(Promise.reject, PromiseCtor, [e]);
    }
  }

  function engineObject(record, extra) {
    const obj = { kind: "engine", infer: (turn, ctx) => runEngine(record, turn, ctx) };
    for (const k of objectKeys(extra)) obj[k] = extra[k];
    return brand(obj, record);
  }

  const engines = freeze({
    fromFunction(fn) {
      if (typeof fn !== "function") throw new TypeErrorCtor("engines.fromFunction: expected a function (turn, ctx) => turn");
      return engineObject({ kind: "engine", run: fn }, {});
    },
    echo(options) {
      if (options !== undefined && !isPlainObject(options)) throw new TypeErrorCtor("engines.echo: expected {reply?}");
      const reply = options && options.reply !== undefined ? StringCtor(options.reply) : "READY";
      return engineObject({
        kind: "engine",
        run(t) {
          t.blocks[t.blocks.length] = block("llm_text", "assistant", { text: reply });
          return t;
        },
      }, { name: "echo" });
    },
    host(name) {
      if (name !== undefined && name !== null) {
        if (typeof name !== "string") throw new TypeErrorCtor("engines.host: the engine name must be a string");
        const { engines: provides } = provided();
        if (call(arrayIndexOf, provides, name) < 0) {
          throw new TypeErrorCtor("engines.host: the host provides no engine named " + describe(name) + " (it provides: " + known(provides) + ")");
        }
      }
      const engine = name === undefined || name === null ? null : name;
      return engineObject({ kind: "engine", host: engine }, { name: engine === null ? "host" : engine });
    },
  });

  function asEngine(v, where) {
    const b = brandOf(v);
    if (b !== undefined && b.kind === "engine") return b;
    if (typeof v === "function") return brandOf(engines.fromFunction(v));
    throw new TypeErrorCtor(where + ": expected an engine (engines.*) or a function (turn, ctx) => turn, got " + describe(v));
  }

  const middlewares = freeze({
    fromJS(fn, name) {
      if (typeof fn !== "function") throw new TypeErrorCtor("middlewares.fromJS: expected a function (turn, next, ctx) => turn");
      const n = name === undefined ? (fn.name || "middleware") : StringCtor(name);
      return brand({ kind: "middleware", name: n }, { kind: "middleware", name: n, run: fn });
    },
    host(name, options) {
      const { middlewares: provides } = provided();
      if (typeof name !== "string" || call(arrayIndexOf, provides, name) < 0) {
        throw new TypeErrorCtor("middlewares.host: the host provides no middleware named " + describe(name) + " (it provides: " + known(provides) + ")");
      }
      if (options !== undefined && !isPlainObject(options)) throw new TypeErrorCtor("middlewares.host: the options of " + describe(name) + " must be an object");
      return brand({ kind: "middleware", name }, { kind: "middleware", name, host: { name, options: copy(options === undefined ? {} : options) } });
    },
  });

  // A middleware record from a middleware object or a bare function.
  function asMiddleware(v, where) {
    const b = brandOf(v);
    if (b !== undefined && b.kind === "middleware") return b;
    if (typeof v === "function") return brandOf(middlewares.fromJS(v));
    throw new TypeErrorCtor(where + ": expected a middleware (middlewares.*) or a function (turn, next, ctx) => turn, got " + describe(v));
  }

  // The JSON text of a tool's schema, made once per schema object: the
  // schemas of registries and host tool sets are private copies that
  // nothing changes, checked at every call of their tool.
  const schemaTexts = new WeakMapCtor();
  function schemaText(schema) {
    let text = call(weakGet, schemaTexts, schema);
    if (text === undefined) {
      text = jsonText(schema);
      call(weakSet, schemaTexts, schema, text);
    }
    return text;
  }

  // Checks arguments against a tool's schema (the host validates: see the
  // WIT's validate-arguments); throws a TypeError naming the tool.
  function validateArguments(tool, args) {
    const problem = native.validate(schemaText(tool.parameters), jsonText(args === undefined ? {} : args));
    if (problem !== null && problem !== undefined) {
      throw new TypeErrorCtor("invalid arguments for tool " + describe(tool.name) + ": " + problem);
    }
  }

  // The host tools a registry uses.
  function hostToolsOf(record) {
    if (record.hostTools === null) return [];
    const { tools } = provided();
    if (record.hostTools === "all") return [...tools.values()];
    const out = [];
    for (const name of record.hostTools) {
      const t = mget(tools, name);
      if (t !== undefined) out[out.length] = t;
    }
    return out;
  }

  function definitions(record, withHost) {
    const out = [];
    for (const t of record.tools.values()) out[out.length] = { name: t.name, description: t.description, parameters: copy(t.parameters) };
    if (withHost) for (const t of hostToolsOf(record)) out[out.length] = copy(t);
    return out;
  }

  // Runs tool `name` of a registry record: a JavaScript tool after its
  // arguments are checked, or a host tool the registry uses.
  function callTool(record, name, args, ctx) {
    const t = mget(record.tools, name);
    if (t !== undefined) {
      const a = args === undefined ? {} : args;
      validateArguments(t, a);
      return apply(t.handler, undefined, [a, ctx]);
    }
    for (const h of hostToolsOf(record)) {
      if (h.name === name) {
        return hostPromise({ op: "call-tool", call: { id: ctx && ctx.callId ? StringCtor(ctx.callId) : uuid(), name, arguments: args === undefined ? {} : args }, context: copy(ctx === undefined ? {} : ctx) });
      }
    }
    throw new TypeErrorCtor("unknown tool " + describe(name));
  }

  // The methods that return their object return `this`: a method that
  // named the object it belongs to (`return registry`) closed over it, a
  // cycle that reference counting never frees, and the registry, every
  // tool and schema in it waited for the cycle collector (a pass over the
  // whole heap; docs/architecture.md §11). The builder, sessions and runs
  // do the same (session.js).
  function createRegistry() {
    const record = { kind: "tool-registry", tools: new MapCtor(), hostTools: null };
    const registry = {
      kind: "tool-registry",
      register(spec) {
        if (!isPlainObject(spec)) throw new TypeErrorCtor("register: expected {name, description?, parameters?, handler}");
        if (typeof spec.name !== "string" || spec.name === "") throw new TypeErrorCtor("register: name must be a non-empty string");
        if (typeof spec.handler !== "function") throw new TypeErrorCtor("register: tool " + jsonStringify(spec.name) + " needs a handler function");
        if (spec.parameters !== undefined && !isPlainObject(spec.parameters)) throw new TypeErrorCtor("register: parameters of " + jsonStringify(spec.name) + " must be a JSON Schema object");
        // A private copy of the schema: the caller's object stays theirs.
        const parameters = copy(spec.parameters === undefined ? { type: "object", properties: {} } : spec.parameters);
        mset(record.tools, spec.name, {
          name: spec.name,
          description: spec.description === undefined ? "" : StringCtor(spec.description),
          parameters,
          handler: spec.handler,
          // What a run offers the model, made at the tool's first run
          // (loop.js, `toolTable`).
          definition: undefined,
        });
        return this;
      },
      useHostTools(names) {
        if (names === undefined || names === null) {
          record.hostTools = "all";
          return this;
        }
        if (!arrayIsArray(names)) throw new TypeErrorCtor("useHostTools: expected an array of tool names, or nothing for all of them");
        const chosen = [];
        const { tools } = provided();
        for (const n of names) {
          if (!mhas(tools, n)) {
            throw new TypeErrorCtor("useHostTools: the host provides no tool named " + describe(n) + " (it provides: " + known([...tools.keys()]) + ")");
          }
          chosen[chosen.length] = n;
        }
        record.hostTools = chosen;
        return this;
      },
      list: () => definitions(record, true),
      call(name, args) {
        try {
          return promiseResolve(callTool(record, name, args, { toolName: name }));
        } catch (e) {
          return apply(Promise.reject, PromiseCtor, [e]);
        }
      },
    };
    return brand(registry, record);
  }

  function asRegistry(v, where) {
    const b = brandOf(v);
    if (b !== undefined && b.kind === "tool-registry") return b;
    throw new TypeErrorCtor(where + ": expected a tool registry (tools.createRegistry()), got " + describe(v));
  }

  const hookNames = ["beforeToolCall", "afterToolCall", "onToolError"];

  // A hooks record from `{beforeToolCall?, afterToolCall?, onToolError?, failOpen?}`.
  function asHooks(v, where) {
    if (!isPlainObject(v)) throw new TypeErrorCtor(where + ": expected {beforeToolCall?, afterToolCall?, onToolError?, failOpen?}");
    const hooks = {};
    for (const k of objectKeys(v)) {
      if (k === "failOpen") continue;
      if (call(arrayIndexOf, hookNames, k) < 0) throw new TypeErrorCtor(where + ": unknown hook " + describe(k) + " (hooks are " + call(arrayJoin, hookNames, ", ") + ")");
      if (typeof v[k] !== "function") throw new TypeErrorCtor(where + ": hook " + k + " must be a function");
      hooks[k] = v[k];
    }
    return { kind: "tool-hooks", hooks: freeze(hooks), failOpen: v.failOpen === true };
  }

  const tools = freeze({ createRegistry });

  const consts = freeze({
    BlockKind,
    EventType: freeze({ START: "start", PARTIAL: "partial", FINAL: "final", TOOL_CALL: "tool-call", TOOL_RESULT: "tool-result", ERROR: "error" }),
    ToolChoice: freeze({ AUTO: "auto", NONE: "none", REQUIRED: "required" }),
    ToolErrorHandling: freeze({ CONTINUE: "continue", ABORT: "abort", RETRY: "retry" }),
    HookAction: freeze({ ABORT: "abort", RETRY: "retry", CONTINUE: "continue" }),
  });

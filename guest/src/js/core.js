// Captured builtins, errors, tasks and host operations. Part of the runtime
// closure (see mod.rs in this folder): `native` is in scope.

  const { apply } = Reflect;
  const { freeze, defineProperty, keys: objectKeys, hasOwn: objectHasOwn } = Object;
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
  const weakDelete = WeakMap.prototype.delete;
  const weakHas = WeakMap.prototype.has;
  const protoOf = Object.getPrototypeOf;
  const arrayIsArray = Array.isArray;
  const ErrorCtor = Error;
  const TypeErrorCtor = TypeError;
  const StringCtor = String;
  // The guest's clock and generator (clock.rs), which `js/clock.js` also
  // gives `Date` and `Math.random`.
  const mathRandom = () => native.random();
  const dateNow = () => native.now();
  const mathFloor = Math.floor;
  const mathMax = Math.max;
  const mathMin = Math.min;
  const NumberCtor = Number;
  const stringMatch = String.prototype.match;
  const stringSplit = String.prototype.split;
  const stringIndexOf = String.prototype.indexOf;
  const arrayJoin = Array.prototype.join;
  const arrayIndexOf = Array.prototype.indexOf;
  // Makes `obj[key]` a writable, enumerable data property holding `v`: what
  // a property made when first read becomes (loop.js, web.js).
  function dataProperty(obj, key, v) {
    defineProperty(obj, key, { value: v, writable: true, enumerable: true, configurable: true });
    return v;
  }
  // The object that holds a property made when first read, for a read
  // through `receiver`: the first of its prototype chain (itself first)
  // that `pending` has an entry for. Read through an object that inherits
  // from a context, the property is the context's, as a data property
  // would be; read through anything else (the accessor taken off and called
  // on another object), there is none.
  function holderIn(pending, receiver) {
    for (let o = receiver; o !== null && o !== undefined; o = protoOf(o)) {
      if ((typeof o === "object" || typeof o === "function") && call(weakHas, pending, o)) return o;
    }
    return undefined;
  }
  // `give(obj, value)`: gives `obj` the enumerable property `key`, made by
  // `make(value)` when first read (or replaced by what is first written to
  // it), a data property from then on. For what a context of user code
  // holds that most code never reads. The accessor is one frozen pair of
  // functions for every object given the property (they are shared, so
  // they cannot carry anything from one script to another), which finds
  // its object up the receiver's prototype chain (`holderIn`) and the value
  // in a WeakMap: a pair of closures per object cost more than most of
  // what they made, and closures that the object holds and that refer to
  // it would be a cycle that only the collector frees.
  function lazyProperty(key, make) {
    const pending = new WeakMapCtor();
    const settle = (holder, v) => {
      call(weakDelete, pending, holder);
      return dataProperty(holder, key, v);
    };
    const descriptor = freeze({
      get: freeze(function () {
        const holder = holderIn(pending, this);
        return holder === undefined ? undefined : settle(holder, make(call(weakGet, pending, holder)));
      }),
      set: freeze(function (v) {
        settle(this, v);
      }),
      enumerable: true,
      configurable: true,
    });
    return (obj, value) => {
      call(weakSet, pending, obj, value);
      defineProperty(obj, key, descriptor);
      return obj;
    };
  }

  const call = (fn, self, ...args) => apply(fn, self, args);
  const then = (p, onOk, onErr) => apply(promiseThen, p, [onOk, onErr]);
  // `uncurry(method)(self, ...args)` calls the captured `method` on `self`,
  // as `call(method, self, ...args)` does, without allocating: a function
  // bound to `Function.prototype.call` passes its arguments on the stack,
  // where `call` makes an array of them for `apply`. For the Map and Set
  // methods every entry uses.
  const fnCall = Function.prototype.call;
  const fnBind = Function.prototype.bind;
  const uncurry = (method) => apply(fnBind, fnCall, [method]);
  const mget = uncurry(mapGet);
  const mset = uncurry(mapSet);
  const mhas = uncurry(mapHas);
  const mdel = uncurry(mapDelete);
  const sadd = uncurry(setAdd);
  const shas = uncurry(setHas);
  const sdel = uncurry(setDelete);

  // Ids (of tasks, operations, timers, handles) as keys of the runtime's
  // Maps. QuickJS hashes a number by the bits of its float64 and
  // keeps the low bits of that hash, which are all zero for small integers:
  // a Map keyed by ids put all ids of one magnitude in one bucket, and each
  // lookup walked them all (with 200 sessions at once, hundreds of pending
  // operations per lookup). `idKey` spreads them: a multiplication by an odd
  // constant is one-to-one on 32-bit integers and fills the low bits. Other
  // numbers (2^32 and above, which a mixed key never is) stay as they are.
  const mathImul = Math.imul;
  const idKey = (id) => (id >= 0 && id < 4294967296 && id === (id >>> 0) ? mathImul(id, 0x9e3779b1) >>> 0 : id);
  const iget = (m, id) => mget(m, idKey(id));
  const iset = (m, id, v) => mset(m, idKey(id), v);
  const ihas = (m, id) => mhas(m, idKey(id));
  const idel = (m, id) => mdel(m, idKey(id));

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
        return { file: modulePath(m[1]), line: NumberCtor(m[2]), column: NumberCtor(m[3]) };
      }
    }
    return {};
  }

  // A script's module is known to QuickJS as `path?2`, `path?3`... when an
  // earlier module of the VM had its path (loader.rs); errors show the path.
  function modulePath(file) {
    const path = native.modulePath(file);
    return path === undefined ? file : path;
  }

  function displayFrame(line) {
    if (call(stringIndexOf, line, "?") < 0) return line;
    const m = call(stringMatch, line, /^(\s*at (?:.*? \()?)(.+?)(:\d+:\d+\)?\s*)$/);
    return m ? m[1] + modulePath(m[2]) + m[3] : line;
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
      out[out.length] = displayFrame(line);
    }
    return call(arrayJoin, out, "\n");
  }

  // Turns anything thrown into the WIT `script-error` shape.
  function errorInfo(e) {
    if (e !== null && typeof e === "object") {
      let name, message, stack;
      try { name = e.name; message = e.message; stack = e.stack; } catch (_) { /* hostile getter */ }
      if (typeof name !== "string" || name === "") name = "Error";
      // Out of memory, QuickJS may make its error but not the message.
      if (name === "InternalError" && message === "" && native.heapExhausted()) message = "out of memory";
      if (typeof message !== "string") message = safeString(message === undefined ? e : message);
      if (typeof stack !== "string") stack = undefined;
      else stack = userFrames(stack);
      let where = locate(stack);
      // A SyntaxError from the parser carries its location in fileName/lineNumber.
      if (where.file === undefined) {
        try {
          // (An import that resolves to nothing: its importer, and where it
          // is written when that could be found.)
          if (typeof e.fileName === "string") {
            where = {
              file: modulePath(e.fileName),
              line: typeof e.lineNumber === "number" ? e.lineNumber : undefined,
              column: typeof e.lineNumber === "number" && typeof e.columnNumber === "number" ? e.columnNumber : undefined,
            };
          }
        } catch (_) { /* ignore */ }
      }
      return { name, message, stack, file: where.file, line: where.line, column: where.column };
    }
    // QuickJS throws null when it cannot allocate even its error.
    if (e === null && native.heapExhausted()) return { name: "InternalError", message: "out of memory" };
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
    scope: null,         // the cancellation scope of what JS asks now (see loop.js)
    canceled: new MapCtor(), // idKey(task) -> reason
    pending: new MapCtor(),  // idKey(op) -> { op, task, settle(ok, value), progress?(event) }
  };

  // `state.pending` (idKey(op) -> record, the record knowing its `op`)
  // changes only through these two. Which operations are a task's, the
  // natives know: they count each task's against its cap, and are told of
  // every request, answer and release (`native.opsOf`). A task's end thus
  // releases its own operations without a walk over every other task's
  // (with many tasks at once, a walk over all of them per task ended was
  // quadratic), and an operation costs one Map entry here.
  function addPending(op, record) {
    record.op = op;
    iset(state.pending, op, record);
  }
  // Forgets `op`; false when it was not pending.
  function dropPending(op) {
    return idel(state.pending, op);
  }
  // The pending operations of `task`, as [op, record] pairs, oldest first:
  // a copy, so that the caller may drop them as it goes.
  function pendingOf(task) {
    const ops = native.opsOf(task); // undefined: none
    const out = [];
    if (ops === undefined) return out;
    for (let i = 0; i < ops.length; i++) {
      const p = iget(state.pending, ops[i]);
      // (An op asked for whose record was never kept: out of memory in
      // between. The caller's release settles it in the natives.)
      if (p !== undefined) out[out.length] = [ops[i], p];
    }
    return out;
  }

  // Says which task JavaScript runs for from now on: what console lines and
  // requests are charged to, and what the host's interrupt poll names.
  // `state.current` is the natives' value: each entry sets both before any
  // JavaScript runs (vm.rs, `entry`), so a task already current costs no
  // native call (nor can one fail there, in a task out of memory).
  function setCurrent(task) {
    if (state.current === task) return;
    state.current = task;
    native.current(task);
  }

  // Ends a live task, once: its pending operations are released first
  // (nothing about a task follows its done), then the done. `kind` is "ok"
  // or the failure's kind (see natives.rs): "script", "cancelled",
  // "deadline", "out-of-memory", "output", "operations". `isTurn`: the
  // payload is a turn (inference, middleware), not plain JSON. Which tasks
  // are live, the natives keep (`native.begin`, `native.live`): a task done
  // already, or stopped, has no operations left and its done is dropped.
  function done(task, kind, payload, isTurn) {
    const ops = native.opsOf(task); // undefined: none
    if (ops !== undefined) {
      for (let i = 0; i < ops.length; i++) {
        dropPending(ops[i]);
        native.release(ops[i]);
      }
    }
    native.done(task, kind, payload, isTurn === true);
  }

  // A console line of the task JavaScript runs for; a task that is over
  // says nothing more (the native drops its lines).
  function consoleLine(level, message) {
    native.console(state.current, level, message);
  }

  function finish(task, value, kind) {
    if (kind === "turn") {
      let text;
      try {
        text = jsonText(normalizeTurn(value === undefined || value === null ? undefined : value));
      } catch (e) {
        return done(task, "script", jsonStringify(errorInfo(e)));
      }
      return done(task, "ok", text, true);
    }
    // The plain values, as JSON.stringify writes them, without its
    // wrapper object, property list and buffer: a finite number is its
    // ToString (what both `"" + n` and JSON.stringify use), any other
    // number null. Strings, objects and the rest go through JSON.stringify.
    const type = typeof value;
    if (type === "number") return done(task, "ok", value - value === 0 ? "" + value : "null");
    if (type === "boolean") return done(task, "ok", value ? "true" : "false");
    if (value === null || value === undefined) return done(task, "ok", "null");
    let text;
    try {
      text = jsonText(value);
    } catch (e) {
      const err = new TypeErrorCtor("the result is not JSON-serialisable: " + errorInfo(e).message);
      return done(task, "script", jsonStringify(errorInfo(err)));
    }
    if (text === undefined) text = "null"; // functions, symbols
    done(task, "ok", text);
  }

  // Makes `task` live and current: what runs now runs on its behalf.
  function begin(task) {
    native.begin(task);
    state.current = task;
    state.scope = null;
  }

  // Starts a task: runs `body` now, settles the task when its promise does.
  function start(task, kind, body) {
    begin(task);
    let value;
    try {
      value = body();
    } catch (e) {
      return settleTask(task, kind, e, true);
    }
    settleTask(task, kind, value, false);
  }

  // Settles a task begun (`begin`) with what its body returned, or threw
  // (`threw`): what `start` does after running the body, for dispatcher
  // entries that run their body inline rather than as a closure.
  function settleTask(task, kind, value, threw) {
    let p;
    let now = false;
    try {
      if (threw) throw value;
      // A plain value (not an object: no `then` to look up) and no promise
      // job waiting: the job below would run next and do just what ending
      // the task here does; this saves a promise, its reaction and the job
      // (a good part of a short call's time in the guest).
      now = (value === null || (typeof value !== "object" && typeof value !== "function")) && !native.jobsPending();
      if (!now) p = promiseResolve(value);
    } catch (e) {
      p = apply(Promise.reject, PromiseCtor, [e]);
    }
    if (now) {
      finish(task, value, kind);
      return;
    }
    // The conversions run for the task: its getters are its code, under its
    // interrupts.
    then(p, (v) => { setCurrent(task); finish(task, v, kind); }, (e) => { setCurrent(task); done(task, "script", jsonStringify(errorInfo(e))); });
  }

  // Asks the host for `what`; `settle(ok, value)` runs when it answers,
  // `progress(event)` for each event it reports meanwhile; `next(turn)` is
  // what a `middleware.next` task for this op runs; `body` (a Uint8Array)
  // travels beside `what` (a fetch's body). The op belongs to the current
  // task and scope. Returns the op (0 when refused at once: the task is
  // over or cancelled, or the scope is cancelled).
  function request(what, settle, progress, next, body) {
    const task = state.current;
    if (ihas(state.canceled, task)) {
      settle(false, abortError(iget(state.canceled, task)));
      return 0;
    }
    if (!native.live(task)) {
      settle(false, abortError("task " + task + " is over: it can start nothing more"));
      return 0;
    }
    const scope = state.scope;
    const canceled = canceledIn(scope);
    if (canceled !== null) {
      settle(false, canceled);
      return 0;
    }
    let op;
    if (body !== undefined) op = native.request(task, jsonText(what), body);
    else if (what.op === "sleep") op = native.sleep(task, what.ms);
    else op = native.request(task, jsonText(what));
    addPending(op, { task, scope, settle, progress, next });
    return op;
  }

  function hostPromise(what, progress) {
    return new PromiseCtor((resolve, reject) => {
      request(what, (ok, v) => (ok ? resolve(v) : reject(v)), progress);
    });
  }

  function release(op) {
    if (dropPending(op)) native.release(op);
  }

  // Turns of their own. QuickJS has no async context: a promise job runs
  // with whatever `state.scope` the code before it left, not the scope of
  // the code it resumes. An entry that answers one operation sets the scope
  // to that operation's, so what the answer resumes runs in it. Settlements
  // that answer no operation (a cancelled scope's operations and signals, a
  // run's end) wait here instead, and each gets a turn of its own: once
  // every promise job before it has run, the guest's drain calls
  // `settleNext`, which sets the settlement's task and scope and runs it,
  // and then the jobs it queued run. So code resumed by a cancellation runs
  // in the cancelled scope, and code resumed by a run's end in the scope
  // that started the run. (A promise passed by hand from one scope's code
  // to another's still resumes its awaiter in the scope of the resolver.)
  const waiting = [];
  let waitingHead = 0;
  function settleInTurn(task, scope, fn) {
    waiting[waiting.length] = { task, scope, fn };
    native.defer();
  }
  function settleNext() {
    if (waitingHead >= waiting.length) return;
    const next = waiting[waitingHead];
    waiting[waitingHead++] = undefined;
    if (waitingHead === waiting.length) {
      waiting.length = 0;
      waitingHead = 0;
    } else {
      native.defer();
    }
    setCurrent(next.task);
    state.scope = next.scope;
    try {
      next.fn();
    } catch (e) {
      const info = errorInfo(e);
      consoleLine("error", "a deferred settlement threw: " + info.name + ": " + info.message);
    }
  }

  // An error the host answered with, as a JavaScript error of the same name.
  function hostError(info) {
    const e = new ErrorCtor(info && info.message ? info.message : "host operation failed");
    e.name = info && info.name ? info.name : "Error";
    return e;
  }

  // A deep copy with JSON's meaning: what crosses to and from user code is a
  // copy. Plain data is copied natively (guest/src/copy.rs); anything else
  // (`undefined` from the native copy) through JSON text, with JSON's own
  // side effects and errors.
  const copy = (v) => {
    if (v === undefined) return undefined;
    const c = native.copy(v);
    return c !== undefined ? c : jsonParse(jsonStringify(v));
  };

  // JSON.stringify(v), for the texts the runtime hands to the host
  // (requests, results, events, schemas, arguments): plain data is written
  // natively (guest/src/copy.rs, `text`); anything else (`undefined` from
  // the native walk) by JSON.stringify, with its own side effects and
  // errors.
  const jsonText = (v) => {
    const t = native.json(v);
    return t !== undefined ? t : jsonStringify(v);
  };


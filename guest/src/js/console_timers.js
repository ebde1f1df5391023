// console.* and setTimeout/clearTimeout, installed on the global object.
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
      consoleLine(level, format(args));
    };
  }
  defineProperty(globalThis, "console", { value: freeze(consoleObject), writable: true, configurable: true, enumerable: false });

  // ---------------------------------------------------------------- timers

  let nextTimer = 1;
  const MAX_DELAY = 2147483647;
  const timers = new MapCtor(); // idKey(timer id) -> op

  function setTimeout(fn, ms, ...args) {
    if (typeof fn !== "function") throw new TypeErrorCtor("setTimeout: the callback must be a function");
    const id = nextTimer++;
    // As in browsers: not a number or negative is 0. Beyond MAX_DELAY (about
    // 24.8 days) it waits MAX_DELAY rather than overflowing.
    const delay = mathMin(MAX_DELAY, mathMax(0, mathFloor(NumberCtor(ms) || 0)));
    const op = request({ op: "sleep", ms: delay }, (ok, value) => {
      idel(timers, id);
      if (!ok) {
        // Cancelled with its task: nothing to say. Refused by the host: the
        // callback will never run, and the script should know why.
        if (value && value.name !== "AbortError") {
          consoleLine("error", "setTimeout: the host refused the timer: " + value.name + ": " + value.message);
        }
        return;
      }
      try {
        apply(fn, undefined, args);
      } catch (e) {
        const info = errorInfo(e);
        consoleLine("error", "uncaught error in a timer callback: " + (info.file ? info.file + ":" + info.line + ":" + info.column + ": " : "") + info.name + ": " + info.message);
      }
    });
    if (op !== 0) iset(timers, id, op);
    return id;
  }

  function clearTimeout(id) {
    const op = iget(timers, id);
    if (op === undefined) return;
    idel(timers, id);
    release(op);
  }

  for (const [name, fn] of [["setTimeout", setTimeout], ["clearTimeout", clearTimeout]]) {
    defineProperty(globalThis, name, { value: fn, writable: true, configurable: true, enumerable: false });
  }


// The web basics, as the WinterTC Minimum Common API defines them:
// DOMException, Event and EventTarget (as much as AbortSignal needs),
// AbortController and AbortSignal, URL and URLSearchParams, atob and btoa,
// structuredClone, performance, crypto (getRandomValues, randomUUID) and
// TextDecoder (UTF-8), installed on the global object. The lockdown freezes
// them with every other global.
//
// What needs a parser or the host is native (guest/src/web.rs): URL parsing
// (the `url` crate), the form encoding of URLSearchParams, base64, UTF-8
// decoding, randomness and the monotonic clock. Strings cross as WebIDL's
// USVString: lone surrogates become U+FFFD first. A native's failure is
// `undefined` (Rust's `None`).
//
// A run's cancellation reaches scripts as an AbortSignal: `scopeSignal`
// gives the signal of a cancellation scope (loop.js), aborted when the scope
// is cancelled; a run takes `{signal}` to be cancelled by one.

  const stringToWellFormed = String.prototype.toWellFormed;
  const stringToLowerCase = String.prototype.toLowerCase;
  const stringSlice = String.prototype.slice;
  const stringCharCodeAt = String.prototype.charCodeAt;
  const stringReplace = String.prototype.replace;
  const regexpTest = RegExp.prototype.test;
  const numberToString = Number.prototype.toString;
  const arraySort = Array.prototype.sort;
  const arraySplice = Array.prototype.splice;
  const ArrayBufferCtor = ArrayBuffer;
  const Uint8ArrayCtor = Uint8Array;
  const DataViewCtor = DataView;
  const DateCtor = Date;
  const RegExpCtor = RegExp;
  const ObjectCtor = Object;
  const RangeErrorCtor = RangeError;
  const errorIsError = Error.isError;
  const getOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
  const getPrototypeOf = Object.getPrototypeOf;
  const ownKeys = Reflect.ownKeys;
  const isView = ArrayBuffer.isView;
  const symbolIterator = Symbol.iterator;
  const getter = (o, k) => {
    const desc = getOwnPropertyDescriptor(o, k);
    return desc === undefined ? undefined : desc.get;
  };
  const TypedArrayProto = getPrototypeOf(Uint8Array.prototype);
  const typedArrayTag = getter(TypedArrayProto, Symbol.toStringTag);
  const typedArrayBuffer = getter(TypedArrayProto, "buffer");
  const typedArrayByteOffset = getter(TypedArrayProto, "byteOffset");
  const typedArrayByteLength = getter(TypedArrayProto, "byteLength");
  const typedArrayLength = getter(TypedArrayProto, "length");
  const typedArraySet = TypedArrayProto.set;
  const typedArraySlice = TypedArrayProto.slice;
  const dataViewBuffer = getter(DataView.prototype, "buffer");
  const dataViewByteOffset = getter(DataView.prototype, "byteOffset");
  const dataViewByteLength = getter(DataView.prototype, "byteLength");
  const arrayBufferByteLength = getter(ArrayBuffer.prototype, "byteLength");
  const arrayBufferDetached = getter(ArrayBuffer.prototype, "detached");
  const arrayBufferResizable = getter(ArrayBuffer.prototype, "resizable");
  const arrayBufferMaxByteLength = getter(ArrayBuffer.prototype, "maxByteLength");
  const arrayBufferSlice = ArrayBuffer.prototype.slice;
  const sharedByteLength = typeof SharedArrayBuffer === "function" ? getter(SharedArrayBuffer.prototype, "byteLength") : undefined;
  const isShared = (v) => sharedByteLength !== undefined && branded(sharedByteLength, v);
  const arrayBufferTransfer = ArrayBuffer.prototype.transfer;
  const mapSize = getter(Map.prototype, "size");
  const setSize = getter(Set.prototype, "size");
  const mapForEach = Map.prototype.forEach;
  const setForEach = Set.prototype.forEach;
  const dateGetTime = Date.prototype.getTime;
  const regexpSource = getter(RegExp.prototype, "source");
  const booleanValueOf = Boolean.prototype.valueOf;
  const numberValueOf = Number.prototype.valueOf;
  const stringValueOf = String.prototype.valueOf;
  const bigintValueOf = BigInt.prototype.valueOf;
  const symbolValueOf = Symbol.prototype.valueOf;
  const weakMapHas = WeakMap.prototype.has;
  const weakSetHas = WeakSet.prototype.has;
  const typedArrays = {
    Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array,
    BigInt64Array, BigUint64Array, Float32Array, Float64Array,
  };
  if (typeof Float16Array === "function") typedArrays.Float16Array = Float16Array;
  const errorCtors = { Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError };

  // WebIDL's conversion to USVString (a symbol is a TypeError, as in
  // `${symbol}`).
  const usv = (v) => call(stringToWellFormed, typeof v === "symbol" ? `${v}` : StringCtor(v));

  // Whether calling `fn` on `v` succeeds: the brand checks of built-ins.
  function branded(fn, v, ...args) {
    try {
      apply(fn, v, args);
      return true;
    } catch (_) {
      return false;
    }
  }

  function installGlobal(name, value) {
    defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
  }

  // ---------------------------------------------------------------- DOMException

  const domExceptionCodes = {
    IndexSizeError: 1, HierarchyRequestError: 3, WrongDocumentError: 4, InvalidCharacterError: 5,
    NoModificationAllowedError: 7, NotFoundError: 8, NotSupportedError: 9, InvalidStateError: 11,
    SyntaxError: 12, InvalidModificationError: 13, NamespaceError: 14, InvalidAccessError: 15,
    TypeMismatchError: 17, SecurityError: 18, NetworkError: 19, AbortError: 20, URLMismatchError: 21,
    QuotaExceededError: 22, TimeoutError: 23, InvalidNodeTypeError: 24, DataCloneError: 25,
  };

  let isDOMException;
  class DOMException extends ErrorCtor {
    #name;
    constructor(message, name) {
      super(message === undefined ? "" : StringCtor(message));
      this.#name = name === undefined ? "Error" : StringCtor(name);
    }
    get name() { return this.#name; }
    get code() {
      const name = this.#name;
      return objectHasOwn(domExceptionCodes, name) ? domExceptionCodes[name] : 0;
    }
    static {
      isDOMException = (v) => v !== null && typeof v === "object" && #name in v;
    }
  }

  const domError = (message, name) => new DOMException(message, name);

  // ---------------------------------------------------------------- Event and EventTarget

  let eventDispatching;
  class Event {
    #type;
    #cancelable;
    #bubbles;
    #composed;
    #target = null;
    #currentTarget = null;
    #canceled = false;
    #stop = false;
    #timeStamp;
    constructor(type, init) {
      if (arguments.length === 0) throw new TypeErrorCtor("Event: the type is required");
      this.#type = StringCtor(type);
      const i = init === undefined || init === null ? {} : init;
      if (typeof i !== "object" && typeof i !== "function") throw new TypeErrorCtor("Event: the options must be an object");
      this.#bubbles = !!i.bubbles;
      this.#cancelable = !!i.cancelable;
      this.#composed = !!i.composed;
      this.#timeStamp = performanceNow();
    }
    get type() { return this.#type; }
    get target() { return this.#target; }
    get srcElement() { return this.#target; }
    get currentTarget() { return this.#currentTarget; }
    get eventPhase() { return this.#currentTarget === null ? 0 : 2; }
    get bubbles() { return this.#bubbles; }
    get cancelable() { return this.#cancelable; }
    get composed() { return this.#composed; }
    get defaultPrevented() { return this.#canceled; }
    get returnValue() { return !this.#canceled; }
    get isTrusted() { return false; }
    get timeStamp() { return this.#timeStamp; }
    composedPath() { return this.#currentTarget === null ? [] : [this.#currentTarget]; }
    preventDefault() { if (this.#cancelable) this.#canceled = true; }
    stopPropagation() {}
    stopImmediatePropagation() { this.#stop = true; }
    static {
      // Runs `each(listener)` for `target` as dispatch does; returns
      // whether the event was not cancelled.
      eventDispatching = (event, target, listeners, each) => {
        if (event.#currentTarget !== null) throw domError("the event is already being dispatched", "InvalidStateError");
        event.#target = target;
        event.#currentTarget = target;
        event.#stop = false;
        try {
          for (let i = 0; i < listeners.length && !event.#stop; i++) each(listeners[i]);
        } finally {
          event.#currentTarget = null;
        }
        return !event.#canceled;
      };
    }
  }
  const isEvent = (v) => v instanceof Event;

  // The options of addEventListener / removeEventListener.
  function listenerOptions(options, full) {
    if (options === undefined || options === null) return { capture: false, once: false, signal: undefined };
    if (typeof options !== "object" && typeof options !== "function") return { capture: !!options, once: false, signal: undefined };
    const capture = !!options.capture;
    if (!full) return { capture };
    const signal = options.signal;
    if (signal !== undefined && !isAbortSignal(signal)) throw new TypeErrorCtor("addEventListener: options.signal must be an AbortSignal");
    return { capture, once: !!options.once, signal };
  }

  // Reports an error a listener threw, as browsers do, without stopping
  // the other listeners.
  function reportListenerError(type, e) {
    const info = errorInfo(e);
    consoleLine("error", "uncaught error in a listener for " + describe(type) + ": " + (info.file ? info.file + ":" + info.line + ":" + info.column + ": " : "") + info.name + ": " + info.message);
  }

  class EventTarget {
    #listeners = new MapCtor(); // type -> [{callback, capture, once, removed}]
    addEventListener(type, callback, options) {
      if (arguments.length < 2) throw new TypeErrorCtor("addEventListener: a type and a listener are required");
      const t = StringCtor(type);
      const o = listenerOptions(options, true);
      if (callback === null) return;
      if (typeof callback !== "function" && (typeof callback !== "object" || callback === undefined)) {
        throw new TypeErrorCtor("addEventListener: the listener must be a function or an object with handleEvent");
      }
      if (o.signal !== undefined && o.signal.aborted) return;
      let list = mget(this.#listeners, t);
      if (list === undefined) {
        list = [];
        mset(this.#listeners, t, list);
      }
      for (let i = 0; i < list.length; i++) if (list[i].callback === callback && list[i].capture === o.capture) return;
      const entry = { callback, capture: o.capture, once: o.once, removed: false };
      list[list.length] = entry;
      if (o.signal !== undefined) signalFollow(o.signal, () => this.#remove(t, entry));
    }
    removeEventListener(type, callback, options) {
      const t = StringCtor(type);
      const { capture } = listenerOptions(options, false);
      const list = mget(this.#listeners, t);
      if (list === undefined) return;
      for (let i = 0; i < list.length; i++) {
        if (list[i].callback === callback && list[i].capture === capture) return this.#remove(t, list[i]);
      }
    }
    #remove(type, entry) {
      entry.removed = true;
      const list = mget(this.#listeners, type);
      if (list === undefined) return;
      const at = call(arrayIndexOf, list, entry);
      if (at >= 0) call(arraySplice, list, at, 1);
      if (list.length === 0) mdel(this.#listeners, type);
    }
    dispatchEvent(event) {
      if (!isEvent(event)) throw new TypeErrorCtor("dispatchEvent: the argument must be an Event");
      const type = event.type;
      const list = mget(this.#listeners, type);
      const snapshot = list === undefined ? [] : [...list];
      return eventDispatching(event, this, snapshot, (entry) => {
        if (entry.removed) return;
        if (entry.once) this.#remove(type, entry);
        try {
          if (typeof entry.callback === "function") apply(entry.callback, this, [event]);
          else {
            const handle = entry.callback.handleEvent;
            if (typeof handle !== "function") throw new TypeErrorCtor("the listener has no handleEvent method");
            apply(handle, entry.callback, [event]);
          }
        } catch (e) {
          reportListenerError(type, e);
        }
      });
    }
  }

  // ---------------------------------------------------------------- AbortSignal and AbortController

  const internal = {}; // the token that makes an AbortSignal: scripts cannot
  let isAbortSignal, signalAbort, signalFollow, signalDependOn;
  class AbortSignal extends EventTarget {
    #aborted = false;
    #reason = undefined;
    #algorithms = new SetCtor(); // what runs on abort, before the event
    #onabort = null;
    #onabortListener = null;
    #dependents = []; // signals of AbortSignal.any that follow this one
    constructor(token) {
      if (token !== internal) throw new TypeErrorCtor("AbortSignal has no public constructor: use new AbortController().signal, AbortSignal.abort() or AbortSignal.timeout()");
      super();
    }
    get aborted() { return this.#aborted; }
    get reason() { return this.#reason; }
    throwIfAborted() {
      if (this.#aborted) throw this.#reason;
    }
    get onabort() { return this.#onabort; }
    set onabort(handler) {
      this.#onabort = typeof handler === "function" || (handler !== null && typeof handler === "object") ? handler : null;
      if (this.#onabort !== null && this.#onabortListener === null) {
        this.#onabortListener = (event) => {
          const h = this.#onabort;
          if (typeof h === "function") apply(h, this, [event]);
        };
        this.addEventListener("abort", this.#onabortListener);
      }
    }
    static abort(reason) {
      const s = new AbortSignal(internal);
      s.#aborted = true;
      s.#reason = reason === undefined ? domError("This operation was aborted", "AbortError") : reason;
      return s;
    }
    static timeout(ms) {
      const n = NumberCtor(ms);
      if (n !== n || n === Infinity || n === -Infinity) throw new TypeErrorCtor("AbortSignal.timeout: " + describe(ms) + " is not a finite number of milliseconds");
      const delay = n < 0 ? -mathFloor(-n) : mathFloor(n);
      if (delay < 0 || delay > 9007199254740991) throw new TypeErrorCtor("AbortSignal.timeout: " + describe(ms) + " is out of range");
      const s = new AbortSignal(internal);
      // A timer of the task that asked, outside any run's scope: it fires
      // unless the task ends first (then nothing of the task runs anyway).
      inScope(null, () => request({ op: "sleep", ms: mathMin(delay, MAX_DELAY) }, (ok) => {
        if (ok) signalAbort(s, domError("The operation timed out.", "TimeoutError"));
      }));
      return s;
    }
    static any(signals) {
      const s = new AbortSignal(internal);
      const sources = [];
      for (const source of signals) {
        if (!isAbortSignal(source)) throw new TypeErrorCtor("AbortSignal.any: every element must be an AbortSignal");
        sources[sources.length] = source;
      }
      for (let i = 0; i < sources.length; i++) {
        if (sources[i].#aborted) {
          s.#aborted = true;
          s.#reason = sources[i].#reason;
          return s;
        }
      }
      for (let i = 0; i < sources.length; i++) signalDependOn(s, sources[i]);
      return s;
    }
    static {
      isAbortSignal = (v) => v !== null && typeof v === "object" && #aborted in v;
      // Runs `fn(reason)` when `signal` aborts (now, if it has); returns
      // what stops following it.
      signalFollow = (signal, fn) => {
        if (signal.#aborted) {
          fn(signal.#reason);
          return () => {};
        }
        const algorithm = () => fn(signal.#reason);
        sadd(signal.#algorithms, algorithm);
        return () => sdel(signal.#algorithms, algorithm);
      };
      signalDependOn = (dependent, source) => {
        const list = source.#dependents;
        list[list.length] = dependent;
      };
      // The DOM standard's "signal abort": the signal and the signals of
      // AbortSignal.any that depend on it take the reason, then each runs
      // its algorithms and fires "abort".
      signalAbort = (signal, reason) => {
        if (signal.#aborted) return;
        signal.#aborted = true;
        signal.#reason = reason === undefined ? domError("This operation was aborted", "AbortError") : reason;
        const dependents = [];
        for (let i = 0; i < signal.#dependents.length; i++) {
          const d = signal.#dependents[i];
          if (d.#aborted) continue;
          d.#aborted = true;
          d.#reason = signal.#reason;
          dependents[dependents.length] = d;
        }
        signal.#dependents = [];
        const steps = (s) => {
          const algorithms = [...s.#algorithms];
          s.#algorithms = new SetCtor();
          for (let i = 0; i < algorithms.length; i++) {
            try {
              algorithms[i]();
            } catch (e) {
              reportListenerError("abort", e);
            }
          }
          s.dispatchEvent(new Event("abort"));
        };
        steps(signal);
        for (let i = 0; i < dependents.length; i++) steps(dependents[i]);
      };
    }
  }

  class AbortController {
    #signal = new AbortSignal(internal);
    get signal() { return this.#signal; }
    abort(reason) {
      signalAbort(this.#signal, reason);
    }
  }

  // The signals of cancellation scopes (loop.js) that scripts were given,
  // each kept on its scope (`scope.signal`). A scope's signal aborts when it
  // or a scope above it is cancelled, with the cancellation's error; a run
  // that ends drops the signals of its scopes (`scopeClosed`). Each scope
  // reaches the scopes below it through `kids`: with many runs at once, a
  // walk over every scope's signal at each run's end was quadratic.
  // `signalSeq` orders the signals of a subtree as they were given out, the
  // order in which a cancellation aborts them.
  let signalSeq = 0;
  function scopeSignal(scope) {
    const canceled = canceledIn(scope);
    if (canceled === null && scope !== null && scope !== undefined && scope.closed !== true && scope.signal !== undefined) return scope.signal;
    const s = new AbortSignal(internal);
    if (canceled !== null) signalAbort(s, canceled);
    else if (scope !== null && scope !== undefined && scope.closed !== true) {
      scope.signal = s;
      scope.signalSeq = ++signalSeq;
    }
    return s;
  }
  // The scopes of `scope`'s subtree that hold a signal, each signal taken
  // from its scope, in the order they were given out.
  function takeSignals(scope) {
    const held = [];
    for (const s of subtree(scope)) if (s.signal !== undefined) held[held.length] = s;
    call(arraySort, held, (a, b) => a.signalSeq - b.signalSeq);
    const out = [];
    for (let i = 0; i < held.length; i++) {
      out[i] = [held[i], held[i].signal];
      held[i].signal = undefined;
    }
    return out;
  }
  // `scope` was cancelled (see `cancelScope`): each signal of it and of the
  // scopes below it aborts in a turn of its own, in its scope.
  function scopeCanceled(scope) {
    const reason = scope.canceled;
    for (const [s, signal] of takeSignals(scope)) settleInTurn(s.task, s, () => signalAbort(signal, reason));
  }
  // `scope` (a run's) is over, and so is every scope below it: their
  // signals can no longer abort, and the parent no longer reaches `scope`.
  // Nor does any scope of the subtree reach the scopes below it any more: a
  // kid knows its parent, so a parent's `kids` made a cycle that only the
  // collector freed, and with it everything the run's closures held.
  function scopeClosed(scope) {
    for (const s of subtree(scope)) {
      s.closed = true;
      s.signal = undefined;
      s.kids = null;
    }
    if (scope.parent !== null && scope.parent !== undefined && scope.parent.kids !== null) sdel(scope.parent.kids, scope);
  }
  // `ctx`, a context made for one call of user code, given the signal of
  // `scope` as its enumerable property `signal`, made when first read (most
  // code never reads it, and a signal costs more than the rest of the
  // context; see `lazyProperty`). Read after its scope was cancelled, it is
  // aborted already.
  const withSignal = lazyProperty("signal", scopeSignal);

  // ---------------------------------------------------------------- URLSearchParams and URL

  let paramsLink, paramsReplace, urlUpdateQuery;
  class URLSearchParams {
    #list = [];
    #url = null;
    constructor(init) {
      if (init === undefined || init === null) return;
      if (typeof init === "object" || typeof init === "function") {
        const iterator = init[symbolIterator];
        if (iterator !== undefined && iterator !== null) {
          if (typeof iterator !== "function") throw new TypeErrorCtor("URLSearchParams: the init's Symbol.iterator is not a function");
          for (const pair of init) {
            if (pair === null || (typeof pair !== "object" && typeof pair !== "function")) throw new TypeErrorCtor("URLSearchParams: each pair must be a sequence of a name and a value");
            const items = [...pair];
            if (items.length !== 2) throw new TypeErrorCtor("URLSearchParams: each pair must have exactly two items, not " + items.length);
            this.#list[this.#list.length] = [usv(items[0]), usv(items[1])];
          }
        } else {
          for (const key of ownKeys(init)) {
            const desc = getOwnPropertyDescriptor(init, key);
            if (desc === undefined || !desc.enumerable) continue;
            this.#list[this.#list.length] = [usv(key), usv(init[key])];
          }
        }
        return;
      }
      let s = usv(init);
      if (s[0] === "?") s = call(stringSlice, s, 1);
      this.#list = native.formParse(s);
    }
    #update() {
      if (this.#url !== null) urlUpdateQuery(this.#url, native.formSerialize(this.#list));
    }
    get size() { return this.#list.length; }
    append(name, value) {
      if (arguments.length < 2) throw new TypeErrorCtor("URLSearchParams.append: a name and a value are required");
      this.#list[this.#list.length] = [usv(name), usv(value)];
      this.#update();
    }
    delete(name, value) {
      const n = usv(name);
      const v = value === undefined ? undefined : usv(value);
      const kept = [];
      for (const pair of this.#list) if (!(pair[0] === n && (v === undefined || pair[1] === v))) kept[kept.length] = pair;
      this.#list = kept;
      this.#update();
    }
    get(name) {
      const n = usv(name);
      for (const pair of this.#list) if (pair[0] === n) return pair[1];
      return null;
    }
    getAll(name) {
      const n = usv(name);
      const out = [];
      for (const pair of this.#list) if (pair[0] === n) out[out.length] = pair[1];
      return out;
    }
    has(name, value) {
      const n = usv(name);
      const v = value === undefined ? undefined : usv(value);
      for (const pair of this.#list) if (pair[0] === n && (v === undefined || pair[1] === v)) return true;
      return false;
    }
    set(name, value) {
      if (arguments.length < 2) throw new TypeErrorCtor("URLSearchParams.set: a name and a value are required");
      const n = usv(name);
      const v = usv(value);
      const out = [];
      let found = false;
      for (const pair of this.#list) {
        if (pair[0] !== n) out[out.length] = pair;
        else if (!found) {
          found = true;
          out[out.length] = [n, v];
        }
      }
      if (!found) out[out.length] = [n, v];
      this.#list = out;
      this.#update();
    }
    // By name in code units, stable: pairs of one name keep their order.
    sort() {
      call(arraySort, this.#list, (a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      this.#update();
    }
    forEach(callback, thisArg) {
      if (typeof callback !== "function") throw new TypeErrorCtor("URLSearchParams.forEach: the callback must be a function");
      for (let i = 0; i < this.#list.length; i++) apply(callback, thisArg, [this.#list[i][1], this.#list[i][0], this]);
    }
    // Live, as WebIDL's iterators are: a pair added while iterating is seen.
    *entries() {
      for (let i = 0; i < this.#list.length; i++) yield [this.#list[i][0], this.#list[i][1]];
    }
    *keys() {
      for (let i = 0; i < this.#list.length; i++) yield this.#list[i][0];
    }
    *values() {
      for (let i = 0; i < this.#list.length; i++) yield this.#list[i][1];
    }
    [symbolIterator]() {
      return this.entries();
    }
    toString() {
      return native.formSerialize(this.#list);
    }
    static {
      paramsLink = (params, url) => { params.#url = url; };
      paramsReplace = (params, query) => {
        params.#list = query === "" ? [] : native.formParse(call(stringSlice, query, 1));
      };
    }
  }
  defineProperty(URLSearchParams.prototype, Symbol.toStringTag, { value: "URLSearchParams", configurable: true });

  class URL {
    #c; // the components (web.rs), href first
    #query;
    constructor(url, base) {
      if (arguments.length === 0) throw new TypeErrorCtor("URL: a URL is required");
      const input = usv(url);
      const c = native.urlParse(input, base === undefined ? undefined : usv(base));
      if (c === undefined) {
        throw new TypeErrorCtor("Invalid URL: " + describe(input) + (base === undefined ? "" : " against base " + describe(usv(base))));
      }
      this.#c = c;
      this.#query = new URLSearchParams();
      paramsReplace(this.#query, c.search);
      paramsLink(this.#query, this);
    }
    static parse(url, base) {
      const c = native.urlParse(usv(url), base === undefined ? undefined : usv(base));
      return c === undefined ? null : new URL(c.href);
    }
    static canParse(url, base) {
      return native.urlParse(usv(url), base === undefined ? undefined : usv(base)) !== undefined;
    }
    #set(key, value) {
      const c = native.urlSet(this.#c.href, key, usv(value));
      if (c === undefined) {
        if (key === "href") throw new TypeErrorCtor("Invalid URL: " + describe(usv(value)));
        return;
      }
      this.#c = c;
      if (key === "href" || key === "search") paramsReplace(this.#query, c.search);
    }
    get href() { return this.#c.href; }
    set href(v) { this.#set("href", v); }
    get origin() { return this.#c.origin; }
    get protocol() { return this.#c.protocol; }
    set protocol(v) { this.#set("protocol", v); }
    get username() { return this.#c.username; }
    set username(v) { this.#set("username", v); }
    get password() { return this.#c.password; }
    set password(v) { this.#set("password", v); }
    get host() { return this.#c.host; }
    set host(v) { this.#set("host", v); }
    get hostname() { return this.#c.hostname; }
    set hostname(v) { this.#set("hostname", v); }
    get port() { return this.#c.port; }
    set port(v) { this.#set("port", v); }
    get pathname() { return this.#c.pathname; }
    set pathname(v) { this.#set("pathname", v); }
    get search() { return this.#c.search; }
    set search(v) { this.#set("search", v); }
    get searchParams() { return this.#query; }
    get hash() { return this.#c.hash; }
    set hash(v) { this.#set("hash", v); }
    toString() { return this.#c.href; }
    toJSON() { return this.#c.href; }
    static {
      // URLSearchParams changed: the URL's query is its serialization (no
      // "?" at all when empty), set without parsing it back into the list.
      urlUpdateQuery = (url, serialized) => {
        const c = native.urlSet(url.#c.href, "search", serialized);
        if (c !== undefined) url.#c = c;
      };
    }
  }
  defineProperty(URL.prototype, Symbol.toStringTag, { value: "URL", configurable: true });

  // ---------------------------------------------------------------- atob and btoa

  function btoa(data) {
    if (arguments.length === 0) throw new TypeErrorCtor("btoa: an argument is required");
    const s = StringCtor(data);
    if (call(regexpTest, /[^\x00-\xff]/, s)) throw domError("btoa: the string contains characters outside of the Latin1 range", "InvalidCharacterError");
    return native.base64Encode(s);
  }

  function atob(data) {
    if (arguments.length === 0) throw new TypeErrorCtor("atob: an argument is required");
    const out = native.base64Decode(usv(data));
    if (out === undefined) throw domError("atob: the string to be decoded is not correctly encoded", "InvalidCharacterError");
    return out;
  }

  // ---------------------------------------------------------------- structuredClone

  const cloneError = (what) => domError("structuredClone: " + what + " could not be cloned", "DataCloneError");

  // The HTML standard's StructuredSerialize and StructuredDeserialize in
  // one walk: `memory` maps each object to its copy (cycles and shared
  // references are kept).
  function cloneValue(v, memory) {
    const type = typeof v;
    if (type === "symbol") throw cloneError("a symbol");
    if (type === "function") throw cloneError("a function" + (typeof v.name === "string" && v.name !== "" ? " (" + v.name + ")" : ""));
    if (type !== "object" || v === null) return v;
    const known = mget(memory, v);
    if (known !== undefined) return known;
    if (native.isProxy(v)) throw cloneError("a Proxy");
    let out;
    const keep = (o) => {
      mset(memory, v, o);
      return o;
    };
    if (branded(booleanValueOf, v)) return keep(ObjectCtor(call(booleanValueOf, v)));
    if (branded(numberValueOf, v)) return keep(ObjectCtor(call(numberValueOf, v)));
    if (branded(stringValueOf, v)) return keep(ObjectCtor(call(stringValueOf, v)));
    if (branded(bigintValueOf, v)) return keep(ObjectCtor(call(bigintValueOf, v)));
    if (branded(symbolValueOf, v)) throw cloneError("a Symbol object");
    if (branded(dateGetTime, v)) return keep(new DateCtor(call(dateGetTime, v)));
    if (branded(regexpSource, v) && v !== RegExpCtor.prototype) {
      let flags = "";
      for (const [flag, name] of [["d", "hasIndices"], ["g", "global"], ["i", "ignoreCase"], ["m", "multiline"], ["s", "dotAll"], ["u", "unicode"], ["v", "unicodeSets"], ["y", "sticky"]]) {
        const get = getter(RegExpCtor.prototype, name);
        if (get !== undefined && call(get, v)) flags += flag;
      }
      return keep(new RegExpCtor(call(regexpSource, v), flags));
    }
    if (branded(arrayBufferByteLength, v)) {
      if (call(arrayBufferDetached, v)) throw cloneError("a detached ArrayBuffer");
      if (call(arrayBufferResizable, v)) {
        out = new ArrayBufferCtor(call(arrayBufferByteLength, v), { maxByteLength: call(arrayBufferMaxByteLength, v) });
        call(typedArraySet, new Uint8ArrayCtor(out), [new Uint8ArrayCtor(v)]);
        return keep(out);
      }
      return keep(call(arrayBufferSlice, v, 0));
    }
    if (isShared(v)) throw cloneError("a SharedArrayBuffer");
    if (isView(v)) {
      const name = call(typedArrayTag, v);
      if (name !== undefined) {
        const buffer = cloneValue(call(typedArrayBuffer, v), memory);
        return keep(new typedArrays[name](buffer, call(typedArrayByteOffset, v), call(typedArrayLength, v)));
      }
      const buffer = cloneValue(call(dataViewBuffer, v), memory);
      return keep(new DataViewCtor(buffer, call(dataViewByteOffset, v), call(dataViewByteLength, v)));
    }
    if (branded(mapSize, v)) {
      out = keep(new MapCtor());
      const entries = [];
      call(mapForEach, v, (value, key) => { entries[entries.length] = [key, value]; });
      for (let i = 0; i < entries.length; i++) mset(out, cloneValue(entries[i][0], memory), cloneValue(entries[i][1], memory));
      return out;
    }
    if (branded(setSize, v)) {
      out = keep(new SetCtor());
      const items = [];
      call(setForEach, v, (value) => { items[items.length] = value; });
      for (let i = 0; i < items.length; i++) sadd(out, cloneValue(items[i], memory));
      return out;
    }
    if (isDOMException(v)) {
      out = keep(new DOMException(v.message, v.name));
      if (typeof v.stack === "string") defineProperty(out, "stack", { value: v.stack, writable: true, configurable: true, enumerable: false });
      return out;
    }
    if (typeof errorIsError === "function" ? errorIsError(v) : v instanceof ErrorCtor) {
      const name = v.name;
      const Ctor = typeof name === "string" && objectHasOwn(errorCtors, name) ? errorCtors[name] : ErrorCtor;
      const desc = getOwnPropertyDescriptor(v, "message");
      out = keep(desc === undefined ? new Ctor() : new Ctor(StringCtor(v.message)));
      const stack = v.stack;
      if (typeof stack === "string") defineProperty(out, "stack", { value: stack, writable: true, configurable: true, enumerable: false });
      if (objectHasOwn(v, "cause")) defineProperty(out, "cause", { value: cloneValue(v.cause, memory), writable: true, configurable: true, enumerable: false });
      return out;
    }
    if (branded(weakMapHas, v, {}) || branded(weakSetHas, v, {})) throw cloneError("a WeakMap or WeakSet");
    if (v instanceof PromiseCtor) throw cloneError("a Promise");
    if (isEvent(v) || v instanceof EventTarget || v instanceof URL || v instanceof URLSearchParams) {
      throw cloneError("a platform object (" + StringCtor(getPrototypeOf(v).constructor.name) + ")");
    }
    out = keep(arrayIsArray(v) ? new Array(v.length) : {});
    for (const key of objectKeys(v)) {
      defineProperty(out, key, { value: cloneValue(v[key], memory), writable: true, enumerable: true, configurable: true });
    }
    return out;
  }

  function structuredClone(value, options) {
    if (arguments.length === 0) throw new TypeErrorCtor("structuredClone: a value is required");
    const memory = new MapCtor();
    const transfer = [];
    if (options !== undefined && options !== null) {
      if (typeof options !== "object") throw new TypeErrorCtor("structuredClone: the options must be an object");
      const list = options.transfer;
      if (list !== undefined) {
        for (const buffer of list) {
          if (!branded(arrayBufferByteLength, buffer)) throw cloneError("a transferable that is not an ArrayBuffer");
          if (call(arrayIndexOf, transfer, buffer) >= 0) throw cloneError("an ArrayBuffer listed twice in transfer");
          if (call(arrayBufferDetached, buffer)) throw cloneError("a detached ArrayBuffer");
          transfer[transfer.length] = buffer;
        }
      }
    }
    // A transferred buffer's copy has its bytes; the original is detached
    // once the whole value is cloned.
    for (let i = 0; i < transfer.length; i++) mset(memory, transfer[i], call(arrayBufferSlice, transfer[i], 0));
    const out = cloneValue(value, memory);
    for (let i = 0; i < transfer.length; i++) call(arrayBufferTransfer, transfer[i]);
    return out;
  }

  // ---------------------------------------------------------------- performance

  // Milliseconds on the host's monotonic clock, from the first reading in
  // this instance, or since the start of a deterministic run's virtual
  // clock (clock.rs).
  function performanceNow() {
    return native.monotonicMs();
  }
  let timeOrigin;
  const performance = {
    now: () => performanceNow(),
    get timeOrigin() {
      if (timeOrigin === undefined) timeOrigin = dateNow() - performanceNow();
      return timeOrigin;
    },
    toJSON() {
      return { timeOrigin: performance.timeOrigin };
    },
  };

  // ---------------------------------------------------------------- crypto

  const integerArrays = ["Int8Array", "Uint8Array", "Uint8ClampedArray", "Int16Array", "Uint16Array", "Int32Array", "Uint32Array", "BigInt64Array", "BigUint64Array"];

  // The host's randomness (WASI random), or a deterministic run's seeded
  // generator (clock.rs).
  function randomBytes(n) {
    return new Uint8ArrayCtor(native.randomBytes(n));
  }

  function getRandomValues(array) {
    if (!isView(array)) throw new TypeErrorCtor("crypto.getRandomValues: the argument must be an integer typed array");
    const name = call(typedArrayTag, array);
    if (call(arrayIndexOf, integerArrays, name) < 0) {
      throw domError("crypto.getRandomValues: " + (name === undefined ? "a DataView" : "a " + name) + " is not an integer typed array", "TypeMismatchError");
    }
    const length = call(typedArrayByteLength, array);
    if (length > 65536) {
      throw domError("crypto.getRandomValues: " + length + " bytes asked for, at most 65536 may be", "QuotaExceededError");
    }
    const bytes = new Uint8ArrayCtor(call(typedArrayBuffer, array), call(typedArrayByteOffset, array), length);
    call(typedArraySet, bytes, randomBytes(length));
    return array;
  }

  const hex = (b) => (b < 16 ? "0" : "") + call(numberToString, b, 16);
  // A version 4 UUID (RFC 9562): 122 random bits.
  function randomUUID() {
    const b = randomBytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let out = "";
    for (let i = 0; i < 16; i++) {
      if (i === 4 || i === 6 || i === 8 || i === 10) out += "-";
      out += hex(b[i]);
    }
    return out;
  }

  class Crypto {
    constructor(token) {
      if (token !== internal) throw new TypeErrorCtor("Crypto has no public constructor: use the global crypto");
    }
    getRandomValues(array) { return getRandomValues(array); }
    randomUUID() { return randomUUID(); }
  }
  const crypto = new Crypto(internal);

  // ---------------------------------------------------------------- TextDecoder

  const utf8Labels = ["unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "utf-8", "utf8", "x-unicode20utf8"];
  const emptyBytes = new Uint8ArrayCtor(0);

  // The bytes of a BufferSource, as a Uint8Array over the same memory.
  function bufferBytes(input, where) {
    if (branded(arrayBufferByteLength, input) || isShared(input)) return new Uint8ArrayCtor(input);
    if (isView(input)) {
      if (call(typedArrayTag, input) !== undefined) {
        return new Uint8ArrayCtor(call(typedArrayBuffer, input), call(typedArrayByteOffset, input), call(typedArrayByteLength, input));
      }
      return new Uint8ArrayCtor(call(dataViewBuffer, input), call(dataViewByteOffset, input), call(dataViewByteLength, input));
    }
    throw new TypeErrorCtor(where + ": the input must be an ArrayBuffer, a typed array or a DataView");
  }

  class TextDecoder {
    #fatal;
    #ignoreBOM;
    #pending = emptyBytes; // the bytes of an unfinished sequence, while streaming
    #bomSeen = false;
    #streaming = false;
    constructor(label, options) {
      const l = label === undefined ? "utf-8" : call(stringToLowerCase, call(stringReplace, StringCtor(label), /^[\t\n\f\r ]+|[\t\n\f\r ]+$/g, ""));
      if (call(arrayIndexOf, utf8Labels, l) < 0) {
        throw new RangeErrorCtor("TextDecoder: the encoding " + describe(StringCtor(label)) + " is not supported (only utf-8 is)");
      }
      const o = options === undefined || options === null ? {} : options;
      if (typeof o !== "object" && typeof o !== "function") throw new TypeErrorCtor("TextDecoder: the options must be an object");
      this.#fatal = !!o.fatal;
      this.#ignoreBOM = !!o.ignoreBOM;
    }
    get encoding() { return "utf-8"; }
    get fatal() { return this.#fatal; }
    get ignoreBOM() { return this.#ignoreBOM; }
    decode(input, options) {
      const o = options === undefined || options === null ? {} : options;
      if (typeof o !== "object" && typeof o !== "function") throw new TypeErrorCtor("TextDecoder.decode: the options must be an object");
      const stream = !!o.stream;
      if (!this.#streaming) {
        this.#pending = emptyBytes;
        this.#bomSeen = false;
      }
      this.#streaming = stream;
      let bytes = input === undefined ? emptyBytes : bufferBytes(input, "TextDecoder.decode");
      const pending = this.#pending;
      if (pending.length > 0) {
        const joined = new Uint8ArrayCtor(pending.length + bytes.length);
        call(typedArraySet, joined, pending);
        call(typedArraySet, joined, bytes, pending.length);
        bytes = joined;
      }
      let decoded;
      try {
        decoded = native.decodeUtf8(bytes, this.#fatal, stream);
      } catch (e) {
        this.#pending = emptyBytes;
        this.#streaming = false;
        throw e;
      }
      let text = decoded[0];
      const left = decoded[1];
      this.#pending = left === 0 ? emptyBytes : call(typedArraySlice, bytes, bytes.length - left);
      if (!this.#bomSeen && text.length > 0) {
        this.#bomSeen = true;
        if (!this.#ignoreBOM && call(stringCharCodeAt, text, 0) === 0xfeff) text = call(stringSlice, text, 1);
      }
      return text;
    }
  }

  for (const [name, value] of [
    ["DOMException", DOMException], ["Event", Event], ["EventTarget", EventTarget],
    ["AbortController", AbortController], ["AbortSignal", AbortSignal],
    ["URL", URL], ["URLSearchParams", URLSearchParams], ["atob", atob], ["btoa", btoa],
    ["structuredClone", structuredClone], ["performance", performance], ["crypto", crypto], ["Crypto", Crypto],
    ["TextDecoder", TextDecoder],
  ]) {
    installGlobal(name, value);
  }

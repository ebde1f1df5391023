// Lockdown: after the runtime is installed and before any script exists,
// every object reachable from the global object (the intrinsics: Object,
// Promise, Array.prototype, the iterator prototypes...) and from the API is
// frozen, and so is the global object itself. All scripts of a sandbox share
// one realm; frozen intrinsics mean no script can change what another
// script, or the runtime, gets from `Promise.prototype.then`, `JSON`,
// `Object.prototype` or the globals. Scripts keep their state in module
// scope.
//
// Evaluated on its own (not part of the runtime closure) as a function of
// the API object; returns the list of what it could not lock, which the VM
// treats as a failed boot.
(function lockdown(api) {
  "use strict";
  const { getOwnPropertyDescriptor, getPrototypeOf, defineProperty, freeze, isFrozen } = Object;
  const { ownKeys } = Reflect;
  const hasOwn = Object.hasOwn;
  const SetCtor = Set;
  const setHas = Set.prototype.has;
  const setAdd = Set.prototype.add;
  const TypeErrorCtor = TypeError;
  const StringCtor = String;
  const apply = Reflect.apply;
  const failures = [];

  // QuickJS keeps two settings of every error behind accessors on `Error`:
  // a script setting `Error.prepareStackTrace` would see (and could rewrite)
  // the stack of every error any script makes afterwards, and
  // `stackTraceLimit` would take stacks from everyone. Replace both by
  // read-only data properties with today's values; the setters become
  // unreachable.
  for (const key of ["prepareStackTrace", "stackTraceLimit"]) {
    const desc = getOwnPropertyDescriptor(Error, key);
    if (desc && desc.get) {
      defineProperty(Error, key, { value: apply(desc.get, Error, []), writable: false, enumerable: false, configurable: false });
    }
  }

  // The "override mistake": once a prototype is frozen, assigning a property
  // it has to an object that inherits it throws (`this.name = "MyError"` in
  // an Error subclass, `Foo.prototype.toString = ...`). For the properties
  // ordinary code does assign, the frozen data property becomes an accessor
  // whose setter defines the property on the object assigned to, as an
  // unfrozen prototype would have; assigning to the built-in itself still
  // throws.
  function tame(proto, key) {
    const desc = getOwnPropertyDescriptor(proto, key);
    if (!desc || !hasOwn(desc, "value") || !desc.writable || !desc.configurable) return;
    const value = desc.value;
    const get = { [key]() { return value; } }[key];
    const set = {
      [key](v) {
        if (this === proto) {
          throw new TypeErrorCtor("cannot assign to read only property '" + StringCtor(key) + "' of a frozen built-in");
        }
        defineProperty(this, key, { value: v, writable: true, enumerable: true, configurable: true });
      },
    }[key];
    defineProperty(proto, key, { get, set, enumerable: desc.enumerable, configurable: false });
  }
  const errors = [Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError, AggregateError];
  if (typeof InternalError === "function") errors.push(InternalError);
  if (typeof SuppressedError === "function") errors.push(SuppressedError);
  for (const key of ownKeys(Object.prototype)) tame(Object.prototype, key);
  for (const key of ["constructor", "toString"]) tame(Function.prototype, key);
  for (const E of errors) {
    for (const key of ["constructor", "name", "message", "toString"]) tame(E.prototype, key);
  }
  for (const C of [Array, Promise, Map, Set, RegExp, Date, Symbol, String, Number, Boolean]) {
    tame(C.prototype, "constructor");
  }

  // Everything reachable: own properties (values, getters, setters) and
  // prototypes, from the global object, the API and the intrinsics that no
  // global names.
  const roots = [globalThis, api];
  const hidden = [
    function* () {},
    async function () {},
    async function* () {},
    () => [][Symbol.iterator](),
    () => new Map()[Symbol.iterator](),
    () => new Set()[Symbol.iterator](),
    () => ""[Symbol.iterator](),
    () => /a/[Symbol.matchAll]("a"),
    () => Iterator.from([]).map((x) => x),
    () => [].values().map((x) => x),
  ];
  for (let i = 0; i < hidden.length; i++) {
    const f = hidden[i];
    roots[roots.length] = getPrototypeOf(f);
    if (i < 3) {
      roots[roots.length] = f.prototype;
    } else {
      try {
        roots[roots.length] = getPrototypeOf(f());
      } catch (_) {
        // Not in this QuickJS (iterator helpers): nothing to lock.
      }
    }
  }
  const seen = new SetCtor();
  const order = [];
  const queue = roots;
  while (queue.length > 0) {
    const o = queue.pop();
    if (o === null || (typeof o !== "object" && typeof o !== "function")) continue;
    if (apply(setHas, seen, [o])) continue;
    apply(setAdd, seen, [o]);
    order[order.length] = o;
    queue[queue.length] = getPrototypeOf(o);
    for (const key of ownKeys(o)) {
      const desc = getOwnPropertyDescriptor(o, key);
      if (hasOwn(desc, "value")) {
        queue[queue.length] = desc.value;
      } else {
        queue[queue.length] = desc.get;
        queue[queue.length] = desc.set;
      }
    }
  }
  for (const o of order) {
    try {
      freeze(o);
    } catch (e) {
      // Freezing can fail only for exotic objects (a typed array with
      // elements); there should be none among the intrinsics.
    }
    if (!isFrozen(o)) {
      const name = typeof o === "function" ? "function " + o.name : "an object";
      failures[failures.length] = name;
    }
  }
  return failures;
})

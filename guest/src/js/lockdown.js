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
// the API object: tames what must stay assignable, then returns the roots
// only it knows (the API); the VM adds every intrinsic QuickJS has and
// freezes everything reachable, natively (see guest/src/lockdown.rs).
(function lockdown(api) {
  "use strict";
  const { getOwnPropertyDescriptor, defineProperty } = Object;
  const { ownKeys } = Reflect;
  const hasOwn = Object.hasOwn;
  const TypeErrorCtor = TypeError;
  const StringCtor = String;
  const apply = Reflect.apply;

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

  // Everything reachable from these is frozen by the VM (`lockdown.rs`):
  // own properties (values, getters, setters) and prototypes. The
  // intrinsics no global names (the generator prototypes, the iterator
  // prototypes...) are not listed here: the VM takes them from QuickJS's
  // own table of class prototypes.
  return [globalThis, api];
})

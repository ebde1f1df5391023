
  // ---------------------------------------------------------------- clock

  // `Date` and `Math.random` read the guest's clock and generator
  // (clock.rs): the host's, or in a deterministic run (vm-config's
  // `determinism`) a virtual clock and a seeded generator. QuickJS's own
  // read the machine directly, so both are replaced here, before the
  // lockdown freezes the globals. `Date` keeps its prototype, its statics
  // and its behaviour with arguments; only "now" (`new Date()`, `Date()`,
  // `Date.now()`) comes from the guest's clock.
  {
    const RealDate = Date;
    const dateProto = RealDate.prototype;
    const dateToString = dateProto.toString;
    const construct = Reflect.construct;
    // A function expression named by its property: a constructor whose
    // `name` is "Date", without a binding that would shadow the global in
    // this closure.
    const VirtualDate = {
      Date: function (...args) {
        if (new.target === undefined) return call(dateToString, new RealDate(dateNow()));
        if (args.length === 0) return construct(RealDate, [dateNow()], new.target);
        return construct(RealDate, args, new.target);
      },
    }.Date;
    defineProperty(VirtualDate, "length", { value: 7, writable: false, enumerable: false, configurable: true });
    defineProperty(VirtualDate, "prototype", { value: dateProto, writable: false, enumerable: false, configurable: false });
    const statics = {
      now() { return dateNow(); },
      parse: RealDate.parse,
      UTC: RealDate.UTC,
    };
    for (const key of ["now", "parse", "UTC"]) {
      defineProperty(VirtualDate, key, { value: statics[key], writable: true, enumerable: false, configurable: true });
    }
    defineProperty(dateProto, "constructor", { value: VirtualDate, writable: true, enumerable: false, configurable: true });
    installGlobal("Date", VirtualDate);
    const random = { random() { return mathRandom(); } }.random;
    defineProperty(Math, "random", { value: random, writable: true, enumerable: false, configurable: true });
  }

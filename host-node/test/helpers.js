// Shared by the tests: a sandbox closed when its test ends.
import { Sandbox } from "marionette";

/** A sandbox for test `t`, closed after it. */
export async function sandbox(t, options = {}) {
  const s = await Sandbox.create(options);
  t.after(() => s.close());
  return s;
}

/** A sandbox with `source` loaded as `main.js`. */
export async function loaded(t, source, options = {}) {
  const s = await sandbox(t, options);
  await s.load("main.js", source);
  return s;
}

/** A promise and its resolve function, for a test to wait on an event. */
export function signal() {
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}

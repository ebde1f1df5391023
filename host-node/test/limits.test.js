// What guards a host against a script: cancellation, timeouts, CPU
// deadlines, caps, memory, traps and the rebuild after one.
import { test } from "node:test";
import assert from "node:assert/strict";
import { CanceledError, LimitError, Runtime, TimeoutError, TrappedError } from "marionette";
import { Guest } from "../src/protocol.js";
import { loaded, signal } from "./helpers.js";

const LOOP = "export default function main() { for (;;) {} }";

test("an AbortSignal cancels a task waiting for the host; the host's work sees the abort", async (t) => {
  const started = signal();
  const aborted = signal();
  const s = await loaded(
    t,
    `import { tools } from "marionette";
     const registry = tools.createRegistry().useHostTools();
     export default async function main() { return await registry.call("wait", {}); }`,
    {
      tools: [
        {
          name: "wait",
          handler: (_args, ctx) => {
            ctx.signal.addEventListener("abort", () => aborted.resolve("aborted"));
            started.resolve();
            return new Promise(() => {});
          },
        },
      ],
    },
  );
  const controller = new AbortController();
  const task = s.runMain("main.js", {}, { signal: controller.signal });
  await started.promise;
  controller.abort("enough");
  const error = await task.catch((e) => e);
  assert.ok(error instanceof CanceledError, String(error));
  assert.equal(error.reason, "enough");
  assert.equal(await aborted.promise, "aborted");
  assert.equal(s.stats().pendingOps, 0);
  assert.equal(s.stats().tasks, 0);
});

test("an already aborted signal fails the task before it starts", async (t) => {
  const s = await loaded(t, "export default () => 1");
  await assert.rejects(s.runMain("main.js", {}, { signal: AbortSignal.abort() }), CanceledError);
});

test("timeoutMs fails a task that waits too long with a TimeoutError", async (t) => {
  const s = await loaded(t, "export default () => new Promise((r) => setTimeout(r, 60000));");
  const error = await s.runMain("main.js", {}, { timeoutMs: 20 }).catch((e) => e);
  assert.ok(error instanceof TimeoutError, String(error));
  assert.equal(error.afterMs, 20);
  assert.equal(s.stats().pendingOps, 0, "the timer was released");
});

test("timeoutMs stops a runaway loop (the only stop: the entry deadline is an hour)", async (t) => {
  const s = await loaded(t, `${LOOP}\nexport const ok = () => "fine";`, {
    policy: { entryDeadlineMs: 3_600_000, runDeadlineMs: null },
  });
  const error = await s.runMain("main.js", {}, { timeoutMs: 50 }).catch((e) => e);
  assert.ok(error instanceof TimeoutError, String(error));
  assert.equal(await s.call("main.js", "ok"), "fine");
});

test("the entry deadline interrupts a runaway loop; the sandbox stays usable without a rebuild", async (t) => {
  const s = await loaded(t, `${LOOP}\nexport const ok = () => "fine";`, { policy: { entryDeadlineMs: 50 } });
  const error = await s.runMain("main.js").catch((e) => e);
  assert.ok(error instanceof LimitError, String(error));
  assert.equal(error.limit, "deadline");
  assert.equal(await s.call("main.js", "ok"), "fine");
  assert.equal(s.stats().rebuilds, 0);
});

test("the run deadline bounds CPU time over all of a task's entries", async (t) => {
  const s = await loaded(
    t,
    `export default async function main() {
       for (;;) { const end = Date.now() + 5; while (Date.now() < end) {} await new Promise((r) => setTimeout(r, 0)); }
     }`,
    { policy: { entryDeadlineMs: 1000, runDeadlineMs: 100 } },
  );
  const error = await s.runMain("main.js").catch((e) => e);
  assert.ok(error instanceof LimitError, String(error));
  assert.match(error.detail, /over all its entries/);
});

test("console output past the cap fails the task with an output limit", async (t) => {
  const s = await loaded(t, "export default () => { for (let i = 0; i < 100; i++) console.log(i); }", {
    policy: { maxConsoleLines: 10 },
  });
  const lines = [];
  const error = await s.runMain("main.js", {}, { onConsole: (e) => lines.push(e.message) }).catch((e) => e);
  assert.ok(error instanceof LimitError, String(error));
  assert.equal(error.limit, "output");
  assert.equal(lines.length, 10);
});

test("pending host operations past the cap fail the task", async (t) => {
  const s = await loaded(t, "export default () => { for (let i = 0; i < 50; i++) setTimeout(() => {}, 60000); }", {
    policy: { maxPendingOps: 5 },
  });
  const error = await s.runMain("main.js").catch((e) => e);
  assert.ok(error instanceof LimitError, String(error));
  assert.equal(error.limit, "operations");
  assert.ok(s.stats().pendingOps <= 5, `${s.stats().pendingOps} host operations pending, past the cap`);
});

test("a result larger than the policy allows is an output limit", async (t) => {
  const s = await loaded(t, 'export default () => "x".repeat(10000);', { policy: { maxResultBytes: 1000 } });
  const error = await s.runMain("main.js").catch((e) => e);
  assert.ok(error instanceof LimitError, String(error));
  assert.equal(error.limit, "output");
});

test("allocating past the memory limit is a memory limit, and the sandbox goes on", async (t) => {
  const s = await loaded(
    t,
    `export default () => { const a = []; for (;;) a.push("x".repeat(1 << 16) + a.length); }
     export const ok = () => "fine";`,
    { policy: { memoryLimit: 48 << 20 } },
  );
  const error = await s.runMain("main.js").catch((e) => e);
  assert.ok(error instanceof LimitError || error instanceof TrappedError, String(error));
  assert.equal(error.limit, "memory");
  assert.equal(await s.call("main.js", "ok"), "fine");
  assert.ok(s.stats().memory <= 48 << 20, `memory ${s.stats().memory}`);
});

test("a trap fails the work in flight; the instance is rebuilt with its scripts reloaded", async (t) => {
  const s = await loaded(
    t,
    `let calls = 0;
     export function deep() { const f = (n) => f(n + 1) + 1; return f(0); }
     export function count() { calls += 1; return calls; }
     export default () => new Promise((r) => setTimeout(r, 60000));`,
  );
  await s.load("other.js", "export const hello = () => 'hello';");
  assert.equal(await s.call("main.js", "count"), 1);
  const waiting = s.runMain("main.js");
  await new Promise((r) => setImmediate(r));
  const error = await s.call("main.js", "deep").catch((e) => e);
  assert.ok(error instanceof TrappedError, String(error));
  assert.equal(error.limit, "stack");
  await assert.rejects(waiting, TrappedError);
  assert.equal(await s.call("main.js", "count"), 1, "a fresh instance: the module's state starts over");
  assert.equal(await s.call("other.js", "hello"), "hello");
  assert.equal(s.stats().rebuilds, 1);
  assert.equal(s.stats().scripts, 2);
});

// Converting a task's value runs JavaScript too: a getter of the error it
// throws, the toJSON of what it returns. That JavaScript is the task's, so
// the task's timeout stops it, long before the entry's CPU deadline would.
// The sandbox tests below check this host's part (its should-interrupt
// answers the task's timeout); the hand-driven one after them, the guest's
// (it names the task while it converts).
const CONVERTS = `export function throws() { throw { get message() { for (;;) {} } }; }
export function returns() { return { toJSON() { for (;;) {} } }; }
export const ok = () => "fine";`;

for (const fn of ["throws", "returns"]) {
  test(`timeoutMs stops JavaScript that converts the task's value (${fn}), not the entry deadline`, async (t) => {
    const s = await loaded(t, CONVERTS, { policy: { entryDeadlineMs: 10_000, runDeadlineMs: null } });
    const error = await s.call("main.js", fn, [], { timeoutMs: 50 }).catch((e) => e);
    assert.ok(error instanceof TimeoutError, String(error));
    assert.equal(error.afterMs, 50);
    assert.equal(await s.call("main.js", "ok"), "fine");
    assert.equal(s.stats().rebuilds, 0);
  });
}

test("should-interrupt names the task whose value the guest converts (docs/protocol.md, Interrupts)", async () => {
  // Driven by hand: the host stops whatever JavaScript runs at its 100th
  // poll, naming the task the guest said it runs for. The loops run only in
  // the conversions, so the stop must name the task that called.
  const runtime = await Runtime.shared();
  let polls = 0;
  const { exports } = runtime.instantiate({
    log: () => {},
    shouldInterrupt: (task) => (++polls > 100 ? { tag: "deadline", val: `stopped task ${task}` } : undefined),
    validateArguments: () => undefined,
    wantsSessionEvents: () => true,
  });
  const guest = new Guest(exports);
  guest.configure({
    memoryLimit: 64 << 20,
    consoleLines: 0,
    consoleBytes: 0,
    pendingOps: 0,
    engines: [],
    middlewares: [],
    tools: [],
  });
  guest.load(1, "main.js", CONVERTS);
  for (const [task, fn] of [
    [2, "throws"],
    [3, "returns"],
  ]) {
    polls = 0;
    const done = guest.call(task, "main.js", fn, []).filter((e) => e.type === "done");
    assert.deepEqual(done, [{ type: "done", task, outcome: { deadline: `stopped task ${task}` } }], fn);
  }
});

/**
 * The package's runtime, with the host import `name` made to throw once
 * `armed.on` is set (and only once): host imports are the sandbox's own,
 * and a bug in one is what this stands for.
 */
async function breakable(name) {
  const real = await Runtime.shared();
  const armed = { on: false };
  const runtime = {
    instantiate: (host) =>
      real.instantiate({
        ...host,
        [name]: (...args) => {
          if (armed.on) {
            armed.on = false;
            throw new Error(`${name} is broken`);
          }
          return host[name](...args);
        },
      }),
  };
  return { runtime, armed };
}

const RECOVERS = `import { tools } from "marionette";
let calls = 0;
export function count() { calls += 1; return calls; }
export function busy() { let i = 0; while (i < 1e6) i += 1; return i; }
export const calculator = tools.createRegistry().register({
  name: "add",
  parameters: { type: "object", properties: { a: { type: "number" }, b: { type: "number" } } },
  handler: ({ a, b }) => a + b,
});`;

for (const name of ["validateArguments", "shouldInterrupt"]) {
  test(`a host import that throws (${name}) is a trap: the instance is rebuilt, its scripts reloaded`, async (t) => {
    const { runtime, armed } = await breakable(name);
    const s = await loaded(t, RECOVERS, { runtime });
    await s.load("other.js", "export const hello = () => 'hello';");
    assert.equal(await s.call("main.js", "count"), 1);
    const add = { name: "add", arguments: { a: 1, b: 2 } };
    armed.on = true;
    const failed = name === "validateArguments" ? s.callTool("main.js", "calculator", add) : s.call("main.js", "busy");
    const error = await failed.catch((e) => e);
    assert.ok(error instanceof TrappedError, String(error));
    assert.equal(
      error.detail,
      `an exception went through the guest (a host import threw Error: ${name} is broken); the instance was lost`,
    );
    assert.equal(error.limit, undefined);
    assert.equal(await s.call("main.js", "count"), 1, "a fresh instance: the module's state starts over");
    assert.equal(await s.callTool("main.js", "calculator", add), 3);
    assert.equal(await s.call("main.js", "busy"), 1_000_000);
    assert.equal(await s.call("other.js", "hello"), "hello");
    assert.equal(s.stats().rebuilds, 1);
  });
}

test("the guest traps the entry after one a throwing host import left unfinished (docs/protocol.md, Traps)", async () => {
  const runtime = await Runtime.shared();
  const logged = [];
  let broken = false;
  const { exports } = runtime.instantiate({
    log: (level, message) => logged.push(message),
    shouldInterrupt: () => {
      if (broken) throw new Error("should-interrupt is broken");
      return undefined;
    },
    validateArguments: () => undefined,
    wantsSessionEvents: () => true,
  });
  const guest = new Guest(exports);
  guest.configure({
    memoryLimit: 64 << 20,
    consoleLines: 0,
    consoleBytes: 0,
    pendingOps: 0,
    engines: [],
    middlewares: [],
    tools: [],
  });
  const source = "export function busy() { let i = 0; while (i < 1e6) i += 1; return i; }\nexport const ok = () => 1;";
  const loadedDone = guest.load(1, "main.js", source).find((e) => e.type === "done");
  // A load's value is the script's export list (docs/protocol.md, Entries).
  assert.deepEqual(loadedDone.outcome.ok.value, [
    { name: "busy", kind: "function", tools: [] },
    { name: "ok", kind: "function", tools: [] },
  ]);
  broken = true;
  assert.throws(() => guest.call(2, "main.js", "busy", []), /should-interrupt is broken/);
  broken = false;
  // The next entry does not run on the state the unfinished one left: it traps.
  assert.throws(
    () => guest.call(3, "main.js", "ok", []),
    (e) => e instanceof WebAssembly.RuntimeError,
  );
  assert.ok(
    logged.some((m) => m.includes("an earlier entry into the guest did not return")),
    `the guest says why it trapped: ${JSON.stringify(logged)}`,
  );
});

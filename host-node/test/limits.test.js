// What guards a host against a script: cancellation, timeouts, CPU
// deadlines, caps, memory, traps and the rebuild after one.
import { test } from "node:test";
import assert from "node:assert/strict";
import { CanceledError, LimitError, TimeoutError, TrappedError } from "marionette";
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

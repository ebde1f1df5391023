// A script's sessions, with the model a JS function outside the sandbox:
// the session loop runs in the guest and reaches this host only as
// operations (docs/protocol.md).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { CanceledError } from "marionette";
import { loaded, sandbox, signal } from "./helpers.js";

const AGENT = new URL("../../examples/agent.js", import.meta.url);

/** A model that asks for add(2, 3), then answers with the tool's result. */
function adder(seen) {
  return (turn, ctx) => {
    seen.push({ first: turn.blocks[0]?.kind, tools: ctx.tools.map((t) => t.name), toolChoice: ctx.toolChoice });
    const used = turn.blocks.find((b) => b.kind === "tool_use");
    const block = used
      ? { kind: "llm_text", payload: { text: `The sum is ${used.payload.result}.` } }
      : { kind: "tool_call", payload: { id: "c1", name: "add", args: { a: 2, b: 3 } } };
    turn.blocks.push({ id: `m${turn.blocks.length}`, role: "assistant", metadata: {}, ...block });
    return turn;
  };
}

test("examples/agent.js runs unchanged, with a JS function as the model", async (t) => {
  const seen = [];
  const s = await loaded(t, await readFile(AGENT, "utf8"), { engine: adder(seen) });
  const lines = [];
  const events = [];
  const task = s.runMain("main.js", { prompt: "what is 2 + 3?" }, { onConsole: (e) => lines.push(e.message) });
  for await (const event of task) if (event.type === "session") events.push(event.event.type);
  const out = await task;
  assert.equal(out.answer, "The sum is 5.");
  assert.deepEqual(lines, ['-> add({"a":2,"b":3})', "<- 5"]);
  assert.deepEqual(seen, [
    { first: "system", tools: ["add", "delete_everything"], toolChoice: "auto" },
    { first: "system", tools: ["add", "delete_everything"], toolChoice: "auto" },
  ]);
  assert.deepEqual(
    events.filter((e) => e !== "partial"),
    ["start", "final", "tool-call", "tool-result", "start", "final"],
  );
});

test("a run leaves nothing in the script heap for the cycle collector", async (t) => {
  const s = await loaded(t, await readFile(AGENT, "utf8"), { engine: adder([]) });
  const run = () => s.runMain("main.js", { prompt: "what is 2 + 3?" });
  await run(); // caches and shapes grow to their size
  const before = await s.heapUsage();
  for (let i = 0; i < 10; i++) await run();
  const after = await s.heapUsage();
  assert.ok(before.bytes > 0 && before.objects > 0, JSON.stringify(before));
  // Before the runtime's cycles were cut, each run left about 20 KiB.
  const perRun = (after.bytes - before.bytes) / 10;
  assert.ok(perRun <= 1024, `the heap grew ${perRun} bytes a run`);
});

test("an engine's partials reach the script's session as partial events, in order", async (t) => {
  const s = await loaded(
    t,
    `import { createSession, engines, turns } from "marionette";
     export default async function main() {
       const run = createSession({ engine: engines.host() }).start(turns.newTurn({ blocks: [turns.newUserBlock("hi")] }));
       const seen = [];
       run.on("partial", (e) => seen.push(e.delta + "|" + e.completion));
       const final = await run.promise;
       return { seen, text: final.blocks.at(-1).payload.text };
     }`,
    {
      engine: async (turn, ctx) => {
        ctx.partial("Hel");
        await new Promise((r) => setImmediate(r));
        ctx.partial("lo");
        turn.blocks.push({ id: "a", kind: "llm_text", role: "assistant", payload: { text: "Hello" }, metadata: {} });
        return turn;
      },
    },
  );
  assert.deepEqual(await s.runMain("main.js"), { seen: ["Hel|Hel", "lo|Hello"], text: "Hello" });
});

test("a host middleware wraps the engine; its next() runs the rest of the chain in the guest", async (t) => {
  const order = [];
  const s = await loaded(
    t,
    `import { createSession, engines, middlewares, turns } from "marionette";
     const inner = middlewares.fromJS(async (turn, next) => { console.log("inner"); return next(turn); }, "inner");
     export default async function main() {
       const session = createSession({ engine: engines.host(), middlewares: [middlewares.host("audit", { tag: "x" }), inner] });
       const final = await session.start(turns.newTurn({ blocks: [turns.newUserBlock("hi")] })).promise;
       return final.metadata;
     }`,
    {
      engine: (turn) => {
        order.push("engine");
        return turn;
      },
      middlewares: {
        audit: async (turn, next, ctx) => {
          order.push(`audit ${ctx.options.tag}`);
          const out = await next(turn);
          order.push("audit after");
          out.metadata.audited = true;
          return out;
        },
      },
      onConsole: (e) => order.push(e.message),
    },
  );
  assert.deepEqual(await s.runMain("main.js"), { audited: true });
  assert.deepEqual(order, ["audit x", "inner", "engine", "audit after"]);
});

test("cancelling a task mid-inference aborts the engine's signal and fails the task", async (t) => {
  const started = signal();
  const aborted = signal();
  const s = await loaded(
    t,
    `import { createSession, engines, turns } from "marionette";
     export default async () => createSession({ engine: engines.host() }).start(turns.newTurn({ blocks: [] })).promise;`,
    {
      engine: (_turn, ctx) => {
        ctx.signal.addEventListener("abort", () => aborted.resolve(true));
        started.resolve();
        return new Promise(() => {});
      },
    },
  );
  const controller = new AbortController();
  const task = s.runMain("main.js", {}, { signal: controller.signal });
  await started.promise;
  controller.abort("stop");
  await assert.rejects(task, CanceledError);
  assert.equal(await aborted.promise, true);
  assert.equal(s.stats().pendingOps, 0);
});

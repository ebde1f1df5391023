// The Sandbox's API on today's guest: load, run, call, tools, engines,
// middleware, hooks, events, errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ScriptError, ClosedError, Sandbox } from "marionette";
import { loaded, sandbox } from "./helpers.js";

test("main runs with its input and its result comes back as JSON", async (t) => {
  const s = await loaded(
    t,
    "export default async function main(input) { return { twice: input.n * 2, seen: input }; }",
  );
  assert.deepEqual(await s.runMain("main.js", { n: 21 }), { twice: 42, seen: { n: 21 } });
});

test("an exported function is called with its arguments", async (t) => {
  const s = await loaded(t, "export function add(a, b) { return a + b; }");
  assert.equal(await s.call("main.js", "add", [2, 3]), 5);
});

test("exports are listed with their kinds and a registry's tools", async (t) => {
  const s = await loaded(
    t,
    `import { tools, engines } from "marionette";
     export default () => 1;
     export const echo = engines.echo({ reply: "hi" });
     export const calc = tools.createRegistry().register({ name: "add", description: "adds", handler: ({ a, b }) => a + b });
     export const n = 3;`,
  );
  const exports = await s.exports("main.js");
  const kinds = Object.fromEntries(exports.map((e) => [e.name, e.kind]));
  assert.deepEqual(kinds, { default: "main", echo: "engine", calc: "tool-registry", n: "value" });
  assert.deepEqual(
    (await s.listTools("main.js", "calc")).map((t) => t.name),
    ["add"],
  );
});

test("a JavaScript tool runs with checked arguments; bad arguments name what and where", async (t) => {
  const s = await loaded(
    t,
    `import { tools } from "marionette";
     export const calc = tools.createRegistry().register({
       name: "add", description: "adds",
       parameters: { type: "object", properties: { a: { type: "number" }, b: { type: "number" } }, required: ["a", "b"] },
       handler: ({ a, b }) => a + b,
     });`,
  );
  assert.equal(await s.callTool("main.js", "calc", { name: "add", arguments: { a: 1, b: 2 } }), 3);
  const error = await s.callTool("main.js", "calc", { name: "add", arguments: { a: "x", b: 2 } }).catch((e) => e);
  assert.ok(error instanceof ScriptError);
  assert.equal(error.script.name, "TypeError");
  assert.match(error.script.message, /invalid arguments for tool "add": "x" is not of type "number" at \/a/);
});

test("a script error names its kind, file and line", async (t) => {
  const s = await loaded(t, "export default function main() {\n  null.boom;\n}");
  const error = await s.runMain("main.js", {}).catch((e) => e);
  assert.ok(error instanceof ScriptError, String(error));
  assert.equal(error.name, "ScriptError");
  assert.equal(error.script.name, "TypeError");
  assert.equal(error.script.file, "main.js");
  assert.equal(error.script.line, 2);
  assert.match(error.op, /runMain main.js/);
});

test("a syntax error fails the load and the script is not kept", async (t) => {
  const s = await sandbox(t);
  const error = await s.load("bad.js", "export default (").catch((e) => e);
  assert.equal(error.script?.name, "SyntaxError");
  assert.equal(s.stats().scripts, 0);
});

test("console lines reach the task's callback, its iterator and the sandbox's callback, in order", async (t) => {
  const all = [];
  const s = await loaded(
    t,
    `export default async function main() {
       console.log("one");
       await new Promise((r) => setTimeout(r, 1));
       console.warn("two", { x: 1 });
       return "done";
     }`,
    { onConsole: (e) => all.push(e.message) },
  );
  const own = [];
  const task = s.runMain("main.js", {}, { onConsole: (e) => own.push([e.level, e.message]) });
  const iterated = [];
  for await (const event of task) iterated.push(event.message);
  assert.equal(await task, "done");
  assert.deepEqual(own, [
    ["info", "one"],
    ["warn", 'two {"x":1}'],
  ]);
  assert.deepEqual(iterated, ["one", 'two {"x":1}']);
  assert.deepEqual(all, ["one", 'two {"x":1}']);
});

test("timers fire in deadline order and clearTimeout releases the host's timer", async (t) => {
  const s = await loaded(
    t,
    `export default async function main() {
       const seen = [];
       const cleared = setTimeout(() => seen.push("cleared"), 5);
       clearTimeout(cleared);
       await Promise.all([
         new Promise((r) => setTimeout(() => { seen.push("b"); r(); }, 20)),
         new Promise((r) => setTimeout(() => { seen.push("a"); r(); }, 1)),
       ]);
       return seen;
     }`,
  );
  assert.deepEqual(await s.runMain("main.js"), ["a", "b"]);
  assert.equal(s.stats().pendingOps, 0);
});

test("a host engine (a JS function outside the sandbox) answers engines.host().infer()", async (t) => {
  const seen = [];
  const s = await loaded(
    t,
    `import { engines, turns } from "marionette";
     export default async function main(input) {
       const out = await engines.host().infer(turns.newTurn({ blocks: [turns.newUserBlock(input.q)] }), { sessionId: "s1" });
       const named = await engines.host("shout").infer(out);
       return named.blocks.map((b) => b.kind + ":" + (b.payload.text ?? ""));
     }`,
    {
      engine: (turn, ctx) => {
        seen.push(ctx.sessionId);
        turn.blocks.push({ id: "a", kind: "llm_text", role: "assistant", payload: { text: "hello" }, metadata: {} });
        return turn;
      },
      engines: {
        shout: async (turn) => {
          const last = turn.blocks.at(-1);
          turn.blocks.push({ ...last, id: "b", payload: { text: last.payload.text.toUpperCase() } });
          return turn;
        },
      },
    },
  );
  assert.deepEqual(await s.runMain("main.js", { q: "hi" }), ["user:hi", "llm_text:hello", "llm_text:HELLO"]);
  assert.deepEqual(seen, ["s1"]);
});

test("a host tool is checked against its schema, and its failure reaches the script by name", async (t) => {
  const calls = [];
  const s = await loaded(
    t,
    `import { tools } from "marionette";
     const registry = tools.createRegistry().useHostTools(["lookup"]);
     export default async function main() {
       const found = await registry.call("lookup", { key: "a" });
       let bad; try { await registry.call("lookup", { key: 1 }); } catch (e) { bad = e.name + ": " + e.message; }
       let failed; try { await registry.call("lookup", { key: "missing" }); } catch (e) { failed = e.name + ": " + e.message; }
       return { found, bad, failed };
     }`,
    {
      tools: [
        {
          name: "lookup",
          description: "looks a key up",
          parameters: { type: "object", properties: { key: { type: "string" } }, required: ["key"] },
          handler: async ({ key }, ctx) => {
            calls.push([key, ctx.toolName]);
            if (key === "missing") throw new RangeError(`no ${key}`);
            return { value: key.toUpperCase() };
          },
        },
      ],
    },
  );
  assert.deepEqual(await s.runMain("main.js"), {
    found: { value: "A" },
    bad: 'TypeError: invalid arguments for tool "lookup": 1 is not of type "string" at /key',
    failed: "RangeError: no missing",
  });
  assert.deepEqual(calls, [
    ["a", "lookup"],
    ["missing", "lookup"],
  ]);
});

test("a JS engine and a JS middleware run from the host; next() is the host's function", async (t) => {
  const s = await loaded(
    t,
    `import { engines, middlewares } from "marionette";
     export const echo = engines.echo({ reply: "pong" });
     export const tag = middlewares.fromJS(async (turn, next) => {
       turn.metadata.before = true;
       const out = await next(turn);
       out.metadata.after = true;
       return out;
     }, "tag");`,
  );
  const turn = {
    id: "t",
    blocks: [{ id: "u", kind: "user", role: "user", payload: { text: "ping" }, metadata: {} }],
    metadata: {},
    data: {},
  };
  const answered = await s.infer("main.js", "echo", turn);
  assert.equal(answered.blocks.at(-1).payload.text, "pong");
  const wrapped = await s.runMiddleware("main.js", "tag", turn, async (t) => ({
    ...t,
    metadata: { ...t.metadata, inner: true },
  }));
  assert.deepEqual(wrapped.metadata, { before: true, inner: true, after: true });
});

test("tool hooks are called by name", async (t) => {
  const s = await loaded(
    t,
    'export const guard = { beforeToolCall: ({ call }) => ({ action: "abort", error: call.name }) };',
  );
  assert.deepEqual(await s.callHook("main.js", "guard", "before-tool-call", { call: { name: "rm" } }), {
    action: "abort",
    error: "rm",
  });
});

test("the script sees no Node: no process, no require, and its fetch is refused", async (t) => {
  const s = await loaded(
    t,
    "export default async () => [typeof process, typeof require, await fetch('https://example.com/').then(() => 'fetched', (e) => e instanceof TypeError && e.message), typeof Deno, typeof globalThis.Buffer];",
  );
  const [process, require, refused, deno, buffer] = await s.runMain("main.js");
  assert.deepEqual([process, require, deno, buffer], ["undefined", "undefined", "undefined", "undefined"]);
  assert.match(refused, /^fetch is not available from this host/);
});

test("two sandboxes share nothing", async (t) => {
  const source = "let n = 0; export function bump() { n += 1; return n; }";
  const a = await loaded(t, source);
  const b = await loaded(t, source);
  assert.equal(await a.call("main.js", "bump"), 1);
  assert.equal(await a.call("main.js", "bump"), 2);
  assert.equal(await b.call("main.js", "bump"), 1);
});

test("a closed sandbox refuses work with a ClosedError, and fails what was in flight", async (t) => {
  const s = await Sandbox.create();
  await s.load("main.js", "export default () => new Promise((r) => setTimeout(r, 60000));");
  const inFlight = s.runMain("main.js");
  await new Promise((r) => setImmediate(r));
  await s.close();
  await assert.rejects(inFlight, ClosedError);
  await assert.rejects(s.runMain("main.js"), ClosedError);
});

test("a script of several modules: relative imports, JSON, import(), errors that name the module", async (t) => {
  const s = await sandbox(t);
  await s.loadModules("main.js", {
    "main.js": `import { double } from "./lib/util.js";
import data from "./data.json" with { type: "json" };
export default async () => [double(data.n), (await import("./lib/late.js")).late];
export const fail = () => double(-1);`,
    "lib/util.js": "export function double(n) {\n  if (n < 0) throw new RangeError('negative');\n  return 2 * n;\n}",
    "lib/late.js": "export const late = 'late';",
    "data.json": '{"n": 21}',
  });
  assert.deepEqual(await s.runMain("main.js", {}), [42, "late"]);
  const error = await s.call("main.js", "fail", []).catch((e) => e);
  assert.ok(error instanceof ScriptError, String(error));
  assert.equal(error.script.file, "lib/util.js");
  assert.equal(error.script.line, 2);
  const bare = await s.loadModules("b.js", { "b.js": 'import _ from "lodash";' }).catch((e) => e);
  assert.ok(bare instanceof ScriptError, String(bare));
  assert.match(bare.script.message, /esbuild/);
});

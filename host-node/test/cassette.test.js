// Cassettes from Node: a run of examples/agent.js recorded against a
// scripted host engine (no network), replayed here and through the Rust CLI
// (`marionette replay`), a CLI recording replayed here, divergences, hostile
// cassettes, determinism, and nothing secret written.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, writeFile, rm } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Cassette, CassetteError, DivergenceError, Recorder, Runtime, Sandbox, replay } from "marionette";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const AGENT = join(ROOT, "examples", "agent.js");
const PROMPT = "What is 2 + 3? Then delete everything.";
const ANSWER = ["2 + 3 ", "is 5. ", "I did not delete everything."];
/** What the host holds and must never reach a cassette. */
const KEY = "sk-test-NOT-IN-THE-CASSETTE";
/** The Rust CLI, built beside the component (`make test-node` builds both). */
const CLI = join(ROOT, "target", "release", "marionette");

/** A scripted model: it calls `add` and `delete_everything`, then streams its answer; it holds a key. */
function fakeEngine() {
  let calls = 0;
  const headers = { Authorization: `Bearer ${KEY}` };
  return async (turn, ctx) => {
    assert.ok(headers.Authorization.endsWith(KEY));
    calls += 1;
    const block = (kind, payload) => ({
      id: `b${calls}-${turn.blocks.length}`,
      kind,
      role: "assistant",
      payload,
      metadata: {},
    });
    if (calls === 1) {
      return {
        ...turn,
        blocks: [
          ...turn.blocks,
          block("tool_call", { id: "call-1", name: "add", args: { a: 2, b: 3 } }),
          block("tool_call", { id: "call-2", name: "delete_everything", args: {} }),
        ],
      };
    }
    for (const delta of ANSWER) ctx.partial(delta);
    return { ...turn, blocks: [...turn.blocks, block("llm_text", { text: ANSWER.join("") })] };
  };
}

/** As the Rust host's: the system block once, first. */
const systemPrompt = (turn, next, ctx) =>
  turn.blocks.some((b) => b.kind === "system")
    ? next(turn)
    : next({
        ...turn,
        blocks: [
          { id: "system", kind: "system", role: "system", payload: { text: ctx.options.prompt }, metadata: {} },
          ...turn.blocks,
        ],
      });

async function recordAgent(path, source) {
  const recorder = new Recorder();
  const events = [];
  process.env.OPENAI_API_KEY = KEY;
  const sandbox = await Sandbox.create({ engine: fakeEngine(), middlewares: { systemPrompt }, record: recorder });
  try {
    await sandbox.load("agent.js", source ?? (await readFile(AGENT, "utf8")));
    const result = await sandbox.runMain("agent.js", { prompt: PROMPT }, { onEvent: (e) => events.push(e) });
    await recorder.finish().save(path);
    return { result, events };
  } finally {
    delete process.env.OPENAI_API_KEY;
    sandbox.close();
  }
}

function cli(args, cwd) {
  assert.ok(existsSync(CLI), `no ${CLI}: build it (make test-node builds it with the component)`);
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^(OPENAI|ANTHROPIC|MARIONETTE)/.test(k)),
  );
  return new Promise((resolve) => {
    execFile(
      CLI,
      args,
      { cwd, env: { ...env, NO_COLOR: "1", HOME: cwd }, maxBuffer: 64 << 20 },
      (error, stdout, stderr) => resolve({ code: error ? error.code : 0, stdout, stderr }),
    );
  });
}

const lastLine = (text) => JSON.parse(text.trim().split("\n").at(-1));

async function tempDir(t) {
  const dir = await mkdtemp(join(tmpdir(), "marionette-cassette-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test("a recorded run replays with the same result and events, and writes nothing secret", async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, "agent.jsonl");
  const { result, events } = await recordAgent(path);
  assert.equal(result.answer, ANSWER.join(""));
  const console = events.filter((e) => e.type === "console").map((e) => e.message);
  assert.ok(console.includes('-> add({"a":2,"b":3})'), console.join("\n"));
  assert.ok(console.includes("<- null (delete_everything is not allowed)"), console.join("\n"));

  const text = await readFile(path, "utf8");
  assert.ok(!text.includes(KEY));
  assert.ok(!text.toLowerCase().includes("authorization"));

  const cassette = await Cassette.load(path);
  assert.equal(cassette.header.format, "marionette-cassette");
  assert.equal(cassette.header.component, (await Runtime.shared()).sha256);
  assert.ok(cassette.header.policy.determinism.seed < 2 ** 53);
  assert.deepEqual(Object.keys(cassette.entries[0].call), ["configure"]);

  const replayed = [];
  const out = await replay(path, { onEvent: (e) => replayed.push(e) });
  assert.equal(out.ranMain, true);
  assert.deepEqual(out.result, result);
  assert.equal(out.entries, cassette.entries.length);
  assert.deepEqual(
    replayed.map(({ type, level, message, event }) => ({ type, level, message, event })),
    events.map(({ type, level, message, event }) => ({ type, level, message, event })),
  );
});

test("a changed prompt or tool is a divergence naming the operation, with a diff", async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, "agent.jsonl");
  await recordAgent(path);
  const agent = await readFile(AGENT, "utf8");
  const prompt = agent.replace("You are a careful assistant.", "You are a careless assistant.");
  await assert.rejects(replay(path, { sources: { "agent.js": prompt } }), (e) => {
    assert.ok(e instanceof DivergenceError, e.stack);
    assert.equal(e.export, "script.run-main");
    assert.match(e.what, /the request for middleware/);
    assert.ok(
      e.diff.split("\n").some((l) => l.startsWith("+ ") && l.includes("careless")),
      e.diff,
    );
    assert.ok(e.recorded.includes("careful"));
    return true;
  });
  const tool = agent.replace("handler: async ({ a, b }) => a + b,", "handler: async ({ a, b }) => a * b,");
  assert.notEqual(tool, agent);
  await assert.rejects(replay(path, { sources: { "agent.js": tool } }), (e) => {
    assert.ok(e instanceof DivergenceError, e.stack);
    assert.ok(e.asked.includes("6"), e.asked);
    return true;
  });
});

test("determinism pins the clock and randomness", async (t) => {
  const script = "export default () => ({ now: Date.now(), r: Math.random(), d: new Date().toISOString() });";
  const run = async (seed) => {
    const s = await Sandbox.create({ policy: { determinism: { seed, startMs: 1_000_000 } } });
    t.after(() => s.close());
    await s.load("d.js", script);
    return s.runMain("d.js", null);
  };
  const [first, again, other] = [await run(7), await run(7), await run(8)];
  assert.deepEqual(first, again);
  assert.equal(first.now, 1_000_000);
  assert.equal(first.d, "1970-01-01T00:16:40.000Z");
  assert.notEqual(other.r, first.r);
});

test("hostile cassettes are refused with a typed error", async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, "agent.jsonl");
  await recordAgent(path);
  const data = await readFile(path);
  const lines = data.toString("utf8").split(/(?<=\n)/);
  const hostile = join(dir, "hostile.jsonl");
  const refused = async (content, kind, options) => {
    await writeFile(hostile, content);
    await assert.rejects(replay(hostile, options), (e) => {
      assert.ok(e instanceof CassetteError, e.stack);
      assert.equal(e.kind, kind, e.message);
      assert.equal(e.op, "cassette");
      return true;
    });
  };
  await refused(lines.slice(0, -1).join(""), "truncated");
  await refused(data.subarray(0, data.length - 1), "truncated");
  await refused(lines.slice(0, 5).join(""), "truncated");
  const edited = data.toString("utf8").replace("delete everything", "delete nothing!!!");
  assert.notEqual(edited, data.toString("utf8"));
  await refused(edited, "edited");
  await refused([lines[0], lines[2], lines[1], ...lines.slice(3)].join(""), "edited");
  await refused(Buffer.concat([data, Buffer.from("{}\n")]), "edited");
  await refused("", "not-a-cassette");
  await refused("\x7fELF\n", "not-a-cassette");
  await refused('{"cassette": {"format": "vcr"}}\n', "not-a-cassette");
  await refused(data, "too-large", { limits: { maxBytes: 1024, maxEntries: 1_000_000 } });
  await refused(data, "too-large", { limits: { maxBytes: 1 << 30, maxEntries: 3 } });

  const cassette = await Cassette.load(path);
  await refused(new Cassette({ ...cassette.header, version: 2 }, cassette.entries).toBuffer(), "version");
  await writeFile(
    hostile,
    new Cassette({ ...cassette.header, component: "0".repeat(64) }, cassette.entries).toBuffer(),
  );
  await assert.rejects(
    replay(hostile),
    (e) => e instanceof CassetteError && e.kind === "component" && e.recorded === "0".repeat(64),
  );
  // Valid JSON and a good checksum, but not an entry of the format.
  const bad = cassette.entries.map((e) => ({ ...e }));
  bad[1].call = { "launch-missiles": {} };
  await writeFile(hostile, new Cassette(cassette.header, bad).toBuffer());
  await assert.rejects(replay(hostile), (e) => e instanceof CassetteError && e.kind === "malformed" && e.line === 3);
  // Nested deeper than any reader's recursion: a malformed line, not a crash.
  const deep = `{"n":1,"task":1,"call":{"cancel":{"reason":"x"}},"effects":${"[".repeat(100_000)}${"]".repeat(100_000)}}\n`;
  const body = lines[0] + lines[1] + deep;
  const sha = createHash("sha256").update(body).digest("hex");
  await refused(`${body}{"end":{"entries":2,"sha256":"${sha}"}}\n`, "malformed");
});

test("a recording made here replays through the Rust CLI, and a changed script diverges there", async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, "agent.jsonl");
  const { result } = await recordAgent(path);
  let out = await cli(["replay", path], dir);
  assert.equal(out.code, 0, out.stderr);
  assert.deepEqual(lastLine(out.stdout), result);
  assert.match(out.stderr, /the replay matched the recording/);
  assert.ok(out.stderr.includes('-> add({"a":2,"b":3})'), out.stderr);

  // Partial: the models from this cassette, the middleware and tools live in Rust.
  out = await cli(["replay", path, "--partial"], dir);
  assert.equal(out.code, 0, out.stderr);
  assert.deepEqual(lastLine(out.stdout), result);
  assert.match(out.stderr, /infer from the recording, the rest live/);

  await writeFile(join(dir, "agent.js"), (await readFile(AGENT, "utf8")).replace("careful", "careless"));
  out = await cli(["replay", path], dir);
  assert.equal(out.code, 5, out.stderr);
  assert.match(out.stderr, /diverged at entry/);
  assert.match(out.stderr, /careless/);
});

test("a recording made by the Rust CLI replays here", async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, "cli.jsonl");
  // Alone in its folder: the CLI loads a script's folder as its module graph.
  const script = join(dir, "script", "deterministic.js");
  await mkdir(join(dir, "script"));
  await writeFile(script, await readFile(join(ROOT, "tests", "fixtures", "deterministic.js")));
  // The built-in echo engine: no key, no network; timers, randomness, the clock, a session.
  const out = await cli(["run", script, "--record", path, "--input", "{}"], dir);
  assert.equal(out.code, 0, out.stderr);
  const live = lastLine(out.stdout);
  const events = [];
  const replayed = await replay(path, { onEvent: (e) => events.push(e) });
  assert.deepEqual(replayed.result, live);
  assert.ok(events.some((e) => e.type === "session" && e.event.type === "final"));

  const cassette = await Cassette.load(path);
  assert.deepEqual(
    cassette.header.scripts.map((s) => s.name),
    ["deterministic.js"],
  );
  const name = cassette.mainCall().name;
  const changed = (await readFile(script, "utf8")).replace("await sleep(250);", "await sleep(260);");
  await assert.rejects(replay(path, { sources: { [name]: changed } }), (e) => {
    assert.ok(e instanceof DivergenceError, e.stack);
    assert.match(e.what, /sleep/);
    return true;
  });
});

// The Node runner of the conformance suite (tests/conformance/README.md):
// one case is a fresh sandbox, the scripts it loads, the host services it
// describes (engines answering from a list of replies, tools from a list of
// results, the built-in systemPrompt middleware), and steps whose outcomes,
// console lines and host calls are compared with what the case expects.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";
import { CanceledError, LimitError, Sandbox, ScriptError, TimeoutError, TrappedError } from "marionette";

const KEYS = {
  case: ["description", "scripts", "limits", "host", "steps", "expect"],
  script: ["name", "file"],
  limits: ["timeoutMs", "memoryBytes"],
  host: ["engines", "tools", "middlewares"],
  reply: ["text", "partials", "toolCalls", "error"],
  tool: ["name", "description", "parameters", "results"],
  result: ["value", "error"],
  step: ["run", "script", "input", "function", "args", "registry", "call", "cancelOnConsole", "file"],
  expect: ["result", "error", "console", "hostCalls"],
  error: ["kind", "name", "messageContains", "file", "line"],
};

/** The host middleware a case may name. */
const MIDDLEWARES = ["systemPrompt"];

/** Throws when `value` has a key the runner does not know: a case must not say more than is checked. */
function known(value, kind, where) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`${where}: expected an object`);
  }
  for (const key of Object.keys(value)) {
    if (!KEYS[kind].includes(key)) throw new Error(`${where}: unknown key ${JSON.stringify(key)}`);
  }
}

/** Checks a case's shape; throws naming the first thing this runner does not understand. */
export function validate(c) {
  known(c, "case", "case");
  for (const [i, s] of (c.scripts ?? []).entries()) known(s, "script", `scripts[${i}]`);
  if (c.limits !== undefined) known(c.limits, "limits", "limits");
  if (c.host !== undefined) {
    known(c.host, "host", "host");
    for (const [name, replies] of Object.entries(c.host.engines ?? {})) {
      for (const [i, r] of replies.entries()) known(r, "reply", `host.engines[${JSON.stringify(name)}][${i}]`);
    }
    for (const [i, tool] of (c.host.tools ?? []).entries()) {
      known(tool, "tool", `host.tools[${i}]`);
      for (const [j, r] of (tool.results ?? []).entries()) known(r, "result", `host.tools[${i}].results[${j}]`);
    }
    for (const m of c.host.middlewares ?? []) {
      if (!MIDDLEWARES.includes(m)) throw new Error(`host.middlewares: unknown middleware ${JSON.stringify(m)}`);
    }
  }
  for (const [i, s] of c.steps.entries()) {
    known(s, "step", `steps[${i}]`);
    if (!["main", "call", "tool", "load"].includes(s.run))
      throw new Error(`steps[${i}].run: unknown ${JSON.stringify(s.run)}`);
  }
  if (c.expect.length !== c.steps.length) throw new Error("expect must have one entry per step");
  for (const [i, e] of c.expect.entries()) {
    known(e, "expect", `expect[${i}]`);
    if ("result" in e === "error" in e) throw new Error(`expect[${i}]: exactly one of result and error`);
    if (e.error !== undefined) known(e.error, "error", `expect[${i}].error`);
  }
}

/** An engine answering with the case's replies, in order. */
function engine(name, replies, record, problems) {
  let next = 0;
  return async (turn, ctx) => {
    record({ engine: name, tools: (ctx.tools ?? []).map((t) => t.name) });
    const reply = replies[next++];
    if (reply === undefined) {
      problems.push(
        `engine ${JSON.stringify(name)} was called more often than the case has replies (${replies.length})`,
      );
      throw new Error(`the case has no reply ${next} for engine ${JSON.stringify(name)}`);
    }
    if (reply.error !== undefined) {
      const e = new Error(reply.error.message);
      e.name = reply.error.name;
      throw e;
    }
    for (const delta of reply.partials ?? []) ctx.partial(delta);
    if (reply.text !== undefined) {
      turn.blocks.push({
        id: `reply-${next}`,
        kind: "llm_text",
        role: "assistant",
        payload: { text: reply.text },
        metadata: {},
      });
    }
    for (const call of reply.toolCalls ?? []) {
      turn.blocks.push({
        id: `call-${call.id}`,
        kind: "tool_call",
        role: "assistant",
        payload: { id: call.id, name: call.name, args: call.arguments ?? {} },
        metadata: {},
      });
    }
    return turn;
  };
}

/** A host tool answering with the case's results, in order. */
function tool(spec, record, problems) {
  let next = 0;
  return {
    name: spec.name,
    description: spec.description ?? "",
    parameters: spec.parameters ?? { type: "object" },
    handler: async (args) => {
      record({ tool: spec.name, arguments: args });
      const result = (spec.results ?? [])[next++];
      if (result === undefined) {
        problems.push(`tool ${JSON.stringify(spec.name)} was called more often than the case has results`);
        throw new Error(`the case has no result ${next} for tool ${JSON.stringify(spec.name)}`);
      }
      if (result.error !== undefined) throw new Error(result.error);
      return result.value;
    },
  };
}

/** The kind of a failure, as a case names it. */
function kindOf(error) {
  if (error instanceof ScriptError) return "script";
  if (error instanceof TimeoutError) return "timeout";
  if (error instanceof CanceledError) return "canceled";
  if (error instanceof LimitError) return "limit";
  if (error instanceof TrappedError) return "trapped";
  return `unexpected ${error?.name}: ${error?.message}`;
}

/** Runs the case in `file` (a path), asserting what it expects. */
export async function runCaseFile(file) {
  const c = JSON.parse(await readFile(file, "utf8"));
  await runCase(c, pathToFileURL(file));
}

/** Runs case `c`; its script files are relative to `base` (a URL). */
export async function runCase(c, base) {
  validate(c);
  let calls = [];
  const problems = [];
  const record = (call) => calls.push(call);
  const engines = {};
  let defaultEngine;
  for (const [name, replies] of Object.entries(c.host?.engines ?? {})) {
    if (name === "") defaultEngine = engine(name, replies, record, problems);
    else engines[name] = engine(name, replies, record, problems);
  }
  const sandbox = await Sandbox.create({
    policy: c.limits?.memoryBytes === undefined ? {} : { memoryLimit: c.limits.memoryBytes },
    engine: defaultEngine,
    engines,
    tools: (c.host?.tools ?? []).map((t) => tool(t, record, problems)),
  });
  try {
    for (const s of c.scripts ?? []) {
      await sandbox.load(s.name, await readFile(new URL(s.file, base), "utf8"));
    }
    for (const [i, step] of c.steps.entries()) {
      calls = [];
      const console = [];
      const controller = new AbortController();
      const options = {
        signal: controller.signal,
        timeoutMs: c.limits?.timeoutMs,
        onConsole: (e) => {
          console.push([e.level, e.message]);
          if (step.cancelOnConsole !== undefined && e.message === step.cancelOnConsole)
            controller.abort("cancelOnConsole");
        },
      };
      let task;
      if (step.run === "load") {
        const source = await readFile(new URL(step.file, base), "utf8");
        task = sandbox.load(step.script, source, options);
      } else if (step.run === "main") task = sandbox.runMain(step.script, step.input ?? null, options);
      else if (step.run === "call") task = sandbox.call(step.script, step.function, step.args ?? [], options);
      else task = sandbox.callTool(step.script, step.registry, step.call, options);
      const outcome = await task.then(
        (value) => ({ value: value === undefined ? null : value }),
        (error) => ({ error }),
      );
      const expect = c.expect[i];
      const where = `step ${i} (${step.run})`;
      if ("result" in expect) {
        assert.ok(outcome.error === undefined, `${where}: expected a result, got ${outcome.error}`);
        assert.deepEqual(outcome.value, expect.result, `${where}: result`);
      } else {
        assert.ok(outcome.error !== undefined, `${where}: expected an error, got ${JSON.stringify(outcome.value)}`);
        const e = outcome.error;
        assert.equal(kindOf(e), expect.error.kind, `${where}: error kind (${e.message})`);
        if (expect.error.name !== undefined) {
          const name = e instanceof ScriptError ? e.script.name : (e.limit ?? e.name);
          assert.equal(name, expect.error.name, `${where}: error name`);
        }
        for (const key of ["file", "line"]) {
          if (expect.error[key] !== undefined) {
            assert.equal(e.script?.[key], expect.error[key], `${where}: the script error's ${key}`);
          }
        }
        if (expect.error.messageContains !== undefined) {
          assert.ok(
            e.message.includes(expect.error.messageContains),
            `${where}: error message ${JSON.stringify(e.message)} lacks ${JSON.stringify(expect.error.messageContains)}`,
          );
        }
      }
      if (expect.console !== undefined) assert.deepEqual(console, expect.console, `${where}: console`);
      if (expect.hostCalls !== undefined) assert.deepEqual(calls, expect.hostCalls, `${where}: host calls`);
    }
    assert.deepEqual(problems, [], "the host services saw calls the case did not plan for");
  } finally {
    await sandbox.close();
  }
}

// Type-checked (`tsc`), never run: the public types as a user writes them.
import {
  Sandbox,
  execute,
  ScriptError,
  LimitError,
  Recorder,
  Cassette,
  CassetteError,
  DivergenceError,
  replay,
  type Turn,
  type HostTool,
} from "marionette";

const add: HostTool = {
  name: "add",
  parameters: { type: "object", properties: { a: { type: "number" } } },
  handler: ({ a }: { a: number }) => a + 1,
};

export async function example(): Promise<void> {
  const sandbox = await Sandbox.create({
    policy: { entryDeadlineMs: 100 },
    engine: (turn: Turn, ctx) => {
      ctx.partial?.("hi");
      return turn;
    },
    tools: [add],
  });
  await sandbox.load("a.js", "export default () => 1");
  const task = sandbox.runMain("a.js", { x: 1 }, { signal: AbortSignal.timeout(1000), timeoutMs: 10 });
  for await (const event of task) {
    if (event.type === "console") console.log(event.level, event.message);
  }
  try {
    const value: unknown = await task;
    console.log(value);
  } catch (e) {
    if (e instanceof ScriptError) console.log(e.script.name, e.script.line);
    if (e instanceof LimitError) console.log(e.limit);
  }
  const { result, error, logs } = await execute("async () => codemode.add({ a: 1 })", { add: ({ a }) => a + 1 });
  console.log(result, error, logs?.length);
  await sandbox.close();
}

// Recording and replaying a run (docs/cassette.md).
export async function cassettes(): Promise<void> {
  const recorder = new Recorder({ test: "types" });
  const sandbox = await Sandbox.create({ record: recorder, policy: { determinism: { seed: 7, startMs: 0 } } });
  await sandbox.load("a.js", "export default () => Date.now()");
  await sandbox.runMain("a.js");
  await sandbox.close();
  const cassette: Cassette = recorder.finish();
  await cassette.save("a.jsonl");
  const seed: number | undefined = cassette.header.policy.determinism?.seed;
  console.log(seed, recorder.length, cassette.mainCall()?.name);
  try {
    const replayed = await replay("a.jsonl", { sources: { "a.js": "export default () => 0" }, onEvent: (e) => e.task });
    console.log(replayed.entries, replayed.ranMain, replayed.result);
  } catch (e) {
    if (e instanceof DivergenceError) console.log(e.entry, e.export, e.task, e.what, e.diff);
    if (e instanceof CassetteError && e.kind === "component") console.log(e.recorded, e.running);
  }
}

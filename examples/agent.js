// A complete agent: an engine the host provides, a middleware, tools with
// schemas, hooks that guard them, and the run's events as they happen (the
// command itself streams the model's text to stderr).
//
//   marionette run examples/agent.js --input '{"prompt": "what is 2 + 3?"}'
//
// With no configuration the host's default engine is the built-in `echo`,
// which answers "READY" and calls no tools; a real provider (configured on
// the host, never in the script) makes the same script an agent.
import { consts, createBuilder, engines, middlewares, tools, turns } from "marionette";

export const calculator = tools.createRegistry()
  .register({
    name: "add",
    description: "Adds two numbers.",
    parameters: {
      type: "object",
      properties: { a: { type: "number" }, b: { type: "number" } },
      required: ["a", "b"],
    },
    handler: async ({ a, b }) => a + b,
  })
  .register({
    name: "delete_everything",
    description: "A tool the guard below never lets run.",
    handler: async () => "gone",
  });

// Redacts e-mail addresses before the model sees the turn.
export const redact = middlewares.fromJS(async (turn, next) => {
  for (const block of turn.blocks) {
    if (typeof block.payload.text === "string") {
      block.payload.text = block.payload.text.replace(/[\w.+-]+@[\w-]+\.[\w.]+/g, "[email]");
    }
  }
  return next(turn);
}, "redact");

export const guard = {
  beforeToolCall: ({ call }) =>
    call.name.startsWith("delete") ? { action: consts.HookAction.ABORT, error: `${call.name} is not allowed` } : undefined,
  onToolError: ({ attempt }) => (attempt < 2 ? { action: "retry", backoffMs: 100 } : { action: "continue" }),
};

export default async function main(input) {
  const session = createBuilder()
    .withEngine(engines.host())
    .useMiddleware(middlewares.host("systemPrompt", { prompt: "You are a careful assistant. Use the tools." }))
    .useMiddleware(redact)
    .withTools(calculator, { maxIterations: 4, maxParallelTools: 2, executionTimeoutMs: 10_000 })
    .withToolHooks(guard)
    .buildSession();

  const run = session.start(turns.newTurn({ blocks: [turns.newUserBlock(input.prompt ?? "hello")] }), {
    timeoutMs: 60_000,
    tags: { example: "agent" },
  });
  run.on("tool-call", (e) => console.log(`-> ${e.toolCall.name}(${JSON.stringify(e.toolCall.input)})`));
  run.on("tool-result", (e) => console.log(`<- ${JSON.stringify(e.toolResult.result)}${e.toolResult.error ? ` (${e.toolResult.error})` : ""}`));

  const final = await run.promise;
  const answer = final.blocks.filter((b) => b.kind === consts.BlockKind.LLM_TEXT).at(-1);
  return { answer: answer?.payload.text ?? null, blocks: final.blocks.length, turns: session.turnCount() };
}

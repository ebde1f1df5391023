// Every JavaScript part of a session prints: the engine, a middleware, a
// tool handler and a hook. All of it is the task's console.
import { createSession, engines, middlewares, tools, turns } from "marionette";

export default async function main() {
  const engine = engines.fromFunction((turn) => {
    const answered = turn.blocks.some((b) => b.kind === "tool_use");
    console.log(`engine: ${answered ? "answer" : "call"}`);
    return turns.appendBlock(turn, answered ? turns.newAssistantBlock("done") : turns.newToolCallBlock("c1", "echo", { text: "hi" }));
  });
  const logged = middlewares.fromJS(async (turn, next) => {
    console.log("middleware");
    return next(turn);
  }, "logged");
  const registry = tools.createRegistry().register({
    name: "echo",
    handler: async ({ text }) => {
      console.warn(`tool: ${text}`);
      return text;
    },
  });
  const session = createSession({
    engine,
    middlewares: [logged],
    tools: registry,
    toolHooks: { afterToolCall: (p) => { console.error(`hook: ${p.result}`); } },
  });
  const out = await session.run(turns.newTurn({ blocks: [turns.newUserBlock("go")] }));
  return out.blocks.at(-1).payload.text;
}

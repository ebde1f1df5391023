// A JavaScript engine that routes between two host engines: short prompts
// to a fast model, the rest to a strong one. The host configures both
// (names "fast" and "smart", e.g. profiles of the config file); the script
// only picks.
//
//   marionette run examples/router.js --config examples/router.toml --input '{"prompt": "hi"}'
import { createSession, engines, turns } from "marionette";

export const router = engines.fromFunction((turn, ctx) => {
  const prompt = turn.blocks.filter((b) => b.kind === "user").at(-1)?.payload.text ?? "";
  const route = prompt.length <= 40 ? "fast" : "smart";
  turn.metadata.route = route;
  return engines.host(route).infer(turn, ctx);
});

export default async function main(input) {
  const session = createSession({ engine: router });
  const out = await session.run(turns.newTurn({ blocks: [turns.newUserBlock(input.prompt ?? "")] }));
  return { route: out.metadata.route, answer: out.blocks.at(-1).payload.text };
}

import { createSession, engines, middlewares, turns } from "marionette";

// Marks the model's answer after the rest of the chain ran.
const mark = middlewares.fromJS(async (turn, next) => {
  const out = await next(turn);
  const last = out.blocks.at(-1);
  last.payload.text = last.payload.text + " [checked]";
  return out;
}, "mark");

export default async function main(input) {
  const session = createSession({ engine: engines.host(), middlewares: [mark] });
  const run = session.start(turns.newTurn({ blocks: [turns.newUserBlock(input.prompt)] }));
  const seen = [];
  run.on("*", (e) => seen.push(e.type === "partial" ? "partial:" + e.delta : e.type));
  const final = await run.promise;
  return { text: final.blocks.at(-1).payload.text, events: seen };
}

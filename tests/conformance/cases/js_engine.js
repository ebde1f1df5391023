import { engines, turns } from "marionette";

export const shout = engines.fromFunction(async (turn) => {
  const last = turn.blocks.at(-1).payload.text;
  await new Promise((resolve) => setTimeout(resolve, 1));
  turn.blocks.push(turns.newAssistantBlock(last.toUpperCase() + "!"));
  return turn;
});

export default async function main(input) {
  const out = await shout.infer(turns.newTurn({ blocks: [turns.newUserBlock(input.text)] }));
  return out.blocks.map((b) => [b.kind, b.payload.text]);
}

// marionette run examples/hello.js --input '{"name": "Ada"}'
import { engines, turns } from "marionette";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export const echo = engines.echo({ reply: "hello from the echo engine" });

export default async function main(input) {
  console.log(`hello, ${input.name ?? "world"}`);
  await sleep(10);
  const turn = turns.newTurn({ blocks: [turns.newUserBlock("hi")] });
  turns.appendBlock(turn, turns.newAssistantBlock("hello from JavaScript"));
  return { greeting: `hello, ${input.name ?? "world"}`, blocks: turn.blocks.map((b) => b.kind) };
}

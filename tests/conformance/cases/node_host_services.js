// A script that uses the host's engine and tool directly, without a session.
import { engines, tools, turns } from "marionette";

const registry = tools.createRegistry().useHostTools(["lookup"]);

export default async function main(input) {
  const turn = await engines.host().infer(turns.newTurn({ blocks: [turns.newUserBlock(input.q)] }));
  const text = turn.blocks.at(-1).payload.text;
  const found = await registry.call("lookup", { key: text });
  let missing;
  try {
    await registry.call("lookup", { key: "nothing" });
  } catch (e) {
    missing = `${e.name}: ${e.message}`;
  }
  let failed;
  try {
    await engines.host().infer(turn);
  } catch (e) {
    failed = `${e.name}: ${e.message}`;
  }
  return { text, found, missing, failed };
}

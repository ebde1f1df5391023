import { engines, turns } from "marionette";

export default async function main(input) {
  const engine = engines.host();
  const out = await engine.infer(turns.newTurn({ blocks: [turns.newUserBlock(input.prompt)] }));
  let failure;
  try {
    await engine.infer(turns.newTurn({ blocks: [turns.newUserBlock("again")] }));
  } catch (e) {
    failure = [e.name, e.message];
  }
  const last = out.blocks.at(-1);
  return { kind: last.kind, role: last.role, text: last.payload.text, blocks: out.blocks.length, failure };
}

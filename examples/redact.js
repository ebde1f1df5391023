// A redaction middleware: e-mail addresses, phone numbers and things that
// look like API keys never reach the model.
//
//   marionette run examples/redact.js --input '{"prompt": "mail ada@example.com, call +44 20 7946 0958"}'
import { createSession, engines, middlewares, turns } from "marionette";

const patterns = [
  [/[\w.+-]+@[\w-]+\.[\w.-]+/g, "[email]"],
  [/\+?\d[\d ()-]{7,}\d/g, "[phone]"],
  [/\b(sk|pk|api)[-_][A-Za-z0-9_-]{8,}\b/g, "[key]"],
];

let redacted = 0;

export const redact = middlewares.fromJS(async (turn, next) => {
  for (const block of turn.blocks) {
    if (typeof block.payload.text !== "string") continue;
    for (const [pattern, replacement] of patterns) {
      block.payload.text = block.payload.text.replace(pattern, () => {
        redacted++;
        return replacement;
      });
    }
  }
  return next(turn);
}, "redact");

export default async function main(input) {
  const session = createSession({ engine: engines.host(), middlewares: [redact] });
  const out = await session.run(turns.newTurn({ blocks: [turns.newUserBlock(input.prompt ?? "")] }));
  return { answer: out.blocks.at(-1).payload.text, redacted };
}

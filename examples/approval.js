// An approval hook: tools marked dangerous run only when the caller
// approved them by name; otherwise the model is told they were blocked.
//
//   marionette run examples/approval.js --input '{"prompt": "clean up /tmp", "approve": []}'
import { createBuilder, engines, tools, turns } from "marionette";

const files = new Map([["/tmp/a.txt", "hello"], ["/tmp/b.txt", "world"]]);

export const fileTools = tools.createRegistry()
  .register({
    name: "list_files",
    description: "Lists the files.",
    handler: () => [...files.keys()],
  })
  .register({
    name: "delete_file",
    description: "Deletes a file. Dangerous: needs approval.",
    parameters: { type: "object", properties: { path: { type: "string" } }, required: ["path"] },
    handler: ({ path }) => files.delete(path),
  });

const dangerous = new Set(["delete_file"]);

export function approvalHooks(approved) {
  return {
    beforeToolCall: ({ call }) => {
      if (dangerous.has(call.name) && !approved.includes(call.name)) {
        return { action: "abort", error: `${call.name} needs approval; it was blocked` };
      }
      return undefined;
    },
  };
}

export default async function main(input) {
  const session = createBuilder()
    .withEngine(engines.host())
    .withTools(fileTools)
    .withToolHooks(approvalHooks(input.approve ?? []))
    .buildSession();
  const run = session.start(turns.newTurn({ blocks: [turns.newUserBlock(input.prompt ?? "")] }));
  const results = [];
  run.on("tool-result", (e) => results.push({ id: e.toolResult.id, error: e.toolResult.error ?? null }));
  const out = await run.promise;
  return { answer: out.blocks.at(-1).payload.text, results, files: [...files.keys()] };
}

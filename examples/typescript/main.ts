// A TypeScript script of three modules and a JSON file; the command line
// gives it every module file under this folder:
//
//   marionette run examples/typescript/main.ts --input '{"player": "ada"}'
//
// Types are erased where they stand, so an error's line and column are
// those of the .ts file: try `--input '{"player": "nobody"}'`.
import scores from "./data/scores.json" with { type: "json" };
import { summarize, type Summary } from "./lib/stats.ts";
import { describe } from "./lib/format.ts";

interface Input {
  player?: string;
}

export default function main(input: Input): { summary: Summary; text: string } {
  const player: string = input.player ?? "ada";
  const summary = summarize(player, scores.games);
  return { summary, text: describe(summary) };
}

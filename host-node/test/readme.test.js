// The README's "From Node" example, run as a user runs it: as a file in a
// project that installed the package (`make test-node` installs it into
// target/node-test), printing what the README says it prints.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const PROJECT = resolve(ROOT, "host-node", process.env.MARIONETTE_NODE_TEST_DIR ?? "../target/node-test");

/** The first fenced block of `lang` after `from` in `text`. */
function block(text, from, lang) {
  const start = text.indexOf(`\n\`\`\`${lang}\n`, from);
  assert.ok(start >= 0, `no \`\`\`${lang} block after offset ${from}`);
  const body = start + lang.length + 5;
  return { code: text.slice(body, text.indexOf("\n```", body) + 1), end: body };
}

test("the README's From Node example runs and prints what the README shows", async () => {
  assert.ok(
    existsSync(resolve(PROJECT, "node_modules", "marionette", "package.json")),
    `the package is not installed in ${PROJECT}: run \`make test-node\``,
  );
  const readme = await readFile(resolve(ROOT, "README.md"), "utf8");
  const section = readme.indexOf("\n## From Node\n");
  assert.ok(section >= 0, "the README has a From Node section");
  const example = block(readme, section, "js");
  const output = block(readme, example.end, "text");
  const file = resolve(PROJECT, "readme-example.mjs");
  await writeFile(file, example.code);
  const { stdout } = await promisify(execFile)(process.execPath, [file], { cwd: PROJECT, timeout: 60_000 });
  assert.equal(stdout, output.code);
});

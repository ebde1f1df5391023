// The conformance suite (tests/conformance/cases/*.json), run by this host.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { runCase, runCaseFile, validate } from "./conformance/runner.js";

const CASES = fileURLToPath(new URL("../../tests/conformance/cases/", import.meta.url));
const files = readdirSync(CASES)
  .filter((f) => f.endsWith(".json"))
  .sort();

test("the suite has cases", () => assert.ok(files.length > 0));

for (const file of files) {
  const name = file.replace(/\.json$/, "");
  test(`conformance: ${name}`, () => runCaseFile(`${CASES}${file}`));
}

const minimal = () => ({
  description: "d",
  scripts: [],
  steps: [{ run: "main", script: "main.js", input: {} }],
  expect: [{ result: null }],
});

test("the runner refuses a case with a key it does not check", () => {
  assert.doesNotThrow(() => validate(minimal()));
  const extra = minimal();
  extra.expect[0].events = [];
  assert.throws(() => validate(extra), /expect\[0\]: unknown key "events"/);
  const both = minimal();
  both.expect[0].error = { kind: "script" };
  assert.throws(() => validate(both), /exactly one of result and error/);
});

test("the runner fails a case whose expectation is not met", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "marionette-conformance-"));
  t.after(() => rm(dir, { recursive: true }));
  await writeFile(join(dir, "one.js"), "export default () => { console.log('hi'); return 1; }");
  const c = (expect) => ({
    description: "a wrong expectation",
    scripts: [{ name: "main.js", file: "one.js" }],
    steps: [{ run: "main", script: "main.js", input: {} }],
    expect: [expect],
  });
  const base = pathToFileURL(`${dir}/`);
  await runCase(c({ result: 1, console: [["info", "hi"]] }), base);
  await assert.rejects(runCase(c({ result: 2 }), base), /result/);
  await assert.rejects(runCase(c({ result: 1, console: [] }), base), /console/);
  await assert.rejects(runCase(c({ error: { kind: "script" } }), base), /expected an error/);
});

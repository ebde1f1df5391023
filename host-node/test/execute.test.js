// The Code Mode executor: execute(code, providers) -> {result, error?, logs?}.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execute } from "marionette";

test("model-written code calls the providers and returns its result, with its logs", async () => {
  const calls = [];
  const out = await execute(
    `async () => {
       const weather = await codemode.getWeather({ city: "Oslo" });
       console.log("got", weather.tempC);
       console.warn("careful");
       return { city: "Oslo", warm: weather.tempC > 20 };
     }`,
    {
      getWeather: async (input) => {
        calls.push(input);
        return { tempC: 12 };
      },
    },
  );
  assert.deepEqual(out, { result: { city: "Oslo", warm: false }, logs: ["got 12", "[warn] careful"] });
  assert.deepEqual(calls, [{ city: "Oslo" }]);
});

test("a function body works as well as an arrow function", async () => {
  assert.deepEqual(await execute("const x = await codemode.two(); return x * 21;", { two: () => 2 }), { result: 42 });
});

test("errors are returned, not thrown: the code's, a provider's, a syntax error, a runaway loop", async () => {
  assert.deepEqual(await execute("async () => { throw new RangeError('bad'); }"), {
    result: undefined,
    error: "RangeError: bad",
  });
  const failing = await execute("async () => codemode.fail({})", {
    fail: () => {
      throw new Error("provider down");
    },
  });
  assert.equal(failing.error, "Error: provider down");
  const syntax = await execute("async () => {");
  assert.match(syntax.error, /^SyntaxError/);
  const loop = await execute("async () => { for (;;) {} }", {}, { timeoutMs: 50 });
  assert.match(loop.error, /timed out after 50ms/);
});

test("the code reaches nothing but the providers", async () => {
  const out = await execute(
    "async () => [typeof process, typeof require, await fetch('https://example.com/').then(() => 'fetched', (e) => e.name), Object.keys(codemode)]",
    { only: () => 1 },
  );
  // fetch exists in the guest; this host refuses it (a TypeError).
  assert.deepEqual(out.result, ["undefined", "undefined", "TypeError", ["only"]]);
});

// An executor with the shape of Cloudflare's Code Mode:
// `execute(code, providers) -> {result, error?, logs?}`. The code a model
// wrote runs in a marionette sandbox; each provider is a host function it
// may call as `codemode.NAME(input)`. Nothing else crosses: no filesystem,
// network, environment or Node API.

import { Sandbox } from "./sandbox.js";

/** The module the code runs in: `codemode.*` calls the providers as host tools. */
function moduleFor(body) {
  return `import { tools } from "marionette";
const registry = tools.createRegistry().useHostTools();
const codemode = Object.freeze(Object.fromEntries(
  registry.list().map((t) => [t.name, (input) => registry.call(t.name, input === undefined ? {} : input)]),
));
${body}
`;
}

/**
 * Runs model-written code: an async arrow function (`async () => {...}`),
 * or a function body. Resolves `{result}` with what the code returned, or
 * `{result: undefined, error}` with the error in words; never rejects for
 * what the code did. `logs` are its console lines (`[warn] ...` for levels
 * other than log/info).
 */
export async function execute(code, providers = {}, options = {}) {
  const tools = Object.entries(providers).map(([name, fn]) => {
    if (typeof fn !== "function") throw new TypeError(`provider ${name} must be a function`);
    return {
      name,
      description: `host function ${name}`,
      parameters: {},
      handler: (input, ctx) => fn(input, ctx),
    };
  });
  const logs = [];
  const sandbox = await Sandbox.create({
    policy: options.policy,
    tools,
    runtime: options.runtime,
    onConsole: (line) => logs.push(line.level === "info" ? line.message : `[${line.level}] ${line.message}`),
  });
  const run = { timeoutMs: options.timeoutMs ?? 30_000, signal: options.signal };
  try {
    const asFunction = `const fn = (\n${code}\n);\nexport default async function main() { return typeof fn === "function" ? await fn() : fn; }`;
    try {
      await sandbox.load("code.js", moduleFor(asFunction), run);
    } catch (e) {
      if (e.script?.name !== "SyntaxError") throw e;
      // Not an expression: a function body, then.
      const asBody = `export default async function main() {\n${code}\n}`;
      await sandbox.load("code.js", moduleFor(asBody), run);
    }
    const result = await sandbox.runMain("code.js", null, run);
    return logs.length > 0 ? { result, logs } : { result };
  } catch (e) {
    const error = e.script !== undefined ? `${e.script.name}: ${e.script.message}` : e.message;
    return logs.length > 0 ? { result: undefined, error, logs } : { result: undefined, error };
  } finally {
    await sandbox.close();
  }
}

// WIT values as a cassette writes them (docs/cassette.md, "How WIT values
// are written"), and back: the one spelling every host reads and writes.
//
// - a record is a JSON object, its fields in snake_case (`start-ms` ->
//   `start_ms`);
// - an enum case is a string in UpperCamelCase (`llm-text` -> "LlmText");
// - a variant case is `{"UpperCamelCase": payload}`;
// - `result` is `{"Ok": ...}` or `{"Err": ...}`;
// - `option` is the value or `null`;
// - `list` and `tuple` are arrays (`list<u8>` an array of numbers);
// - integers are JSON numbers.
//
// jco gives records as objects with camelCase fields, enums as their case
// names, variants and results as `{tag, val}`, `option` as the value or
// `undefined`, `u64` as a BigInt, `list<u8>` as a Uint8Array.

/** A value is not of the type a cassette says it is. */
export class WitJsonError extends Error {}

const STRING = { k: "string" };
const U64 = { k: "u64" };
const U32 = { k: "u32" };
const BOOL = { k: "bool" };
const ENUM = { k: "enum" };
const BYTES = { k: "bytes" };
const record = (...fields) => ({ k: "record", fields });
const variant = (...cases) => ({ k: "variant", cases });
const option = (t) => ({ k: "option", t });
const list = (t) => ({ k: "list", t });
const tuple = (...ts) => ({ k: "tuple", ts });
const result = (ok, err) => ({ k: "result", ok, err });

const BLOCK = record(
  ["id", STRING],
  ["kind", ENUM],
  ["role", option(STRING)],
  ["payload", STRING],
  ["metadata", STRING],
);
const TURN = record(["id", STRING], ["blocks", list(BLOCK)], ["metadata", STRING], ["data", STRING]);
const TOOL_DEFINITION = record(["name", STRING], ["description", STRING], ["parameters", STRING]);
const TOOL_CALL = record(["id", STRING], ["name", STRING], ["arguments", STRING]);
const SCRIPT_ERROR = record(
  ["name", STRING],
  ["message", STRING],
  ["stack", option(STRING)],
  ["file", option(STRING)],
  ["line", option(U32)],
  ["column", option(U32)],
);
const HEADERS = list(tuple(STRING, STRING));
const HTTP_REQUEST = record(
  ["method", STRING],
  ["url", STRING],
  ["headers", HEADERS],
  ["body", option(BYTES)],
  ["redirect", ENUM],
);
const HTTP_RESPONSE = record(
  ["status", U32],
  ["status-text", STRING],
  ["url", STRING],
  ["redirected", BOOL],
  ["headers", HEADERS],
  ["body", BYTES],
);
const VALUE = variant(["json", STRING], ["turn", TURN], ["http-response", HTTP_RESPONSE]);
const OUTCOME = result(VALUE, SCRIPT_ERROR);
const TARGET = variant(["export", record(["script", STRING], ["name", STRING])], ["handle", U64]);
const HOST_OP = variant(
  ["sleep", U64],
  ["next", TURN],
  [
    "infer",
    record(
      ["engine", option(STRING)],
      ["input", TURN],
      ["context", STRING],
      ["tools", list(TOOL_DEFINITION)],
      ["tool-choice", ENUM],
    ),
  ],
  ["call-tool", record(["call", TOOL_CALL], ["context", STRING], ["provider", option(STRING)])],
  ["middleware", record(["name", STRING], ["options", STRING], ["input", TURN], ["context", STRING])],
  ["hook", record(["provider", STRING], ["hook", ENUM], ["payload", STRING])],
  ["fetch", HTTP_REQUEST],
);
const EVENT = variant(["console", record(["level", ENUM], ["message", STRING])], ["session", STRING]);
const FAILURE = variant(
  ["script", SCRIPT_ERROR],
  ["cancelled", STRING],
  ["deadline", STRING],
  ["over-cap", record(["cap", ENUM], ["detail", STRING])],
  ["out-of-memory", STRING],
);
const EFFECT = variant(
  ["request", record(["op", U64], ["task", U64], ["what", HOST_OP])],
  ["release", U64],
  ["event", record(["task", U64], ["event", EVENT])],
  ["done", record(["task", U64], ["outcome", result(VALUE, FAILURE)])],
);
export const EFFECTS = list(EFFECT);
export const VM_CONFIG = record(
  ["memory-limit", U64],
  ["gc-threshold", U64],
  ["task-caps", record(["console-lines", U32], ["console-bytes", U64], ["pending-ops", U32])],
  ["host-engines", list(STRING)],
  ["host-middlewares", list(STRING)],
  ["host-tools", list(TOOL_DEFINITION)],
  ["determinism", option(record(["seed", U64], ["start-ms", U64]))],
);
const MODULES = list(record(["path", STRING], ["source", STRING]));

/**
 * The entries a cassette records: its `call` key -> the export (interface,
 * function as jco names it), whether it takes the task first, and the other
 * arguments as [cassette field, type].
 */
export const CALLS = {
  load: [
    "script",
    "load",
    true,
    [
      ["name", STRING],
      ["source", STRING],
    ],
  ],
  "load-modules": [
    "script",
    "loadModules",
    true,
    [
      ["name", STRING],
      ["modules", MODULES],
    ],
  ],
  "run-main": [
    "script",
    "runMain",
    true,
    [
      ["name", STRING],
      ["input", STRING],
    ],
  ],
  call: [
    "script",
    "call",
    true,
    [
      ["name", STRING],
      ["function", STRING],
      ["args", STRING],
    ],
  ],
  infer: [
    "inference",
    "infer",
    true,
    [
      ["engine", TARGET],
      ["input", TURN],
      ["context", STRING],
    ],
  ],
  "middleware-run": [
    "middleware",
    "run",
    true,
    [
      ["middleware", TARGET],
      ["input", TURN],
      ["context", STRING],
    ],
  ],
  "middleware-next": [
    "middleware",
    "next",
    true,
    [
      ["op", U64],
      ["input", TURN],
    ],
  ],
  "tools-call": [
    "tools",
    "call",
    true,
    [
      ["registry", TARGET],
      ["call", TOOL_CALL],
      ["context", STRING],
    ],
  ],
  "hooks-call": [
    "hooks",
    "call",
    true,
    [
      ["hooks", TARGET],
      ["hook", ENUM],
      ["payload", STRING],
    ],
  ],
  "sessions-run": [
    "sessions",
    "run",
    true,
    [
      ["spec", STRING],
      ["input", TURN],
    ],
  ],
  resume: [
    "tasks",
    "resume",
    false,
    [
      ["op", U64],
      ["outcome", OUTCOME],
    ],
  ],
  notify: [
    "tasks",
    "notify",
    false,
    [
      ["op", U64],
      ["events", list(STRING)],
    ],
  ],
  cancel: ["tasks", "cancel", true, [["reason", STRING]]],
};

/** The export of each entry, as docs/protocol.md writes it. */
export const EXPORT_NAMES = { configure: "vm.configure" };
for (const [key, [iface]] of Object.entries(CALLS)) {
  const wit = { loadModules: "load-modules", runMain: "run-main" }[CALLS[key][1]] ?? CALLS[key][1];
  EXPORT_NAMES[key] = `${iface}.${wit}`;
}

/** `llm-text` -> `LlmText`. */
export const camel = (kebab) =>
  kebab
    .split("-")
    .map((p) => p.slice(0, 1).toUpperCase() + p.slice(1))
    .join("");
/** `LlmText` -> `llm-text`. */
export const kebab = (name) => name.replace(/(?<!^)([A-Z])/g, "-$1").toLowerCase();
/** `start-ms` -> `start_ms` (the cassette's field). */
const snake = (wit) => wit.replaceAll("-", "_");
/** `start-ms` -> `startMs` (jco's field). */
const lowerCamel = (wit) => wit.replace(/-([a-z0-9])/g, (_, c) => c.toUpperCase());

/** A u64 as a JSON number: exact below 2^53, a BigInt above (see {@link stringify}). */
function u64ToJson(v) {
  const n = BigInt(v);
  return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
}

/** A value as jco lifts it -> its cassette JSON. */
export function toJson(t, v) {
  switch (t.k) {
    case "string":
    case "bool":
    case "u32":
      return v;
    case "u64":
      return u64ToJson(v);
    case "enum":
      return camel(v);
    case "bytes":
      return Array.from(v);
    case "option":
      return v === undefined || v === null ? null : toJson(t.t, v);
    case "list":
      return Array.from(v, (x) => toJson(t.t, x));
    case "tuple":
      return t.ts.map((s, i) => toJson(s, v[i]));
    case "record": {
      const out = {};
      for (const [name, s] of t.fields) out[snake(name)] = toJson(s, v[lowerCamel(name)]);
      return out;
    }
    case "variant": {
      const c = t.cases.find(([name]) => name === v.tag);
      if (c === undefined) throw new WitJsonError(`no case ${JSON.stringify(v.tag)}`);
      return { [camel(c[0])]: toJson(c[1], v.val) };
    }
    case "result":
      return v.tag === "ok" ? { Ok: toJson(t.ok, v.val) } : { Err: toJson(t.err, v.val) };
  }
  throw new WitJsonError(`unknown type ${t.k}`);
}

function short(j) {
  const text = (() => {
    try {
      return JSON.stringify(j) ?? String(j);
    } catch {
      return String(j);
    }
  })();
  return text.length <= 60 ? text : `${text.slice(0, 57)}...`;
}

function one(j, what) {
  if (j !== null && typeof j === "object" && !Array.isArray(j)) {
    const keys = Object.keys(j);
    if (keys.length === 1) return [keys[0], j[keys[0]]];
  }
  throw new WitJsonError(`${what}: expected an object of one key, got ${short(j)}`);
}

function uint(j, max) {
  if (typeof j === "bigint" && j >= 0n && j <= max) return j;
  if (!Number.isInteger(j) || j < 0) throw new WitJsonError(`expected an unsigned integer, got ${short(j)}`);
  if (!Number.isSafeInteger(j)) {
    throw new WitJsonError(`the integer ${short(j)} is above 2^53: JSON.parse cannot read it exactly`);
  }
  if (BigInt(j) > max) throw new WitJsonError(`the integer ${j} is out of range`);
  return j;
}

/** Cassette JSON -> a value jco lowers as `t`; throws {@link WitJsonError}. */
export function fromJson(t, j) {
  switch (t.k) {
    case "string":
      if (typeof j !== "string") throw new WitJsonError(`expected a string, got ${short(j)}`);
      return j;
    case "bool":
      if (typeof j !== "boolean") throw new WitJsonError(`expected true or false, got ${short(j)}`);
      return j;
    case "u32":
      return Number(uint(j, 0xffffffffn));
    case "u64":
      return BigInt(uint(j, 0xffffffffffffffffn));
    case "enum":
      if (typeof j !== "string") throw new WitJsonError(`expected an enum case, got ${short(j)}`);
      return kebab(j);
    case "bytes":
      if (!Array.isArray(j) || !j.every((b) => Number.isInteger(b) && b >= 0 && b < 256)) {
        throw new WitJsonError("expected an array of bytes");
      }
      return Uint8Array.from(j);
    case "option":
      return j === null || j === undefined ? undefined : fromJson(t.t, j);
    case "list":
      if (!Array.isArray(j)) throw new WitJsonError(`expected an array, got ${short(j)}`);
      return j.map((x) => fromJson(t.t, x));
    case "tuple":
      if (!Array.isArray(j) || j.length !== t.ts.length) {
        throw new WitJsonError(`expected an array of ${t.ts.length}, got ${short(j)}`);
      }
      return t.ts.map((s, i) => fromJson(s, j[i]));
    case "record": {
      if (j === null || typeof j !== "object" || Array.isArray(j)) {
        throw new WitJsonError(`expected an object, got ${short(j)}`);
      }
      const out = {};
      for (const [name, s] of t.fields) {
        const key = snake(name);
        if (!(key in j) && s.k !== "option") throw new WitJsonError(`missing field ${JSON.stringify(key)}`);
        try {
          out[lowerCamel(name)] = fromJson(s, j[key]);
        } catch (e) {
          throw new WitJsonError(`${key}: ${e.message}`);
        }
      }
      return out;
    }
    case "variant": {
      const [key, payload] = one(j, "a variant");
      const c = t.cases.find(([name]) => camel(name) === key);
      if (c === undefined) throw new WitJsonError(`no case ${JSON.stringify(key)}`);
      return { tag: c[0], val: fromJson(c[1], payload) };
    }
    case "result": {
      const [key, payload] = one(j, "a result");
      if (key !== "Ok" && key !== "Err") throw new WitJsonError(`a result is Ok or Err, not ${JSON.stringify(key)}`);
      return { tag: key === "Ok" ? "ok" : "err", val: fromJson(key === "Ok" ? t.ok : t.err, payload) };
    }
  }
  throw new WitJsonError(`unknown type ${t.k}`);
}

/** An export's arguments (as given to jco) -> the entry's `call`. */
export function callToJson(key, args) {
  const [, , takesTask, params] = CALLS[key];
  const rest = takesTask ? args.slice(1) : args;
  const fields = {};
  params.forEach(([name, t], i) => {
    fields[name] =
      key === "load-modules" && name === "modules" ? rest[i].map((m) => [m.path, m.source]) : toJson(t, rest[i]);
  });
  return { [key]: fields };
}

/**
 * An entry's `call` -> `[key, args]`: the export's arguments but the task
 * (for `configure`, the vm-config). Throws {@link WitJsonError}.
 */
export function callFromJson(call) {
  const [key, fields] = one(call, "a call");
  if (key === "configure") return [key, [fromJson(VM_CONFIG, fields)]];
  const spec = CALLS[key];
  if (spec === undefined || !Object.hasOwn(CALLS, key)) throw new WitJsonError(`unknown call ${JSON.stringify(key)}`);
  if (fields === null || typeof fields !== "object") throw new WitJsonError(`${key}: expected an object`);
  const args = spec[3].map(([name, t]) => {
    if (!(name in fields)) throw new WitJsonError(`${key}: missing ${JSON.stringify(name)}`);
    try {
      if (key === "load-modules" && name === "modules") {
        return fromJson(list(tuple(STRING, STRING)), fields[name]).map(([path, source]) => ({ path, source }));
      }
      return fromJson(t, fields[name]);
    } catch (e) {
      throw new WitJsonError(`${key}.${name}: ${e.message}`);
    }
  });
  return [key, args];
}

/**
 * JSON text of `value`, as JSON.stringify writes it (no spaces, keys in
 * their order), but with BigInts written as numbers: a u64 above 2^53
 * stays exact.
 */
export function stringify(value) {
  if (typeof value === "bigint") return value.toString();
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) return `[${value.map(stringify).join(",")}]`;
  const parts = [];
  for (const [k, v] of Object.entries(value)) {
    if (v === undefined) continue;
    parts.push(`${JSON.stringify(k)}:${stringify(v)}`);
  }
  return `{${parts.join(",")}}`;
}

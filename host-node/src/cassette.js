// Cassettes: a sandbox's run recorded at the guest's boundary, and replayed.
//
// The format is docs/cassette.md, the same from every host: a cassette this
// package records replays through the Rust host and `marionette replay`,
// and one they record replays here. A `Recorder` takes a sandbox's entries
// (`Sandbox.create({record})`); `recorder.finish()` makes the `Cassette`;
// `replay()` makes every recorded entry again into a fresh instance and
// compares what each returns with what was recorded (strict replay: no
// engine, tool, timer or network is used).

import { createHash, randomBytes } from "node:crypto";
import { open, readFile, writeFile } from "node:fs/promises";
import { HostError, MarionetteError, ScriptError } from "./errors.js";
import { decodeEffect } from "./protocol.js";
import { Runtime } from "./runtime.js";
import { SchemaCache } from "./schema.js";
import {
  CALLS,
  EFFECTS,
  EXPORT_NAMES,
  VM_CONFIG,
  WitJsonError,
  callFromJson,
  callToJson,
  fromJson,
  kebab,
  stringify,
  toJson,
} from "./witjson.js";

export const FORMAT = "marionette-cassette";
export const VERSION = 1;
/** The package's version, written in the header's `marionette`. */
const PACKAGE_VERSION = "0.1.0";

// ------------------------------------------------------------ errors

/** A cassette was refused before anything ran (`op` is "cassette"); `kind` says why. */
export class CassetteError extends MarionetteError {
  constructor(kind, message, extra = {}) {
    super("cassette", message);
    this.kind = kind;
    this.detail = message;
    Object.assign(this, extra);
  }
}

/** The replay did or asked something else than what was recorded. */
export class DivergenceError extends MarionetteError {
  constructor({ entry, exportName, task, what, recorded, asked, diff }) {
    super(
      "replay",
      `the replay diverged at entry ${entry} (${exportName}, task ${task}): ${what} is not what was recorded\n${diff}`,
    );
    this.entry = entry;
    this.export = exportName;
    this.task = task;
    this.what = what;
    this.recorded = recorded;
    this.asked = asked;
    this.diff = diff;
  }
}

const malformed = (line, detail) => new CassetteError("malformed", `line ${line}: ${detail}`, { line });

// ------------------------------------------------------------ the file

/** What `Cassette.read` accepts at most, by default. */
export const DEFAULT_READ_LIMITS = Object.freeze({ maxBytes: 256 * 1024 * 1024, maxEntries: 1_000_000 });

const sha256 = (data) => createHash("sha256").update(data).digest("hex");
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A recorded run: its `header` and its `entries` (docs/cassette.md). */
export class Cassette {
  constructor(header, entries) {
    this.header = header;
    this.entries = entries;
  }

  /** The SHA-256 of the component that recorded it. */
  get component() {
    return this.header.component;
  }

  /** The source a script (or a module of a graph, by path) was loaded with, the last time it was. */
  scriptSource(name) {
    for (const entry of [...this.entries].reverse()) {
      const [[key, fields]] = Object.entries(entry.call);
      if (key === "load" && fields.name === name) return fields.source;
      if (key === "load-modules") {
        const m = fields.modules.find(([path]) => path === name);
        if (m !== undefined) return m[1];
      }
    }
    return undefined;
  }

  /** `{name, input}` of the last `main` the run called (input decoded), or undefined. */
  mainCall() {
    for (const entry of [...this.entries].reverse()) {
      const [[key, fields]] = Object.entries(entry.call);
      if (key === "run-main") return { name: fields.name, input: JSON.parse(fields.input) };
    }
    return undefined;
  }

  /** The cassette as JSON lines (a Buffer), its trailer's checksum made. */
  toBuffer() {
    const hash = createHash("sha256");
    const lines = [];
    for (const value of [{ cassette: this.header }, ...this.entries]) {
      const line = Buffer.from(`${stringify(value)}\n`);
      hash.update(line);
      lines.push(line);
    }
    lines.push(Buffer.from(`${stringify({ end: { entries: this.entries.length, sha256: hash.digest("hex") } })}\n`));
    return Buffer.concat(lines);
  }

  /** Writes it to `path`. */
  async save(path) {
    await writeFile(path, this.toBuffer());
  }

  /** Reads the cassette at `path`, checked as {@link Cassette.read} does. */
  static async load(path, limits = DEFAULT_READ_LIMITS) {
    let file;
    try {
      file = await open(path, "r");
    } catch (e) {
      throw new CassetteError("io", `cannot read ${path}: ${e.message}`, { cause: e });
    }
    try {
      const { size } = await file.stat();
      if (size > limits.maxBytes) {
        throw new CassetteError("too-large", `too large: ${size} bytes; at most ${limits.maxBytes} are read`);
      }
      return Cassette.read(await readFile(file), limits);
    } finally {
      await file.close();
    }
  }

  /**
   * Reads a cassette (a Buffer or a string): header, entries and trailer,
   * each checked. Whether it was recorded by this component is checked by
   * {@link replay}. Throws a {@link CassetteError} whose `kind` is
   * `not-a-cassette`, `version`, `malformed` (with `line`), `truncated`,
   * `edited` or `too-large`.
   */
  static read(data, limits = DEFAULT_READ_LIMITS) {
    const bytes = typeof data === "string" ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.length);
    if (bytes.length > limits.maxBytes) {
      throw new CassetteError("too-large", `too large: more than ${limits.maxBytes} bytes`);
    }
    const hash = createHash("sha256");
    let header = null;
    const entries = [];
    let at = 0;
    let number = 0;
    while (at < bytes.length) {
      const nl = bytes.indexOf(0x0a, at);
      number += 1;
      if (nl === -1) throw new CassetteError("truncated", `truncated: line ${number} ends without its newline`);
      const raw = bytes.subarray(at, nl + 1);
      at = nl + 1;
      let text;
      try {
        text = utf8.decode(raw.subarray(0, raw.length - 1));
      } catch (e) {
        throw malformed(number, `not UTF-8: ${e.message}`);
      }
      if (header === null) {
        header = readHeader(text);
        hash.update(raw);
        continue;
      }
      if (text.startsWith('{"end":')) {
        const end = parse(number, text, "not a trailer");
        const t = end !== null && typeof end === "object" && Object.keys(end).length === 1 ? end.end : undefined;
        if (
          t === null ||
          typeof t !== "object" ||
          Object.keys(t).sort().join() !== "entries,sha256" ||
          !Number.isInteger(t.entries) ||
          typeof t.sha256 !== "string"
        ) {
          throw malformed(number, 'not a trailer: {"end": {"entries", "sha256"}}');
        }
        if (at < bytes.length) {
          throw new CassetteError("edited", `edited: ${bytes.length - at} bytes follow the trailer (line ${number})`);
        }
        const sha = hash.digest("hex");
        if (t.sha256 !== sha || t.entries !== entries.length) {
          throw new CassetteError(
            "edited",
            `edited: the trailer says ${t.entries} entries with sha256 ${t.sha256}; the file has ${entries.length} with sha256 ${sha}`,
          );
        }
        return new Cassette(header, entries);
      }
      if (entries.length >= limits.maxEntries) {
        throw new CassetteError("too-large", `too large: more than ${limits.maxEntries} entries`);
      }
      const entry = readEntry(number, text);
      if (entry.n !== entries.length) {
        throw new CassetteError(
          "edited",
          `edited: line ${number} is entry ${entry.n}, where entry ${entries.length} belongs`,
        );
      }
      hash.update(raw);
      entries.push(entry);
    }
    if (header === null) throw new CassetteError("not-a-cassette", "not a marionette cassette: the file is empty");
    throw new CassetteError(
      "truncated",
      `truncated: no trailer after ${entries.length} entries (line ${number} is the last)`,
    );
  }
}

function parse(number, text, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw malformed(number, `${what}: ${e.message}`);
  }
}

function readHeader(text) {
  const start = JSON.stringify(text.slice(0, 60));
  let line;
  try {
    line = JSON.parse(text);
  } catch (e) {
    throw new CassetteError(
      "not-a-cassette",
      `not a marionette cassette: its first line (${start}...) is no header: ${e.message}`,
    );
  }
  const header =
    line !== null && typeof line === "object" && Object.keys(line).length === 1 ? line.cassette : undefined;
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    throw new CassetteError("not-a-cassette", `not a marionette cassette: its first line (${start}...) is no header`);
  }
  if (header.format !== FORMAT) {
    throw new CassetteError(
      "not-a-cassette",
      `not a marionette cassette: its format is ${JSON.stringify(header.format)}`,
    );
  }
  if (header.version !== VERSION) {
    throw new CassetteError(
      "version",
      `format version ${JSON.stringify(header.version)}; this marionette reads version ${VERSION}`,
      { found: header.version },
    );
  }
  for (const [key, ok] of [
    ["component", (v) => typeof v === "string"],
    ["marionette", (v) => typeof v === "string"],
    ["policy", (v) => v !== null && typeof v === "object" && !Array.isArray(v)],
    ["scripts", Array.isArray],
  ]) {
    if (!ok(header[key])) throw malformed(1, `the header's ${JSON.stringify(key)} is missing or of the wrong type`);
  }
  return header;
}

function readEntry(number, text) {
  const entry = parse(number, text, "not an entry");
  if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
    throw malformed(number, "not an entry: not an object");
  }
  for (const key of ["n", "task"]) {
    if (!Number.isSafeInteger(entry[key]) || entry[key] < 0) {
      throw malformed(number, `not an entry: ${JSON.stringify(key)} is not an unsigned integer`);
    }
  }
  const unknown = Object.keys(entry).filter((k) => !["n", "task", "call", "effects", "trap"].includes(k));
  if (unknown.length > 0) throw malformed(number, `not an entry: unknown fields ${JSON.stringify(unknown)}`);
  if ((entry.effects != null) === (entry.trap != null)) {
    throw malformed(number, "an entry has either its effects or its trap");
  }
  try {
    callFromJson(entry.call);
    if (entry.effects != null) fromJson(EFFECTS, entry.effects);
    else if (typeof entry.trap !== "string") throw new WitJsonError("its trap is not a string");
  } catch (e) {
    if (e instanceof WitJsonError || e instanceof RangeError) throw malformed(number, `not an entry: ${e.message}`);
    throw e;
  }
  return entry;
}

// ------------------------------------------------------------ recording

/** A deterministic run's settings: a new seed (below 2^53) and the clock starting now. */
export function freshDeterminism() {
  return { seed: Number(randomBytes(8).readBigUInt64LE() >> 11n), startMs: Date.now() };
}

/** The policy as the header's `policy` (the Rust host's `Policy` fields it has). */
export function policyJson(p) {
  const policy = {
    memory_limit: p.memoryLimit,
    entry_deadline: p.entryDeadlineMs,
    run_deadline: p.runDeadlineMs ?? null,
    max_console_lines: p.maxConsoleLines,
    max_console_bytes: p.maxConsoleBytes,
    max_pending_ops: p.maxPendingOps,
    max_result_bytes: p.maxResultBytes,
  };
  const d = p.determinism;
  policy.determinism = d == null ? null : { seed: d.seed, start_ms: d.startMs };
  return policy;
}

/**
 * Takes the entries of one sandbox's run (`Sandbox.create({record})`);
 * `finish()` makes the {@link Cassette}. A recording sandbox whose policy
 * names no determinism gets a fresh one (a new seed, its clock starting
 * now). Nothing secret is written: only what crosses the guest's boundary.
 */
export class Recorder {
  #entries = [];
  #policy = {};
  #note;
  /** @internal The component's SHA-256, set by the sandbox. */
  component = "";

  constructor(note) {
    this.#note = note ?? { host: "node" };
  }

  /** What the header's `note` says of the run (free-form JSON). */
  note(note) {
    this.#note = note;
  }

  /** Entries taken so far. */
  get length() {
    return this.#entries.length;
  }

  /** @internal */
  start(policy) {
    this.#policy = policy;
  }

  /** @internal One entry and what it returned, or its trap. */
  entry(task, call, effects, trap) {
    const entry = { n: this.#entries.length, task, call };
    if (trap === undefined) entry.effects = effects;
    else entry.trap = trap;
    this.#entries.push(entry);
  }

  /** The cassette of what was recorded so far (the recording goes on). */
  finish() {
    const entries = this.#entries.map((e) => ({ ...e }));
    const scripts = [];
    for (const entry of entries) {
      const [[key, fields]] = Object.entries(entry.call);
      let loaded;
      if (key === "load") loaded = [[fields.name, fields.source]];
      else if (key === "load-modules") loaded = fields.modules;
      else continue;
      for (const [name, source] of loaded) {
        const data = Buffer.from(source);
        const info = { name, sha256: sha256(data), bytes: data.length };
        if (!scripts.some((s) => s.name === info.name && s.sha256 === info.sha256)) scripts.push(info);
      }
    }
    const header = {
      format: FORMAT,
      version: VERSION,
      component: this.component,
      marionette: PACKAGE_VERSION,
      policy: this.#policy,
      scripts,
      note: this.#note,
    };
    return new Cassette(header, entries);
  }
}

/**
 * The component's exports with every entry going to `recorder` (queries
 * are not entries); `taskOf()` is the task of the entry under way.
 */
export function recordingExports(exports, recorder, taskOf) {
  const wrapped = {};
  const byExport = new Map([["vm.configure", "configure"]]);
  for (const [key, [iface, fn]] of Object.entries(CALLS)) byExport.set(`${iface}.${fn}`, key);
  for (const [name, iface] of Object.entries(exports)) {
    const short = name.replace(/^marionette:runtime\//, "").replace(/@.*$/, "");
    if (iface === null || typeof iface !== "object") {
      wrapped[name] = iface;
      continue;
    }
    const out = {};
    for (const [fn, f] of Object.entries(iface)) {
      const key = byExport.get(`${short}.${fn}`);
      out[fn] =
        key === undefined || typeof f !== "function"
          ? f
          : (...args) => {
              const task = taskOf();
              let call;
              try {
                call = key === "configure" ? { configure: toJson(VM_CONFIG, args[0]) } : callToJson(key, args);
              } catch {
                call = undefined; // not WIT values: they do not lower either
              }
              let raw;
              try {
                raw = f(...args);
              } catch (e) {
                if (call !== undefined) recorder.entry(task, call, undefined, trapWords(e));
                throw e;
              }
              if (call !== undefined) recorder.entry(task, call, raw === undefined ? [] : toJson(EFFECTS, raw));
              return raw;
            };
    }
    wrapped[name] = out;
  }
  return wrapped;
}

function trapWords(e) {
  const text = String(e?.message ?? e).trim();
  return text === "" ? String(e?.name ?? "trap") : text.split("\n")[0];
}

// ------------------------------------------------------------ replay

/**
 * Replays `cassette` (a path or a {@link Cassette}) strictly: every recorded
 * entry again, in order, into a fresh instance of the component built with
 * the recorded configuration, each one's effects compared with the recorded
 * ones. Nothing is performed: timers, models, tools and hooks answer from
 * the cassette.
 *
 * Options: `runtime` (default: the package's component), `sources` (script
 * sources by name, or a graph's modules by path, to load instead of the
 * recorded ones: the script as it is now), `onEvent` (the run's console
 * lines and session events, not those of loading), `limits` (read limits).
 *
 * Resolves `{entries, ranMain, result, error}`; rejects with a
 * {@link CassetteError} (kind `component` when recorded by another
 * component) or a {@link DivergenceError} at the first difference.
 */
export async function replay(cassette, options = {}) {
  if (!(cassette instanceof Cassette)) cassette = await Cassette.load(cassette, options.limits);
  const runtime = options.runtime ?? (await Runtime.shared());
  const running = runtime.sha256;
  if (running === undefined) {
    throw new HostError("replay", "the component's SHA-256 is unknown (guest/component.sha256): run `make node-guest`");
  }
  if (cassette.component !== running) {
    throw new CassetteError(
      "component",
      `recorded with another guest component (sha256 ${cassette.component}); this sandbox's is ${running}: record it again`,
      { recorded: cassette.component, running },
    );
  }
  const deadlineMs = Number(cassette.header.policy.entry_deadline ?? 5000);
  const sources = new Map(Object.entries(options.sources ?? {}));
  const schemas = new SchemaCache();
  let deadline = 0;
  let stopped = false;
  const host = {
    log: () => {},
    shouldInterrupt: () => {
      if (performance.now() < deadline) return undefined;
      stopped = true;
      return {
        tag: "deadline",
        val: `the script ran for more than ${deadlineMs}ms without waiting for the host`,
      };
    },
    // A recording has every session event: a replay asks for them all.
    wantsSessionEvents: () => true,
    validateArguments: (schema, args) => {
      let problem;
      try {
        problem = schemas.check(schema, JSON.parse(args));
      } catch (e) {
        problem = `the arguments are not valid JSON: ${e.message}`;
      }
      if (problem === null) return undefined;
      throw { payload: problem };
    },
  };
  let exports = null;
  let main;
  const loads = new Set();
  const out = { entries: cassette.entries.length, ranMain: false, result: undefined, error: undefined };
  for (const entry of cassette.entries) {
    const task = entry.task;
    const [key, args] = callFromJson(withSources(entry.call, sources));
    const exportName = EXPORT_NAMES[key];
    if (key === "load" || key === "load-modules") loads.add(task);
    else if (key === "run-main") main = task;
    let raw;
    let trap;
    deadline = performance.now() + deadlineMs;
    stopped = false;
    try {
      if (key === "configure") {
        exports = null;
        const instance = runtime.instantiate(host).exports;
        iface(instance, "vm").configure(args[0]);
        exports = instance;
        raw = [];
      } else if (exports === null) {
        trap = "no instance: an earlier entry trapped";
      } else {
        const [ifaceName, fn, takesTask] = CALLS[key];
        const f = iface(exports, ifaceName)[fn];
        raw = takesTask ? f(BigInt(task), ...args) : f(...args);
      }
    } catch (e) {
      if (e instanceof HostError) throw e;
      exports = null;
      trap = stopped ? `cpu deadline: ${trapWords(e)}` : trapWords(e);
    }
    const diverged = (what, recorded, asked, diff) =>
      new DivergenceError({ entry: entry.n, exportName, task, what, recorded, asked, diff });
    const recorded = entry.effects;
    if (recorded != null && raw !== undefined) {
      const difference = compare(recorded, toJson(EFFECTS, raw));
      if (difference !== null) throw diverged(...difference);
    } else if (recorded != null) {
      throw diverged("the entry", "(its effects)", `a trap: ${trap}`, `+ the entry trapped: ${trap}`);
    } else if (raw !== undefined) {
      throw diverged(
        "the entry",
        `a trap: ${entry.trap}`,
        "(its effects)",
        `- the entry trapped: ${entry.trap}\n+ the entry returned`,
      );
    }
    for (const effect of (raw ?? []).map(decodeEffect)) {
      if (effect.type === "event" && !loads.has(effect.task)) {
        const e = effect.event;
        const event =
          e.type === "console"
            ? { type: "console", level: e.level, message: e.message, task: effect.task }
            : { type: "session", event: e.event, task: effect.task };
        options.onEvent?.(event);
      } else if (effect.type === "done" && effect.task === main) {
        out.ranMain = true;
        const o = effect.outcome;
        if (o.ok !== undefined) {
          out.result = o.ok.value;
          out.error = undefined;
        } else {
          out.result = undefined;
          out.error =
            o.script !== undefined
              ? new ScriptError("main (replayed)", o.script)
              : new HostError("main (replayed)", JSON.stringify(o));
        }
      }
    }
  }
  return out;
}

function iface(exports, name) {
  const found = exports[name] ?? exports[`marionette:runtime/${name}@0.1.0`];
  if (found === undefined) throw new HostError("replay", `the component exports no interface ${name}`);
  return found;
}

function withSources(call, sources) {
  const [[key, fields]] = Object.entries(call);
  if (key === "load" && sources.has(fields.name)) return { load: { ...fields, source: sources.get(fields.name) } };
  if (key === "load-modules" && Array.isArray(fields.modules) && fields.modules.some(([p]) => sources.has(p))) {
    return {
      "load-modules": { ...fields, modules: fields.modules.map(([p, s]) => [p, sources.get(p) ?? s]) },
    };
  }
  return call;
}

// ------------------------------------------------------------ the diff

/** What an effect (cassette JSON) is, in words. */
function describe(effect) {
  const [[kind, p]] = Object.entries(effect);
  if (kind === "Request") return `the request for ${kebab(Object.keys(p.what)[0])} (op ${p.op})`;
  if (kind === "Release") return `the release of op ${p}`;
  if (kind === "Event") {
    const [[ev, payload]] = Object.entries(p.event);
    if (ev === "Console") return `a console line of task ${p.task}`;
    let type = "?";
    try {
      type = JSON.parse(payload).type ?? "?";
    } catch {
      // not JSON: "?"
    }
    return `a session event (${type}) of task ${p.task}`;
  }
  return `the done of task ${p.task}`;
}

function equal(a, b) {
  return stringify(a) === stringify(b);
}

/** The first effect that differs: [what, recorded, asked, diff], or null. */
export function compare(recorded, asked) {
  const n = Math.max(recorded.length, asked.length);
  for (let i = 0; i < n; i++) {
    const r = recorded[i];
    const a = asked[i];
    if (r !== undefined && a !== undefined && equal(r, a)) continue;
    const what = a !== undefined ? describe(a) : `the end of the entry's effects (recorded: ${describe(r)})`;
    const rp = pretty(r);
    const ap = pretty(a);
    return [what, rp, ap, diffLines(rp, ap)];
  }
  return null;
}

/** Indented JSON, keys sorted, the JSON inside strings opened up. */
export function pretty(value) {
  if (value === undefined) return "(nothing)";
  return JSON.stringify(opened(value, 0), (_, v) => (typeof v === "bigint" ? Number(v) : v), 2);
}

function opened(value, depth) {
  if (depth > 64) return value;
  if (typeof value === "string" && (value.startsWith("{") || value.startsWith("["))) {
    try {
      return opened(JSON.parse(value), depth + 1);
    } catch {
      return value;
    }
  }
  if (Array.isArray(value)) return value.map((v) => opened(v, depth + 1));
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const k of Object.keys(value).sort()) out[k] = opened(value[k], depth + 1);
    return out;
  }
  return value;
}

const CONTEXT = 3;

/** What differs between two texts, by lines: `-` recorded, `+` asked, with context. */
export function diffLines(recorded, asked) {
  const r = recorded.split("\n");
  const a = asked.split("\n");
  let prefix = 0;
  while (prefix < Math.min(r.length, a.length) && r[prefix] === a[prefix]) prefix++;
  let suffix = 0;
  while (suffix < Math.min(r.length, a.length) - prefix && r[r.length - 1 - suffix] === a[a.length - 1 - suffix]) {
    suffix++;
  }
  const out = [];
  const start = Math.max(prefix - CONTEXT, 0);
  if (start > 0) out.push(`  ... (${start} lines)`);
  for (const l of r.slice(start, prefix)) out.push(`  ${l}`);
  for (const l of r.slice(prefix, r.length - suffix)) out.push(`- ${l}`);
  for (const l of a.slice(prefix, a.length - suffix)) out.push(`+ ${l}`);
  const tail = r.slice(r.length - suffix);
  for (const l of tail.slice(0, CONTEXT)) out.push(`  ${l}`);
  if (tail.length > CONTEXT) out.push(`  ... (${tail.length - CONTEXT} lines)`);
  return out.join("\n");
}

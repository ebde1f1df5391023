// Types of the marionette Node package.

import { MarionetteError } from "./errors.js";
export * from "./errors.js";

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** What a block of a turn holds. */
export type BlockKind = "user" | "llm_text" | "tool_call" | "tool_use" | "system" | "reasoning" | "other";

/** One entry of a turn. */
export interface Block {
  id: string;
  kind: BlockKind;
  /** `"user"`, `"assistant"`, `"system"`, `"tool"`, when the block has one. */
  role?: string;
  /** Keys `text`, `id`, `name`, `args`, `result`, `error`. */
  payload: { [key: string]: Json };
  metadata: { [key: string]: Json };
}

/** A conversation state handed to engines and middleware. */
export interface Turn {
  id: string;
  blocks: Block[];
  metadata: { [key: string]: Json };
  data: { [key: string]: Json };
}

/** A tool as the model sees it. */
export interface ToolDefinition {
  name: string;
  description: string;
  /** JSON Schema of the arguments. */
  parameters: Json;
}

/** A model's request to run a tool. */
export interface ToolCall {
  /** Made up when missing. */
  id?: string;
  name: string;
  arguments?: Json;
}

/** What a script's export is. */
export type ExportKind = "main" | "function" | "engine" | "middleware" | "tool-registry" | "tool-hooks" | "value";

/** One export of a loaded script. */
export interface ExportInfo {
  name: string;
  kind: ExportKind;
  /** The tools of a tool registry; empty for other kinds. */
  tools: ToolDefinition[];
}

/** A line a script printed with `console.*` (`console.log` is `"info"`). */
export interface ConsoleEvent {
  type: "console";
  /** The task that printed it. */
  task: number;
  level: "debug" | "info" | "warn" | "error";
  message: string;
}

/**
 * An event of a session a script runs (`start`, `partial`, `final`,
 * `tool-call`, `tool-result`, `error`), as its `run.on(...)` handlers see it.
 */
export interface SessionEvent {
  type: "session";
  /** The task that runs the session. */
  task: number;
  event: { type: string; sessionId?: string; inferenceId?: string; turnId?: string; [key: string]: unknown };
}

/** Something that happened in a task. */
export type TaskEvent = ConsoleEvent | SessionEvent;

/** The limits a sandbox enforces; every field is optional, see {@link DEFAULT_POLICY}. */
export interface Policy {
  /** Linear memory of the guest in bytes; QuickJS's heap limit is set 8 MiB below it. */
  memoryLimit: number;
  /**
   * CPU time one entry into the guest may take (a script's code until it
   * awaits the host). At the deadline the script is interrupted and the
   * task fails with a `LimitError` (`deadline`).
   */
  entryDeadlineMs: number;
  /** CPU time one task may take over all its entries; `null` for no cap. */
  runDeadlineMs: number | null;
  /** Console lines one task may write (0: no cap). */
  maxConsoleLines: number;
  /** Console bytes one task may write (0: no cap). */
  maxConsoleBytes: number;
  /** Host operations (timers, engines, tools) one task may have pending at once (0: no cap). */
  maxPendingOps: number;
  /** Bytes of JSON a task may return (0: no cap). */
  maxResultBytes: number;
  /**
   * A deterministic run (docs/cassette.md): `Math.random`, `crypto` and the
   * ids of sessions draw from one generator seeded with `seed`; `Date` and
   * `performance.now` read a virtual clock that starts at `startMs` and
   * moves only when a timer is resumed. `null`/absent: the machine's clocks
   * and randomness. A seed above 2^53 must be a BigInt.
   */
  determinism?: Determinism | null;
}

/** The seed and start time of a deterministic run. */
export interface Determinism {
  seed: number | bigint;
  /** Milliseconds since the Unix epoch. */
  startMs: number;
}

/** The Rust host's defaults: 256 MiB, 5 s per entry, 60 s per task, ... */
export const DEFAULT_POLICY: Readonly<Policy>;

/** What a host engine, tool or middleware receives besides its input. */
export interface HostCallContext {
  /** Aborted when the script stops waiting (its task was cancelled, timed out, or failed). */
  signal: AbortSignal;
}

/** The inference context of a host engine (what the script passed, plus a signal). */
export interface InferenceContext extends HostCallContext {
  sessionId?: string;
  inferenceId?: string;
  turnId?: string;
  tags?: { [key: string]: Json };
  /** Milliseconds since the Unix epoch, when the run has a timeout. */
  deadlineMs?: number;
  /** The tools the model is offered (sessions). */
  tools: ToolDefinition[];
  /** Which tools the model may call. */
  toolChoice: "auto" | "none" | "required";
  /** Streams a piece of the answer: a `partial` event of the script's session. */
  partial: (delta: string) => void;
  [key: string]: unknown;
}

/** A host engine: the new turn (or nothing, for the input turn unchanged). */
export type HostEngine = (turn: Turn, ctx: InferenceContext) => Turn | void | Promise<Turn | void>;

/** A host middleware: wraps the rest of the chain, `next`. */
export type HostMiddleware = (
  turn: Turn,
  next: (turn: Turn) => Promise<Turn>,
  ctx: HostCallContext & { options: { [key: string]: Json } },
) => Turn | Promise<Turn>;

/** The context of a host tool call (sessions add `sessionId`, `attempt`, ...). */
export interface ToolContext extends HostCallContext {
  toolName: string;
  callId: string;
  [key: string]: unknown;
}

/** A tool the host provides (`registry.useHostTools()`). */
export interface HostTool {
  name: string;
  description?: string;
  /** JSON Schema of the arguments, checked before `handler` runs; default `{type: "object"}`. */
  parameters?: Json;
  handler: (args: any, ctx: ToolContext) => unknown | Promise<unknown>;
}

/** How a sandbox is made. */
export interface SandboxOptions {
  /** Limits; missing fields take {@link DEFAULT_POLICY}'s. */
  policy?: Partial<Policy>;
  /** `engines.host()`: the default engine. */
  engine?: HostEngine;
  /** `engines.host(name)`. */
  engines?: { [name: string]: HostEngine };
  /** `middlewares.host(name, options)`, used by sessions. */
  middlewares?: { [name: string]: HostMiddleware };
  /** `registry.useHostTools(names?)`. */
  tools?: HostTool[];
  /** Every console line of every task. */
  onConsole?: (event: ConsoleEvent) => void;
  /** Diagnostics of the guest itself (not `console.*`). Must not call the sandbox. */
  onLog?: (level: "debug" | "info" | "warn" | "error", message: string) => void;
  /** The compiled component to instantiate; default {@link Runtime.shared}. */
  runtime?: Runtime;
  /**
   * Takes every entry into the guest: the run as a cassette
   * (docs/cassette.md), replayed by {@link replay}, `marionette replay` and
   * the Python package. Without `policy.determinism` the run gets a fresh
   * seed and clock.
   */
  record?: Recorder;
}

/** How one task runs. */
export interface TaskOptions {
  /** Cancels the task: it fails with a `CanceledError`; its pending host work is aborted. */
  signal?: AbortSignal;
  /** Wall-clock time the caller waits; past it the task fails with a `TimeoutError`, running JavaScript included. */
  timeoutMs?: number;
  /** The console lines of this task. */
  onConsole?: (event: ConsoleEvent) => void;
  /** Every event of this task. */
  onEvent?: (event: TaskEvent) => void;
}

/**
 * A task started in the guest: `await` it for its result, iterate it for
 * its events (kept from the start; one consumer).
 */
export class Task<T> implements PromiseLike<T>, AsyncIterable<TaskEvent> {
  /** The task's id, as events name it. */
  readonly id: number;
  then<A = T, B = never>(
    onFulfilled?: ((value: T) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: any) => B | PromiseLike<B>) | null,
  ): Promise<A | B>;
  catch<B = never>(onRejected?: ((reason: any) => B | PromiseLike<B>) | null): Promise<T | B>;
  finally(onFinally?: (() => void) | null): Promise<T>;
  [Symbol.asyncIterator](): AsyncIterableIterator<TaskEvent>;
}

/** What a sandbox holds. */
export interface HeapUsage {
  /** Bytes QuickJS has allocated: live values, and garbage in reference cycles its collector has not freed yet. */
  bytes: number;
  /** Objects, counted the same way. */
  objects: number;
}

export interface SandboxStats {
  /** Bytes of the guest's linear memory. */
  memory: number;
  /** Tasks in flight. */
  tasks: number;
  /** Host operations the guest waits for. */
  pendingOps: number;
  /** Scripts loaded (reloaded after a trap). */
  scripts: number;
  /** Instances rebuilt after a trap. */
  rebuilds: number;
}

/**
 * One marionette instance and the loop that drives it. Scripts run on the
 * Node thread: a script that never awaits is stopped by the policy's CPU
 * deadline or the task's `timeoutMs` (the guest polls for it); an
 * `AbortSignal` takes effect between entries.
 */
export class Sandbox implements AsyncDisposable {
  /** A sandbox on the package's component, compiled once per process. */
  static create(options?: SandboxOptions): Promise<Sandbox>;
  /** Compiles `source` as the ES module `name` and evaluates it; a script of that name is replaced. */
  load(name: string, source: string, options?: TaskOptions): Task<void>;
  /**
   * Loads a script of several modules (path -> source); `entry` is the one
   * that is the script. Relative imports resolve among them only.
   */
  loadModules(entry: string, modules: Record<string, string> | Map<string, string>, options?: TaskOptions): Task<void>;
  /** The exports of a loaded script. */
  exports(name: string): Promise<ExportInfo[]>;
  /** Runs the default export `main(input, ctx)`; resolves to what it returned. */
  runMain(name: string, input?: Json, options?: TaskOptions): Task<Json>;
  /** Calls the exported function `fn` with `args`. */
  call(name: string, fn: string, args?: Json[], options?: TaskOptions): Task<Json>;
  /** The JavaScript tools of the exported registry `registry`. */
  listTools(name: string, registry: string): Promise<ToolDefinition[]>;
  /** Runs a tool of the exported registry `registry` (arguments checked against its schema). */
  callTool(
    name: string,
    registry: string,
    call: ToolCall,
    options?: TaskOptions & { context?: { [key: string]: Json } },
  ): Task<Json>;
  /** Runs the exported engine `engine` on `turn`. */
  infer(
    name: string,
    engine: string,
    turn: Turn,
    options?: TaskOptions & { context?: { [key: string]: Json } },
  ): Task<Turn>;
  /** Runs the exported middleware `middleware` on `turn`, `next` being the rest of the chain. */
  runMiddleware(
    name: string,
    middleware: string,
    turn: Turn,
    next: (turn: Turn, ctx: HostCallContext) => Turn | Promise<Turn>,
    options?: TaskOptions & { context?: { [key: string]: Json } },
  ): Task<Turn>;
  /** Calls `hook` of the exported hooks object `hooks`. */
  callHook(
    name: string,
    hooks: string,
    hook: "before-tool-call" | "after-tool-call" | "on-tool-error",
    payload: Json,
    options?: TaskOptions,
  ): Task<Json>;
  /**
   * The version of the effect protocol the sandbox speaks (docs/protocol.md):
   * a script's sessions run in the component and reach the host as
   * operations.
   */
  readonly protocol: 2;
  /** What the sandbox holds now. */
  stats(): SandboxStats;
  /**
   * What the script heap holds, measured in the guest. Unlike
   * `stats().memory` it goes down as well as up.
   */
  heapUsage(): Promise<HeapUsage>;
  /** Stops: tasks in flight fail with a `ClosedError`; later calls too. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** The compiled component: compile once, instantiate for each sandbox and after each trap. */
export class Runtime {
  /** The package's component, compiled once per process. */
  static shared(): Promise<Runtime>;
  /** Compiles the transpiled component in `dir` (jco's output). */
  static load(dir?: string | URL): Promise<Runtime>;
  /** The SHA-256 of the component (what a cassette's header names); undefined without `guest/component.sha256`. */
  readonly sha256: string | undefined;
}

/** A cassette's first line (docs/cassette.md, "Header"). */
export interface CassetteHeader {
  format: "marionette-cassette";
  version: 1;
  /** The SHA-256 of the component that recorded it. */
  component: string;
  /** The version of the marionette host that recorded it. */
  marionette: string;
  /** The recording sandbox's policy (the Rust host's `Policy` fields, snake_case), its determinism included. */
  policy: { determinism?: { seed: number; start_ms: number } | null; [key: string]: Json | undefined };
  scripts: { name: string; sha256: string; bytes: number }[];
  note?: Json;
}

/** One recorded entry into the guest: `effects` it returned, or its `trap`. */
export interface CassetteEntry {
  n: number;
  task: number;
  /** `{[export]: arguments}`: `{"run-main": {name, input}}`, `{"resume": {op, outcome}}`, ... */
  call: { [call: string]: Json };
  effects?: Json[];
  trap?: string;
}

/** What {@link Cassette.read} accepts at most. */
export interface ReadLimits {
  maxBytes: number;
  maxEntries: number;
}

/** 256 MiB, a million entries. */
export const DEFAULT_READ_LIMITS: Readonly<ReadLimits>;

/** A recorded run: its header and entries. */
export class Cassette {
  constructor(header: CassetteHeader, entries: CassetteEntry[]);
  readonly header: CassetteHeader;
  readonly entries: CassetteEntry[];
  /** The SHA-256 of the component that recorded it. */
  readonly component: string;
  /** The source a script (or a module of a graph, by path) was loaded with, the last time it was. */
  scriptSource(name: string): string | undefined;
  /** The script and input of the last `main` the run called. */
  mainCall(): { name: string; input: Json } | undefined;
  /** The JSON lines, with the trailer's checksum. */
  toBuffer(): Buffer;
  save(path: string): Promise<void>;
  /** Reads and checks the cassette at `path`; rejects with a {@link CassetteError}. */
  static load(path: string, limits?: ReadLimits): Promise<Cassette>;
  /** Reads and checks a cassette; throws a {@link CassetteError}. */
  static read(data: Uint8Array | string, limits?: ReadLimits): Cassette;
}

/**
 * Takes the entries of one sandbox's run (`Sandbox.create({record})`);
 * {@link Recorder.finish} makes the cassette.
 */
export class Recorder {
  /** `note`: what the header says of the run (default `{host: "node"}`). */
  constructor(note?: Json);
  note(note: Json): void;
  /** Entries taken so far. */
  readonly length: number;
  /** The cassette of what was recorded so far (the recording goes on). */
  finish(): Cassette;
}

/** Why a cassette was refused before anything ran. */
export class CassetteError extends MarionetteError {
  readonly name: "CassetteError";
  readonly kind: "io" | "not-a-cassette" | "version" | "malformed" | "truncated" | "edited" | "too-large" | "component";
  readonly detail: string;
  /** `malformed`: the 1-based line. */
  readonly line?: number;
  /** `version`: the version the header names. */
  readonly found?: unknown;
  /** `component`: the recorded component's SHA-256, and this runtime's. */
  readonly recorded?: string;
  readonly running?: string;
}

/** The replay did or asked something else than what was recorded. */
export class DivergenceError extends MarionetteError {
  readonly name: "DivergenceError";
  /** The recorded entry, from 0. */
  readonly entry: number;
  /** Its export: `script.run-main`, `tasks.resume`, ... */
  readonly export: string;
  readonly task: number;
  /** What differs, in words: `the request for infer (op 3)`, `a console line of task 2`, ... */
  readonly what: string;
  /** Both sides as indented JSON (`(nothing)` when one side has none). */
  readonly recorded: string;
  readonly asked: string;
  /** The lines that differ: `-` recorded, `+` asked, with context. */
  readonly diff: string;
}

/** How {@link replay} runs. */
export interface ReplayOptions {
  /** Default: the package's component. */
  runtime?: Runtime;
  /** Sources to load instead of the recorded ones, by script name (or a graph's module path): the script as it is now. */
  sources?: { [name: string]: string };
  /** The run's console lines and session events (not those of loading). */
  onEvent?: (event: TaskEvent) => void;
  limits?: ReadLimits;
}

/** What a replay that matched its cassette produced. */
export interface Replayed {
  /** Entries made. */
  entries: number;
  /** Whether the run called a `main`. */
  ranMain: boolean;
  /** What the last `main` returned. */
  result: Json | undefined;
  /** Or the error its caller got. */
  error: MarionetteError | undefined;
}

/**
 * Replays a cassette strictly: every recorded entry again into a fresh
 * instance, each one's effects compared with the recorded ones; nothing is
 * performed (timers, models, tools answer from the cassette). Rejects with
 * a {@link CassetteError} or, at the first difference, a {@link DivergenceError}.
 */
export function replay(cassette: string | Cassette, options?: ReplayOptions): Promise<Replayed>;

/** What {@link execute} resolves to (Cloudflare Code Mode's `ExecuteResult`). */
export interface ExecuteResult {
  /** What the code returned; undefined when it failed. */
  result: unknown;
  /** The failure, in words. */
  error?: string;
  /** The code's console lines; `[warn] ...` for levels other than log/info. */
  logs?: string[];
}

/** How {@link execute} runs the code. */
export interface ExecuteOptions {
  policy?: Partial<Policy>;
  /** Default 30 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
  runtime?: Runtime;
}

/**
 * Runs model-written code (an async arrow function, or a function body) in
 * a fresh sandbox; each provider is callable as `codemode.NAME(input)`.
 * Never rejects for what the code did.
 */
export function execute(
  code: string,
  providers?: { [name: string]: (input: any, ctx: ToolContext) => unknown },
  options?: ExecuteOptions,
): Promise<ExecuteResult>;

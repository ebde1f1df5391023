// Type declarations for the `marionette` module that scripts import.
//
//   import { engines, tools, createSession, turns } from "marionette";
//
// Kept in step with the runtime (guest/src/js/): a test loads a script that
// lists what the module really exports and compares it with this file.

declare module "marionette" {
  /** JSON values: what crosses between a script and the host. */
  export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
  export type JsonObject = { [key: string]: Json };

  export type BlockKindName = "user" | "llm_text" | "tool_call" | "tool_use" | "system" | "reasoning" | "other";

  /** One entry of a turn. Payload keys: text, id, name, args, result, error. */
  export interface Block {
    id: string;
    kind: BlockKindName;
    role?: string;
    payload: JsonObject;
    metadata: JsonObject;
  }

  /** A conversation state handed to engines and middleware. */
  export interface Turn {
    id: string;
    blocks: Block[];
    metadata: JsonObject;
    data: JsonObject;
  }

  export interface ToolDefinition {
    name: string;
    description: string;
    /** JSON Schema of the arguments. */
    parameters: JsonObject;
  }

  export const turns: {
    newTurn(init?: { id?: string; blocks?: Block[]; metadata?: JsonObject; data?: JsonObject }): Turn;
    /** Checks a turn and fills what may be left out (ids, empty maps). */
    normalize(turn: Turn): Turn;
    newUserBlock(text: string): Block;
    newSystemBlock(text: string): Block;
    newAssistantBlock(text: string): Block;
    newToolCallBlock(id: string, name: string, args?: Json): Block;
    newToolUseBlock(id: string, result: Json, error?: string): Block;
    /** Appends a block (checked) to the turn and returns the turn. */
    appendBlock(turn: Turn, block: Block): Turn;
  };

  export const consts: {
    BlockKind: {
      USER: "user"; LLM_TEXT: "llm_text"; TOOL_CALL: "tool_call"; TOOL_USE: "tool_use";
      SYSTEM: "system"; REASONING: "reasoning"; OTHER: "other";
    };
    EventType: {
      START: "start"; PARTIAL: "partial"; FINAL: "final";
      TOOL_CALL: "tool-call"; TOOL_RESULT: "tool-result"; ERROR: "error";
    };
    ToolChoice: { AUTO: "auto"; NONE: "none"; REQUIRED: "required" };
    ToolErrorHandling: { CONTINUE: "continue"; ABORT: "abort"; RETRY: "retry" };
    HookAction: { ABORT: "abort"; RETRY: "retry"; CONTINUE: "continue" };
  };

  /** What an engine function receives besides the turn. */
  export interface InferenceContext {
    sessionId?: string;
    inferenceId?: string;
    turnId?: string;
    /** The tools the model may call in this inference. */
    tools?: ToolDefinition[];
    toolChoice?: "auto" | "none" | "required";
    tags?: JsonObject;
    /** Unix milliseconds by which the run must end, when it has a timeout. */
    deadlineMs?: number | null;
    /** Aborts when the run is cancelled (given to engine functions). */
    signal?: AbortSignal;
  }

  export interface Engine {
    readonly kind: "engine";
    readonly name?: string;
    /** Runs the engine on a turn; resolves to the new turn. */
    infer(turn: Turn, ctx?: InferenceContext): Promise<Turn>;
  }

  export type EngineFunction = (turn: Turn, ctx: InferenceContext) => Turn | void | Promise<Turn | void>;

  export const engines: {
    /** Appends an llm_text block with `reply` (default "READY"). */
    echo(options?: { reply?: string }): Engine;
    /** An engine from a function; returning nothing means the (mutated) input turn. */
    fromFunction(fn: EngineFunction): Engine;
    /** An engine the host provides: `name`, or the host's default engine. */
    host(name?: string): Engine;
  };

  export interface MiddlewareContext {
    middlewareName: string;
    sessionId?: string;
    inferenceId?: string;
    turnId?: string;
    tags?: JsonObject;
    deadlineMs?: number | null;
    /** Aborts when the run is cancelled. */
    signal?: AbortSignal;
  }

  export type Next = (turn?: Turn) => Promise<Turn>;
  export type MiddlewareFunction = (turn: Turn, next: Next, ctx: MiddlewareContext) => Turn | void | null | Promise<Turn | void | null>;

  export interface Middleware {
    readonly kind: "middleware";
    readonly name: string;
  }

  export const middlewares: {
    /** A middleware from a function; returning null or nothing means the input turn. */
    fromJS(fn: MiddlewareFunction, name?: string): Middleware;
    /** A middleware the host provides, e.g. `host("systemPrompt", { prompt })`. */
    host(name: string, options?: JsonObject): Middleware;
  };

  export interface ToolContext {
    toolName: string;
    callId?: string;
    sessionId?: string;
    inferenceId?: string;
    tags?: JsonObject;
    deadlineMs?: number | null;
    attempt?: number;
    /** Aborts when the call is cancelled: its run cancelled, or its attempt timed out. */
    signal?: AbortSignal;
  }

  export interface ToolSpec<A = any> {
    name: string;
    description?: string;
    /** JSON Schema; arguments are checked against it before the handler runs. */
    parameters?: JsonObject;
    handler: (args: A, ctx: ToolContext) => Json | void | Promise<Json | void>;
  }

  export interface ToolRegistry {
    readonly kind: "tool-registry";
    register<A = any>(spec: ToolSpec<A>): this;
    /** Adds the host's tools: those named, or all of them. */
    useHostTools(names?: string[]): this;
    list(): ToolDefinition[];
    call(name: string, args?: Json): Promise<Json>;
  }

  export const tools: {
    createRegistry(): ToolRegistry;
  };

  export interface ToolCallInfo {
    id: string;
    name: string;
    args: Json;
  }

  export interface HookPayload {
    call: ToolCallInfo;
    attempt: number;
    result?: Json;
    error?: string | null;
    sessionId?: string;
  }

  export interface ToolHooks {
    beforeToolCall?(p: HookPayload): void | null | { action: "abort"; error?: string } | { call: { name?: string; args?: Json } } | Promise<any>;
    afterToolCall?(p: HookPayload): void | null | { result: Json } | { error: string } | Promise<any>;
    onToolError?(p: HookPayload): void | null | { action: "retry"; backoffMs?: number } | { action: "abort" | "continue" } | Promise<any>;
    /** Ignore (log) a hook that throws instead of failing the tool call. */
    failOpen?: boolean;
  }

  export interface ToolLoopSettings {
    maxIterations?: number;
    maxParallelTools?: number;
    executionTimeoutMs?: number;
    toolChoice?: "auto" | "none" | "required";
    toolErrorHandling?: "continue" | "abort" | "retry";
    retryMaxRetries?: number;
    retryBackoffMs?: number;
    retryBackoffFactor?: number;
    allowedTools?: string[];
    maxHookRetries?: number;
    hooks?: ToolHooks;
  }

  export type EventTypeName = "start" | "partial" | "final" | "tool-call" | "tool-result" | "error";

  export interface SessionEvent {
    type: EventTypeName;
    timestampMs: number;
    sessionId: string;
    inferenceId: string;
    turnId: string;
    delta?: string;
    completion?: string;
    text?: string;
    /** On `final`: the inference's token usage, when the engine reported it. */
    usage?: JsonObject;
    toolCall?: { id: string; name: string; input: Json };
    toolResult?: { id: string; result: Json; error?: string };
    error?: string;
  }

  export interface RunOptions {
    timeoutMs?: number;
    tags?: JsonObject;
    /** Cancels the run when it aborts (at once, if it already has); the run rejects with its reason. */
    signal?: AbortSignal;
  }

  export interface Run {
    /** Resolves to the final turn (a copy). */
    readonly promise: Promise<Turn>;
    cancel(reason?: string): void;
    /**
     * Every event of the run reaches the handler, also those before `on()`.
     * The run drops its handlers when it ends; a handler registered after
     * that still gets every event the run emitted.
     */
    on(type: EventTypeName | "*", handler: (event: SessionEvent) => void): this;
  }

  export interface Session {
    readonly id: string;
    append(turn: Turn): this;
    latest(): Turn | null;
    turns(): Turn[];
    turnCount(): number;
    isRunning(): boolean;
    cancelActive(reason?: string): void;
    run(seed?: Turn | null, options?: RunOptions): Promise<Turn>;
    runAsync(seed?: Turn | null, options?: RunOptions): Promise<Turn>;
    start(seed?: Turn | null, options?: RunOptions): Run;
  }

  export interface SessionOptions {
    engine: Engine | EngineFunction;
    middlewares?: Array<Middleware | MiddlewareFunction>;
    tools?: ToolRegistry | ToolRegistry[];
    toolLoop?: ToolLoopSettings;
    toolHooks?: ToolHooks;
  }

  export function createSession(options: SessionOptions): Session;

  export interface Builder {
    withEngine(engine: Engine | EngineFunction): this;
    useMiddleware(middleware: Middleware | MiddlewareFunction): this;
    withTools(registry: ToolRegistry, loop?: ToolLoopSettings): this;
    withToolLoop(loop: ToolLoopSettings): this;
    withToolHooks(hooks: ToolHooks): this;
    buildSession(): Session;
  }

  export function createBuilder(): Builder;

  const marionette: {
    turns: typeof turns;
    consts: typeof consts;
    engines: typeof engines;
    middlewares: typeof middlewares;
    tools: typeof tools;
    createSession: typeof createSession;
    createBuilder: typeof createBuilder;
  };
  export default marionette;
}

/** What `main(input, ctx)` receives as `ctx`. */
interface MarionetteMainContext {
  taskId: number;
  script: string;
}

declare function setTimeout<A extends any[]>(callback: (...args: A) => void, ms?: number, ...args: A): number;
declare function clearTimeout(id: number | undefined): void;
declare const console: {
  log(...args: any[]): void;
  info(...args: any[]): void;
  debug(...args: any[]): void;
  warn(...args: any[]): void;
  error(...args: any[]): void;
  trace(...args: any[]): void;
};

// The web basics (WinterTC Minimum Common API), for a TypeScript setup
// without lib.dom.
declare class DOMException extends Error {
  constructor(message?: string, name?: string);
  readonly name: string;
  readonly code: number;
}
declare class Event {
  constructor(type: string, init?: { bubbles?: boolean; cancelable?: boolean; composed?: boolean });
  readonly type: string;
  readonly target: EventTarget | null;
  readonly currentTarget: EventTarget | null;
  readonly bubbles: boolean;
  readonly cancelable: boolean;
  readonly composed: boolean;
  readonly defaultPrevented: boolean;
  readonly isTrusted: boolean;
  readonly timeStamp: number;
  preventDefault(): void;
  stopPropagation(): void;
  stopImmediatePropagation(): void;
  composedPath(): EventTarget[];
}
type EventListenerOrObject = ((event: Event) => void) | { handleEvent(event: Event): void };
declare class EventTarget {
  addEventListener(type: string, listener: EventListenerOrObject | null, options?: boolean | { capture?: boolean; once?: boolean; passive?: boolean; signal?: AbortSignal }): void;
  removeEventListener(type: string, listener: EventListenerOrObject | null, options?: boolean | { capture?: boolean }): void;
  dispatchEvent(event: Event): boolean;
}
declare class AbortSignal extends EventTarget {
  private constructor();
  readonly aborted: boolean;
  readonly reason: any;
  onabort: ((event: Event) => void) | null;
  throwIfAborted(): void;
  static abort(reason?: any): AbortSignal;
  static timeout(ms: number): AbortSignal;
  static any(signals: Iterable<AbortSignal>): AbortSignal;
}
declare class AbortController {
  readonly signal: AbortSignal;
  abort(reason?: any): void;
}
declare class URLSearchParams {
  constructor(init?: string | Iterable<[string, string]> | Record<string, string> | URLSearchParams);
  readonly size: number;
  append(name: string, value: string): void;
  delete(name: string, value?: string): void;
  get(name: string): string | null;
  getAll(name: string): string[];
  has(name: string, value?: string): boolean;
  set(name: string, value: string): void;
  sort(): void;
  forEach(callback: (value: string, name: string, params: URLSearchParams) => void, thisArg?: any): void;
  entries(): IterableIterator<[string, string]>;
  keys(): IterableIterator<string>;
  values(): IterableIterator<string>;
  [Symbol.iterator](): IterableIterator<[string, string]>;
  toString(): string;
}
declare class URL {
  constructor(url: string | URL, base?: string | URL);
  static parse(url: string | URL, base?: string | URL): URL | null;
  static canParse(url: string | URL, base?: string | URL): boolean;
  href: string;
  readonly origin: string;
  protocol: string;
  username: string;
  password: string;
  host: string;
  hostname: string;
  port: string;
  pathname: string;
  search: string;
  readonly searchParams: URLSearchParams;
  hash: string;
  toString(): string;
  toJSON(): string;
}
declare function atob(data: string): string;
declare function btoa(data: string): string;
declare function structuredClone<T>(value: T, options?: { transfer?: ArrayBuffer[] }): T;
declare const performance: { now(): number; readonly timeOrigin: number; toJSON(): { timeOrigin: number } };
declare class Crypto {
  private constructor();
  getRandomValues<T extends Int8Array | Uint8Array | Uint8ClampedArray | Int16Array | Uint16Array | Int32Array | Uint32Array | BigInt64Array | BigUint64Array>(array: T): T;
  randomUUID(): `${string}-${string}-${string}-${string}-${string}`;
}
declare const crypto: Crypto;
declare class TextDecoder {
  constructor(label?: string, options?: { fatal?: boolean; ignoreBOM?: boolean });
  readonly encoding: string;
  readonly fatal: boolean;
  readonly ignoreBOM: boolean;
  decode(input?: ArrayBuffer | ArrayBufferView, options?: { stream?: boolean }): string;
}
declare class TextEncoder {
  readonly encoding: "utf-8";
  encode(input?: string): Uint8Array;
}

// fetch, under the host's network policy (deny by default). Bodies are
// whole: no streams, Blob or FormData.
type HeadersInit = Headers | Iterable<[string, string]> | Record<string, string>;
type BodyInit = string | ArrayBuffer | ArrayBufferView | URLSearchParams;
declare class Headers {
  constructor(init?: HeadersInit);
  append(name: string, value: string): void;
  delete(name: string): void;
  get(name: string): string | null;
  getSetCookie(): string[];
  has(name: string): boolean;
  set(name: string, value: string): void;
  forEach(callback: (value: string, name: string, headers: Headers) => void, thisArg?: any): void;
  entries(): IterableIterator<[string, string]>;
  keys(): IterableIterator<string>;
  values(): IterableIterator<string>;
  [Symbol.iterator](): IterableIterator<[string, string]>;
}
interface RequestInit {
  method?: string;
  headers?: HeadersInit;
  body?: BodyInit | null;
  signal?: AbortSignal | null;
  redirect?: "follow" | "error" | "manual";
}
interface Body {
  readonly body: null;
  readonly bodyUsed: boolean;
  arrayBuffer(): Promise<ArrayBuffer>;
  bytes(): Promise<Uint8Array>;
  text(): Promise<string>;
  json(): Promise<any>;
}
declare class Request implements Body {
  constructor(input: string | URL | Request, init?: RequestInit);
  readonly url: string;
  readonly method: string;
  readonly headers: Headers;
  readonly signal: AbortSignal;
  readonly redirect: "follow" | "error" | "manual";
  readonly body: null;
  readonly bodyUsed: boolean;
  clone(): Request;
  arrayBuffer(): Promise<ArrayBuffer>;
  bytes(): Promise<Uint8Array>;
  text(): Promise<string>;
  json(): Promise<any>;
}
interface ResponseInit {
  status?: number;
  statusText?: string;
  headers?: HeadersInit;
}
declare class Response implements Body {
  constructor(body?: BodyInit | null, init?: ResponseInit);
  static error(): Response;
  static redirect(url: string | URL, status?: number): Response;
  static json(data: any, init?: ResponseInit): Response;
  readonly type: "basic" | "default" | "error";
  readonly url: string;
  readonly redirected: boolean;
  readonly status: number;
  readonly ok: boolean;
  readonly statusText: string;
  readonly headers: Headers;
  readonly body: null;
  readonly bodyUsed: boolean;
  clone(): Response;
  arrayBuffer(): Promise<ArrayBuffer>;
  bytes(): Promise<Uint8Array>;
  text(): Promise<string>;
  json(): Promise<any>;
}
declare function fetch(input: string | URL | Request, init?: RequestInit): Promise<Response>;

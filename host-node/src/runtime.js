// The compiled component: jco's transpiled output (guest/ in this package),
// its core modules compiled once, instantiated for each sandbox and again
// after each trap.

import { readFile, readdir } from "node:fs/promises";
import { HostError } from "./errors.js";
import { wasiImports } from "./wasi.js";

/** Where `make node-guest` puts the transpiled component. */
const PACKAGED = new URL("../guest/", import.meta.url);

/** The name jco gives the component's JavaScript (from the .wasm's name). */
const ENTRY = "marionette_guest.js";

const HOST = "marionette:runtime/host";

/** The SHA-256 of the component, beside jco's output. */
const SHA256 = "component.sha256";

let shared;

/** The compiled component, shared by the sandboxes that use it. */
export class Runtime {
  #instantiate;
  #modules;

  /** @internal Use {@link Runtime.load} or {@link Runtime.shared}. */
  constructor(instantiate, modules, sha256) {
    this.#instantiate = instantiate;
    this.#modules = modules;
    /**
     * The SHA-256 of the component jco transpiled (`guest/component.sha256`,
     * written by `make node-guest`), as a cassette's header names the
     * component that recorded it: the Rust and Python hosts hash the same file.
     */
    this.sha256 = sha256;
  }

  /** The package's component, compiled once per process (compiled code only: no state). */
  static shared() {
    shared ??= Runtime.load().catch((e) => {
      shared = undefined;
      throw e;
    });
    return shared;
  }

  /** Compiles the transpiled component in `dir` (jco's output, `--instantiation sync`). */
  static async load(dir = PACKAGED) {
    const base = dir instanceof URL ? dir : new URL(`file://${dir.endsWith("/") ? dir : `${dir}/`}`);
    let files;
    try {
      files = await readdir(base);
    } catch (e) {
      throw new HostError(
        "load the component",
        `no transpiled component in ${base.pathname}: run \`make node-guest\` in the repository (${e.code ?? e.message})`,
        { cause: e },
      );
    }
    if (!files.includes(ENTRY)) {
      throw new HostError("load the component", `${base.pathname} has no ${ENTRY}: run \`make node-guest\``);
    }
    const modules = new Map();
    for (const file of files.filter((f) => f.endsWith(".wasm"))) {
      modules.set(file, await WebAssembly.compile(await readFile(new URL(file, base))));
    }
    const { instantiate } = await import(new URL(ENTRY, base).href);
    let sha256;
    if (files.includes(SHA256)) sha256 = (await readFile(new URL(SHA256, base), "utf8")).trim();
    return new Runtime(instantiate, modules, sha256);
  }

  /**
   * @internal A new instance whose `marionette:runtime/host` imports are
   * `host` (`log`, `shouldInterrupt`, `validateArguments`,
   * `wantsSessionEvents`): the component's
   * exports and its main memory (for the memory limit and stats).
   */
  instantiate(host) {
    const imports = {};
    for (const [name, iface] of Object.entries(wasiImports((text) => host.log("error", text)))) {
      imports[name] = iface;
    }
    // jco asks by the interface's name, without its version.
    imports[HOST] = host;
    const memories = [];
    const exports = this.#instantiate(
      (name) => {
        const module = this.#modules.get(name);
        if (module === undefined) throw new HostError("instantiate", `the component has no core module ${name}`);
        return module;
      },
      imports,
      (module, moduleImports) => {
        const instance = new WebAssembly.Instance(module, moduleImports);
        for (const value of Object.values(instance.exports)) {
          if (value instanceof WebAssembly.Memory) memories.push(value);
        }
        return instance;
      },
    );
    // The guest's memory is the largest one (a shim module may have its own, small).
    const memory = memories.sort((a, b) => b.buffer.byteLength - a.buffer.byteLength)[0] ?? null;
    return { exports, memory };
  }
}

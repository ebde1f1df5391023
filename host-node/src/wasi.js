// The WASI the guest is linked with. The guest's Rust standard library
// imports the cli, io and filesystem interfaces; QuickJS uses clocks and
// random numbers. Only clocks and random are granted (from
// @bytecodealliance/preview2-shim); everything else is linked to stand-ins
// that grant nothing: no environment variables or arguments, no preopened
// directories, stdin closed, stdout discarded, stderr (the guest's panic
// messages) to the sandbox's log. No sockets or HTTP are linked at all.

import { monotonicClock, wallClock } from "@bytecodealliance/preview2-shim/clocks";
import { insecure, insecureSeed, random } from "@bytecodealliance/preview2-shim/random";

class IoError {
  toDebugString() {
    return "not granted";
  }
}

class Pollable {
  ready() {
    return true;
  }
  block() {}
}

class InputStream {
  read() {
    throw { tag: "closed" };
  }
  blockingRead() {
    throw { tag: "closed" };
  }
  skip() {
    throw { tag: "closed" };
  }
  blockingSkip() {
    throw { tag: "closed" };
  }
  subscribe() {
    return new Pollable();
  }
}

class OutputStream {
  #write;
  constructor(write) {
    this.#write = write;
  }
  checkWrite() {
    return 1n << 20n;
  }
  write(bytes) {
    this.#write(bytes);
  }
  blockingWriteAndFlush(bytes) {
    this.#write(bytes);
  }
  flush() {}
  blockingFlush() {}
  writeZeroes() {}
  blockingWriteZeroesAndFlush() {}
  splice() {
    throw { tag: "closed" };
  }
  blockingSplice() {
    throw { tag: "closed" };
  }
  subscribe() {
    return new Pollable();
  }
}

/** A filesystem type that never has an instance: no directory is preopened. */
class Descriptor {}
class DirectoryEntryStream {}

/**
 * The WASI interfaces by name (without version), for an instance whose
 * stderr goes to `log(text)`.
 */
export function wasiImports(log) {
  const decoder = new TextDecoder();
  const stdout = new OutputStream(() => {});
  const stderr = new OutputStream((bytes) => log(decoder.decode(bytes)));
  const stdin = new InputStream();
  return {
    "wasi:clocks/monotonic-clock": monotonicClock,
    "wasi:clocks/wall-clock": wallClock,
    "wasi:random/random": random,
    "wasi:random/insecure": insecure,
    "wasi:random/insecure-seed": insecureSeed,
    "wasi:io/error": { Error: IoError },
    "wasi:io/poll": { Pollable, poll: (list) => new Uint32Array(list.map((_, i) => i)) },
    "wasi:io/streams": { InputStream, OutputStream },
    "wasi:cli/environment": {
      getEnvironment: () => [],
      getArguments: () => [],
      initialCwd: () => undefined,
    },
    "wasi:cli/exit": {
      exit: () => {
        throw new Error("the guest called exit");
      },
    },
    "wasi:cli/stdin": { getStdin: () => stdin },
    "wasi:cli/stdout": { getStdout: () => stdout },
    "wasi:cli/stderr": { getStderr: () => stderr },
    "wasi:cli/terminal-input": { TerminalInput: class TerminalInput {} },
    "wasi:cli/terminal-output": { TerminalOutput: class TerminalOutput {} },
    "wasi:cli/terminal-stdin": { getTerminalStdin: () => undefined },
    "wasi:cli/terminal-stdout": { getTerminalStdout: () => undefined },
    "wasi:cli/terminal-stderr": { getTerminalStderr: () => undefined },
    "wasi:filesystem/types": {
      Descriptor,
      DirectoryEntryStream,
      filesystemErrorCode: () => undefined,
    },
    "wasi:filesystem/preopens": { getDirectories: () => [] },
  };
}

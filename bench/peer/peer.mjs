// The peer of `make bench`: the same QuickJS compiled to Wasm by
// Emscripten (npm `quickjs-emscripten`), run by Node's Wasm engine. The
// bench installs the package into target/bench-peer/ (never committed),
// copies this file beside it and runs it; it prints one JSON object.
//
// Each figure is the median of several runs of a timed loop, like the
// criterion groups it stands beside:
// - add_ns: `add(1, 2)` called from the host with two numbers, the result
//   read back as a number (vm.callFunction + getNumber);
// - fib25_ns: `fib(25)`, the same recursive function;
// - cold_ns: a new context (QuickJS's runtime and intrinsics), the
//   functions evaluated, the first `add(1, 2)`, the context disposed
//   (the module itself is loaded once, as a compiled component is).
import { getQuickJS } from "quickjs-emscripten";
import { createRequire } from "node:module";

const SOURCE = `
function add(a, b) { return a + b; }
function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
`;

const QuickJS = await getQuickJS();

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function newVm() {
  const vm = QuickJS.newContext();
  vm.unwrapResult(vm.evalCode(SOURCE)).dispose();
  return vm;
}

function call(vm, fn, ...numbers) {
  const args = numbers.map((n) => vm.newNumber(n));
  const handle = vm.unwrapResult(vm.callFunction(fn, vm.undefined, ...args));
  const out = vm.getNumber(handle);
  handle.dispose();
  for (const a of args) a.dispose();
  return out;
}

// Runs `body` `iters` times per sample, `samples` times; ns per iteration.
function timed(samples, iters, body) {
  const runs = [];
  for (let s = 0; s < samples; s++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < iters; i++) body();
    runs.push(Number(process.hrtime.bigint() - start) / iters);
  }
  return median(runs);
}

const vm = newVm();
const add = vm.getProp(vm.global, "add");
const fib = vm.getProp(vm.global, "fib");
if (call(vm, add, 1, 2) !== 3 || call(vm, fib, 25) !== 75025) {
  throw new Error("the peer answers wrong");
}
timed(3, 2000, () => call(vm, add, 1, 2)); // warm-up
const add_ns = timed(30, 2000, () => call(vm, add, 1, 2));
timed(2, 3, () => call(vm, fib, 25));
const fib25_ns = timed(15, 1, () => call(vm, fib, 25));
add.dispose();
fib.dispose();
vm.dispose();

const cold_ns = timed(20, 5, () => {
  const vm = newVm();
  const add = vm.getProp(vm.global, "add");
  if (call(vm, add, 1, 2) !== 3) throw new Error("the peer answers wrong");
  add.dispose();
  vm.dispose();
});

const require = createRequire(import.meta.url);
const version = require("quickjs-emscripten/package.json").version;
console.log(
  JSON.stringify({ version, node: process.version, add_ns, fib25_ns, cold_ns }),
);

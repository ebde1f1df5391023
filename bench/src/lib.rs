//! marionette's benchmark harness: the ruler later work is measured with.
//!
//! One run (`cargo bench -p marionette-bench --bench marionette`, which is
//! what `make bench` runs) measures the same JavaScript along three paths,
//! side by side, and writes `bench/report/report.json` (machine-readable)
//! and `bench/report/report.md` (the table, also printed):
//!
//! | path | what is timed |
//! |---|---|
//! | **sandbox API** | the public [`marionette::Sandbox`]: the call queues a job for the owner thread, which makes one guest entry, processes its effects and answers over a oneshot that the awaiting tokio task receives |
//! | **guest direct** | the same guest component, instantiated here with wasmtime ([`direct`]); `script.call` is called on the current thread and the `done` effect read from its return value: no runner, no tokio, no task bookkeeping |
//! | **native QuickJS** | the same JavaScript in QuickJS built for the host ([`native`], rquickjs 0.12, the QuickJS the guest embeds): no Wasm at all |
//!
//! The workloads ([`measures::MEASURES`] lists every one, with its meaning):
//!
//! - `call/*`: `add(1, 2)` of [`fixture::BENCH_JS`], a host -> JS -> host
//!   round trip; on the Wasm paths arguments and result travel as JSON
//!   text, as the WIT interface has them.
//! - `fib25/*`: `fib(25)`, recursive JavaScript, where the interpreter's own
//!   speed dominates (Wasm against native code).
//! - `instantiate/*`: a fresh sandbox on an already compiled
//!   [`marionette::Runtime`], a fresh instance of the guest, and a cold start
//!   (fresh sandbox, load a script, first call).
//! - `wake/*`: calibration without JavaScript: a bare thread round trip and
//!   the runner's round trip with an empty job. On a virtual machine a
//!   thread wake-up costs far more when the other CPU idles, and the API
//!   path pays two per call; these say how much of it is the machine.
//! - `sessions/*`: concurrency, through the sandbox API only. One session
//!   of [`fixture::SESSIONS_JS`] (a model that sleeps 20 ms per inference,
//!   one tool call) alone, against two hundred at once in the same sandbox.
//!   The report's concurrency table gives their ratio: near 1× when the
//!   sessions interleave in the one VM, which they can because every wait
//!   is a host operation; what is above 1× is their JavaScript, run one
//!   guest entry at a time on the owner thread.
//! - `load/*`: rounds of a mixed, partly hostile load ([`load`]) from 64
//!   callers at once, against one sandbox and against three on one
//!   runtime: quick calls, timers, cancellations, tiny timeouts, throws, a
//!   call into the CPU deadline and a trap per round. The report gives the
//!   calls per second held, the answers by kind, and the calls lost (no
//!   answer, or two), which must be none.
//! - `recovery/*`: from a trap (deep recursion) to the next success on the
//!   rebuilt instance, with one script loaded and with ten: the instance
//!   rebuild and the scripts' reload.
//! - one-off timings, outside criterion: compiling the component, without
//!   and with wasmtime's disk cache, and loading the precompiled one.
//! - `cost/*` ([`cost`]): what record and replay cost against their
//!   targets: the two hundred sessions plain, deterministic and recording,
//!   and a strict replay of a cassette of two hundred inferences.
//! - `scale`: many sandboxes in one process ([`scale`]): made per second,
//!   and the resident memory and OS threads of each idle one, at 1 000 and
//!   (when the machine's memory allows) 10 000.
//! - the peer ([`peer`]): the same QuickJS compiled by Emscripten
//!   (`quickjs-emscripten`) under Node, measured in the same run, when
//!   `node` is there.
//!
//! Layout: [`fixture`] (the JavaScript and the expected answers),
//! [`direct`] and [`native`] (the two baselines), [`load`] (the mixed load
//! and its tally), [`measures`] (the catalog
//! shared by the benchmarks and the report), [`report`] (reads criterion's
//! estimates, writes the report), [`machine`] (facts about the machine),
//! [`wake`] (the thread round trip).
#![deny(missing_docs)]

pub mod cost;
pub mod direct;
pub mod fixture;
#[cfg(target_os = "linux")]
pub mod image;
pub mod load;
pub mod machine;
pub mod measures;
pub mod native;
pub mod peer;
pub mod report;
pub mod scale;
pub mod wake;

//! The JavaScript every path runs, and what it must answer.
//!
//! One ES module, loaded as is into the sandbox, into the directly driven
//! guest and into native QuickJS, so all three run the same bytecode shape
//! (module-scoped functions: `fib`'s recursive call is a module binding on
//! every path, not a global lookup on one of them).
//!
//! The `sessions/*` benchmarks run the integration tests' session fixture
//! instead, through the sandbox API only: sessions need the host's
//! `marionette` module, which neither baseline has.

/// The module's name on every path.
pub const SCRIPT: &str = "bench.js";

/// The benchmark script.
pub const BENCH_JS: &str = r#"
export function add(a, b) { return a + b; }

export function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
"#;

/// The arguments of the round trip, `add(1, 2)`.
pub const ADD_ARGS: (i32, i32) = (1, 2);

/// What `add(1, 2)` answers.
pub const ADD_RESULT: i32 = 3;

/// The argument of the CPU-bound workload.
pub const FIB_N: i32 = 25;

/// What `fib(25)` answers.
pub const FIB_RESULT: i32 = 75025;

/// `add`'s arguments as the JSON the sandbox API and the guest take.
pub fn add_args_json() -> [serde_json::Value; 2] {
    [ADD_ARGS.0.into(), ADD_ARGS.1.into()]
}

/// `fib`'s argument as JSON.
pub fn fib_args_json() -> [serde_json::Value; 1] {
    [FIB_N.into()]
}

/// The module of the `sessions/*` benchmarks: the integration tests'
/// session scenarios, run as they are.
pub const SESSIONS_SCRIPT: &str = "sessions.js";

/// `tests/fixtures/sessions.js`. Its `oneOfMany(i)` runs one session: a
/// JavaScript "model" that sleeps 20 ms per inference asks for the `add`
/// tool (a JavaScript tool that sleeps 1 ms), then answers with its
/// result; two inferences, so at least 41 ms of waiting per session.
pub const SESSIONS_JS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/sessions.js"
));

/// The export that runs one session.
pub const SESSION_FUNCTION: &str = "oneOfMany";

/// The same session's script parts driven by a loop of a few lines in the
/// script instead of the runtime's session loop: `bareOfMany(i)` answers
/// what `oneOfMany(i)` answers (the `sessions` example's `--bare`).
pub const BARE_SESSION_FUNCTION: &str = "bareOfMany";

/// How many sessions `sessions/two_hundred` runs at once.
pub const CONCURRENT_SESSIONS: usize = 200;

/// How long the sessions' model takes per inference, in milliseconds: a
/// fast stand-in that stresses the VM, and a latency like a real model's.
pub const MODEL_MS: [u64; 2] = [20, 500];

/// `oneOfMany(i, modelMs)`'s arguments as JSON.
pub fn session_args_json(i: usize, model_ms: u64) -> [serde_json::Value; 2] {
    [i.into(), model_ms.into()]
}

/// What `oneOfMany(i)` answers: the model's text once the tool's result
/// (`i + 1000`) is in.
pub fn session_result(i: usize) -> serde_json::Value {
    format!("results: {}", i + 1000).into()
}

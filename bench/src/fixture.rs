//! The JavaScript every path runs, and what it must answer.
//!
//! One ES module, loaded as is into the sandbox, into the directly driven
//! guest and into native QuickJS, so all three run the same bytecode shape
//! (module-scoped functions: `fib`'s recursive call is a module binding on
//! every path, not a global lookup on one of them).

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

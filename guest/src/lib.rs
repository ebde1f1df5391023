//! The marionette guest: a QuickJS VM (through javy) behind the WIT world
//! `marionette:runtime/marionette`.
//!
//! This file only implements the generated traits. The VM and its entry
//! protocol live in [`vm`], the functions JavaScript calls into Rust in
//! [`natives`], the JSON <-> WIT conversions in [`convert`], module
//! resolution in [`loader`], and the JavaScript side (dispatcher, console,
//! timers, the `marionette` module) in `js/runtime.js`.

mod convert;
mod loader;
mod natives;
mod vm;

wit_bindgen::generate!({
    world: "marionette",
    path: "../wit",
});

use exports::marionette::runtime::{inference, middleware, script, tasks, tools};
use marionette::runtime::types::{
    Effect, ExportInfo, Outcome, ScriptError, ToolCall, ToolDefinition, Turn,
};

struct Component;

export!(Component);

impl exports::marionette::runtime::vm::Guest for Component {
    fn configure(config: exports::marionette::runtime::vm::VmConfig) {
        vm::configure(config.memory_limit, config.gc_threshold);
    }
}

impl script::Guest for Component {
    fn load(task: u64, name: String, source: String) -> Vec<Effect> {
        vm::load(task, &name, &source)
    }

    fn exports(name: String) -> Result<Vec<ExportInfo>, ScriptError> {
        vm::query("exports", (name,)).and_then(|json| convert::exports_from_json(&json))
    }

    fn run_main(task: u64, name: String, input: String) -> Vec<Effect> {
        vm::start(task, "runMain", (task as f64, name, input))
    }

    fn call(task: u64, name: String, function: String, args: String) -> Vec<Effect> {
        vm::start(task, "call", (task as f64, name, function, args))
    }
}

impl inference::Guest for Component {
    fn infer(task: u64, name: String, engine: String, input: Turn) -> Vec<Effect> {
        match convert::turn_to_json(&input) {
            Ok(turn) => vm::start(task, "infer", (task as f64, name, engine, turn)),
            Err(e) => vm::fail(task, e),
        }
    }
}

impl middleware::Guest for Component {
    fn run(task: u64, name: String, middleware: String, input: Turn) -> Vec<Effect> {
        match convert::turn_to_json(&input) {
            Ok(turn) => vm::start(task, "middleware", (task as f64, name, middleware, turn)),
            Err(e) => vm::fail(task, e),
        }
    }
}

impl tools::Guest for Component {
    fn list_tools(name: String, registry: String) -> Result<Vec<ToolDefinition>, ScriptError> {
        vm::query("listTools", (name, registry)).and_then(|json| convert::tools_from_json(&json))
    }

    fn call(task: u64, name: String, registry: String, call: ToolCall) -> Vec<Effect> {
        match convert::tool_call_to_json(&call) {
            Ok(call) => vm::start(task, "callTool", (task as f64, name, registry, call)),
            Err(e) => vm::fail(task, e),
        }
    }
}

impl tasks::Guest for Component {
    fn resume(op: u64, outcome: Outcome) -> Vec<Effect> {
        match convert::outcome_to_json(&outcome) {
            Ok((ok, value)) => vm::dispatch("resume", (op as f64, ok, value)),
            // The host sent something the script cannot be given: reject the
            // operation with that error instead.
            Err(e) => vm::dispatch("resume", (op as f64, false, convert::error_to_json(&e))),
        }
    }

    fn cancel(task: u64, reason: String) -> Vec<Effect> {
        vm::dispatch("cancel", (task as f64, reason))
    }
}

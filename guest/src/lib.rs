//! The marionette guest: a QuickJS VM (through javy) behind the WIT world
//! `marionette:runtime/marionette`.
//!
//! This file only implements the generated traits. The VM and its entry
//! protocol live in [`vm`], the functions JavaScript calls into Rust in
//! [`natives`], time and randomness (deterministic runs) in [`clock`], the
//! JSON <-> WIT conversions in [`convert`], the allocator's free chunks
//! taken before the snapshot in [`heap`], module resolution among a
//! script's modules in [`loader`], freezing the shared intrinsics and
//! checking them in [`lockdown`], the natives of the web basics (`URL`, `atob`,
//! `crypto`...) in [`web`], and the JavaScript side (dispatcher, console,
//! timers, the `marionette` module) in `js/` (one closure in fragments).

mod alloc;
mod clock;
mod convert;
mod copy;
mod heap;
mod loader;
mod lockdown;
mod natives;
mod vm;
mod web;

wit_bindgen::generate!({
    // `marionette` plus the boot export the build's snapshot calls.
    world: "guest",
    path: "../wit",
});

use exports::marionette::runtime::{hooks, inference, middleware, script, sessions, tasks, tools};
use marionette::runtime::types::{
    Effect, ExportInfo, Hook, Outcome, ScriptError, Target, ToolCall, ToolDefinition, Turn,
};

struct Component;

export!(Component);

impl Guest for Component {
    /// Boots the VM, so that the build's snapshot holds it booted and
    /// locked down (see `world guest` in the WIT).
    fn wizer_initialize() {
        vm::boot_now();
    }
}

impl exports::marionette::runtime::vm::Guest for Component {
    fn check_lockdown() -> exports::marionette::runtime::vm::LockdownReport {
        let report = vm::lockdown_report();
        exports::marionette::runtime::vm::LockdownReport {
            classes: report.classes,
            objects: report.objects,
            unfrozen: report.unfrozen,
        }
    }

    fn measure_heap() -> exports::marionette::runtime::vm::HeapUsage {
        let (bytes, objects) = vm::heap_usage();
        exports::marionette::runtime::vm::HeapUsage { bytes, objects }
    }

    fn configure(config: exports::marionette::runtime::vm::VmConfig) {
        let info = convert::host_info_to_json(
            &config.host_engines,
            &config.host_middlewares,
            &config.host_tools,
        );
        natives::set_caps(config.task_caps);
        clock::configure(config.determinism);
        vm::configure(config.memory_limit, config.gc_threshold, info);
    }
}

impl script::Guest for Component {
    fn load(task: u64, name: String, source: String) -> Vec<Effect> {
        vm::load(task, &name, &source)
    }

    fn load_modules(task: u64, entry: String, modules: Vec<script::ModuleSource>) -> Vec<Effect> {
        let modules = modules.into_iter().map(|m| (m.path, m.source)).collect();
        vm::load_modules(task, &entry, modules)
    }

    fn exports(name: String) -> Result<Vec<ExportInfo>, ScriptError> {
        vm::query("exports", (name,)).and_then(|json| convert::exports_from_json(&json))
    }

    fn run_main(task: u64, name: String, input: String) -> Vec<Effect> {
        vm::start(task, "runMain", (task as f64, name, input))
    }

    fn call(task: u64, name: String, function: String, args: String) -> Vec<Effect> {
        vm::call(task, name, function, args)
    }

    fn compile(
        entry: String,
        modules: Vec<script::ModuleSource>,
        checked: bool,
    ) -> Vec<script::CompiledModule> {
        let modules = modules.into_iter().map(|m| (m.path, m.source)).collect();
        vm::compile(&entry, modules, checked)
            .into_iter()
            .map(|(path, bytecode)| script::CompiledModule { path, bytecode })
            .collect()
    }

    fn offer_bytecode(modules: Vec<script::CompiledModule>) {
        vm::offer_bytecode(modules.into_iter().map(|m| (m.path, m.bytecode)).collect());
    }
}

impl inference::Guest for Component {
    fn infer(task: u64, engine: Target, input: Turn, context: String) -> Vec<Effect> {
        match convert::turn_to_json(&input) {
            Ok(turn) => {
                let target = convert::target_to_json(&engine);
                vm::start(task, "infer", (task as f64, target, turn, context))
            }
            Err(e) => vm::fail(task, e),
        }
    }
}

impl middleware::Guest for Component {
    fn run(task: u64, middleware: Target, input: Turn, context: String) -> Vec<Effect> {
        match convert::turn_to_json(&input) {
            Ok(turn) => {
                let target = convert::target_to_json(&middleware);
                vm::start(task, "middleware", (task as f64, target, turn, context))
            }
            Err(e) => vm::fail(task, e),
        }
    }

    fn next(task: u64, op: u64, input: Turn) -> Vec<Effect> {
        match convert::turn_to_json(&input) {
            Ok(turn) => vm::start(task, "next", (task as f64, op as f64, turn)),
            Err(e) => vm::fail(task, e),
        }
    }
}

impl tools::Guest for Component {
    fn list_tools(registry: Target) -> Result<Vec<ToolDefinition>, ScriptError> {
        vm::query("listTools", (convert::target_to_json(&registry),))
            .and_then(|json| convert::tools_from_json(&json))
    }

    fn call(task: u64, registry: Target, call: ToolCall, context: String) -> Vec<Effect> {
        match convert::tool_call_to_json(&call) {
            Ok(call) => {
                let target = convert::target_to_json(&registry);
                vm::start(task, "callTool", (task as f64, target, call, context))
            }
            Err(e) => vm::fail(task, e),
        }
    }
}

impl hooks::Guest for Component {
    fn call(task: u64, hooks: Target, hook: Hook, payload: String) -> Vec<Effect> {
        let name = match hook {
            Hook::BeforeToolCall => "beforeToolCall",
            Hook::AfterToolCall => "afterToolCall",
            Hook::OnToolError => "onToolError",
        };
        let target = convert::target_to_json(&hooks);
        vm::start(task, "hook", (task as f64, target, name, payload))
    }
}

impl sessions::Guest for Component {
    fn run(task: u64, spec: String, input: Turn) -> Vec<Effect> {
        match convert::turn_to_json(&input) {
            Ok(turn) => vm::start(task, "session", (task as f64, spec, turn)),
            Err(e) => vm::fail(task, e),
        }
    }
}

impl tasks::Guest for Component {
    fn resume(op: u64, outcome: Outcome) -> Vec<Effect> {
        // A timer's answer moves a deterministic run's clock before the
        // script sees it.
        clock::resumed(op);
        natives::settled(op);
        if let Ok(marionette::runtime::types::Value::HttpResponse(response)) = outcome {
            // The body travels as an ArrayBuffer beside the rest, as JSON.
            let meta = convert::response_to_json(&response);
            let body = natives::Bytes(response.body);
            return vm::dispatch("resume", (op as f64, true, meta, body));
        }
        match convert::outcome_to_json(&outcome) {
            Ok((ok, value)) => vm::dispatch("resume", (op as f64, ok, value)),
            // The host sent something the script cannot be given: reject the
            // operation with that error instead.
            Err(e) => vm::dispatch("resume", (op as f64, false, convert::error_to_json(&e))),
        }
    }

    fn notify(op: u64, events: Vec<String>) -> Vec<Effect> {
        vm::dispatch("notify", (op as f64, events))
    }

    fn cancel(task: u64, reason: String) -> Vec<Effect> {
        let effects = vm::dispatch("stop", (task as f64, "cancelled", reason));
        natives::forget(task);
        effects
    }
}

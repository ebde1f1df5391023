//! One entry into the guest, as data: what the owner calls, and what a
//! cassette records and a replay calls again.

use serde::{Deserialize, Serialize};
use wasmtime::Store;

use crate::bindings::exports::marionette::runtime::script::ModuleSource;
use crate::bindings::exports::marionette::runtime::vm::VmConfig;
use crate::bindings::marionette::runtime::types as wit;
use crate::sandbox::HostState;
use crate::sandbox::exports::Exports;

/// An export of the component and its arguments (the task, when the entry
/// has one, travels beside it). Named as docs/protocol.md names the
/// entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
// The variants are the exports' names (`script.call`, `tools.call`,
// `hooks.call`), which a cassette writes.
#[allow(clippy::enum_variant_names)]
pub(crate) enum Call {
    /// A fresh instance, then `vm.configure(config)`: the first entry of
    /// every instance (a trap makes a new one).
    Configure(VmConfig),
    /// `script.load`.
    Load { name: String, source: String },
    /// `script.load-modules`: the entry's name, and each module's path and
    /// source.
    LoadModules {
        name: String,
        modules: Vec<(String, String)>,
    },
    /// `script.run-main`.
    RunMain { name: String, input: String },
    /// `script.call`.
    Call {
        name: String,
        function: String,
        args: String,
    },
    /// `inference.infer`.
    Infer {
        engine: wit::Target,
        input: wit::Turn,
        context: String,
    },
    /// `middleware.run`.
    MiddlewareRun {
        middleware: wit::Target,
        input: wit::Turn,
        context: String,
    },
    /// `middleware.next`.
    MiddlewareNext { op: u64, input: wit::Turn },
    /// `tools.call`.
    ToolsCall {
        registry: wit::Target,
        call: wit::ToolCall,
        context: String,
    },
    /// `hooks.call`.
    HooksCall {
        hooks: wit::Target,
        hook: wit::Hook,
        payload: String,
    },
    /// `sessions.run`.
    SessionsRun { spec: String, input: wit::Turn },
    /// `tasks.resume`.
    Resume { op: u64, outcome: wit::Outcome },
    /// `tasks.notify`.
    Notify { op: u64, events: Vec<String> },
    /// `tasks.cancel`.
    Cancel { reason: String },
}

impl Call {
    /// The export's name, as docs/protocol.md writes it.
    pub(crate) fn export(&self) -> &'static str {
        match self {
            Call::Configure(_) => "vm.configure",
            Call::Load { .. } => "script.load",
            Call::LoadModules { .. } => "script.load-modules",
            Call::RunMain { .. } => "script.run-main",
            Call::Call { .. } => "script.call",
            Call::Infer { .. } => "inference.infer",
            Call::MiddlewareRun { .. } => "middleware.run",
            Call::MiddlewareNext { .. } => "middleware.next",
            Call::ToolsCall { .. } => "tools.call",
            Call::HooksCall { .. } => "hooks.call",
            Call::SessionsRun { .. } => "sessions.run",
            Call::Resume { .. } => "tasks.resume",
            Call::Notify { .. } => "tasks.notify",
            Call::Cancel { .. } => "tasks.cancel",
        }
    }

    /// Makes the entry for `task` (ignored by the entries that start none).
    /// `Configure` is not an entry into an instance: the owner builds one.
    pub(crate) fn invoke(
        &self,
        store: &mut Store<HostState>,
        b: &Exports,
        task: u64,
    ) -> wasmtime::Result<Vec<wit::Effect>> {
        match self {
            Call::Configure(config) => b
                .marionette_runtime_vm(&mut *store)?
                .call_configure(store, config)
                .map(|()| Vec::new()),
            Call::Load { name, source } => b
                .marionette_runtime_script(&mut *store)?
                .call_load(store, task, name, source),
            Call::LoadModules { name, modules } => {
                let modules: Vec<ModuleSource> = modules
                    .iter()
                    .map(|(path, source)| ModuleSource {
                        path: path.clone(),
                        source: source.clone(),
                    })
                    .collect();
                b.marionette_runtime_script(&mut *store)?
                    .call_load_modules(store, task, name, &modules)
            }
            Call::RunMain { name, input } => b
                .marionette_runtime_script(&mut *store)?
                .call_run_main(store, task, name, input),
            Call::Call {
                name,
                function,
                args,
            } => b
                .marionette_runtime_script(&mut *store)?
                .call_call(store, task, name, function, args),
            Call::Infer {
                engine,
                input,
                context,
            } => b
                .marionette_runtime_inference(&mut *store)?
                .call_infer(store, task, engine, input, context),
            Call::MiddlewareRun {
                middleware,
                input,
                context,
            } => b
                .marionette_runtime_middleware(&mut *store)?
                .call_run(store, task, middleware, input, context),
            Call::MiddlewareNext { op, input } => b
                .marionette_runtime_middleware(&mut *store)?
                .call_next(store, task, *op, input),
            Call::ToolsCall {
                registry,
                call,
                context,
            } => b
                .marionette_runtime_tools(&mut *store)?
                .call_call(store, task, registry, call, context),
            Call::HooksCall {
                hooks,
                hook,
                payload,
            } => b
                .marionette_runtime_hooks(&mut *store)?
                .call_call(store, task, hooks, *hook, payload),
            Call::SessionsRun { spec, input } => b
                .marionette_runtime_sessions(&mut *store)?
                .call_run(store, task, spec, input),
            Call::Resume { op, outcome } => b
                .marionette_runtime_tasks(&mut *store)?
                .call_resume(store, *op, outcome),
            Call::Notify { op, events } => b
                .marionette_runtime_tasks(&mut *store)?
                .call_notify(store, *op, events),
            Call::Cancel { reason } => b
                .marionette_runtime_tasks(&mut *store)?
                .call_cancel(store, task, reason),
        }
    }
}

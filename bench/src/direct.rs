//! The guest component driven directly: wasmtime on the calling thread, no
//! runner, no sandbox, no tokio.
//!
//! This is the floor under [`marionette::Sandbox`]: the same component
//! ([`marionette::guest_component`]), compiled with the engine settings the
//! sandbox's [`marionette::Runtime`] uses (epoch interruption on, the same
//! wasm stack), so the generated code is the same and the difference between
//! the two paths is the host's plumbing. What it leaves out: the owner thread
//! and its queue, the task table, the per-entry CPU deadline (a clock read
//! and an epoch deadline per entry), the memory limiter, `should-interrupt`'s
//! clock read (here a constant `false`) and the conversion of the result
//! into [`marionette::Error`]s.
//!
//! It serves only tasks that settle within their first entry: a function
//! that awaits the host (a timer) is an error here.

use anyhow::bail;
use serde_json::Value as Json;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use bindings::exports::marionette::runtime::vm::{TaskCaps, VmConfig};
use bindings::marionette::runtime::types::{Effect, Failure, LogLevel, Stop, Value};
use bindings::{Marionette, MarionettePre};

/// The WIT world, generated for this crate (the host's bindings are private).
mod bindings {
    wasmtime::component::bindgen!({
        world: "marionette",
        path: "../wit",
    });
}

/// Epoch ticks before an entry traps. Nothing advances this engine's epoch,
/// so any number will do; it only has to be set (the default deadline traps
/// at the first check).
const NO_DEADLINE: u64 = 1 << 40;

/// The compiled component and its linker: built once, like
/// [`marionette::Runtime`].
pub struct DirectRuntime {
    engine: Engine,
    pre: MarionettePre<State>,
}

impl DirectRuntime {
    /// Compiles the embedded guest. Uses wasmtime's disk cache like the
    /// sandbox's default runtime, so after that one has compiled, this is a
    /// cache hit.
    ///
    /// # Errors
    /// When the component does not compile or link.
    pub fn new() -> anyhow::Result<DirectRuntime> {
        let defaults = marionette::RuntimeOptions::default();
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.max_wasm_stack(defaults.max_wasm_stack);
        if defaults.disk_cache
            && let Ok(cache) = wasmtime::Cache::from_file(None)
        {
            config.cache(Some(cache));
        }
        let engine = Engine::new(&config).context("configuring wasmtime")?;
        let component = Component::new(&engine, marionette::guest_component())
            .context("compiling the guest component")?;
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).context("linking WASI")?;
        Marionette::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .context("linking the host interface")?;
        let pre = MarionettePre::new(linker.instantiate_pre(&component)?)
            .context("pre-instantiating the guest")?;
        Ok(DirectRuntime { engine, pre })
    }

    /// A fresh instance in a fresh store, configured with the default
    /// policy's QuickJS heap limit (what a sandbox's instantiation does,
    /// without the memory limiter).
    ///
    /// # Errors
    /// When instantiation or the guest's `configure` fails.
    pub fn instantiate(&self) -> anyhow::Result<DirectGuest> {
        let mut store = Store::new(
            &self.engine,
            State {
                wasi: WasiCtxBuilder::new().build(),
                table: ResourceTable::new(),
            },
        );
        store.set_epoch_deadline(NO_DEADLINE);
        let bindings = self.pre.instantiate(&mut store).context("instantiating")?;
        // Provides no host engines, middleware or tools: the benchmarks
        // call plain functions.
        let config = VmConfig {
            memory_limit: marionette::Policy::default().quickjs_memory_limit(),
            gc_threshold: 0,
            // No caps: the benchmarks measure the guest, not the policy.
            task_caps: TaskCaps {
                console_lines: 0,
                console_bytes: 0,
                pending_ops: 0,
            },
            host_engines: Vec::new(),
            host_middlewares: Vec::new(),
            host_tools: Vec::new(),
            determinism: None,
        };
        bindings
            .marionette_runtime_vm()
            .call_configure(&mut store, &config)
            .context("configuring the guest")?;
        Ok(DirectGuest {
            store,
            bindings,
            next_task: 1,
        })
    }
}

/// One guest instance, called on the current thread.
pub struct DirectGuest {
    store: Store<State>,
    bindings: Marionette,
    next_task: u64,
}

impl DirectGuest {
    /// Loads `source` as the module `name`.
    ///
    /// # Errors
    /// A script error, a trap, or a top level that awaits the host.
    pub fn load(&mut self, name: &str, source: &str) -> anyhow::Result<()> {
        let task = self.task();
        let effects = self.bindings.marionette_runtime_script().call_load(
            &mut self.store,
            task,
            name,
            source,
        )?;
        settle(task, effects).map(drop)
    }

    /// Calls the exported `function` of script `name` with `args` and
    /// returns its JSON result: the arguments are serialized and the result
    /// parsed exactly as [`marionette::Sandbox::call`] does.
    ///
    /// # Errors
    /// A script error, a trap, or a function that awaits the host.
    pub fn call(&mut self, name: &str, function: &str, args: &[Json]) -> anyhow::Result<Json> {
        let task = self.task();
        let args = Json::Array(args.to_vec()).to_string();
        let effects = self.bindings.marionette_runtime_script().call_call(
            &mut self.store,
            task,
            name,
            function,
            &args,
        )?;
        match settle(task, effects)? {
            Value::Json(text) => Ok(serde_json::from_str(&text)?),
            Value::Turn(_) | Value::HttpResponse(_) => bail!("{function}() returned no JSON"),
        }
    }

    fn task(&mut self) -> u64 {
        let task = self.next_task;
        self.next_task += 1;
        task
    }
}

/// The outcome of `task` from the effects of its only entry.
fn settle(task: u64, effects: Vec<Effect>) -> anyhow::Result<Value> {
    for effect in effects {
        match effect {
            Effect::Done(done) if done.task == task => {
                return done.outcome.map_err(|failure| match failure {
                    Failure::Script(e) => anyhow::anyhow!("{}: {}", e.name, e.message),
                    other => anyhow::anyhow!("task {task} failed: {other:?}"),
                });
            }
            Effect::Request(_) => {
                bail!("task {task} awaits the host; the direct harness serves no requests")
            }
            _ => {}
        }
    }
    bail!("task {task} did not settle in its first entry")
}

/// The store's data: WASI that grants nothing, as in the sandbox.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::marionette::runtime::host::Host for State {
    fn log(&mut self, _level: LogLevel, _message: String) {}

    fn should_interrupt(&mut self, _task: u64) -> Option<Stop> {
        None
    }

    /// No tool runs here; `Ok` turns validation off, as the WIT allows.
    fn validate_arguments(&mut self, _schema: String, _arguments: String) -> Result<(), String> {
        Ok(())
    }
}

impl bindings::marionette::runtime::types::Host for State {}

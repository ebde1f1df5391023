//! A sandbox: one guest instance behind a [`Runner`], driven through the
//! effect protocol.
//!
//! Every method starts a *task* in the guest (or asks it something) through
//! the owner thread, then awaits the task's end while the owner serves other
//! work: timers and other host operations run as tokio tasks, and their
//! results re-enter the guest one at a time. Many tasks of many callers share
//! one VM; none of them blocks it.
//!
//! ```no_run
//! # async fn demo() -> marionette::Result<()> {
//! use marionette::{Policy, Sandbox, TaskOptions};
//!
//! let sandbox = Sandbox::new(Policy::default()).await?;
//! sandbox.load("hello.js", "export default async (input) => `hello ${input.name}`;").await?;
//! let out = sandbox
//!     .run_main("hello.js", &serde_json::json!({"name": "world"}), TaskOptions::default())
//!     .await?;
//! assert_eq!(out, "hello world");
//! # Ok(()) }
//! ```

mod bytecode;
mod convert;
mod engine_config;
pub(crate) mod exports;
#[cfg(feature = "fetch")]
mod fetch;
mod host_ops;
mod owner;
mod parts;
mod provided;
mod runtime;
mod services;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

pub use bytecode::BytecodeStats;
pub use owner::{BoxFuture, EventSink, NextFn};
pub(crate) use provided::{Part, Registration};
pub use runtime::{DEFAULT_POOLED_INSTANCES, GuestOrigin, PoolFull, Runtime, RuntimeOptions};
pub(crate) use runtime::{GUEST_WASM, HostState};
#[cfg(test)]
pub(crate) use runtime::{Provides, vm_config};
pub use services::HostServices;

use crate::bindings::marionette::runtime::types as wit;
use crate::cassette::{Answers, Call, Recorder};
use crate::error::{Error, Op, Result};
use crate::model::{ExportInfo, ToolCall, ToolDefinition, Turn};
use crate::modules::{self, Modules};
use crate::policy::Policy;
use crate::runner::{OwnerPool, Runner, RunnerOptions, WeakRunner};
use owner::{Interrupts, Owner, Task, TaskKind};

/// How one task runs: how long its caller waits, how it can be cancelled,
/// where its events go.
#[derive(Clone, Default)]
pub struct TaskOptions {
    /// How long to wait for the task, queueing included. When it runs out
    /// the call fails with [`Error::Timeout`] and the task is cancelled in
    /// the guest (running JavaScript is interrupted).
    pub timeout: Option<Duration>,
    /// Cancelling it fails the call with [`Error::Canceled`] and cancels the
    /// task the same way.
    pub cancel: Option<CancellationToken>,
    /// Receives the task's events (console lines) as they happen.
    pub events: Option<EventSink>,
}

impl TaskOptions {
    /// Options with a timeout.
    pub fn timeout(timeout: Duration) -> Self {
        TaskOptions {
            timeout: Some(timeout),
            ..TaskOptions::default()
        }
    }
}

impl std::fmt::Debug for TaskOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskOptions")
            .field("timeout", &self.timeout)
            .field("cancel", &self.cancel.is_some())
            .field("events", &self.events.is_some())
            .finish()
    }
}

/// What a sandbox does besides running scripts under its policy.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct SandboxOptions {
    /// Records every entry into the guest, from the instance's
    /// `configure` on, into a cassette (see [`crate::cassette`]).
    pub recorder: Option<Recorder>,
    /// The threads that serve the sandbox: `None` for the process-wide
    /// [`OwnerPool::shared`] (one thread per CPU).
    pub pool: Option<OwnerPool>,
    /// A partial replay's recorded answers.
    pub(crate) answers: Option<Arc<Answers>>,
}

impl SandboxOptions {
    /// Options that record into `recorder`.
    pub fn record(recorder: Recorder) -> Self {
        SandboxOptions {
            recorder: Some(recorder),
            ..SandboxOptions::default()
        }
    }

    /// These options, with the sandbox served by `pool`'s threads.
    pub fn on_pool(mut self, pool: OwnerPool) -> Self {
        self.pool = Some(pool);
        self
    }
}

impl std::fmt::Debug for SandboxOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxOptions")
            .field("recorder", &self.recorder)
            .field("pool", &self.pool)
            .field("answers", &self.answers.is_some())
            .finish()
    }
}

/// A snapshot of a sandbox, from [`Sandbox::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SandboxStats {
    /// Bytes of linear memory of the current instance (0 before the first
    /// instance or right after a trap). Wasm memory never shrinks: this is
    /// the instance's high-water mark.
    pub memory: u64,
    /// Tasks started and not yet answered.
    pub tasks: usize,
    /// Host operations (timers, inferences, tool calls) in flight.
    pub pending_ops: usize,
    /// Scripts loaded (what a rebuilt instance reloads).
    pub scripts: usize,
    /// Instances lost to traps and rebuilt.
    pub rebuilds: u64,
}

/// What the script heap holds, from [`Sandbox::heap_usage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeapUsage {
    /// Bytes QuickJS has allocated: live values, and garbage in cycles that
    /// its cycle collector has not freed yet. Unlike
    /// [`SandboxStats::memory`], it goes down as well as up.
    pub bytes: u64,
    /// Objects, counted the same way.
    pub objects: u64,
}

/// What the guest's own check of its lockdown found, from
/// [`Sandbox::lockdown_report`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockdownReport {
    /// Classes QuickJS has registered whose prototype is an object.
    pub classes: u32,
    /// Objects reachable from those prototypes, `Function.prototype` and the
    /// global object.
    pub objects: u32,
    /// Each object found not frozen, as the path it was reached by; empty
    /// when the lockdown holds.
    pub unfrozen: Vec<String>,
}

/// One JavaScript VM in WebAssembly, with the scripts loaded into it.
///
/// Cloning is cheap; all clones drive the same instance. The instance lives
/// until [`shutdown`](Self::shutdown) or until the last clone is dropped.
///
/// # Backpressure
///
/// Calls queue for the owner thread; at most
/// [`Policy::queue_capacity`] wait at once. Past that, calls fail at once
/// with [`Error::Rejected`]. Results of host operations the guest awaits
/// are never shed: they wait for room.
///
/// # Failures
///
/// A script error fails only its task ([`Error::Script`]). A task that runs
/// past the policy's CPU deadline is interrupted ([`Error::Limit`]) and the
/// VM stays usable. A trap (stack exhausted, memory, the hard deadline)
/// fails every task that lived in the instance with [`Error::Trapped`]; the
/// next call gets a fresh instance with the scripts reloaded.
#[derive(Clone)]
pub struct Sandbox {
    runner: Runner<Owner>,
    interrupts: Arc<Interrupts>,
    next_task: Arc<AtomicU64>,
    provided: Arc<provided::Provided>,
}

/// A [`Sandbox`] that does not keep it alive: what a session a script
/// started holds, since it runs inside the sandbox's own operations.
#[derive(Clone)]
pub(crate) struct WeakSandbox {
    runner: WeakRunner<Owner>,
    interrupts: Arc<Interrupts>,
    next_task: Arc<AtomicU64>,
    provided: Arc<provided::Provided>,
}

impl WeakSandbox {
    pub(crate) fn upgrade(&self) -> Option<Sandbox> {
        Some(Sandbox {
            runner: self.runner.upgrade()?,
            interrupts: self.interrupts.clone(),
            next_task: self.next_task.clone(),
            provided: self.provided.clone(),
        })
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("runner", &self.runner)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// A sandbox on the process-wide [`Runtime::shared`] (or
    /// [`Runtime::shared_with_fuel`] when the policy sets
    /// [`Policy::entry_fuel`]).
    ///
    /// # Errors
    /// [`Error::Host`] when the runtime or the instance cannot be built.
    pub async fn new(policy: Policy) -> Result<Sandbox> {
        let shared = if policy.entry_fuel.is_some() {
            Runtime::shared_with_fuel
        } else {
            Runtime::shared
        };
        let runtime = tokio::task::spawn_blocking(shared)
            .await
            .map_err(|e| Error::host("runtime", e))?
            .map_err(|e| Error::host("runtime", e))?;
        Sandbox::with_runtime(runtime, policy).await
    }

    /// A sandbox on a given runtime. Must be called inside a tokio runtime,
    /// which then runs the sandbox's host operations.
    ///
    /// # Errors
    /// [`Error::Host`] when the instance cannot be built.
    pub async fn with_runtime(runtime: Arc<Runtime>, policy: Policy) -> Result<Sandbox> {
        Sandbox::with_services(runtime, policy, HostServices::default()).await
    }

    /// A sandbox whose scripts may use `services` by name: host engines,
    /// middleware and tools. Must be called inside a tokio runtime, which
    /// then runs the sandbox's host operations.
    ///
    /// # Errors
    /// [`Error::Host`] when the instance cannot be built, or when two host
    /// tool sets define the same tool.
    pub async fn with_services(
        runtime: Arc<Runtime>,
        policy: Policy,
        services: HostServices,
    ) -> Result<Sandbox> {
        Sandbox::with_options(runtime, policy, services, SandboxOptions::default()).await
    }

    /// A sandbox with `services` and `options` (a recorder). Must be called
    /// inside a tokio runtime, which then runs the sandbox's host
    /// operations.
    ///
    /// A sandbox that records and whose policy names no
    /// [`determinism`](Policy::determinism) gets a fresh one
    /// ([`Determinism::fresh`](crate::policy::Determinism::fresh)): a
    /// cassette is of a deterministic run.
    ///
    /// # Errors
    /// As [`with_services`](Self::with_services).
    pub async fn with_options(
        runtime: Arc<Runtime>,
        mut policy: Policy,
        services: HostServices,
        options: SandboxOptions,
    ) -> Result<Sandbox> {
        services.all_tools()?;
        if let Some(recorder) = &options.recorder {
            policy
                .determinism
                .get_or_insert_with(crate::policy::Determinism::fresh);
            recorder.start(&policy);
        }
        let tokio = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::host(
                "sandbox",
                anyhow::anyhow!("a Sandbox needs a tokio runtime: {e}"),
            )
        })?;
        let interrupts = Arc::new(Interrupts::default());
        let next_task = Arc::new(AtomicU64::new(1));
        let provided = Arc::new(provided::Provided::default());
        let runner_options = RunnerOptions {
            name: "marionette-sandbox".into(),
            queue_capacity: policy.queue_capacity,
            default_timeout: None,
        };
        let pool = match options.pool {
            Some(pool) => pool,
            None => OwnerPool::shared()?,
        };
        let runner = {
            let (interrupts, next_task, provided) =
                (interrupts.clone(), next_task.clone(), provided.clone());
            Runner::spawn_on(&pool, runner_options, move || {
                Owner::new(
                    runtime,
                    policy,
                    Arc::new(services),
                    provided,
                    interrupts,
                    next_task,
                    tokio,
                    options.recorder,
                    options.answers,
                )
            })
        };
        let weak = WeakSandbox {
            runner: runner.downgrade(),
            interrupts: interrupts.clone(),
            next_task: next_task.clone(),
            provided: provided.clone(),
        };
        runner
            .call("boot", move |owner: &mut Owner| {
                owner.sandbox = Some(weak);
                owner.ensure_vm()
            })
            .await?
            .map_err(|e| Error::host("boot", e))?;
        Ok(Sandbox {
            runner,
            interrupts,
            next_task,
            provided,
        })
    }

    /// Loads `source` as the ES module `name` and runs its top-level code;
    /// returns its exports. Loading a name again replaces that script. The
    /// module imports only `marionette`: a script of several modules is
    /// loaded with [`load_modules`](Self::load_modules). A name ending in
    /// `.ts` or `.mts` is TypeScript: its types are erased first (feature
    /// `typescript`), lines and columns kept.
    ///
    /// # Errors
    /// [`Error::Script`] for a syntax error, a failed import or a throwing
    /// top level, with the script's location.
    pub async fn load(
        &self,
        name: impl Into<String>,
        source: impl Into<String>,
    ) -> Result<Vec<ExportInfo>> {
        self.load_with(name, source, TaskOptions::default()).await
    }

    /// [`load`](Self::load) with options (a script whose top level awaits).
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub async fn load_with(
        &self,
        name: impl Into<String>,
        source: impl Into<String>,
        options: TaskOptions,
    ) -> Result<Vec<ExportInfo>> {
        let name = name.into();
        let op: Op = format!("load {name}").into();
        let source = modules::prepare(&name, source.into()).map_err(|e| Error::Script {
            op: op.clone(),
            error: Box::new(e),
        })?;
        self.load_source(op, name, owner::Source::One(source), options)
            .await
    }

    /// Loads the module graph `modules` as the script `entry` (the path of
    /// one of them, which names the script for [`run_main`](Self::run_main)
    /// and the rest), and runs the top-level code of the modules the entry
    /// imports, then of the entry; returns the entry's exports.
    ///
    /// The modules' relative imports (`./util.js`, `../data/d.json`),
    /// static and dynamic, resolve among `modules`, never above their root
    /// (see [`Modules`]); a bare specifier (`lodash`) is refused with an
    /// error that says how to bundle. Each load evaluates its graph afresh:
    /// loading `entry` again replaces the script, and two scripts share no
    /// module. After a trap, the rebuilt instance loads every module again.
    ///
    /// # Errors
    /// [`Error::Script`] naming the file (and line, when known): a path
    /// that is not normalised, an entry not among the modules, a syntax
    /// error in any module (TypeScript that cannot be erased included), an
    /// import that resolves to nothing, a throwing top level.
    pub async fn load_modules(
        &self,
        entry: impl Into<String>,
        modules: Modules,
    ) -> Result<Vec<ExportInfo>> {
        self.load_modules_with(entry, modules, TaskOptions::default())
            .await
    }

    /// [`load_modules`](Self::load_modules) with options.
    ///
    /// # Errors
    /// As [`load_modules`](Self::load_modules).
    pub async fn load_modules_with(
        &self,
        entry: impl Into<String>,
        modules: Modules,
        options: TaskOptions,
    ) -> Result<Vec<ExportInfo>> {
        let entry = entry.into();
        let op: Op = format!("load {entry}").into();
        let modules = modules.prepared().map_err(|e| Error::Script {
            op: op.clone(),
            error: Box::new(e),
        })?;
        self.load_source(op, entry, owner::Source::Graph(modules.into()), options)
            .await
    }

    async fn load_source(
        &self,
        op: Op,
        name: String,
        source: owner::Source,
        options: TaskOptions,
    ) -> Result<Vec<ExportInfo>> {
        let kind = TaskKind::Load {
            name: name.clone(),
            source: source.clone(),
        };
        let load_name = name.clone();
        let value = self
            .task(op.clone(), options, kind, None, source.call(load_name))
            .await?;
        // The load's value is the script's export list, in the JSON of
        // `script.exports` (docs/protocol.md): no second entry to ask.
        convert::export_list(value).map_err(|e| {
            Error::host(
                op,
                e.context("decoding the export list the guest's load returned"),
            )
        })
    }

    /// The exports of a loaded script.
    ///
    /// # Errors
    /// [`Error::Script`] when no script has that name.
    pub async fn exports(&self, name: &str) -> Result<Vec<ExportInfo>> {
        let op: Op = format!("exports {name}").into();
        let n = name.to_string();
        let list = self
            .query(op.clone(), move |store, b| {
                b.marionette_runtime_script(&mut *store)?
                    .call_exports(store, &n)
            })
            .await?;
        convert::exports(list)
            .map_err(|e| Error::host(op, e.context("decoding the guest's export list")))
    }

    /// Runs the script's default export `main(input, ctx)` and returns the
    /// JSON of what it returned or resolved to (`null` for `undefined`).
    ///
    /// Values cross as JSON: what comes back is what `JSON.stringify` makes
    /// of the script's value. Numbers are doubles. Strings come back as the
    /// script built them, except that a lone surrogate (half of a UTF-16
    /// pair: a JavaScript string may hold one, a Rust string cannot) becomes
    /// U+FFFD, as [`String::from_utf16_lossy`] does; turns and everything
    /// else a script hands the host are read the same way.
    ///
    /// # Errors
    /// [`Error::Script`] when `main` throws or rejects; [`Error::Limit`]
    /// with [`Limit::Output`](crate::Limit::Output) when `input` or the
    /// result nests more than [`MAX_NESTING`] levels (the input is refused
    /// before the script sees it); [`Error::Limit`], [`Error::Timeout`],
    /// [`Error::Canceled`], [`Error::Trapped`] as the type says.
    pub async fn run_main(&self, name: &str, input: &Json, options: TaskOptions) -> Result<Json> {
        let op: Op = format!("{name}: main").into();
        check_nesting(&op, "the input", input)?;
        let (n, input) = (name.to_string(), input.to_string());
        let value = self
            .task(
                op.clone(),
                options,
                TaskKind::Plain,
                None,
                Call::RunMain { name: n, input },
            )
            .await?;
        json_value(op, value)
    }

    /// Calls the exported function `function` with `args`.
    ///
    /// # Errors
    /// As [`run_main`](Self::run_main).
    pub async fn call(
        &self,
        name: &str,
        function: &str,
        args: &[Json],
        options: TaskOptions,
    ) -> Result<Json> {
        let op: Op = format!("{name}: {function}()").into();
        for (i, arg) in args.iter().enumerate() {
            check_nesting(&op, format_args!("argument {}", i + 1), arg)?;
        }
        // The list written straight from the slice: no copy of the values,
        // and no `Display` adapter (a tenth of a short call's time, §11).
        let args = serde_json::to_string(args).map_err(|e| {
            Error::host(
                op.clone(),
                anyhow::Error::from(e).context("writing the arguments' JSON"),
            )
        })?;
        let (n, f) = (name.to_string(), function.to_string());
        let value = self
            .task(
                op.clone(),
                options,
                TaskKind::Plain,
                None,
                Call::Call {
                    name: n,
                    function: f,
                    args,
                },
            )
            .await?;
        json_value(op, value)
    }

    /// The tools of the tool registry exported as `registry`.
    ///
    /// # Errors
    /// [`Error::Script`] when there is no such registry.
    pub async fn list_tools(&self, name: &str, registry: &str) -> Result<Vec<ToolDefinition>> {
        let op: Op = format!("{name}: {registry}.list()").into();
        let target = export_target(name, registry);
        let list = self
            .query(op.clone(), move |store, b| {
                b.marionette_runtime_tools(&mut *store)?
                    .call_list_tools(store, &target)
            })
            .await?;
        convert::tool_definitions(list).map_err(|e| Error::host(op, e))
    }

    /// Runs a tool of the registry exported as `registry`.
    ///
    /// # Errors
    /// As [`run_main`](Self::run_main); a tool that throws is an
    /// [`Error::Script`].
    pub async fn call_tool(
        &self,
        name: &str,
        registry: &str,
        call: &ToolCall,
        options: TaskOptions,
    ) -> Result<Json> {
        let op: Op = format!("{name}: tool {}", call.name).into();
        check_nesting(
            &op,
            format_args!("the arguments of tool {:?}", call.name),
            &call.arguments,
        )?;
        let (target, c) = (
            export_target(name, registry),
            convert::tool_call_to_wit(call),
        );
        let value = self
            .task(
                op.clone(),
                options,
                TaskKind::Plain,
                None,
                Call::ToolsCall {
                    registry: target,
                    call: c,
                    context: "{}".into(),
                },
            )
            .await?;
        json_value(op, value)
    }

    /// Runs the engine exported as `engine` on `turn`.
    ///
    /// # Errors
    /// As [`run_main`](Self::run_main).
    pub async fn infer(
        &self,
        name: &str,
        engine: &str,
        turn: &Turn,
        options: TaskOptions,
    ) -> Result<Turn> {
        let op: Op = format!("{name}: engine {engine}").into();
        check_turn_nesting(&op, turn)?;
        let (target, t) = (export_target(name, engine), convert::turn_to_wit(turn));
        let value = self
            .task(
                op.clone(),
                options,
                TaskKind::Plain,
                None,
                Call::Infer {
                    engine: target,
                    input: t,
                    context: "{}".into(),
                },
            )
            .await?;
        turn_value(op, value)
    }

    /// Runs the middleware exported as `middleware` on `turn`; its
    /// `next(turn)` calls `next`.
    ///
    /// # Errors
    /// As [`run_main`](Self::run_main); an error of `next` reaches the
    /// script as a rejection, which it may catch.
    pub async fn run_middleware(
        &self,
        name: &str,
        middleware: &str,
        turn: &Turn,
        next: NextFn,
        options: TaskOptions,
    ) -> Result<Turn> {
        let op: Op = format!("{name}: middleware {middleware}").into();
        check_turn_nesting(&op, turn)?;
        let (target, t) = (export_target(name, middleware), convert::turn_to_wit(turn));
        let value = self
            .task(
                op.clone(),
                options,
                TaskKind::Plain,
                Some(next),
                Call::MiddlewareRun {
                    middleware: target,
                    input: t,
                    context: "{}".into(),
                },
            )
            .await?;
        turn_value(op, value)
    }

    /// The `next(turn)` of a host middleware the guest awaits as op `op`:
    /// the rest of the script's chain, run in the guest as a new task
    /// (`middleware.next`). Its console lines go to `events`, the sink of
    /// the task that runs the session.
    pub(crate) async fn middleware_next(
        &self,
        op_label: Op,
        op: u64,
        turn: &Turn,
        events: Option<EventSink>,
    ) -> Result<Turn> {
        check_turn_nesting(&op_label, turn)?;
        let t = convert::turn_to_wit(turn);
        let options = TaskOptions {
            events,
            ..TaskOptions::default()
        };
        let value = self
            .task(
                op_label.clone(),
                options,
                TaskKind::Plain,
                None,
                Call::MiddlewareNext { op, input: t },
            )
            .await?;
        turn_value(op_label, value)
    }

    /// Runs the guest's session loop once (`sessions.run`) on `turn`, with
    /// the parts `spec` names (those of the host registered in
    /// `registration`); the run's events and console lines go to `events`.
    /// The task's value: `{turn}`, or `{error, turn}` for a failure of the
    /// loop itself.
    pub(crate) async fn run_session(
        &self,
        op: Op,
        spec: String,
        turn: &Turn,
        events: EventSink,
        timeout: Option<Duration>,
        cancel: CancellationToken,
    ) -> Result<Json> {
        check_turn_nesting(&op, turn)?;
        let t = convert::turn_to_wit(turn);
        let options = TaskOptions {
            events: Some(events),
            timeout,
            cancel: Some(cancel),
        };
        let value = self
            .task(
                op.clone(),
                options,
                TaskKind::Plain,
                None,
                Call::SessionsRun { spec, input: t },
            )
            .await?;
        json_value(op, value)
    }

    /// Registers the host's parts of one session run (see `provided`).
    pub(crate) fn provide(&self) -> provided::Registration {
        self.provided.register()
    }

    /// The engine exported as `engine` by script `name`, as a session part:
    /// it runs in this sandbox, and can sit in a Rust
    /// [`SessionBuilder`](crate::session::SessionBuilder) beside Rust parts.
    pub fn engine(&self, name: &str, engine: &str) -> Arc<dyn crate::session::Engine> {
        Arc::new(parts::JsEngine {
            link: parts::Link::Strong(self.clone()),
            target: export_target(name, engine),
            name: engine.to_string(),
        })
    }

    /// The middleware exported as `middleware` by script `name`, as a
    /// session part (see [`engine`](Self::engine)).
    pub fn middleware(&self, name: &str, middleware: &str) -> Arc<dyn crate::session::Middleware> {
        Arc::new(parts::JsMiddleware {
            link: parts::Link::Strong(self.clone()),
            target: export_target(name, middleware),
            name: middleware.to_string(),
        })
    }

    /// The JavaScript tools of the registry exported as `registry` by script
    /// `name`, as a session part.
    ///
    /// # Errors
    /// [`Error::Script`] when there is no such registry.
    pub async fn tools(
        &self,
        name: &str,
        registry: &str,
    ) -> Result<Arc<dyn crate::session::ToolSet>> {
        let link = parts::Link::Strong(self.clone());
        let tools =
            parts::JsTools::new(link, export_target(name, registry), registry.to_string()).await?;
        Ok(Arc::new(tools))
    }

    /// The tool hooks exported as `hooks` by script `name`, as a session part.
    pub fn hooks(
        &self,
        name: &str,
        hooks: &str,
        fail_open: bool,
    ) -> Arc<dyn crate::session::ToolHooks> {
        Arc::new(parts::JsHooks {
            link: parts::Link::Strong(self.clone()),
            target: export_target(name, hooks),
            fail_open,
        })
    }

    /// What the sandbox holds right now: for monitoring, and for checking
    /// that a long run leaks nothing.
    ///
    /// # Errors
    /// [`Error::Closed`] after shutdown; [`Error::Rejected`] when the queue
    /// is full.
    pub async fn stats(&self) -> Result<SandboxStats> {
        self.runner
            .call("stats", |owner: &mut Owner| owner.stats())
            .await
    }

    /// Measures the script heap, inside the guest (an entry that runs no
    /// JavaScript, and walks the heap: for monitoring and tests, not for
    /// every call). A sandbox without an instance makes one first.
    ///
    /// What it shows that [`Sandbox::stats`] cannot: whether the scripts'
    /// garbage is freed as it goes. QuickJS frees a value when its last
    /// reference goes, except values in a cycle, which wait for the cycle
    /// collector (a pass over the whole heap).
    ///
    /// # Errors
    /// [`Error::Closed`] after shutdown; [`Error::Rejected`] when the queue
    /// is full; [`Error::Trapped`] when the instance traps.
    pub async fn heap_usage(&self) -> Result<HeapUsage> {
        let usage = self
            .query("heap usage".into(), |store, b| {
                b.marionette_runtime_vm(&mut *store)?
                    .call_measure_heap(store)
                    .map(Ok)
            })
            .await?;
        Ok(HeapUsage {
            bytes: usage.bytes,
            objects: usage.objects,
        })
    }

    /// Checks, inside the guest, that every intrinsic is frozen: the
    /// prototypes of all the classes QuickJS has registered and everything
    /// reachable from them. Independent of the roots the lockdown froze
    /// from: it enumerates QuickJS's own class table.
    ///
    /// # Errors
    /// [`Error::Closed`] after shutdown; [`Error::Rejected`] when the queue
    /// is full; [`Error::Trapped`] when the instance traps.
    pub async fn lockdown_report(&self) -> Result<LockdownReport> {
        let report = self
            .query("lockdown report".into(), |store, b| {
                b.marionette_runtime_vm(&mut *store)?
                    .call_check_lockdown(store)
                    .map(Ok)
            })
            .await?;
        Ok(LockdownReport {
            classes: report.classes,
            objects: report.objects,
            unfrozen: report.unfrozen,
        })
    }

    /// Makes the recorded `entries` again, one by one, into fresh
    /// instances, comparing what each returns with what was recorded (a
    /// strict replay, see [`crate::cassette::replay()`]). Runs on the owner
    /// as one job.
    pub(crate) async fn replay_entries(
        &self,
        entries: Vec<crate::cassette::Entry>,
        sources: std::collections::HashMap<String, String>,
        events: Option<EventSink>,
    ) -> Result<std::result::Result<crate::cassette::Replayed, crate::cassette::ReplayError>> {
        self.runner
            .call("replay", move |owner: &mut Owner| {
                owner.replay(&entries, &sources, events)
            })
            .await
    }

    /// Stops the sandbox: refuses new calls, lets queued ones run, then drops
    /// the instance. Calls still waiting for their tasks get
    /// [`Error::Closed`].
    pub async fn shutdown(&self) {
        self.runner.shutdown().await;
    }

    /// Whether new calls are refused.
    pub fn is_closed(&self) -> bool {
        self.runner.is_closed()
    }

    pub(crate) async fn query<R: Send + 'static>(
        &self,
        op: Op,
        f: impl FnOnce(
            &mut wasmtime::Store<runtime::HostState>,
            &exports::Exports,
        ) -> wasmtime::Result<std::result::Result<R, wit::ScriptError>>
        + Send
        + 'static,
    ) -> Result<R> {
        let job_op = op.clone();
        self.runner
            .call(op.clone(), move |owner: &mut Owner| owner.query(job_op, f))
            .await??
            .map_err(|e| Error::Script {
                op,
                error: Box::new(convert::script_error(e)),
            })
    }

    /// Starts a task and waits for it, within the caller's timeout and
    /// cancellation; a caller that stops waiting cancels the task.
    pub(crate) async fn task(
        &self,
        op: Op,
        options: TaskOptions,
        kind: TaskKind,
        next: Option<NextFn>,
        start: Call,
    ) -> Result<wit::Value> {
        let id = self.next_task.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let task = Task {
            op: op.clone(),
            reply: Some(reply),
            events: options.events.clone(),
            next,
            kind,
            cpu: Duration::ZERO,
        };
        let mut guard = CancelOnDrop {
            sandbox: self,
            task: id,
            armed: true,
        };
        let closed_op = op.clone();
        let error_op = op.clone();
        let work = async move {
            self.runner
                .call(op.clone(), move |owner: &mut Owner| {
                    owner.start(id, task, start)
                })
                .await?;
            // The owner dropped the reply unanswered: it stopped (shutdown).
            answer.await.map_err(|_| Error::Closed { op: closed_op })?
        };
        let timeout = async {
            match options.timeout {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let cancelled = async {
            match &options.cancel {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = work => {
                guard.armed = false;
                result
            }
            () = timeout => Err(Error::Timeout { op: error_op, after: options.timeout.unwrap_or_default() }),
            () = cancelled => Err(Error::Canceled { op: error_op, reason: Some("canceled by the caller".into()) }),
        }
    }

    /// Stops task `id`: interrupts its JavaScript if it is running, then
    /// unwinds it in the guest.
    fn cancel_task(&self, id: u64, reason: &'static str) {
        self.interrupts.request(id);
        let runner = self.runner.clone();
        let job = move |owner: &mut Owner| {
            owner.cancel(id, reason);
            Ok(())
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    // Closed: the sandbox is gone, and the task with it.
                    let _ = runner.post_wait("cancel", job).await;
                });
            }
            Err(_) => {
                if let Err(e) = runner.post("cancel", job) {
                    tracing::warn!(task = id, error = %e, "could not cancel a task");
                }
            }
        }
    }
}

/// Cancels the task when the caller stops waiting for it (timeout,
/// cancellation, or the future dropped).
struct CancelOnDrop<'a> {
    sandbox: &'a Sandbox,
    task: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.sandbox
                .cancel_task(self.task, "the caller stopped waiting");
        }
    }
}

fn export_target(script: &str, name: &str) -> wit::Target {
    wit::Target::Export(wit::ExportRef {
        script: script.to_string(),
        name: name.to_string(),
    })
}

/// How deeply JSON that crosses into a script may nest: serde_json, which
/// reads what scripts hand back, stops at 128 levels (deeper would risk the
/// host's stack), and what the host hands a script is held to the same
/// bound, as the guest's `JSON.parse` recurses on the wasm stack: an input
/// some thousands of levels deep would trap the instance, and with it every
/// task in it.
pub const MAX_NESTING: usize = 127;

/// Refuses `value`, which is about to be handed to a script as `what`,
/// when it nests deeper than [`MAX_NESTING`]: [`Error::Limit`] with
/// [`Limit::Output`](crate::Limit::Output), before the guest is entered.
///
/// `what` is put in words only when the value is refused (a call's
/// arguments are checked on every call).
pub(crate) fn check_nesting(op: &Op, what: impl std::fmt::Display, value: &Json) -> Result<()> {
    check_levels(op, what, nesting([value]))
}

/// [`check_nesting`] for each open-ended map of a turn.
pub(crate) fn check_turn_nesting(op: &Op, turn: &Turn) -> Result<()> {
    // A map is one level itself.
    let levels = |map: &serde_json::Map<String, Json>| 1 + nesting(map.values());
    for (i, b) in turn.blocks.iter().enumerate() {
        check_levels(
            op,
            format_args!("turn.blocks[{i}].payload"),
            levels(&b.payload),
        )?;
        check_levels(
            op,
            format_args!("turn.blocks[{i}].metadata"),
            levels(&b.metadata),
        )?;
    }
    check_levels(op, "turn.metadata", levels(&turn.metadata))?;
    check_levels(op, "turn.data", levels(&turn.data))
}

fn check_levels(op: &Op, what: impl std::fmt::Display, levels: usize) -> Result<()> {
    if levels <= MAX_NESTING {
        return Ok(());
    }
    tracing::warn!(%op, %what, levels, "refused JSON nested too deeply for a script");
    Err(Error::Limit {
        op: op.clone(),
        limit: crate::Limit::Output,
        detail: format!(
            "{what} is nested {levels} levels deep; JSON handed to a script may nest at most {MAX_NESTING}"
        ),
    })
}

/// The deepest nesting of arrays and objects among `values` (a scalar is
/// 0). Iterative: a value may be nested far deeper than a stack could
/// follow.
fn nesting<'a>(values: impl IntoIterator<Item = &'a Json>) -> usize {
    let mut deepest = 0;
    let mut pending: Vec<(&Json, usize)> = values.into_iter().map(|v| (v, 0)).collect();
    while let Some((value, above)) = pending.pop() {
        let level = above + 1;
        match value {
            Json::Array(items) => pending.extend(items.iter().map(|v| (v, level))),
            Json::Object(map) => pending.extend(map.values().map(|v| (v, level))),
            _ => continue,
        }
        deepest = deepest.max(level);
    }
    deepest
}

pub(crate) fn json_value(op: Op, value: wit::Value) -> Result<Json> {
    match value {
        wit::Value::Json(text) => {
            // JavaScript's JSON, made well-formed by the guest.
            serde_json::from_str(&text).map_err(|e| {
                // serde_json refuses nesting past 128 levels (deeper would risk
                // the host's stack): a limit of the result's shape, not a fault.
                if e.to_string().starts_with("recursion limit exceeded") {
                    Error::Limit {
                        op,
                        limit: crate::Limit::Output,
                        detail: "the result is nested deeper than 128 levels".into(),
                    }
                } else {
                    Error::host(
                        op,
                        anyhow::Error::new(e).context("the task's result is not valid JSON"),
                    )
                }
            })
        }
        wit::Value::Turn(_) | wit::Value::HttpResponse(_) => Err(Error::host(
            op,
            anyhow::anyhow!("the guest returned something other than JSON where JSON was expected"),
        )),
    }
}

pub(crate) fn turn_value(op: Op, value: wit::Value) -> Result<Turn> {
    match value {
        wit::Value::Turn(turn) => convert::turn_from_wit(turn)
            .map_err(|e| Error::host(op, e.context("decoding the guest's turn"))),
        wit::Value::Json(_) | wit::Value::HttpResponse(_) => Err(Error::host(
            op,
            anyhow::anyhow!(
                "the guest returned something other than a turn where a turn was expected"
            ),
        )),
    }
}

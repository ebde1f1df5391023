//! What every sandbox shares: the engine, the compiled component, the linker
//! and the pre-instantiated world. Built once, cheaply cloned; only a
//! sandbox's owner thread ever touches a `Store`.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{Config, Engine, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::exports::marionette::runtime::vm::{Determinism, TaskCaps, VmConfig};
use crate::bindings::marionette::runtime::host;
use crate::bindings::marionette::runtime::types::{LogLevel, Stop};
use crate::bindings::{Marionette, MarionettePre};

use super::exports::{ExportIndices, Exports};
use crate::policy::Policy;

use super::bytecode::{BytecodeCache, BytecodeStats, Unit};
use super::engine_config::engine_config;
use crate::bindings::exports::marionette::runtime::script::{CompiledModule, ModuleSource};

/// The guest component, built, booted and snapshotted by `build.rs` and
/// embedded in the binary: every instance starts with its VM booted.
pub(crate) static GUEST_WASM: &[u8] = include_bytes!(env!("MARIONETTE_GUEST_WASM"));

/// [`GUEST_WASM`] compiled by `build.rs` for the engine settings of
/// [`engine_config`] without fuel; empty when the build made none.
static GUEST_PRECOMPILED: &[u8] = include_bytes!(env!("MARIONETTE_GUEST_CWASM"));

/// How often the epoch advances: the resolution of the hard CPU stop.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Configuration of the shared [`Runtime`]: what must be fixed per engine.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Bytes of native wasm stack a guest entry may use; deeper recursion
    /// traps (and the instance is rebuilt).
    pub max_wasm_stack: usize,
    /// Cache compiled code on disk (wasmtime's cache, in the user's cache
    /// folder). The embedded guest comes precompiled and needs no cache;
    /// this serves a runtime that compiles: one that meters fuel, one made
    /// [`from_component`](Runtime::from_component), or one whose machine
    /// does not fit the precompiled code.
    pub disk_cache: bool,
    /// Meter fuel, for policies with
    /// [`Policy::entry_fuel`](crate::Policy::entry_fuel). The guest runs
    /// slower with it, whether a policy uses fuel or not.
    pub fuel: bool,
    /// Allocate instances from wasmtime's pooling allocator, with room for
    /// this many instances at once ([`DEFAULT_POOLED_INSTANCES`] by
    /// default; `None`: each instance is allocated when made). A pooled
    /// instance reuses the memory mapping its slot's last instance left,
    /// reset to the snapshot in place, so it is made several times faster
    /// than one on demand (docs/architecture.md §10). The pool reserves its
    /// address space when the runtime is made (4 GiB and a guard per slot,
    /// no memory), and each slot keeps resident, for the next instance, the
    /// pages its last one wrote. Past its room, [`pool_full`](Self::pool_full)
    /// says what happens. A sandbox holds one instance; loading a script
    /// new to the runtime's bytecode cache takes another for a moment.
    pub pooled_instances: Option<u32>,
    /// What an instance gets when the pool is full, or when the pool could
    /// not be reserved at all (an address-space limit): see [`PoolFull`].
    pub pool_full: PoolFull,
    /// Bytes of QuickJS bytecode (and the sources it is keyed by) kept for
    /// the scripts this runtime's sandboxes load, so that a script loaded
    /// again (into another sandbox, or after a trap) is not compiled again
    /// (0: none). See [`Runtime::bytecode_stats`].
    pub bytecode_cache: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            max_wasm_stack: 1 << 20,
            disk_cache: true,
            fuel: false,
            pooled_instances: Some(DEFAULT_POOLED_INSTANCES),
            pool_full: PoolFull::OnDemand,
            bytecode_cache: 64 << 20,
        }
    }
}

/// The room of a runtime's instance pool by default
/// ([`RuntimeOptions::pooled_instances`]): about 400 GiB of address space
/// reserved, no memory; the sandboxes a busy service keeps at once, most
/// often, and past it instances are made on demand.
pub const DEFAULT_POOLED_INSTANCES: u32 = 100;

/// What a pooled runtime does for an instance past its pool's room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolFull {
    /// Allocate it on demand, as a runtime without a pool does. The runtime
    /// makes a second engine for such instances when it first needs one
    /// (the compiled guest loaded again for it, a few milliseconds); a
    /// runtime whose pool could not be reserved makes every instance so.
    #[default]
    OnDemand,
    /// Refuse it: the sandbox is not made ([`Error::Host`](crate::Error::Host)),
    /// a sandbox being rebuilt after a trap stays broken until a slot is
    /// free. For a host that wants the pool's room to be a hard cap.
    Refuse,
}

/// The engine and the compiled guest, shared by every sandbox made from it.
pub struct Runtime {
    /// Where instances are made: pooled, unless the runtime has no pool.
    lane: Lane,
    /// Instances past a full pool ([`PoolFull::OnDemand`]): an engine of
    /// its own, made at the first.
    overflow: Option<Overflow>,
    fuel: bool,
    origin: GuestOrigin,
    bytecode: BytecodeCache,
}

/// An engine and the guest compiled and linked for it. The allocator is a
/// setting of the engine, so a pooled runtime that also makes instances on
/// demand has two.
struct Lane {
    engine: Engine,
    component: Component,
    pre: MarionettePre<HostState>,
    /// Where the guest's exports are, for [`Exports`].
    exports: Arc<ExportIndices>,
    pooled: bool,
}

/// The on-demand lane of a pooled runtime, made when an instance first
/// finds the pool full.
struct Overflow {
    options: RuntimeOptions,
    lane: Mutex<Option<Arc<Lane>>>,
}

/// Where a runtime's compiled guest came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestOrigin {
    /// The code the build precompiled, loaded as it is.
    Precompiled,
    /// Compiled when the runtime was made (or taken from wasmtime's disk
    /// cache), with the reason the precompiled code was not used.
    Compiled(String),
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Compiles the embedded guest component with `options`.
    ///
    /// # Errors
    /// When the engine cannot be configured or the component does not compile
    /// or link (a host built against another WIT).
    pub fn new(options: &RuntimeOptions) -> anyhow::Result<Arc<Runtime>> {
        let (engine, options) = Self::new_engine(options)?;
        let options = &options;
        let (component, origin) = if GUEST_PRECOMPILED.is_empty() {
            let why =
                "this build made no precompiled guest (cross-compiled, or MARIONETTE_NO_SNAPSHOT)";
            let component =
                Component::new(&engine, GUEST_WASM).context("compiling the guest component")?;
            (component, GuestOrigin::Compiled(why.into()))
        } else {
            // SAFETY: the bytes are what `Engine::precompile_component` made
            // in this crate's build script, embedded unchanged; wasmtime
            // checks that they fit this engine (version, settings, CPU)
            // before using them.
            match unsafe { Component::deserialize(&engine, GUEST_PRECOMPILED) } {
                Ok(component) => (component, GuestOrigin::Precompiled),
                Err(e) => {
                    let why = format!("the precompiled guest does not fit this engine: {e:#}");
                    if !options.fuel {
                        // Only fuel is expected to differ (the build
                        // precompiles without it).
                        tracing::warn!("{why}; compiling the guest instead");
                    }
                    let component = Component::new(&engine, GUEST_WASM)
                        .context("compiling the guest component")?;
                    (component, GuestOrigin::Compiled(why))
                }
            }
        };
        Self::with_component(engine, component, origin, options)
    }

    /// The process-wide runtime with default options, compiled on first use.
    ///
    /// # Errors
    /// As [`Runtime::new`]; a failure is not cached.
    pub fn shared() -> anyhow::Result<Arc<Runtime>> {
        static SHARED: OnceLock<Arc<Runtime>> = OnceLock::new();
        Self::shared_in(&SHARED, RuntimeOptions::default())
    }

    /// The process-wide runtime that meters fuel, compiled on first use;
    /// what [`Sandbox::new`](crate::Sandbox::new) uses for a policy with
    /// [`Policy::entry_fuel`](crate::Policy::entry_fuel).
    ///
    /// # Errors
    /// As [`Runtime::new`]; a failure is not cached.
    pub fn shared_with_fuel() -> anyhow::Result<Arc<Runtime>> {
        static SHARED: OnceLock<Arc<Runtime>> = OnceLock::new();
        Self::shared_in(
            &SHARED,
            RuntimeOptions {
                fuel: true,
                ..RuntimeOptions::default()
            },
        )
    }

    fn shared_in(
        cell: &OnceLock<Arc<Runtime>>,
        options: RuntimeOptions,
    ) -> anyhow::Result<Arc<Runtime>> {
        if let Some(rt) = cell.get() {
            return Ok(rt.clone());
        }
        let rt = Runtime::new(&options)?;
        Ok(cell.get_or_init(|| rt).clone())
    }

    /// Whether this runtime meters fuel.
    pub fn meters_fuel(&self) -> bool {
        self.fuel
    }

    /// The engine, for a host that drives the guest itself (its own linker
    /// and store) on the same compiled code, as the benchmarks do: the
    /// pooled one when the runtime has a pool.
    pub fn engine(&self) -> &Engine {
        &self.lane.engine
    }

    /// The compiled guest component (see [`Runtime::engine`]).
    pub fn component(&self) -> &Component {
        &self.lane.component
    }

    /// Whether this runtime's instances come from a pool first (see
    /// [`RuntimeOptions::pooled_instances`]): false without one, or when
    /// the pool could not be reserved.
    pub fn pooled(&self) -> bool {
        self.lane.pooled
    }

    /// Where this runtime's compiled guest came from: the build's
    /// precompiled code, or a compilation (and why).
    pub fn origin(&self) -> &GuestOrigin {
        &self.origin
    }

    /// Compiles a guest component given as bytes (the embedded one, or a
    /// build of `guest/` elsewhere).
    ///
    /// # Errors
    /// As [`Runtime::new`].
    pub fn from_component(wasm: &[u8], options: &RuntimeOptions) -> anyhow::Result<Arc<Runtime>> {
        let (engine, options) = Self::new_engine(options)?;
        let options = &options;
        let component = Component::new(&engine, wasm).context("compiling the guest component")?;
        let origin = GuestOrigin::Compiled("made from a component given as bytes".into());
        Self::with_component(engine, component, origin, options)
    }

    /// The engine for `options`: [`engine_config`] plus the settings that
    /// change nothing in compiled code; with the options it was made with
    /// (without its pool when the pool could not be reserved and
    /// [`PoolFull::OnDemand`] allows instances on demand).
    fn new_engine(options: &RuntimeOptions) -> anyhow::Result<(Engine, RuntimeOptions)> {
        match Self::try_engine(options) {
            Err(e)
                if options.pooled_instances.is_some()
                    && options.pool_full == PoolFull::OnDemand =>
            {
                tracing::warn!(
                    "the instance pool could not be reserved ({e:#}); every instance is made on demand"
                );
                let on_demand = RuntimeOptions {
                    pooled_instances: None,
                    ..options.clone()
                };
                Ok((Self::try_engine(&on_demand)?, on_demand))
            }
            made => Ok((made?, options.clone())),
        }
    }

    fn try_engine(options: &RuntimeOptions) -> anyhow::Result<Engine> {
        let mut config: Config = engine_config(options.fuel);
        config.max_wasm_stack(options.max_wasm_stack);
        // For profiling the guest with `perf`: `MARIONETTE_PROFILE=perfmap`
        // writes the compiled wasm functions' addresses to
        // /tmp/perf-PID.map, where perf looks for them (README,
        // "Profiling the guest").
        match std::env::var("MARIONETTE_PROFILE").as_deref() {
            Ok("perfmap") => {
                config.profiler(wasmtime::ProfilingStrategy::PerfMap);
            }
            Ok(other) => tracing::warn!(
                value = other,
                "MARIONETTE_PROFILE is not perfmap (the one strategy this build has): no profiling"
            ),
            Err(_) => {}
        }
        if let Some(instances) = options.pooled_instances {
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(
                pooling_config(instances),
            ));
        }
        if options.disk_cache {
            match wasmtime::Cache::from_file(None) {
                Ok(cache) => {
                    config.cache(Some(cache));
                }
                Err(e) => tracing::debug!("wasmtime's compilation cache is off: {e:#}"),
            }
        }
        Ok(Engine::new(&config).context("configuring wasmtime")?)
    }

    fn with_component(
        engine: Engine,
        component: Component,
        origin: GuestOrigin,
        options: &RuntimeOptions,
    ) -> anyhow::Result<Arc<Runtime>> {
        let pooled = options.pooled_instances.is_some();
        let overflow = (pooled && options.pool_full == PoolFull::OnDemand).then(|| Overflow {
            options: RuntimeOptions {
                pooled_instances: None,
                ..options.clone()
            },
            lane: Mutex::new(None),
        });
        Ok(Arc::new(Runtime {
            lane: Lane::new(engine, component, pooled)?,
            overflow,
            fuel: options.fuel,
            origin,
            bytecode: BytecodeCache::new(options.bytecode_cache),
        }))
    }

    /// What this runtime's bytecode cache did so far.
    pub fn bytecode_stats(&self) -> BytecodeStats {
        self.bytecode.stats()
    }

    #[cfg(test)]
    pub(crate) fn bytecode_cache(&self) -> &BytecodeCache {
        &self.bytecode
    }

    /// The bytecode of `unit` for a load under `policy`: from the cache, or
    /// compiled now on an instance of its own and kept; `None` when the
    /// cache is off or no bytecode could be made (the load compiles the
    /// source, and reports what is wrong with it).
    pub(crate) fn bytecode_for(
        &self,
        policy: &Policy,
        unit: &Unit<'_>,
    ) -> Option<Arc<[CompiledModule]>> {
        if !self.bytecode.enabled() {
            return None;
        }
        let modules = match self.bytecode.get(unit) {
            Some(modules) => modules,
            None => self.bytecode.insert(unit, self.compile(policy, unit)),
        };
        (!modules.is_empty()).then_some(modules)
    }

    /// Compiles `unit` on a fresh instance that runs nothing else, then
    /// drops it (see [`super::bytecode`]); nothing when that fails.
    fn compile(&self, policy: &Policy, unit: &Unit<'_>) -> Vec<CompiledModule> {
        let config = vm_config(policy, &Provides::default());
        let compiled = self
            .instantiate_with(policy, &config)
            .and_then(|(mut store, b)| {
                store.data_mut().entry = EntryState {
                    deadline: Some(Instant::now() + policy.entry_deadline),
                    late: Late::Compiling,
                    interrupted: false,
                };
                let modules: Vec<ModuleSource> = unit
                    .modules()
                    .map(|(path, source)| ModuleSource {
                        path: path.to_string(),
                        source: source.to_string(),
                    })
                    .collect();
                Ok(b.marionette_runtime_script(&mut store)?.call_compile(
                    &mut store,
                    unit.entry(),
                    &modules,
                    unit.checked(),
                )?)
            });
        compiled.unwrap_or_else(|e| {
            tracing::debug!(script = unit.entry(), "no bytecode for the script: {e:#}");
            Vec::new()
        })
    }

    /// A fresh instance in a fresh store, limited by `policy` and
    /// configured with `config` ([`vm_config`], or a replay's recorded one).
    pub(crate) fn instantiate_with(
        &self,
        policy: &Policy,
        config: &VmConfig,
    ) -> anyhow::Result<(Store<HostState>, Exports)> {
        if policy.entry_fuel.is_some() && !self.fuel {
            anyhow::bail!(
                "the policy sets entry_fuel, but this runtime does not meter fuel (build it with RuntimeOptions {{ fuel: true, .. }}, or use Runtime::shared_with_fuel)"
            );
        }
        let (mut store, bindings) = match self.instantiate_on(&self.lane, policy) {
            Err(e)
                if self.overflow.is_some()
                    && e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                        .is_some() =>
            {
                let lane = self.overflow_lane()?;
                self.instantiate_on(&lane, policy)
            }
            made => made,
        }
        .context("instantiating the guest")?;
        bindings
            .marionette_runtime_vm(&mut store)?
            .call_configure(&mut store, config)
            .context("configuring the guest")?;
        Ok((store, bindings))
    }

    /// A store and an instance on `lane`, not yet configured.
    fn instantiate_on(
        &self,
        lane: &Lane,
        policy: &Policy,
    ) -> wasmtime::Result<(Store<HostState>, Exports)> {
        let mut store = Store::new(&lane.engine, HostState::new(policy));
        if self.fuel {
            // Topped up before every entry; instantiation runs no script.
            store.set_fuel(policy.entry_fuel.unwrap_or(u64::MAX))?;
        }
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(policy.entry_deadline * 2));
        let instance = lane.pre.instance_pre().instantiate(&mut store)?;
        Ok((store, Exports::new(instance, lane.exports.clone())))
    }

    /// The lane for instances past a full pool, made the first time: an
    /// engine without a pool, and the compiled guest loaded into it (the
    /// code the pooled engine runs, which fits: only the allocator differs).
    fn overflow_lane(&self) -> anyhow::Result<Arc<Lane>> {
        let overflow = self
            .overflow
            .as_ref()
            .expect("a runtime with an overflow lane");
        let mut slot = overflow.lane.lock().expect("the overflow lane's lock");
        if let Some(lane) = slot.as_ref() {
            return Ok(lane.clone());
        }
        tracing::debug!("the instance pool is full: making instances on demand from now on");
        let engine = Self::try_engine(&overflow.options)?;
        let code = self
            .lane
            .component
            .serialize()
            .context("taking the compiled guest for the on-demand engine")?;
        // SAFETY: the bytes are this runtime's own compiled guest, just
        // serialized by wasmtime; wasmtime checks that they fit the engine.
        let component = unsafe { Component::deserialize(&engine, &code) }
            .context("loading the compiled guest into the on-demand engine")?;
        let lane = Arc::new(Lane::new(engine, component, false)?);
        *slot = Some(lane.clone());
        Ok(lane)
    }
}

impl Lane {
    fn new(engine: Engine, component: Component, pooled: bool) -> anyhow::Result<Lane> {
        let mut linker = Linker::<HostState>::new(&engine);
        // WASI is linked because the guest's standard library imports it; the
        // context behind it grants nothing (see `HostState::new`).
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).context("linking WASI")?;
        Marionette::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .context("linking the host interface")?;
        let pre = MarionettePre::new(
            linker
                .instantiate_pre(&component)
                .context("pre-instantiating the guest")?,
        )
        .context("checking the guest's exports")?;
        let exports = Arc::new(
            ExportIndices::new(pre.instance_pre()).context("checking the guest's exports")?,
        );
        spawn_epoch_ticker(&engine);
        Ok(Lane {
            engine,
            component,
            pre,
            exports,
            pooled,
        })
    }
}

/// Core instances, memories and tables of one guest instance, at most: the
/// component's own (its module, the WASI adapter and their shims), with room.
const CORE_INSTANCES_PER_GUEST: u32 = 8;
/// The guest's module has one memory (QuickJS's heap and the Rust
/// runtime's); each slot reserves 4 GiB and a guard of address space.
const MEMORIES_PER_GUEST: u32 = 1;
const TABLES_PER_GUEST: u32 = 4;

/// Bytes of a pooled memory (or table) reset in place when its instance is
/// dropped, rather than unmapped: more than the snapshot's initial linear
/// memory (41 pages, 2 624 KiB), so that the next instance of the slot
/// takes no page fault on the pages the last one wrote. With the kernel's
/// `PAGEMAP_SCAN` (Linux 6.7) only the pages written are copied back from
/// the image (at most 32 runs of them; the rest is unmapped as without
/// this) and the pages only read stay shared; without it, wasmtime copies
/// the whole image back, which makes every page of it private to the slot.
/// docs/architecture.md §10 has the figures of each.
const POOL_KEEP_RESIDENT: usize = 4 << 20;

/// wasmtime's pooling allocator with room for `instances` guests.
fn pooling_config(instances: u32) -> wasmtime::PoolingAllocationConfig {
    let instances = instances.max(1);
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.linear_memory_keep_resident(POOL_KEEP_RESIDENT)
        .table_keep_resident(POOL_KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_GUEST))
        .total_memories(instances.saturating_mul(MEMORIES_PER_GUEST))
        .total_tables(instances.saturating_mul(TABLES_PER_GUEST))
        .max_core_instances_per_component(CORE_INSTANCES_PER_GUEST)
        .max_memories_per_component(MEMORIES_PER_GUEST)
        .max_tables_per_component(TABLES_PER_GUEST);
    pool
}

/// The guest's configuration under `policy`, offering `provides`.
pub(crate) fn vm_config(policy: &Policy, provides: &Provides) -> VmConfig {
    VmConfig {
        memory_limit: policy.quickjs_memory_limit(),
        gc_threshold: 0,
        task_caps: TaskCaps {
            console_lines: policy.max_console_lines,
            console_bytes: policy.max_console_bytes,
            pending_ops: policy.max_pending_ops,
        },
        host_engines: provides.engines.clone(),
        host_middlewares: provides.middlewares.clone(),
        host_tools: provides
            .tools
            .iter()
            .map(
                |t| crate::bindings::marionette::runtime::types::ToolDefinition {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    parameters: t.parameters.to_string(),
                },
            )
            .collect(),
        determinism: policy.determinism.map(|d| Determinism {
            seed: d.seed,
            start_ms: d.start_ms,
        }),
    }
}

/// What the host offers scripts by name: `engines.host(name)`,
/// `middlewares.host(name)`, `registry.useHostTools(names)`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Provides {
    pub(crate) engines: Vec<String>,
    pub(crate) middlewares: Vec<String>,
    pub(crate) tools: Vec<crate::model::ToolDefinition>,
}

/// Epoch ticks covering `d` (at least one more than needed).
pub(crate) fn deadline_ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()) as u64 + 1
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while the engine lives.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("marionette-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// Linear memory bounded by the policy, remembering whether it said no (so a
/// trap that follows is reported as the memory limit, not as a mystery).
pub(crate) struct MemoryLimiter {
    limit: usize,
    pub(crate) denied: bool,
    /// Bytes of linear memory granted so far.
    pub(crate) size: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.denied = true;
            tracing::warn!(limit = self.limit, desired, "guest memory limit reached");
            return Ok(false);
        }
        self.size = desired;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// Which CPU deadline an entry runs under: put in words only when it stops
/// something (every entry sets one; few reach it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Late {
    /// The policy's deadline per entry.
    Entry(Duration),
    /// What is left of the task's deadline over all its entries.
    Run(Duration),
    /// Compiling a script apart (see `Runtime::compile`).
    Compiling,
}

impl Default for Late {
    fn default() -> Self {
        Late::Entry(Duration::ZERO)
    }
}

impl Late {
    /// The detail of the `deadline` stop.
    pub(crate) fn detail(self) -> String {
        match self {
            Late::Entry(d) => format!(
                "the script ran for more than {}ms without waiting for the host",
                d.as_millis()
            ),
            Late::Run(d) => format!(
                "the task used more than {}ms of CPU time in the guest over all its entries",
                d.as_millis()
            ),
            Late::Compiling => "compiling the script took too long".into(),
        }
    }
}

/// What the current entry into the guest is, for `should-interrupt`.
#[derive(Default)]
pub(crate) struct EntryState {
    /// When JavaScript must stop (the soft CPU deadline).
    pub(crate) deadline: Option<Instant>,
    /// Why, when it does (the detail of the `deadline` stop).
    pub(crate) late: Late,
    /// Set when `should-interrupt` said yes during this entry.
    pub(crate) interrupted: bool,
}

/// The data of a sandbox's store.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: MemoryLimiter,
    pub(crate) entry: EntryState,
    /// The tasks callers asked to stop; shared with the handles.
    pub(crate) interrupt: Option<Arc<super::owner::Interrupts>>,
    /// Compiled tool schemas, for `validate-arguments`.
    schemas: crate::schema::SchemaCache,
    /// Who reads session events (`wants-session-events`): every task's
    /// when `all_session_events` (a recording or a replay, the default),
    /// otherwise those of the tasks in `listening` (their callers asked
    /// for events; the owner keeps the set).
    pub(crate) all_session_events: bool,
    pub(crate) listening: std::collections::HashSet<u64>,
}

impl HostState {
    fn new(policy: &Policy) -> Self {
        HostState {
            // Deny by default: no arguments, environment, preopened folders,
            // network or inherited stdio. Clocks and random stay (QuickJS's
            // Date and Math.random).
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            limits: MemoryLimiter {
                limit: usize::try_from(policy.memory_limit).unwrap_or(usize::MAX),
                denied: false,
                size: 0,
            },
            entry: EntryState::default(),
            interrupt: None,
            schemas: crate::schema::SchemaCache::default(),
            all_session_events: true,
            listening: std::collections::HashSet::new(),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        match level {
            LogLevel::Debug => tracing::debug!(target: "marionette::guest", "{message}"),
            LogLevel::Info => tracing::info!(target: "marionette::guest", "{message}"),
            LogLevel::Warn => tracing::warn!(target: "marionette::guest", "{message}"),
            LogLevel::Error => tracing::error!(target: "marionette::guest", "{message}"),
        }
    }

    fn should_interrupt(&mut self, task: u64) -> Option<Stop> {
        let asked = self.interrupt.as_ref().is_some_and(|i| i.asked(task));
        let late = self.entry.deadline.is_some_and(|d| Instant::now() >= d);
        let stop = if asked {
            Stop::Cancel("canceled by the caller".into())
        } else if late {
            Stop::Deadline(self.entry.late.detail())
        } else {
            return None;
        };
        self.entry.interrupted = true;
        Some(stop)
    }

    fn wants_session_events(&mut self, task: u64) -> bool {
        // The debug log shows every session event (owner.rs, `deliver`).
        self.all_session_events
            || self.listening.contains(&task)
            || tracing::enabled!(tracing::Level::DEBUG)
    }

    fn validate_arguments(&mut self, schema: String, arguments: String) -> Result<(), String> {
        self.schemas.check(&schema, &arguments)
    }
}

impl crate::bindings::marionette::runtime::types::Host for HostState {}

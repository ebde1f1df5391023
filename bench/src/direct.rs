//! The guest component driven directly: wasmtime on the calling thread, no
//! runner, no sandbox, no tokio.
//!
//! This is the floor under [`marionette::Sandbox`]: the same compiled
//! component on the same engine as a sandbox's [`marionette::Runtime`]
//! (the precompiled snapshot of the guest), so the generated code is the
//! same and the difference between the two paths is the host's plumbing. What it leaves out: the owner thread
//! and its queue, the task table, the per-entry CPU deadline (a clock read
//! and an epoch deadline per entry), the memory limiter, `should-interrupt`'s
//! clock read (here a constant `false`) and the conversion of the result
//! into [`marionette::Error`]s.
//!
//! It serves only tasks that settle within their first entry: a function
//! that awaits the host (a timer) is an error here.

use anyhow::bail;
use serde_json::Value as Json;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use bindings::exports::marionette::runtime::vm::{TaskCaps, VmConfig};
use bindings::exports::marionette::runtime::{script, tasks, vm};
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
    /// Where the two interfaces the benchmarks use are: each instance
    /// checks only those (as a sandbox checks an interface at its first
    /// use, not all eight when it is made).
    vm: Arc<vm::GuestIndices>,
    script: Arc<script::GuestIndices>,
    tasks: Arc<tasks::GuestIndices>,
    /// Holds the engine's epoch ticker and the compiled component.
    runtime: Arc<marionette::Runtime>,
}

impl DirectRuntime {
    /// The embedded guest, as [`marionette::Runtime::new`] loads it with
    /// the default options (the precompiled snapshot; instances from
    /// wasmtime's pooling allocator, whose slots keep their memory
    /// mappings from one instance to the next).
    ///
    /// # Errors
    /// When the component does not load or link.
    pub fn new() -> anyhow::Result<DirectRuntime> {
        Self::on(marionette::Runtime::new(
            &marionette::RuntimeOptions::default(),
        )?)
    }

    /// As [`DirectRuntime::new`], with each instance allocated when it is
    /// made ([`marionette::RuntimeOptions::pooled_instances`] `None`): what
    /// an instance past a full pool costs.
    ///
    /// # Errors
    /// When the component does not load or link.
    pub fn on_demand() -> anyhow::Result<DirectRuntime> {
        Self::on(marionette::Runtime::new(&marionette::RuntimeOptions {
            pooled_instances: None,
            ..marionette::RuntimeOptions::default()
        })?)
    }

    /// The guest as its build made it, before its snapshot: its VM boots in
    /// its first entry. Compiled here (wasmtime's disk cache helps after
    /// the first time).
    ///
    /// # Errors
    /// When the component does not compile or link.
    pub fn as_built() -> anyhow::Result<DirectRuntime> {
        let wasm = std::fs::read(env!("MARIONETTE_GUEST_AS_BUILT"))
            .context("reading the guest as built")?;
        Self::on(marionette::Runtime::from_component(
            &wasm,
            &marionette::RuntimeOptions::default(),
        )?)
    }

    /// The guest of `runtime`, driven directly (with its engine's settings:
    /// a pooling allocator, say).
    ///
    /// # Errors
    /// When the component does not link.
    pub fn on(runtime: Arc<marionette::Runtime>) -> anyhow::Result<DirectRuntime> {
        let engine = runtime.engine().clone();
        let component = runtime.component();
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).context("linking WASI")?;
        Marionette::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .context("linking the host interface")?;
        // `log` again, with the fuel used when it was called (on a runtime
        // that meters fuel), kept for `take_marks` once `keep_marks` asked.
        linker.allow_shadowing(true);
        linker
            .instance("marionette:runtime/host@0.1.0")?
            .func_wrap(
                "log",
                |mut store: wasmtime::StoreContextMut<'_, State>,
                 (_level, message): (LogLevel, String)| {
                    let used = store.get_fuel().map_or(0, |left| u64::MAX - left);
                    store.data_mut().mark(message, used);
                    Ok(())
                },
            )?;
        let pre = MarionettePre::new(linker.instantiate_pre(component)?)
            .context("pre-instantiating the guest")?;
        Ok(DirectRuntime {
            engine,
            vm: Arc::new(vm::GuestIndices::new(pre.instance_pre())?),
            script: Arc::new(script::GuestIndices::new(pre.instance_pre())?),
            tasks: Arc::new(tasks::GuestIndices::new(pre.instance_pre())?),
            pre,
            runtime,
        })
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
                session_events: false,
                marks: None,
            },
        );
        store.set_epoch_deadline(NO_DEADLINE);
        // Asked only of an engine that meters fuel: another refuses it with
        // an error, which (with `RUST_BACKTRACE` set) captures a backtrace,
        // a fifth of what a pooled instance costs.
        if self.runtime.meters_fuel() {
            store.set_fuel(u64::MAX)?;
        }
        let instance = self
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .context("instantiating")?;
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
        self.vm
            .load(&mut store, &instance)?
            .call_configure(&mut store, &config)
            .context("configuring the guest")?;
        Ok(DirectGuest {
            store,
            instance,
            indices: self.script.clone(),
            script: None,
            tasks_indices: self.tasks.clone(),
            next_task: 1,
        })
    }
}

/// One guest instance, called on the current thread.
pub struct DirectGuest {
    store: Store<State>,
    instance: wasmtime::component::Instance,
    indices: Arc<script::GuestIndices>,
    /// The `script` interface, checked at its first use.
    script: Option<script::Guest>,
    tasks_indices: Arc<tasks::GuestIndices>,
    next_task: u64,
}

impl DirectGuest {
    /// Loads `source` as the module `name`.
    ///
    /// # Errors
    /// A script error, a trap, or a top level that awaits the host.
    pub fn load(&mut self, name: &str, source: &str) -> anyhow::Result<()> {
        let task = self.task();
        let effects = self
            .script()?
            .call_load(&mut self.store, task, name, source)?;
        settle(task, effects).map(drop)
    }

    /// Calls the exported `function` of script `name` with `args` and
    /// returns its JSON result: the arguments are serialized and the result
    /// parsed exactly as [`marionette::Sandbox::call`] does.
    ///
    /// # Errors
    /// A script error, a trap, or a function that awaits the host.
    pub fn call(&mut self, name: &str, function: &str, args: &[Json]) -> anyhow::Result<Json> {
        self.call_text(name, function, &serde_json::to_string(args)?)
    }

    /// [`DirectGuest::call`] with the arguments as the guest takes them:
    /// the text of a JSON array, which may hold what `serde_json` cannot
    /// (a lone surrogate's escape, a number beyond f64's range).
    ///
    /// # Errors
    /// A script error, a trap, or a function that awaits the host.
    pub fn call_text(&mut self, name: &str, function: &str, args: &str) -> anyhow::Result<Json> {
        Ok(serde_json::from_str(&self.call_raw(name, function, args)?)?)
    }

    /// [`DirectGuest::call_text`] returning the result's JSON text as the
    /// guest wrote it.
    ///
    /// # Errors
    /// A script error, a trap, or a function that awaits the host.
    pub fn call_raw(&mut self, name: &str, function: &str, args: &str) -> anyhow::Result<String> {
        let task = self.task();
        let effects = self
            .script()?
            .call_call(&mut self.store, task, name, function, args)?;
        json_text(function, settle(task, effects)?)
    }

    /// As [`DirectGuest::call`], for a function that awaits timers: each
    /// `sleep` it asks for is answered at once, the shortest first (then in
    /// the order asked), as if time jumped to it, until the task is done.
    /// Any other request is an error. Each answer is an entry of its own,
    /// marked `(resume)` among the marks kept (`keep_marks`).
    ///
    /// # Errors
    /// A script error, a trap, or a request other than a sleep.
    pub fn call_with_timers(
        &mut self,
        name: &str,
        function: &str,
        args: &[Json],
    ) -> anyhow::Result<Json> {
        let task = self.task();
        let args = serde_json::to_string(args)?;
        let mut effects = self
            .script()?
            .call_call(&mut self.store, task, name, function, &args)?;
        // (ms, order asked, op)
        let mut sleeps: Vec<(u64, u64, u64)> = Vec::new();
        let mut asked = 0;
        loop {
            for effect in effects {
                match effect {
                    Effect::Done(done) if done.task == task => {
                        let text = json_text(function, outcome(task, done.outcome)?)?;
                        return Ok(serde_json::from_str(&text)?);
                    }
                    Effect::Request(r) => match r.what {
                        bindings::marionette::runtime::types::HostOp::Sleep(ms) => {
                            asked += 1;
                            sleeps.push((ms, asked, r.op));
                        }
                        _ => bail!("task {task} asked the host for more than a timer"),
                    },
                    Effect::Release(op) => sleeps.retain(|s| s.2 != op),
                    _ => {}
                }
            }
            let Some(next) = sleeps.iter().min().copied() else {
                bail!("task {task} waits for nothing and is not done");
            };
            sleeps.retain(|s| *s != next);
            // Where each entry starts, among the marks a probe keeps.
            let used = self.fuel_used().unwrap_or(0);
            self.store.data_mut().mark("(resume)".into(), used);
            let tasks = self.tasks_indices.load(&mut self.store, &self.instance)?;
            effects =
                tasks.call_resume(&mut self.store, next.2, &Ok(Value::Json("null".into())))?;
        }
    }

    /// `script.offer-bytecode` with nothing to offer: the cheapest entry
    /// the guest has (an empty list lowered, no result, no post-return, no
    /// JavaScript), so its time is the floor of a call into the component.
    ///
    /// # Errors
    /// A trap.
    pub fn offer_nothing(&mut self) -> anyhow::Result<()> {
        self.script()?.call_offer_bytecode(&mut self.store, &[])?;
        Ok(())
    }

    /// The fuel the instance has used so far, on a runtime that meters
    /// fuel (`RuntimeOptions::fuel`): wasmtime's exact count of the guest's
    /// work, the same on every run and every machine. `None` otherwise.
    pub fn fuel_used(&self) -> Option<u64> {
        self.store.get_fuel().ok().map(|left| u64::MAX - left)
    }

    /// From now on, keeps what the guest logs (its `native.mark` lines,
    /// say), each with the fuel used when it logged it, for `take_marks`.
    /// Off by default: a long run would keep every message.
    pub fn keep_marks(&mut self) {
        self.store.data_mut().marks.get_or_insert_with(Vec::new);
    }

    /// What the guest logged since `keep_marks` or the last `take_marks`,
    /// each with the fuel used when it logged it.
    pub fn take_marks(&mut self) -> Vec<(String, u64)> {
        self.store
            .data_mut()
            .marks
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The `script` interface, checked the first time it is needed.
    fn script(&mut self) -> anyhow::Result<script::Guest> {
        if self.script.is_none() {
            self.script = Some(self.indices.load(&mut self.store, &self.instance)?);
        }
        Ok(self.script.clone().expect("loaded above"))
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
            Effect::Done(done) if done.task == task => return outcome(task, done.outcome),
            Effect::Request(_) => {
                bail!("task {task} awaits the host; the direct harness serves no requests")
            }
            _ => {}
        }
    }
    bail!("task {task} did not settle in its first entry")
}

/// A task's outcome as a result: a script's error by its name and message.
fn outcome(task: u64, outcome: Result<Value, Failure>) -> anyhow::Result<Value> {
    outcome.map_err(|failure| match failure {
        Failure::Script(e) => anyhow::anyhow!("{}: {}", e.name, e.message),
        other => anyhow::anyhow!("task {task} failed: {other:?}"),
    })
}

/// A function's result: its JSON text.
fn json_text(function: &str, value: Value) -> anyhow::Result<String> {
    match value {
        Value::Json(text) => Ok(text),
        Value::Turn(_) | Value::HttpResponse(_) => bail!("{function}() returned no JSON"),
    }
}

/// The store's data: WASI that grants nothing, as in the sandbox.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The answer to `wants-session-events`: no, as a sandbox answers a
    /// caller that does not listen.
    session_events: bool,
    /// What `log` was told, each with the fuel used when it was called:
    /// kept only once `keep_marks` asked.
    marks: Option<Vec<(String, u64)>>,
}

impl State {
    /// Keeps `label` with the fuel `used`, once `keep_marks` asked.
    fn mark(&mut self, label: String, used: u64) {
        if let Some(marks) = &mut self.marks {
            marks.push((label, used));
        }
    }
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

    fn wants_session_events(&mut self, _task: u64) -> bool {
        self.session_events
    }

    /// No tool runs here; `Ok` turns validation off, as the WIT allows.
    fn validate_arguments(&mut self, _schema: String, _arguments: String) -> Result<(), String> {
        Ok(())
    }
}

impl bindings::marionette::runtime::types::Host for State {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest of `runtime` with script `name` loaded from `source`.
    fn loaded(runtime: DirectRuntime, name: &str, source: &str) -> DirectGuest {
        let mut guest = runtime.instantiate().expect("an instance");
        guest.load(name, source).expect("loaded");
        guest
    }

    /// The JSON text the runtime writes (a result here; requests, events,
    /// schemas and arguments take the same way) is JSON.stringify's, byte
    /// for byte, with its side effects (getters, toJSON) in the same order
    /// and its errors: for the odd values of tests/fixtures/copies.js (not
    /// plain data: JSON.stringify writes them), 300 seeded random plain
    /// ones and 12 000 doubles of every magnitude (written natively).
    #[test]
    fn the_runtimes_json_text_is_json_stringifys() {
        let mut guest = loaded(
            DirectRuntime::new().expect("linked"),
            "copies.js",
            include_str!("../../tests/fixtures/copies.js"),
        );
        let names = guest.call("copies.js", "textCases", &[]).expect("cases");
        let names = names.as_array().expect("a list");
        assert!(names.len() > 350, "{} cases", names.len());
        let mut differences = Vec::new();
        for name in names {
            let args = serde_json::to_string(&[name]).expect("a name");
            let want = guest
                .call_text("copies.js", "stringifyOf", &args)
                .expect("stringifyOf");
            let got = guest.call_raw("copies.js", "valueOf", &args);
            let log = guest.call("copies.js", "lastLog", &[]).expect("the log");
            match (&want["text"], got) {
                // JSON.stringify writes nothing (undefined): the result is null.
                (Json::Null, Ok(text)) if want.get("error").is_none() && text == "null" => {}
                (Json::String(want), Ok(text)) if surrogates_replaced(want) == text => {}
                (_, Err(e)) if want.get("error").is_some() => {
                    let error = want["error"].as_str().expect("a message");
                    if !e
                        .to_string()
                        .contains(error.split(": ").nth(1).unwrap_or(error))
                    {
                        differences.push(format!("{name}: error {e:#} against {error}"));
                    }
                }
                (want, got) => {
                    // Where the two texts part, not the whole of each.
                    let got = format!("{got:?}");
                    let want = want.to_string();
                    let at = got
                        .bytes()
                        .zip(want.bytes())
                        .take_while(|(a, b)| a == b)
                        .count();
                    let from = at.saturating_sub(40);
                    let part =
                        |s: &str| s.get(from..(at + 40).min(s.len())).unwrap_or(s).to_string();
                    differences.push(format!(
                        "{name}: ...{}... against ...{}...",
                        part(&got),
                        part(&want)
                    ));
                }
            }
            if log != want["log"] {
                differences.push(format!(
                    "{name}: side effects {log} against {}",
                    want["log"]
                ));
            }
        }
        assert!(differences.is_empty(), "{differences:#?}");
    }

    /// JSON text as the guest hands a result to the host: each escaped
    /// surrogate (lone: JSON.stringify writes a pair as it is) as `\ufffd`
    /// (guest/src/convert.rs, `well_formed`).
    fn surrogates_replaced(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('\\') {
            out.push_str(&rest[..at]);
            let escape = rest.get(at..at + 6).unwrap_or(&rest[at..]);
            let unit = escape
                .strip_prefix("\\u")
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if matches!(unit, Some(0xd800..=0xdfff)) {
                out.push_str("\\ufffd");
                rest = &rest[at + 6..];
            } else {
                let taken = rest[at..]
                    .chars()
                    .take(2)
                    .map(char::len_utf8)
                    .sum::<usize>();
                out.push_str(&rest[at..at + taken]);
                rest = &rest[at + taken..];
            }
        }
        out.push_str(rest);
        out
    }

    /// The guest makes a session's events for a host that reads them, and
    /// for no other (`wants-session-events`), while the run's own handlers
    /// get every one either way: a session with a synchronous engine,
    /// whole in one entry, run by a host that answers no and then yes.
    #[test]
    fn session_events_go_only_to_a_host_that_reads_them() {
        use bindings::marionette::runtime::types::{Event, TaskEvent};
        let mut guest = loaded(
            DirectRuntime::new().expect("linked"),
            "s.js",
            "import { createSession, engines, turns } from 'marionette';\n\
             export async function run() {\n\
               const seen = [];\n\
               const r = createSession({ engine: engines.echo({ reply: 'hi' }) })\n\
                 .start(turns.newTurn({ blocks: [turns.newUserBlock('x')] }));\n\
               r.on('*', (e) => seen.push(e.type));\n\
               await r.promise;\n\
               return seen;\n\
             }",
        );
        let mut run = |wanted: bool| -> (Json, usize) {
            guest.store.data_mut().session_events = wanted;
            let task = guest.task();
            let script = guest.script().expect("the script interface");
            let effects = script
                .call_call(&mut guest.store, task, "s.js", "run", "[]")
                .expect("the entry");
            let events = effects
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        Effect::Event(TaskEvent {
                            event: Event::Session(_),
                            ..
                        })
                    )
                })
                .count();
            let value = settle(task, effects).expect("the run's value");
            let Value::Json(text) = value else {
                panic!("not JSON")
            };
            (serde_json::from_str(&text).expect("JSON"), events)
        };
        let handlers = serde_json::json!(["start", "final"]);
        assert_eq!(run(false), (handlers.clone(), 0));
        assert_eq!(run(true), (handlers, 2));
    }

    /// A guest on a runtime that meters fuel, with script `name` loaded.
    fn metered(name: &str, source: &str) -> DirectGuest {
        let runtime = marionette::Runtime::new(&marionette::RuntimeOptions {
            fuel: true,
            ..marionette::RuntimeOptions::default()
        })
        .expect("a runtime metering fuel");
        loaded(DirectRuntime::on(runtime).expect("linked"), name, source)
    }

    /// The fuel a call of `function` of script `name` uses, with its answer.
    fn fuel_of(guest: &mut DirectGuest, name: &str, function: &str, args: &[Json]) -> (Json, u64) {
        let before = guest.fuel_used().expect("a metered runtime");
        let out = guest.call(name, function, args).expect("the call");
        (out, guest.fuel_used().expect("a metered runtime") - before)
    }

    /// A small block the guest frees goes onto its size's list and serves
    /// the next request of that size (guest/src/alloc.rs), where a larger
    /// one goes back to dlmalloc: making and dropping an `ArrayBuffer` of
    /// 508 bytes (the largest block the lists serve) costs less than one of
    /// 509 (one byte past them): 119 units of fuel less a buffer when this
    /// was written, where without the lists it cost 17 more. Fuel counts
    /// the work exactly, so the comparison is not a timing.
    #[test]
    fn small_blocks_freed_serve_the_next_of_their_size() {
        let mut guest = metered(
            "buffers.js",
            "export function buffers(size) { for (let i = 0; i < 100; i++) new ArrayBuffer(size); }",
        );
        let mut fuel = |size: i64| {
            // Once to warm (the lists fill), then measured.
            fuel_of(&mut guest, "buffers.js", "buffers", &[size.into()]);
            fuel_of(&mut guest, "buffers.js", "buffers", &[size.into()]).1
        };
        let (listed, unlisted) = (fuel(508), fuel(509));
        assert!(
            listed + 100 * 50 < unlisted,
            "100 buffers of 508 bytes used {listed} units of fuel, of 509 bytes {unlisted}: \
             a block from a list should save at least 50 a buffer"
        );
    }

    /// A block a list serves to `calloc` is zeroed, as dlmalloc's are: for
    /// every size up to past the largest the lists serve, a buffer filled
    /// with ones and dropped, then a new one of the same size (QuickJS
    /// asks `calloc` for its bytes, and gets the block just freed), which
    /// must hold only zeros.
    #[test]
    fn blocks_from_the_lists_come_zeroed() {
        let runtime = DirectRuntime::new().expect("a runtime");
        let mut guest = loaded(
            runtime,
            "zeros.js",
            "export function dirtySizes() {\n\
                 const dirty = [];\n\
                 for (let size = 1; size <= 600; size++) {\n\
                   new Uint8Array(size).fill(255);\n\
                   if (new Uint8Array(size).some((b) => b !== 0)) dirty.push(size);\n\
                 }\n\
                 return dirty;\n\
             }",
        );
        assert_eq!(
            guest.call("zeros.js", "dirtySizes", &[]).expect("the call"),
            serde_json::json!([])
        );
    }

    /// A call's arguments are made in Rust one by one (the guest's
    /// `call_arguments`, and for lists of int32s, booleans, `null` and
    /// strings without escapes its `plain_arguments`), and must be what
    /// `JSON.parse` makes of the same text: each is compared, deeply and
    /// with `Object.is`, with the function's own `JSON.parse` of the list.
    /// Among them -0, numbers at int32's edges and past f64's range,
    /// escapes, a lone surrogate, text beyond ASCII, JSON's whitespace,
    /// duplicate keys and `__proto__`, and a list nested deeper than
    /// serde_json reads (the whole text then goes to QuickJS). A list that
    /// is not JSON is refused as `JSON.parse` refuses it, however far the
    /// plain reading got.
    #[test]
    fn arguments_are_what_json_parse_makes_of_them() {
        let mut guest = loaded(
            DirectRuntime::new().expect("linked"),
            "same.js",
            "const eq = (a, b) => {\n\
                   if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return Object.is(a, b);\n\
                   if (Array.isArray(a) !== Array.isArray(b) || Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;\n\
                   const ka = Object.keys(a), kb = Object.keys(b);\n\
                   return ka.length === kb.length && ka.every((k, i) => k === kb[i] && eq(a[k], b[k]));\n\
                 };\n\
                 export function same(text, ...args) {\n\
                   const want = JSON.parse(text);\n\
                   return args.length === want.length && args.every((a, i) => eq(a, want[i])) ? 'same' : JSON.stringify([args, want]);\n\
                 }\n",
        );
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let cases = [
            "-0",
            "0",
            "-1",
            "2147483647",
            "2147483648",
            "-2147483648",
            "-2147483649",
            "1.5",
            "1e21",
            "1E400",
            "-1e-400",
            "5e-324",
            "9007199254740993",
            "0.1",
            "1.0",
            "-0.0",
            "\"plain\"",
            "\"esc\\n\\\"\\u00e9\\ud83d\\ude00\"",
            "\"\\ud800\"",
            "\"\"",
            "\"with space\"",
            "\"\u{e9}\u{1f600}\"",
            " 1 ",
            "\t-7\r\n",
            "true",
            "false",
            "null",
            "{\"a\":1,\"a\":2,\"__proto__\":{\"x\":1}}",
            "[1,[2,{}]]",
            "{}",
            "[]",
            &deep,
        ];
        for case in cases {
            let list = format!("[{case}]");
            let text = serde_json::to_string(&list).expect("a JSON string");
            let out = guest
                .call_text("same.js", "same", &format!("[{text},{case}]"))
                .expect("the call");
            assert_eq!(out, Json::from("same"), "argument {case}");
        }
        let all = cases.join(",");
        let text = serde_json::to_string(&format!("[{all}]")).expect("a JSON string");
        let out = guest
            .call_text("same.js", "same", &format!("[{text},{all}]"))
            .expect("the call");
        assert_eq!(out, Json::from("same"), "all at once");

        for list in [
            "[1,]",
            "[01]",
            "[1 2]",
            "[1]x",
            "[-]",
            "[\"a]",
            "[tru]",
            "[1,\"a\",",
            "[\"a\u{1}\"]",
            "",
            "[1e]",
        ] {
            let refused = guest
                .call_text("same.js", "same", list)
                .expect_err(list)
                .to_string();
            assert!(refused.contains("SyntaxError"), "{list}: {refused}");
        }
    }

    /// A task is live to its own code and ends, for every id the host may
    /// hand out: on either side of 2^31 (where `>>> 0` and `Math.imul`
    /// wrap, as core.js's `idKey` does for its Maps), of 2^32 and up to
    /// 2^53 (ids cross into JavaScript as numbers). The natives keep the
    /// live tasks by id (`natives::begin`), and the runtime asks them with
    /// the number it holds: were the two apart, the task would not be live
    /// to its own code (its console line dropped) and its end dropped (no
    /// done). A long-lived sandbox making ten thousand calls a second
    /// reaches 2^31 in two and a half days.
    #[test]
    fn a_task_is_live_to_its_code_and_ends_whatever_its_id() {
        use bindings::marionette::runtime::types::{ConsoleLine, Event, TaskEvent};
        let mut guest = loaded(
            DirectRuntime::new().expect("linked"),
            "ids.js",
            "export function f() { console.log('live'); return 7; }\n",
        );
        let script = guest.script().expect("the script interface");
        for task in [
            (1 << 31) - 1,
            1 << 31,
            (1 << 31) + 1,
            (1 << 32) - 1,
            1 << 32,
            (1 << 32) + 1,
            (1 << 53) - 1,
        ] {
            let effects = script
                .call_call(&mut guest.store, task, "ids.js", "f", "[]")
                .expect("the entry");
            let said = effects.iter().any(|e| {
                matches!(e, Effect::Event(TaskEvent { task: t, event: Event::Console(ConsoleLine { message, .. }) }) if *t == task && message == "live")
            });
            assert!(
                said,
                "task {task}: its console line is delivered: {effects:?}"
            );
            let value = settle(task, effects).expect("the task ends in its entry");
            assert!(
                matches!(&value, Value::Json(text) if text == "7"),
                "task {task}: {value:?}"
            );
        }
    }

    /// A task that is over acts no more: what its leftover code does after
    /// its done, in the same entry, is dropped (a console line) or refused
    /// (a timer, which its promise's rejection reports to that code),
    /// while what it did before its done reaches the host. The natives
    /// keep which tasks are live (`natives::begin`, `forget`) and refuse a
    /// task that is not; a console line once cost the runtime a check of
    /// its own.
    #[test]
    fn a_task_that_is_over_says_and_asks_nothing_more() {
        use bindings::marionette::runtime::types::{ConsoleLine, Event, TaskEvent};
        let mut guest = loaded(
            DirectRuntime::new().expect("linked"),
            "late.js",
            "export async function f() {\n\
                   console.log('early');\n\
                   let p = Promise.resolve();\n\
                   for (let i = 0; i < 8; i++) p = p.then(() => {});\n\
                   p.then(() => {\n\
                     console.log('late');\n\
                     new Promise((resolve) => setTimeout(resolve, 5)).catch((e) => console.log('refused: ' + e.name));\n\
                   });\n\
                   return 'done';\n\
                 }\n",
        );
        let task = guest.task();
        let effects = guest
            .script()
            .expect("the script interface")
            .call_call(&mut guest.store, task, "late.js", "f", "[]")
            .expect("the entry");
        let lines: Vec<&str> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Event(TaskEvent {
                    event: Event::Console(ConsoleLine { message, .. }),
                    ..
                }) => Some(message.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(lines, ["early"], "{effects:?}");
        assert!(
            !effects.iter().any(|e| matches!(e, Effect::Request(_))),
            "a timer of a task that is over reached the host: {effects:?}"
        );
        let value = settle(task, effects).expect("the task ends in its entry");
        assert!(
            matches!(&value, Value::Json(text) if text == "\"done\""),
            "{value:?}"
        );
    }

    /// An integer that reaches the guest as JSON (every argument does) is
    /// an integer to QuickJS's interpreter, as a literal is, and not a
    /// double: the interpreter's fast paths are for integers, and fib(20)
    /// on a double costs about twice the work. Fuel counts that work
    /// exactly, so the comparison is not a timing (scripts/bootstrap.sh
    /// says how the guest's QuickJS is built for it).
    #[test]
    fn json_integers_cost_what_integer_literals_cost() {
        let mut guest = metered(
            "fib.js",
            "export function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }\n\
                 export function fibOfLiteral() { return fib(20); }\n\
                 export function fibOfParsed(text) { return fib(JSON.parse(text)); }",
        );
        let (out, literal) = fuel_of(&mut guest, "fib.js", "fibOfLiteral", &[]);
        assert_eq!(out, 6765);
        let (out, argument) = fuel_of(&mut guest, "fib.js", "fib", &[20.into()]);
        assert_eq!(out, 6765);
        let (out, parsed) = fuel_of(&mut guest, "fib.js", "fibOfParsed", &["20".into()]);
        assert_eq!(out, 6765);
        // The calls differ by a few hundred units of the dispatcher's work;
        // fib(20) on doubles would add about as much again as it costs.
        for (how, fuel) in [("an argument", argument), ("JSON.parse", parsed)] {
            assert!(
                fuel * 10 < literal * 11,
                "fib(20) with 20 from {how} used {fuel} units of fuel, from a literal {literal}"
            );
        }
    }
}

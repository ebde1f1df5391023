//! The one QuickJS VM of this instance and the entry protocol.
//!
//! Every export is one *entry*: it calls a function of the JavaScript
//! dispatcher (`runtime.js`), then runs queued promise jobs until none is
//! left, then returns the effects the natives recorded. Nothing waits inside
//! an entry: what a script awaits from the host is a `request` effect, and
//! the host's answer is a later entry (`resume`).
//!
//! The host may interrupt running JavaScript through `should-interrupt`
//! (QuickJS's interrupt handler), asked about the task the JavaScript runs
//! for. An interrupted entry stops running JavaScript and fails that task
//! itself (its operations released, then its `done`): a host never has to
//! clean up after a stop. So do tasks that ran into a cap or out of memory
//! during the entry: nothing about a task follows its `done`.
//!
//! A stop that lands while promise jobs run lets the running job finish (it
//! is killed at the next interrupt poll if it does not) and runs no further
//! job for anyone: where QuickJS's interrupt lands inside a job is chance,
//! and a chain of jobs must not live or die by it. The jobs a stopped entry
//! leaves (its task's unwinding, and any chain it started) then run at once,
//! in that same entry, for the stopped task, within a budget of interrupt
//! polls; jobs that outlast it are a chain that does not end, and the guest
//! traps on purpose (the host rebuilds the instance). No job is left for a
//! later entry to run on another task's time: every entry returns with the
//! job queue empty.
//!
//! An entry that did not return (a host import that threw through the wasm
//! frames, as jco lets JavaScript exceptions do) leaves the VM in the middle
//! of something: the next entry traps on purpose, so that the host rebuilds
//! the instance instead of running on inconsistent state.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, c_char};
use std::ptr;

use rquickjs::context::EvalOptions;
use rquickjs::convert::Coerced;
use rquickjs::function::IntoArgs;
use rquickjs::{Ctx, FromJs, Function, Module, Object, Persistent, Type, Value, qjs};
use rustc_hash::FxHashMap;

use crate::convert;
use crate::loader::{self, API_MODULE, Graphs};
use crate::marionette::runtime::host;
use crate::marionette::runtime::types::{
    Cap, Effect, Failure, LogLevel, ScriptError, Stop, TaskDone,
};
use crate::{heap, lockdown, natives};

/// The JavaScript runtime: one closure over the natives, assembled from the
/// fragments in `js/` (they share its scope), returning `{ api, dispatch,
/// books }`.
const RUNTIME_JS: &str = concat!(
    "(function (native) {\n\"use strict\";\n",
    include_str!("js/core.js"),
    include_str!("js/console_timers.js"),
    include_str!("js/web.js"),
    include_str!("js/fetch.js"),
    include_str!("js/clock.js"),
    include_str!("js/api.js"),
    include_str!("js/loop.js"),
    include_str!("js/session.js"),
    include_str!("js/dispatch.js"),
    "\nreturn { api, dispatch, books };\n})",
);

/// Freezes the intrinsics, the API and the global object; see the file.
const LOCKDOWN_JS: &str = include_str!("js/lockdown.js");

/// The global that carries the API object into the `marionette` module's
/// source for the instant it is evaluated; removed right after, before any
/// user script exists.
const API_GLOBAL: &str = "__marionette_api__";

struct Vm {
    runtime: javy::Runtime,
    dispatch: Persistent<Object<'static>>,
    books: Books,
}

/// What Rust reads and changes of the runtime's own bookkeeping (`books`
/// in dispatch.js): core.js's `state`, where each entry names its task (see
/// [`entry`]) and [`call_inline`] starts one without the dispatcher's
/// JavaScript. (Which tasks are live, the natives keep: `natives::begin`.)
///
/// Held as QuickJS's own values and used through its C API, not rquickjs's
/// wrappers: these are touched in every entry, and the shortest entries
/// (§11 of docs/architecture.md) spent a fifth of their time in the
/// wrappers (each wrapped value counts a reference to its context, each
/// call builds a list of its arguments, each property is named by text
/// and looked up as an atom). Each value holds a reference of its own,
/// taken at the boot and never given back: the books live as long as the
/// VM, which lives as long as the instance.
#[derive(Clone, Copy)]
struct Books {
    /// core.js's `state`.
    state: qjs::JSValue,
    /// The atoms of `state.current` and `state.scope`.
    current: qjs::JSAtom,
    scope: qjs::JSAtom,
}

impl Books {
    fn from_js<'js>(ctx: &Ctx<'js>, books: &Object<'js>) -> rquickjs::Result<Books> {
        let raw = ctx.as_raw().as_ptr();
        let kept = |name: &str| -> rquickjs::Result<qjs::JSValue> {
            let value: Value = books.get(name)?;
            // SAFETY: a live value of this context; the reference taken is
            // never given back (see the type's documentation).
            Ok(unsafe { qjs::JS_DupValue(raw, value.as_raw()) })
        };
        let atom = |name: &str| -> qjs::JSAtom {
            // SAFETY: `name` is valid for its length; the atom's reference
            // is kept, as the values' are.
            unsafe { qjs::JS_NewAtomLen(raw, name.as_ptr().cast(), name.len() as _) }
        };
        Ok(Books {
            state: kept("state")?,
            current: atom("current"),
            scope: atom("scope"),
        })
    }

    /// `state[atom] = value`, `value`'s reference given to the property.
    fn set_state(
        &self,
        ctx: &Ctx<'_>,
        atom: qjs::JSAtom,
        value: qjs::JSValue,
    ) -> rquickjs::Result<()> {
        // SAFETY: `state` is a plain object of this context, kept alive by
        // the books; JS_SetProperty takes `value`'s reference.
        let done = unsafe { qjs::JS_SetProperty(ctx.as_raw().as_ptr(), self.state, atom, value) };
        if done < 0 {
            Err(rquickjs::Error::Exception)
        } else {
            Ok(())
        }
    }
}

/// A loaded script as [`call_inline`] finds it: its module namespace, and
/// the atoms of the exports called so far. A call names its function by
/// text, and looking the text up as an atom at every call was a tenth of
/// a short call's guest time (§11 of docs/architecture.md).
///
/// The namespace and each atom hold a reference of their own, given back
/// when a load of the same name replaces the script ([`script_loaded`]);
/// the last ones live as long as the VM, as the [`Books`] do.
struct Script {
    namespace: qjs::JSValue,
    atoms: Vec<(Box<str>, qjs::JSAtom)>,
}

/// Exports of one script whose atoms [`Script`] keeps; past these, a call
/// looks its function's name up each time.
const MAX_KEPT_ATOMS: usize = 32;

impl Script {
    /// The atom of `function`, and whether it is the caller's to free (not
    /// kept here).
    fn atom(&self, raw: *mut qjs::JSContext, function: &str) -> (qjs::JSAtom, bool) {
        match self.atoms.iter().find(|(name, _)| &**name == function) {
            Some((_, atom)) => (*atom, false),
            // SAFETY: `function` is valid for its length.
            None => (
                unsafe { qjs::JS_NewAtomLen(raw, function.as_ptr().cast(), function.len() as _) },
                true,
            ),
        }
    }

    /// Keeps `atom` (the caller's reference) for later calls of `function`;
    /// false, keeping nothing, when there is no room.
    fn keep(&mut self, function: &str, atom: qjs::JSAtom) -> bool {
        if self.atoms.len() >= MAX_KEPT_ATOMS {
            return false;
        }
        self.atoms.push((function.into(), atom));
        true
    }
}

thread_local! {
    /// Each loaded script by name, beside dispatch.js's Map of them (the
    /// runtime tells Rust where it sets that Map: `native.scriptLoaded`),
    /// so that [`call_inline`] finds a script without a call into
    /// JavaScript.
    static SCRIPTS: RefCell<FxHashMap<String, Script>> = RefCell::new(FxHashMap::default());
    /// The argument list [`call_inline`] builds, kept between calls so that
    /// a call allocates none.
    static ARGV: Cell<Vec<qjs::JSValue>> = const { Cell::new(Vec::new()) };
}

/// The runtime loaded `name` (dispatch.js's `load`): its namespace is the
/// one [`call_inline`] calls into from now on.
pub(crate) fn script_loaded<'js>(ctx: &Ctx<'js>, name: String, namespace: Object<'js>) {
    let raw = ctx.as_raw().as_ptr();
    // SAFETY: a live value of this context; the reference taken is the
    // script's (see `Script`).
    let namespace = unsafe { qjs::JS_DupValue(raw, namespace.as_raw()) };
    let replaced = SCRIPTS.with(|s| {
        s.borrow_mut().insert(
            name,
            Script {
                namespace,
                atoms: Vec::new(),
            },
        )
    });
    if let Some(old) = replaced {
        // SAFETY: the references the replaced script held, given back once.
        unsafe {
            for (_, atom) in old.atoms {
                qjs::JS_FreeAtom(raw, atom);
            }
            qjs::JS_FreeValue(raw, old.namespace);
        }
    }
}

/// Bytes allocated between two cycle collections when the host names none.
const DEFAULT_GC_THRESHOLD: u64 = 4 << 20;

thread_local! {
    static VM: RefCell<Option<Vm>> = const { RefCell::new(None) };
    static LIMITS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    /// Set when a promise was rejected for out of memory with no handler
    /// during this entry.
    static UNHANDLED_OOM: Cell<bool> = const { Cell::new(false) };
    /// Set when the heap reached its limit during this entry (see
    /// [`look_after_heap`]); the entry's task, if it is left waiting on
    /// nothing, is failed (see [`due_stops`]).
    static HEAP_FULL: Cell<bool> = const { Cell::new(false) };
    /// Set when the host's interrupt handler said stop during this entry.
    static INTERRUPTED: Cell<bool> = const { Cell::new(false) };
    /// Set while [`drain`] runs a promise job.
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
    /// Set when the host said stop while a promise job ran: that job may
    /// finish, no other job runs (see the module's docs).
    static STOPPING: Cell<bool> = const { Cell::new(false) };
    /// While the jobs a stopped entry left run: the interrupt polls they
    /// may still take (see [`run_leftovers`]).
    static LEFTOVER_POLLS: Cell<Option<u32>> = const { Cell::new(None) };
    /// Set when the jobs a stopped entry left outran their budget.
    static RUNAWAY: Cell<bool> = const { Cell::new(false) };
    /// The task the host said to stop during this entry, and why.
    static STOPPED: RefCell<Option<(u64, Stop)>> = const { RefCell::new(None) };
    /// Set while the runtime fails stopped tasks: its own bounded code runs
    /// without asking the host again.
    static UNWINDING: Cell<bool> = const { Cell::new(false) };
    /// Set from the start of an entry to its end: still set when an entry
    /// begins, the last one never returned.
    static IN_ENTRY: Cell<bool> = const { Cell::new(false) };
    /// What the host provides (engines, middleware, tools), as JSON, and
    /// whether the runtime's JavaScript has yet to read it since it changed
    /// (see [`host_info_changed`]).
    static HOST_INFO: RefCell<(String, bool)> = RefCell::new((r#"{"engines":[],"middlewares":[],"tools":[]}"#.into(), false));
}

/// The lockdown's own check of the booted VM (see [`lockdown::report`]).
pub fn lockdown_report() -> lockdown::Report {
    VM.with(|cell| {
        let mut slot = cell.borrow_mut();
        let vm = slot.get_or_insert_with(boot);
        vm.runtime.context().with(|ctx| {
            lockdown::report(&ctx).unwrap_or_else(|e| {
                let detail = exception_text(&ctx, e);
                lockdown::Report {
                    classes: 0,
                    objects: 0,
                    unfrozen: vec![format!("the check itself failed: {detail}")],
                }
            })
        })
    })
}

/// What the script heap holds: bytes QuickJS has allocated and its objects,
/// garbage in cycles included until the collector frees it.
pub fn heap_usage() -> (u64, u64) {
    VM.with(|cell| {
        let mut slot = cell.borrow_mut();
        let vm = slot.get_or_insert_with(boot);
        let usage = vm.runtime.context().runtime().memory_usage();
        (
            u64::try_from(usage.malloc_size).unwrap_or(0),
            u64::try_from(usage.obj_count).unwrap_or(0),
        )
    })
}

/// Boots the VM now if nothing has (the build's pre-initialisation calls
/// this, see `world guest` in the WIT). Nothing in the boot depends on the
/// host's configuration: `configure` applies it to a booted VM, so a
/// snapshot taken here serves every policy.
///
/// Before the snapshot, it also collects the boot's garbage (javy's runtime
/// never collected it) and takes the allocator's free chunks for good (see
/// [`heap`]): what an instance allocates then comes from the fresh end of
/// the heap, on as few copied pages as it fills.
pub fn boot_now() {
    VM.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let vm = boot();
            vm.runtime.context().runtime().run_gc();
            *slot = Some(vm);
        }
    });
    heap::take_free_chunks();
}

/// Sets QuickJS's heap limit and GC threshold (0 leaves each as it is) and
/// what the host provides.
///
/// What the host provides reaches the runtime's JavaScript only when it
/// differs from what the VM has (the snapshot booted with nothing
/// provided): a sandbox that provides nothing pays no entry into
/// JavaScript for its configuration.
/// Runs no JavaScript: what the host provides is kept here, and the
/// runtime's JavaScript reads it when a script first asks for a host
/// engine, middleware or tool ([`host_info_changed`]). A configure that ran
/// the dispatcher was a fresh instance's first JavaScript, and its page
/// faults made it most of a new sandbox's time (docs/architecture.md §10).
pub fn configure(memory_limit: u64, gc_threshold: u64, host_info: String) {
    check_last_entry_returned();
    LIMITS.with(|l| l.set((memory_limit, gc_threshold)));
    HOST_INFO.with(|h| {
        let mut h = h.borrow_mut();
        if h.0 != host_info {
            *h = (host_info, true);
        }
    });
    VM.with(|vm| {
        if let Some(vm) = vm.borrow().as_ref() {
            apply_limits(vm.runtime.context().runtime());
        }
    });
}

/// What the host provides, as JSON, when it changed since the runtime's
/// JavaScript last read it (`native.hostInfo()`, api.js); `None` otherwise.
pub(crate) fn host_info_changed() -> Option<String> {
    HOST_INFO.with(|h| {
        let mut h = h.borrow_mut();
        std::mem::take(&mut h.1).then(|| h.0.clone())
    })
}

fn apply_limits(rt: &rquickjs::Runtime) {
    let (memory_limit, gc_threshold) = LIMITS.with(Cell::get);
    if memory_limit > 0 {
        rt.set_memory_limit(memory_limit as usize);
    }
    // javy's default never collects (it is made for short-lived programs);
    // a sandbox lives long, and cycles must be collected.
    let gc_threshold = if gc_threshold > 0 {
        gc_threshold
    } else {
        DEFAULT_GC_THRESHOLD
    };
    rt.set_gc_threshold(gc_threshold as usize);
}

/// Interrupt polls the jobs left by a stopped entry may take: QuickJS polls
/// every 10 000 calls and loop iterations, so this allows them 30 000 to
/// 40 000 (the first poll comes wherever the count stands), plenty for a
/// task's unwinding (its `finally` blocks, the rejections of its released
/// operations) and nothing like a chain that does not end. Counted in polls,
/// not time, so that the outcome is the same on any machine; small, so that
/// the trap comes well before the epoch's hard stop (a chain that holds its
/// promises slows down as its heap grows: 32 polls outran the hostile
/// suite's 300 ms between the soft and the hard stop).
const LEFTOVER_POLL_BUDGET: u32 = 4;

/// QuickJS's interrupt handler: whether the JavaScript running now must stop.
fn interrupt_poll() -> bool {
    if UNWINDING.with(Cell::get) {
        return false;
    }
    if RUNAWAY.with(Cell::get) {
        return true;
    }
    if let Some(left) = LEFTOVER_POLLS.with(Cell::get) {
        // The host is not asked: the task these jobs ran for is over, and
        // their budget is the guest's own.
        if left == 0 {
            RUNAWAY.with(|r| r.set(true));
            return true;
        }
        LEFTOVER_POLLS.with(|l| l.set(Some(left - 1)));
        return false;
    }
    // Once stopped, everything else this entry would run stops too.
    if INTERRUPTED.with(Cell::get) {
        return true;
    }
    // Told to stop while a promise job ran, and the job is still running a
    // poll later: it does not end by itself.
    if STOPPING.with(Cell::get) {
        INTERRUPTED.with(|i| i.set(true));
        return true;
    }
    // Only the runtime's own code runs for no task: the dispatcher between
    // entering and naming the task it runs for, or a cancellation releasing
    // a task's operations before its done. It keeps the guest's books (what
    // each task waits for), and stopped midway it would leave them wrong: an
    // operation dropped and never settled, or one the host keeps running for
    // a task that is over. It is not stopped: it is short, and the epoch's
    // hard stop bounds it anyway. (A deadline falls due in it when the
    // machine stalls the owner's thread for the whole entry deadline.)
    let task = natives::current();
    if task == 0 {
        return false;
    }
    match host::should_interrupt(task) {
        None => false,
        Some(stop) => {
            STOPPED.with(|s| *s.borrow_mut() = Some((task, stop)));
            if IN_JOB.with(Cell::get) {
                // Let the job reach its end (see the module's docs).
                STOPPING.with(|s| s.set(true));
                false
            } else {
                INTERRUPTED.with(|i| i.set(true));
                true
            }
        }
    }
}

fn boot() -> Vm {
    let mut config = javy::Config::default();
    // No stdin/stdout streams: a script's only output is console events.
    config.javy_stream_io(false).text_encoding(true);
    let runtime = javy::Runtime::new(config).expect("QuickJS runtime");
    let rt = runtime.context().runtime();
    rt.set_loader(Graphs, Graphs);
    rt.set_interrupt_handler(Some(Box::new(interrupt_poll)));
    apply_limits(rt);
    // An out-of-memory error inside promise jobs becomes a rejection; when
    // nothing handles it (a chain of jobs the task does not await), the
    // task would wait forever for a chain that is gone. Noted here, reported
    // at the end of the entry.
    rt.set_host_promise_rejection_tracker(Some(Box::new(|ctx, _promise, reason, handled| {
        if !handled && is_out_of_memory(&ctx, &reason) {
            UNHANDLED_OOM.with(|u| u.set(true));
        }
    })));

    let (dispatch, books) = runtime.context().with(|ctx| {
        let boot = || -> rquickjs::Result<(Persistent<Object<'static>>, Books)> {
            let init: Function = ctx.eval_with_options(RUNTIME_JS, runtime_source())?;
            let parts: Object = init.call((natives::object(&ctx)?,))?;
            let api: Object = parts.get("api")?;
            let dispatch: Object = parts.get("dispatch")?;
            let books = Books::from_js(&ctx, &parts.get("books")?)?;

            let mut source = format!("const api = globalThis.{API_GLOBAL};\nexport default api;\n");
            for key in api.keys::<String>() {
                let key = key?;
                source.push_str(&format!("export const {key} = api.{key};\n"));
            }
            ctx.globals().set(API_GLOBAL, api.clone())?;
            let (_module, _evaluated) = Module::declare(ctx.clone(), API_MODULE, source)?.eval()?;
            ctx.globals().remove(API_GLOBAL)?;

            let lockdown: Function = ctx.eval_with_options(LOCKDOWN_JS, runtime_source())?;
            let roots: Vec<Value> = lockdown.call((api,))?;
            lockdown::lock_down(&ctx, roots)?;
            Ok((Persistent::save(&ctx, dispatch), books))
        };
        boot().unwrap_or_else(|e| {
            let detail = exception_text(&ctx, e);
            panic!("booting the JavaScript runtime failed: {detail}")
        })
    });
    drain(&runtime, &dispatch);
    check_heap_accounting(rt);
    Vm {
        runtime,
        dispatch,
        books,
    }
}

/// QuickJS measures an allocation with `malloc_usable_size` only on C
/// libraries it knows; built for WASI without being told that wasi-libc has
/// it, it counts every allocation as 8 bytes, and its heap limit and the
/// pacing of its cycle collector count allocations, not bytes. The toolchain
/// of `scripts/bootstrap.sh` tells it; say so when a build did not.
fn check_heap_accounting(rt: &rquickjs::Runtime) {
    let usage = rt.memory_usage();
    if usage.malloc_size < usage.malloc_count.saturating_mul(16) {
        host::log(
            LogLevel::Warn,
            "QuickJS in this guest cannot measure its allocations (built without -D__GLIBC__, see scripts/bootstrap.sh): its heap limit and garbage collection count allocations, not bytes",
        );
    }
}

/// How the runtime's own JavaScript is evaluated: strict, named so that its
/// frames can be told from a script's.
fn runtime_source() -> EvalOptions {
    let mut options = EvalOptions::default();
    options.global = true;
    options.strict = true;
    options.filename = Some("<marionette>".into());
    options
}

fn exception_text(ctx: &Ctx<'_>, e: rquickjs::Error) -> String {
    if e.is_exception() {
        let v = ctx.catch();
        let message: Option<String> = v
            .as_object()
            .and_then(|o| o.get::<_, String>("message").ok());
        message.unwrap_or_else(|| format!("{v:?}"))
    } else {
        e.to_string()
    }
}

/// Whether QuickJS's heap reached its limit since the heap was last looked
/// after (see [`look_after_heap`]).
///
/// QuickJS keeps no count of failed allocations, and when it cannot even
/// allocate the error for one it throws `null`. What it does keep is the
/// threshold of its next cycle collection, recomputed after each collection
/// as one and a half times the heap then live: a heap that grows by
/// objects until an allocation fails leaves the threshold at or past the
/// limit (below it, the collector would have run again and raised it).
pub fn heap_exhausted(ctx: &Ctx<'_>) -> bool {
    heap_full(ctx.as_raw().as_ptr())
}

/// [`heap_exhausted`] of the live context `raw`.
fn heap_full(raw: *mut qjs::JSContext) -> bool {
    let (limit, _) = LIMITS.with(Cell::get);
    // SAFETY: `raw` is a live context; this only reads a number.
    let threshold = unsafe { qjs::JS_GetGCThreshold(qjs::JS_GetRuntime(raw)) };
    limit > 0 && threshold as u64 >= limit
}

/// After an entry whose heap reached the limit: collects cycles and puts the
/// collection threshold back where today's heap wants it. Left at or past
/// the limit, the threshold would never be crossed again, and no cycle
/// would be collected in this VM any more.
fn look_after_heap(runtime: &javy::Runtime) {
    // Without a `Ctx` to make and drop in every entry.
    if !heap_full(runtime.context().as_raw().as_ptr()) {
        return;
    }
    HEAP_FULL.with(|h| h.set(true));
    let rt = runtime.context().runtime();
    rt.run_gc();
    let live = u64::try_from(rt.memory_usage().malloc_size).unwrap_or(0);
    let (limit, gc_threshold) = LIMITS.with(Cell::get);
    let floor = if gc_threshold > 0 {
        gc_threshold
    } else {
        DEFAULT_GC_THRESHOLD
    };
    if live >= limit / 10 * 9 {
        // Still full of live objects: nothing can run here any more, and an
        // out-of-memory error inside promise jobs may have been swallowed
        // (a task left waiting forever). Give up on the instance, as for
        // any trap, and let the host know it is for memory: ask for more
        // linear memory than its limit allows, so its limiter refuses and
        // remembers.
        host::log(
            LogLevel::Error,
            &format!(
                "the script heap is still full after a collection ({live} of {limit} bytes live); the instance must be rebuilt"
            ),
        );
        let beyond = usize::try_from(limit).unwrap_or(usize::MAX) / 65536 + 512;
        let _ = core::arch::wasm32::memory_grow::<0>(beyond);
        panic!("the script heap is full");
    }
    let threshold = floor.max(live + live / 2).min(limit.saturating_sub(1));
    rt.set_gc_threshold(threshold as usize);
    host::log(
        LogLevel::Warn,
        &format!(
            "the script heap reached its limit of {limit} bytes; {live} bytes are live after a collection"
        ),
    );
}

/// Whether a thrown or rejected value is QuickJS out of memory.
fn is_out_of_memory(ctx: &Ctx<'_>, value: &Value<'_>) -> bool {
    if value.is_null() {
        return heap_exhausted(ctx);
    }
    // Out of memory, QuickJS may make its error but not the message.
    value.as_object().is_some_and(|o| {
        o.get::<_, String>("name")
            .is_ok_and(|n| n == "InternalError")
            && o.get::<_, String>("message")
                .is_ok_and(|m| m == "out of memory" || (m.is_empty() && heap_exhausted(ctx)))
    })
}

/// Runs promise jobs until none is left, or JavaScript was told to stop.
///
/// When the queue is empty and the runtime has a settlement waiting for a
/// turn of its own (a cancelled scope's operations and signals, a run's
/// end: see `settleInTurn` in core.js), it runs the next one through the
/// dispatcher's `settleNext`, then the jobs that queued, and so on. Each
/// such turn starts with its own task and scope set, so that the code it
/// resumes runs in them rather than in the scope of whatever ran last.
fn drain(runtime: &javy::Runtime, dispatch: &Persistent<Object<'static>>) {
    let rt = runtime.context().runtime();
    loop {
        if INTERRUPTED.with(Cell::get) || STOPPING.with(Cell::get) || RUNAWAY.with(Cell::get) {
            break;
        }
        IN_JOB.with(|j| j.set(true));
        let ran = rt.execute_pending_job();
        IN_JOB.with(|j| j.set(false));
        match ran {
            Ok(true) => {}
            Ok(false) => {
                if !natives::take_deferred() || !settle_next(runtime, dispatch) {
                    break;
                }
            }
            Err(job) => {
                let interrupted = job.0.with(|ctx| ctx.catch().is_uncatchable_error());
                if interrupted {
                    // Stopped: the entry fails the task next.
                    break;
                }
                // Promise jobs capture exceptions in their promise, so this is
                // QuickJS failing on its own (out of memory in a job).
                host::log(LogLevel::Error, "a promise job failed outside any promise");
            }
        }
    }
}

/// Runs the next settlement that waits for a turn of its own, as a promise
/// job would run (a stop lets it reach its end); false when JavaScript was
/// stopped in it.
fn settle_next(runtime: &javy::Runtime, dispatch: &Persistent<Object<'static>>) -> bool {
    runtime.context().with(|ctx| {
        let dispatch = dispatch.clone().restore(&ctx).expect("dispatcher");
        IN_JOB.with(|j| j.set(true));
        let settled = call_dispatch::<_, ()>(&dispatch, "settleNext", ());
        IN_JOB.with(|j| j.set(false));
        match settled {
            Ok(()) => true,
            Err(e) if e.is_exception() && ctx.catch().is_uncatchable_error() => false,
            Err(e) => {
                let detail = exception_text(&ctx, e);
                host::log(
                    LogLevel::Error,
                    &format!("a deferred settlement failed: {detail}"),
                );
                true
            }
        }
    })
}

/// One entry: `body` runs with the dispatcher, then queued jobs run; returns
/// the effects. `task` is the task the entry starts, failed directly if the
/// dispatcher itself throws.
fn entry<F>(task: Option<u64>, body: F) -> Vec<Effect>
where
    F: for<'js> FnOnce(&Ctx<'js>, &Dispatcher<'_, 'js>, &Books) -> rquickjs::Result<()>,
{
    check_last_entry_returned();
    IN_ENTRY.with(|e| e.set(true));
    INTERRUPTED.with(|i| i.set(false));
    STOPPING.with(|s| s.set(false));
    RUNAWAY.with(|r| r.set(false));
    LEFTOVER_POLLS.with(|l| l.set(None));
    STOPPED.with(|s| s.borrow_mut().take());
    UNHANDLED_OOM.with(|u| u.set(false));
    HEAP_FULL.with(|h| h.set(false));
    VM.with(|cell| {
        let mut slot = cell.borrow_mut();
        let vm = slot.get_or_insert_with(boot);
        vm.runtime.context().with(|ctx| {
            // The entry runs for its task, or for none until its JavaScript
            // names one (the runtime names the task of what it resumes as it
            // resumes it): set before any JavaScript runs, in the natives
            // (what the interrupt poll asks about) and in core.js's copy,
            // which spares `setCurrent` a native call when the task is
            // already current. Left as the last entry's, an interrupt poll
            // of this entry's first JavaScript named the task the last
            // entry ran for: a stop asked for that task after it ended (its
            // caller gave up just then, and the cancellation had not reached
            // the owner) stopped this entry instead, and its own task never
            // ended.
            let current = task.unwrap_or(0);
            natives::set_current(current);
            vm.books
                .set_state(&ctx, vm.books.current, qjs::JS_NewFloat64(current as f64))
                .expect("setting a data property of a plain object");
            let dispatch = Dispatcher::new(&ctx, &vm.dispatch);
            let failed = body(&ctx, &dispatch, &vm.books).err();
            match (failed.and_then(|e| caught(&ctx, dispatch.get(), e)), task) {
                (Some(error), Some(task)) => {
                    natives::forget(task);
                    natives::push(Effect::Done(TaskDone {
                        task,
                        outcome: Err(natives::script_failure(error)),
                    }))
                }
                (Some(error), None) => host::log(
                    LogLevel::Error,
                    &format!("the dispatcher threw: {}", error.message),
                ),
                (None, _) => {}
            }
        });
        drain(&vm.runtime, &vm.dispatch);
        look_after_heap(&vm.runtime);
        stop_tasks(&vm.runtime, &vm.dispatch, task);
        run_leftovers(&vm.runtime, &vm.dispatch);
    });
    IN_ENTRY.with(|e| e.set(false));
    let mut effects = natives::take();
    name_load_errors(&mut effects);
    effects
}

/// Runs, within [`LEFTOVER_POLL_BUDGET`], the promise jobs a stopped entry
/// left; traps when they outrun it.
///
/// They run for the stopped task (the runtime's `stop` made it current):
/// what they print is dropped and what they ask for is refused, since the
/// task is over. Run in a later entry instead, they would spend another
/// task's time under its name. A promise reaction turns even the interrupt
/// into a rejection, so a chain of jobs that schedules itself is not ended
/// by stopping the job it was in: jobs still running when the budget is
/// spent are such a chain, and the VM is poisoned; trap, and the host
/// rebuilds it.
fn run_leftovers(runtime: &javy::Runtime, dispatch: &Persistent<Object<'static>>) {
    if !runtime.has_pending_jobs() {
        return;
    }
    INTERRUPTED.with(|i| i.set(false));
    STOPPING.with(|s| s.set(false));
    LEFTOVER_POLLS.with(|l| l.set(Some(LEFTOVER_POLL_BUDGET)));
    drain(runtime, dispatch);
    LEFTOVER_POLLS.with(|l| l.set(None));
    if RUNAWAY.with(Cell::get) || runtime.has_pending_jobs() {
        host::log(
            LogLevel::Error,
            "promise jobs of a stopped task kept scheduling themselves; the instance must be rebuilt",
        );
        panic!("runaway promise jobs after a stop");
    }
}

/// Traps when the last entry never returned: see the module's docs.
fn check_last_entry_returned() {
    if IN_ENTRY.with(Cell::get) {
        host::log(
            LogLevel::Error,
            "an earlier entry into the guest did not return (a host import failed by throwing?); the instance must be rebuilt",
        );
        panic!("an earlier entry into the guest did not return");
    }
}

/// Fails, in this entry, the tasks that must stop: the one the host
/// interrupted, those that ran into a cap, the one whose promise jobs ran
/// out of memory. Each has its operations released and then its `done`;
/// the rejections their operations get run next (unless JavaScript was
/// stopped: then they are among the jobs [`run_leftovers`] runs).
///
/// `task` is the task the entry started, if it started one.
fn stop_tasks(runtime: &javy::Runtime, dispatch: &Persistent<Object<'static>>, task: Option<u64>) {
    // Their unwinding may meet a stop or a cap of its own: again, until
    // nothing more is to be stopped (a task is stopped once).
    loop {
        let stops = due_stops(task);
        if stops.is_empty() {
            return;
        }
        UNWINDING.with(|u| u.set(true));
        runtime.context().with(|ctx| {
            let dispatch = dispatch.clone().restore(&ctx).expect("dispatcher");
            for (task, kind, detail) in stops {
                if let Err(e) =
                    call_dispatch::<_, ()>(&dispatch, "stop", (task as f64, kind, detail))
                {
                    let detail = exception_text(&ctx, e);
                    host::log(
                        LogLevel::Error,
                        &format!("stopping task {task} failed: {detail}"),
                    );
                }
                natives::forget(task);
            }
        });
        UNWINDING.with(|u| u.set(false));
        drain(runtime, dispatch);
    }
}

/// The tasks to stop now, with the failure's kind and words (see
/// [`stop_tasks`]).
fn due_stops(entry_task: Option<u64>) -> Vec<(u64, &'static str, String)> {
    let mut stops: Vec<(u64, &'static str, String)> = Vec::new();
    if let Some((task, stop)) = STOPPED.with(|s| s.borrow_mut().take()) {
        match stop {
            Stop::Cancel(reason) => stops.push((task, "cancelled", reason)),
            Stop::Deadline(detail) => stops.push((task, "deadline", detail)),
        }
    }
    for (task, hit) in natives::take_over_cap() {
        let kind = match hit.cap {
            Cap::Output => "output",
            Cap::Operations => "operations",
        };
        stops.push((task, kind, hit.detail));
    }
    if UNHANDLED_OOM.with(|u| u.replace(false)) {
        stops.push((
            natives::current(),
            "out-of-memory",
            "the task's promise jobs ran out of memory and nothing handled the error".into(),
        ));
    }
    // Out of memory, QuickJS may lose a promise's reactions (the job that
    // would run them could not be queued): the task's code is gone, no
    // error was raised, and the task would wait forever for nothing. So
    // when the heap reached its limit in this entry, the entry's task, if
    // it still waits on no operation of the host, is failed as out of
    // memory (stopping a task that is done already does nothing). A task
    // that waits on another task's JavaScript is failed too: after the
    // heap ran out, that is the safe side.
    if HEAP_FULL.with(|h| h.replace(false))
        && let Some(task) = entry_task
        && natives::pending_ops(task) == 0
    {
        stops.push((
            task,
            "out-of-memory",
            "the task ran out of memory and was left waiting on nothing".into(),
        ));
    }
    stops
}

/// The script error of a failed call, or `None` when JavaScript was
/// interrupted (the host knows; there is nothing to report).
fn caught<'js>(ctx: &Ctx<'js>, dispatch: &Object<'js>, e: rquickjs::Error) -> Option<ScriptError> {
    if !e.is_exception() {
        return Some(convert::internal_error(e.to_string()));
    }
    let value: Value = ctx.catch();
    if value.is_uncatchable_error() {
        return None;
    }
    if value.is_null() && heap_exhausted(ctx) {
        return Some(convert::internal_error("out of memory"));
    }
    let info = dispatch
        .get::<_, Function>("errorInfo")
        .and_then(|f| f.call::<_, String>((value,)));
    Some(match info {
        Ok(json) => convert::error_from_json(&json),
        Err(_) => {
            convert::internal_error("the script failed with an error that could not be described")
        }
    })
}

/// The dispatcher in an entry's context, restored from the VM's
/// `Persistent` when the entry first calls it: the shortest entries
/// (`call_inline`'s) never do, and a restore and its drop were a few
/// percent of them.
struct Dispatcher<'a, 'js> {
    ctx: &'a Ctx<'js>,
    saved: &'a Persistent<Object<'static>>,
    restored: std::cell::OnceCell<Object<'js>>,
}

impl<'a, 'js> Dispatcher<'a, 'js> {
    fn new(ctx: &'a Ctx<'js>, saved: &'a Persistent<Object<'static>>) -> Self {
        Dispatcher {
            ctx,
            saved,
            restored: std::cell::OnceCell::new(),
        }
    }

    fn get(&self) -> &Object<'js> {
        self.restored
            .get_or_init(|| self.saved.clone().restore(self.ctx).expect("dispatcher"))
    }
}

fn call_dispatch<'js, A, R>(dispatch: &Object<'js>, method: &str, args: A) -> rquickjs::Result<R>
where
    A: IntoArgs<'js>,
    R: FromJs<'js>,
{
    dispatch.get::<_, Function>(method)?.call(args)
}

/// Starts a task through `dispatch[method](...args)`.
pub fn start<A>(task: u64, method: &str, args: A) -> Vec<Effect>
where
    A: for<'js> IntoArgs<'js>,
{
    entry(Some(task), |_, dispatch, _| {
        call_dispatch(dispatch.get(), method, args)
    })
}

/// `script.call`: task `task` calls export `function` of script `name` with
/// the JSON array `args`. The usual call runs without the dispatcher's
/// JavaScript ([`call_inline`]); any other goes through its `call`.
pub fn call(task: u64, name: String, function: String, args: String) -> Vec<Effect> {
    entry(Some(task), |ctx, dispatch, books| {
        if call_inline(ctx, dispatch, books, task, &name, &function, &args)? {
            return Ok(());
        }
        call_dispatch(dispatch.get(), "call", (task as f64, name, function, args))
    })
}

/// What the dispatcher's `call` does (dispatch.js), for a call it would not
/// fail: the script is loaded, the export is a function and `args` is a
/// JSON array. Returns false, having done nothing, for any other call, which
/// the dispatcher then makes and fails as the task's error. The task begins
/// as core.js's `begin` begins it (live, current, no scope); a result that
/// is a number, a boolean, `null` or `undefined` ends it here when no
/// promise job and no operation of the task waits, written as core.js's
/// `finish` writes it; any other result, or what the function threw, goes
/// to the dispatcher's `settle`. So the shortest entries, which were mostly
/// the dispatcher's own JavaScript (§11 of docs/architecture.md), run none
/// but the script's.
fn call_inline<'js>(
    ctx: &Ctx<'js>,
    dispatch: &Dispatcher<'_, 'js>,
    books: &Books,
    task: u64,
    name: &str,
    function: &str,
    args: &str,
) -> rquickjs::Result<bool> {
    let raw = ctx.as_raw().as_ptr();
    let Some((namespace, atom, temporary)) = SCRIPTS.with(|s| {
        let s = s.borrow();
        let script = s.get(name)?;
        let (atom, temporary) = script.atom(raw, function);
        Some((script.namespace, atom, temporary))
    }) else {
        return Ok(false); // no such script
    };
    if atom == qjs::JS_ATOM_NULL {
        // Out of memory making the atom: the dispatcher's call fails it.
        let _ = ctx.catch();
        return Ok(false);
    }
    // SAFETY: `SCRIPTS` keeps the namespace alive, and nothing in this
    // lookup can load a script (a module namespace runs no user code); the
    // value got is owned by `f`.
    let f = unsafe { Value::from_raw(ctx.clone(), qjs::JS_GetProperty(raw, namespace, atom)) };
    let is_function = f.is_function();
    if temporary {
        // Kept for the next call when it names a function, else given back.
        let kept = is_function
            && SCRIPTS.with(|s| {
                s.borrow_mut()
                    .get_mut(name)
                    .is_some_and(|s| s.keep(function, atom))
            });
        if !kept {
            // SAFETY: the atom made above, and nobody else's.
            unsafe { qjs::JS_FreeAtom(raw, atom) };
        }
    }
    if f.is_exception() {
        // A binding not yet initialised throws: the dispatcher reports it.
        let _ = ctx.catch();
        return Ok(false);
    }
    if !is_function {
        return Ok(false);
    }
    let mut argv = Argv::take(raw);
    if !call_arguments(ctx, args, &mut argv.values)? {
        return Ok(false);
    }

    // `begin(task)`: the entry has made the task current already.
    natives::begin(task);
    books.set_state(ctx, books.scope, qjs::JS_NULL)?;

    // SAFETY: `f` is a function of this context and `argv` its arguments,
    // owned by `argv` (JS_Call takes no reference of them); the result is
    // owned by `value`.
    let value = unsafe {
        let result = qjs::JS_Call(
            raw,
            f.as_raw(),
            qjs::JS_UNDEFINED,
            argv.values.len() as _,
            argv.values.as_mut_ptr(),
        );
        Value::from_raw(ctx.clone(), result)
    };
    drop(argv);
    if value.is_exception() {
        let thrown = ctx.catch();
        if thrown.is_uncatchable_error() {
            // Interrupted: the entry stops the task, as it does when the
            // dispatcher's JavaScript is interrupted.
            return Err(ctx.throw(thrown));
        }
        call_dispatch::<_, ()>(dispatch.get(), "settle", (task as f64, thrown, true))?;
        return Ok(true);
    }
    let text = match value.type_of() {
        Type::Int => value.as_int().map(|n| itoa::Buffer::new().format(n).into()),
        // Finite: its ToString, what `"" + n` and JSON.stringify write.
        Type::Float => match value.as_float() {
            Some(n) if n.is_finite() => Some(value.get::<Coerced<String>>()?.0),
            _ => Some("null".into()),
        },
        Type::Bool => Some(
            if value.as_bool() == Some(true) {
                "true"
            } else {
                "false"
            }
            .into(),
        ),
        Type::Null | Type::Undefined => Some("null".into()),
        _ => None,
    };
    let waiting = natives::pending_ops(task) > 0 || natives::jobs_pending(ctx);
    match text {
        Some(text) if !waiting => {
            // `done(task, "ok", text)`, once.
            natives::done(task, "ok", text, false);
        }
        _ => call_dispatch::<_, ()>(dispatch.get(), "settle", (task as f64, value, false))?,
    }
    Ok(true)
}

/// The argument list of a call: QuickJS values, each holding a reference
/// given back when this drops, in a buffer kept between calls (`ARGV`).
struct Argv {
    raw: *mut qjs::JSContext,
    values: Vec<qjs::JSValue>,
}

impl Argv {
    fn take(raw: *mut qjs::JSContext) -> Argv {
        Argv {
            raw,
            values: ARGV.take(),
        }
    }
}

impl Drop for Argv {
    fn drop(&mut self) {
        free_values(self.raw, &mut self.values);
        ARGV.set(std::mem::take(&mut self.values));
    }
}

/// Gives back the reference each of `values` holds, and empties it.
fn free_values(raw: *mut qjs::JSContext, values: &mut Vec<qjs::JSValue>) {
    for value in values.drain(..) {
        // SAFETY: each value's own reference, given back once.
        unsafe { qjs::JS_FreeValue(raw, value) };
    }
}

/// The arguments of a call, from their JSON array, as `JSON.parse` makes
/// them, pushed onto `argv`; false when `args` is not a JSON array. Numbers,
/// booleans, `null` and strings are made here, one by one, as serde_json
/// splits the list (a whole `JSON.parse` made an array to take them out of,
/// and QuickJS's reading of numbers is slow in Wasm); objects, arrays and
/// strings Rust cannot hold (lone surrogates) are each read by QuickJS's
/// `JSON.parse`.
fn call_arguments(
    ctx: &Ctx<'_>,
    args: &str,
    argv: &mut Vec<qjs::JSValue>,
) -> rquickjs::Result<bool> {
    use serde::de::{Deserializer as _, Error as _, SeqAccess, Visitor};
    use serde_json::value::RawValue;

    if plain_arguments(ctx, args, argv) {
        return Ok(true);
    }
    free_values(ctx.as_raw().as_ptr(), argv);

    /// Makes each argument as serde_json reads it off the list.
    struct Each<'a, 'js> {
        ctx: &'a Ctx<'js>,
        argv: &'a mut Vec<qjs::JSValue>,
        refused: &'a mut bool,
    }
    impl<'de> Visitor<'de> for Each<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(raw) = seq.next_element::<&'de RawValue>()? {
                let Some(value) = argument(self.ctx, raw.get()) else {
                    *self.refused = true;
                    return Err(A::Error::custom("an argument QuickJS did not make"));
                };
                self.argv.push(value);
            }
            Ok(())
        }
    }

    let mut refused = false;
    let mut list = serde_json::Deserializer::from_str(args);
    let split = list
        .deserialize_seq(Each {
            ctx,
            argv,
            refused: &mut refused,
        })
        .and_then(|()| list.end());
    match split {
        Ok(()) => return Ok(true),
        Err(_) if refused => return Ok(false),
        Err(_) => {}
    }
    // Nesting past serde_json's limit, or anything else it refuses: the
    // whole text to QuickJS, which decides as it always did.
    let raw = ctx.as_raw().as_ptr();
    free_values(raw, argv);
    let Ok(list) = ctx.json_parse(args) else {
        let _ = ctx.catch();
        return Ok(false);
    };
    let Some(list) = list.into_array() else {
        return Ok(false);
    };
    for value in list.iter::<Value>() {
        // SAFETY: a live value of this context; the reference is `argv`'s.
        argv.push(unsafe { qjs::JS_DupValue(raw, value?.as_raw()) });
    }
    Ok(true)
}

/// The arguments of the commonest calls, read without serde_json, whose
/// generic reader was most of the time a short call spent on its list:
/// a list of int32 literals, `true`, `false`, `null` and strings without
/// escapes, made as [`argument`] makes them. False, for
/// [`call_arguments`] to read the list its own way, at anything else: a
/// fraction or an exponent, an integer past int32 or `-0`, an escape or a
/// control character, an object or a list, and any text that is not JSON
/// (which that way refuses). What was pushed onto `argv` is the caller's
/// to give back.
fn plain_arguments(ctx: &Ctx<'_>, args: &str, argv: &mut Vec<qjs::JSValue>) -> bool {
    let bytes = args.as_bytes();
    let skip = |mut at: usize| {
        while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            at += 1;
        }
        at
    };
    let mut at = skip(0);
    if bytes.get(at) != Some(&b'[') {
        return false;
    }
    at = skip(at + 1);
    if bytes.get(at) == Some(&b']') {
        return skip(at + 1) == bytes.len();
    }
    loop {
        let start = at;
        let value = match bytes.get(at) {
            Some(b'-' | b'0'..=b'9') => {
                let negative = bytes[at] == b'-';
                at += usize::from(negative);
                let mut n: i64 = 0;
                match bytes.get(at) {
                    Some(b'0') => at += 1,
                    Some(b'1'..=b'9') => {
                        while let Some(&digit @ b'0'..=b'9') = bytes.get(at) {
                            n = n * 10 + i64::from(digit - b'0');
                            if n > 1 << 31 {
                                return false; // past int32 either way
                            }
                            at += 1;
                        }
                    }
                    _ => return false,
                }
                if matches!(bytes.get(at), Some(b'.' | b'e' | b'E')) {
                    return false;
                }
                let n = if negative { -n } else { n };
                match i32::try_from(n) {
                    // -0 is a float; so is every integer past int32.
                    Ok(0) if negative => return false,
                    Ok(n) => qjs::JS_MKVAL(qjs::JS_TAG_INT, n),
                    Err(_) => return false,
                }
            }
            Some(b't') if bytes[at..].starts_with(b"true") => {
                at += 4;
                qjs::JS_TRUE
            }
            Some(b'f') if bytes[at..].starts_with(b"false") => {
                at += 5;
                qjs::JS_FALSE
            }
            Some(b'n') if bytes[at..].starts_with(b"null") => {
                at += 4;
                qjs::JS_NULL
            }
            Some(b'"') => {
                at += 1;
                while bytes
                    .get(at)
                    .is_some_and(|&b| b != b'"' && b != b'\\' && b >= 0x20)
                {
                    at += 1;
                }
                if bytes.get(at) != Some(&b'"') {
                    return false;
                }
                // (A slice of a str between two ASCII quotes.)
                let Some(value) = new_string(ctx, &args[start + 1..at]) else {
                    return false;
                };
                at += 1;
                value
            }
            _ => return false,
        };
        argv.push(value);
        at = skip(at);
        match bytes.get(at) {
            Some(b',') => at = skip(at + 1),
            Some(b']') => return skip(at + 1) == bytes.len(),
            _ => return false,
        }
    }
}

/// A JavaScript string of `s`, a reference the caller owns; `None` when
/// QuickJS failed to make it (out of memory; its exception is cleared).
fn new_string(ctx: &Ctx<'_>, s: &str) -> Option<qjs::JSValue> {
    // SAFETY: `s` is valid UTF-8 for its length.
    let value =
        unsafe { qjs::JS_NewStringLen(ctx.as_raw().as_ptr(), s.as_ptr().cast(), s.len() as _) };
    // SAFETY: a tag test.
    if unsafe { qjs::JS_IsException(value) } {
        let _ = ctx.catch();
        return None;
    }
    Some(value)
}

/// One argument of a call from its JSON text, which serde_json has checked,
/// as `JSON.parse` makes it: a reference the caller owns, or `None` when
/// QuickJS failed to make it (out of memory; its exception is cleared).
/// A number is an integer value where `JSON.parse` makes one (the patched
/// quickjs.c of scripts/bootstrap.sh: an int32 that is not -0, which is
/// also the rule of `JS_NewFloat64`), otherwise a float.
fn argument(ctx: &Ctx<'_>, text: &str) -> Option<qjs::JSValue> {
    let raw = ctx.as_raw().as_ptr();
    let parse = |text: &str| match ctx.json_parse(text) {
        // SAFETY: a live value of this context; the reference is the caller's.
        Ok(value) => Some(unsafe { qjs::JS_DupValue(raw, value.as_raw()) }),
        Err(_) => {
            let _ = ctx.catch();
            None
        }
    };
    let string = |s: &str| new_string(ctx, s);
    match text.as_bytes()[0] {
        b'n' => Some(qjs::JS_NULL),
        b't' => Some(qjs::JS_TRUE),
        b'f' => Some(qjs::JS_FALSE),
        b'-' | b'0'..=b'9' => match text.parse::<i32>() {
            Ok(n) if text != "-0" => Some(qjs::JS_MKVAL(qjs::JS_TAG_INT, n)),
            _ => text.parse::<f64>().ok().map(qjs::JS_NewFloat64),
        },
        // Without escapes, borrowed; with them, decoded; with a lone
        // surrogate (which Rust cannot hold), QuickJS's.
        b'"' => match serde_json::from_str::<&str>(text) {
            Ok(s) => string(s),
            Err(_) => match serde_json::from_str::<String>(text) {
                Ok(s) => string(&s),
                Err(_) => parse(text),
            },
        },
        _ => parse(text),
    }
}

/// Calls `dispatch[method](...args)` for an entry that starts no task.
pub fn dispatch<A>(method: &str, args: A) -> Vec<Effect>
where
    A: for<'js> IntoArgs<'js>,
{
    entry(None, |_, dispatch, _| {
        call_dispatch(dispatch.get(), method, args)
    })
}

/// A synchronous query that returns JSON text.
pub fn query<A>(method: &str, args: A) -> Result<String, ScriptError>
where
    A: for<'js> IntoArgs<'js>,
{
    let mut out = None;
    let effects = entry(None, |ctx, dispatch, _| {
        match call_dispatch::<_, String>(dispatch.get(), method, args) {
            Ok(json) => out = Some(Ok(json)),
            Err(e) => {
                out = Some(Err(caught(ctx, dispatch.get(), e)
                    .unwrap_or_else(|| convert::internal_error("interrupted"))))
            }
        }
        Ok(())
    });
    // A query runs no script code that could ask the host for anything.
    debug_assert!(effects.is_empty());
    out.expect("the query ran")
}

/// The effects of a task that fails before reaching JavaScript.
pub fn fail(task: u64, error: ScriptError) -> Vec<Effect> {
    vec![Effect::Done(TaskDone {
        task,
        outcome: Err(natives::script_failure(error)),
    })]
}

thread_local! {
    /// The script each load task in flight loads, and its module graph: see
    /// [`name_load_errors`].
    static LOADING: RefCell<HashMap<u64, (String, u64)>> = RefCell::new(HashMap::new());
    /// The source [`declare`] hands QuickJS next, NUL-terminated.
    static SOURCE: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    /// The bytecode [`declare`] hands QuickJS next, instead of a source.
    static BYTECODE: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    /// Bytecode the host offered for the modules of the next load entry,
    /// by path (see [`offer_bytecode`]).
    static OFFERED: RefCell<HashMap<String, Vec<u8>>> = RefCell::new(HashMap::new());
    /// While [`compile`] runs: what it writes.
    static WRITING: RefCell<Option<Written>> = const { RefCell::new(None) };
    /// Set while a module is read from bytecode (see [`reading_bytecode`]).
    static READING: Cell<bool> = const { Cell::new(false) };
}

/// What [`compile`] collects while QuickJS compiles a graph.
#[derive(Default)]
struct Written {
    /// Each module compiled under its own path, and its bytecode.
    modules: Vec<(String, Vec<u8>)>,
    /// Modules that import with attributes: their bytecode would lose them.
    attributed: HashSet<String>,
}

/// Whether a module is being read from bytecode now. QuickJS does not write
/// an import's attributes into bytecode, and hands the resolver an
/// unset value for them while it reads a module: the resolver must not
/// look at them then (no module that imports with attributes is ever
/// written, see [`compile`]).
pub(crate) fn reading_bytecode() -> bool {
    READING.with(Cell::get)
}

/// The resolver met an import with attributes in the module `base`: while
/// [`compile`] runs, that module's bytecode is not kept.
pub(crate) fn note_attributes(base: &str) {
    WRITING.with(|w| {
        if let Some(w) = w.borrow_mut().as_mut() {
            w.attributed.insert(base.to_string());
        }
    });
}

/// Whether `name` is a module's name in this VM and also its path: the
/// first load of that path in this instance. Bytecode names its module, so
/// only such modules are written and read.
fn named_by_path(name: &str) -> bool {
    loader::display(name).as_deref() == Some(name)
}

/// Compiles the modules of a graph without evaluating them and returns
/// each one's bytecode (see `script.compile` in the WIT). Nothing runs:
/// QuickJS compiles the entry and, resolving its imports, every module it
/// imports statically.
pub fn compile(
    entry: &str,
    modules: Vec<(String, String)>,
    checked: bool,
) -> Vec<(String, Vec<u8>)> {
    let Ok(graph) = loader::register(entry, modules, checked) else {
        return Vec::new();
    };
    VM.with(|cell| {
        let mut slot = cell.borrow_mut();
        let vm = slot.get_or_insert_with(boot);
        vm.runtime.context().with(|ctx| {
            WRITING.with(|w| *w.borrow_mut() = Some(Written::default()));
            let compiled = declare(&ctx, &graph.name, &graph.source);
            let written = WRITING.with(|w| w.borrow_mut().take()).unwrap_or_default();
            match compiled {
                Ok(_) => written
                    .modules
                    .into_iter()
                    .filter(|(name, _)| !written.attributed.contains(name))
                    .collect(),
                Err(_) => {
                    // The load reports it, compiling from the source.
                    let _ = ctx.catch();
                    Vec::new()
                }
            }
        })
    })
}

/// Keeps `modules` (path, bytecode) for the next load entry only (see
/// `script.offer-bytecode` in the WIT).
pub fn offer_bytecode(modules: Vec<(String, Vec<u8>)>) {
    OFFERED.with(|o| *o.borrow_mut() = modules.into_iter().collect());
}

/// Compiles and evaluates a module; see `script.load` in the WIT.
pub fn load(task: u64, name: &str, source: &str) -> Vec<Effect> {
    let graph = loader::register(name, vec![(name.to_string(), source.to_string())], false);
    load_graph(task, name, graph)
}

/// Compiles the entry of a module graph and evaluates it, its imports
/// first; see `script.load-modules` in the WIT.
pub fn load_modules(task: u64, entry: &str, modules: Vec<(String, String)>) -> Vec<Effect> {
    load_graph(task, entry, loader::register(entry, modules, true))
}

fn load_graph(task: u64, name: &str, graph: Result<loader::Registered, String>) -> Vec<Effect> {
    let graph = match graph {
        Ok(graph) => graph,
        Err(message) => {
            OFFERED.with(|o| o.borrow_mut().clear());
            return fail(
                task,
                ScriptError {
                    name: "TypeError".into(),
                    message,
                    stack: None,
                    file: Some(name.to_string()),
                    line: None,
                    column: None,
                },
            );
        }
    };
    LOADING.with(|l| l.borrow_mut().insert(task, (name.to_string(), graph.graph)));
    let effects = entry(Some(task), |ctx, dispatch, _| {
        // The module's top-level code runs for this task (its console lines,
        // its timers), so the task exists before the code runs.
        call_dispatch::<_, ()>(dispatch.get(), "begin", (task as f64,))?;
        let (module, evaluated) = declare(ctx, &graph.name, &graph.source)?.eval()?;
        let namespace = module.namespace()?;
        call_dispatch(
            dispatch.get(),
            "load",
            (task as f64, name, namespace, evaluated),
        )
    });
    // Offers serve one load: a dynamic import later compiles its source.
    OFFERED.with(|o| o.borrow_mut().clear());
    effects
}

/// Gives the error of a failed load the module's name as its file when it
/// names none: QuickJS locates neither some errors of the parser (a regular
/// expression that does not compile) nor those of linking (an export of
/// nothing), and a top-level `throw 1` has no location at all. Runs on the
/// effects of every entry: a load whose top level awaits ends in a later
/// one. Tells the loader how each load ended (a graph replaced or failed
/// is retired).
fn name_load_errors(effects: &mut [Effect]) {
    if LOADING.with(|l| l.borrow().is_empty()) {
        return;
    }
    for effect in effects {
        let Effect::Done(done) = effect else {
            continue;
        };
        let Some((name, graph)) = LOADING.with(|l| l.borrow_mut().remove(&done.task)) else {
            continue;
        };
        loader::loaded(&name, graph, done.outcome.is_ok());
        if let Err(Failure::Script(error)) = &mut done.outcome
            && error.file.is_none()
        {
            error.file = Some(name);
        }
    }
}

/// Compiles `source` as the module `name`, without evaluating it; reads
/// the module from the bytecode the host offered for it instead, when it
/// offered some and `name` is the module's path (see [`offer_bytecode`]).
/// While [`compile`] runs, writes the bytecode of what it compiles.
///
/// [`Module::declare`] hands QuickJS the source as a C string, so a source
/// with a NUL byte in it (even inside a string literal) could not load at
/// all; `JS_Eval` itself takes the source with its length, and this hands
/// it over that way. rquickjs builds a module from raw QuickJS only through
/// a module loader function, which takes no data of its own: the source
/// waits for it in [`SOURCE`].
pub(crate) fn declare<'js>(
    ctx: &Ctx<'js>,
    name: &str,
    source: &str,
) -> rquickjs::Result<Module<'js>> {
    unsafe extern "C" fn compile(
        ctx: *mut qjs::JSContext,
        name: *const c_char,
    ) -> *mut qjs::JSModuleDef {
        let Some(source) = SOURCE.with(|s| s.borrow_mut().take()) else {
            return ptr::null_mut();
        };
        let flags =
            qjs::JS_EVAL_TYPE_MODULE | qjs::JS_EVAL_FLAG_STRICT | qjs::JS_EVAL_FLAG_COMPILE_ONLY;
        // A module compiled from its source while another is read from
        // bytecode (its import): its own imports' attributes are real.
        let reading = READING.with(|r| r.replace(false));
        // SAFETY: `ctx` and `name` are live (rquickjs passes them), and the
        // text's `len - 1` bytes are followed by the NUL byte JS_Eval wants.
        let module = unsafe {
            qjs::JS_Eval(
                ctx,
                source.as_ptr().cast(),
                (source.len() - 1) as qjs::size_t,
                name,
                flags as i32,
            )
        };
        READING.with(|r| r.set(reading));
        // SAFETY: reading the tag and pointer of a value JS_Eval returned.
        if unsafe { qjs::JS_IsException(module) } {
            // The exception stays pending: the caller catches it.
            return ptr::null_mut();
        }
        // SAFETY: `name` is the C string rquickjs passes.
        let name = unsafe { CStr::from_ptr(name) }.to_str().unwrap_or("");
        if WRITING.with(|w| w.borrow().is_some()) && named_by_path(name) {
            let mut len: qjs::size_t = 0;
            // SAFETY: `module` is the module just compiled, not yet linked
            // (what qjsc writes); the buffer is QuickJS's, freed here.
            let written = unsafe {
                let buf =
                    qjs::JS_WriteObject(ctx, &mut len, module, qjs::JS_WRITE_OBJ_BYTECODE as i32);
                if buf.is_null() {
                    // Out of memory: this module is not cached.
                    qjs::JS_FreeValue(ctx, qjs::JS_GetException(ctx));
                    None
                } else {
                    let bytes = std::slice::from_raw_parts(buf, len as usize).to_vec();
                    qjs::js_free(ctx, buf.cast());
                    Some(bytes)
                }
            };
            if let Some(bytes) = written {
                WRITING.with(|w| {
                    if let Some(w) = w.borrow_mut().as_mut() {
                        w.modules.push((name.to_string(), bytes));
                    }
                });
            }
        }
        // SAFETY: the value is a module (JS_Eval compiled one).
        unsafe { qjs::JS_VALUE_GET_PTR(module) }.cast()
    }
    unsafe extern "C" fn read(
        ctx: *mut qjs::JSContext,
        name: *const c_char,
    ) -> *mut qjs::JSModuleDef {
        let Some(bytes) = BYTECODE.with(|b| b.borrow_mut().take()) else {
            return ptr::null_mut();
        };
        let was = READING.with(|r| r.replace(true));
        // SAFETY: the bytes are what `compile` wrote in this process, from
        // this guest (the host gives nothing else: see the WIT); a module
        // read is resolved at once, its imports' attributes unread.
        let module = unsafe {
            let module = qjs::JS_ReadObject(
                ctx,
                bytes.as_ptr(),
                bytes.len() as qjs::size_t,
                qjs::JS_READ_OBJ_BYTECODE as i32,
            );
            if qjs::JS_IsException(module) {
                ptr::null_mut()
            } else if qjs::JS_VALUE_GET_TAG(module) != qjs::JS_TAG_MODULE {
                qjs::JS_FreeValue(ctx, module);
                qjs::JS_ThrowInternalError(ctx, c"the bytecode offered is not a module".as_ptr());
                ptr::null_mut()
            } else {
                let m: *mut qjs::JSModuleDef = qjs::JS_VALUE_GET_PTR(module).cast();
                let atom = qjs::JS_GetModuleName(ctx, m);
                let read_name = qjs::JS_AtomToCStringLen(ctx, ptr::null_mut(), atom);
                qjs::JS_FreeAtom(ctx, atom);
                let same =
                    !read_name.is_null() && CStr::from_ptr(read_name) == CStr::from_ptr(name);
                if !read_name.is_null() {
                    qjs::JS_FreeCString(ctx, read_name);
                }
                if !same {
                    qjs::JS_ThrowInternalError(
                        ctx,
                        c"the bytecode offered names another module".as_ptr(),
                    );
                    ptr::null_mut()
                } else if qjs::JS_ResolveModule(ctx, module) < 0 {
                    ptr::null_mut()
                } else {
                    m
                }
            }
        };
        READING.with(|r| r.set(was));
        module
    }
    if named_by_path(name)
        && let Some(bytes) = OFFERED.with(|o| o.borrow_mut().remove(name))
    {
        BYTECODE.with(|b| *b.borrow_mut() = Some(bytes));
        // SAFETY: `read` returns a module read in `ctx`, or null with an
        // exception pending, as `Module::declare` does.
        let module = unsafe { Module::from_load_fn(ctx.clone(), name, read) };
        BYTECODE.with(|b| b.borrow_mut().take());
        return module;
    }
    let mut text = Vec::with_capacity(source.len() + 1);
    text.extend_from_slice(source.as_bytes());
    text.push(0);
    SOURCE.with(|s| *s.borrow_mut() = Some(text));
    // SAFETY: `compile` returns a module compiled in `ctx`, or null with an
    // exception pending, as `Module::declare` does.
    let module = unsafe { Module::from_load_fn(ctx.clone(), name, compile) };
    SOURCE.with(|s| s.borrow_mut().take());
    module
}

//! The functions `runtime.js` calls into Rust, and the queue of effects they
//! fill during one entry into the guest.
//!
//! Each native only records what happened; nothing here calls the host or
//! waits. The entry that is running takes the queue when JavaScript has
//! nothing left to do (see [`crate::vm`]).

use std::cell::{Cell, RefCell};

use rustc_hash::FxHashMap;

use rquickjs::function::Opt;
use rquickjs::{
    ArrayBuffer, Ctx, Exception, Function, IntoJs, Object, Result, TypedArray, Value as JsValue,
};

use crate::convert;
use crate::exports::marionette::runtime::vm::TaskCaps;
use crate::marionette::runtime::host;
use crate::marionette::runtime::types::{
    Cap, CapHit, ConsoleLine, Effect, Event, Failure, HostOp, LogLevel, Request, TaskDone,
    TaskEvent, Value,
};

thread_local! {
    static EFFECTS: RefCell<Vec<Effect>> = const { RefCell::new(Vec::new()) };
    static NEXT_OP: Cell<u64> = const { Cell::new(1) };
    static CAPS: Cell<TaskCaps> = const { Cell::new(TaskCaps { console_lines: 0, console_bytes: 0, pending_ops: 0 }) };
    /// The live tasks (begun and not yet done), each with what it has
    /// produced, against the caps.
    static USAGE: RefCell<FxHashMap<u64, Usage>> = RefCell::new(FxHashMap::default());
    /// The task of each pending operation.
    static OP_TASK: RefCell<FxHashMap<u64, u64>> = RefCell::new(FxHashMap::default());
    /// The task JavaScript runs for right now (0: none), as the runtime
    /// last said: what `should-interrupt` is asked about.
    static CURRENT: Cell<u64> = const { Cell::new(0) };
    /// Tasks that ran into a cap during this entry, with the cap: the entry
    /// stops them when JavaScript has nothing left to run.
    static OVER_CAP: RefCell<Vec<(u64, CapHit)>> = const { RefCell::new(Vec::new()) };
    /// The runtime has a settlement waiting for a turn of its own (see
    /// `settleInTurn` in core.js and [`crate::vm`]'s `drain`).
    static DEFERRED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the runtime asked for a turn of its own since the last call.
pub fn take_deferred() -> bool {
    DEFERRED.with(|d| d.replace(false))
}

/// The task JavaScript runs for right now (0: none).
pub fn current() -> u64 {
    CURRENT.with(Cell::get)
}

/// Sets the task JavaScript runs for, before an entry runs any (see
/// `vm::entry`).
pub fn set_current(task: u64) {
    CURRENT.with(|c| c.set(task));
}

/// Takes the tasks that ran into a cap since the last call.
pub fn take_over_cap() -> Vec<(u64, CapHit)> {
    OVER_CAP.with(|o| std::mem::take(&mut *o.borrow_mut()))
}

/// What one live task has produced so far.
#[derive(Default)]
struct Usage {
    console_lines: u32,
    console_bytes: u64,
    pending_ops: u32,
    /// Set once the task ran into a cap: it is reported once, and from then
    /// on every console line and request of the task is refused.
    over: bool,
}

/// Sets the caps per task (see `vm-config.task-caps`).
pub fn set_caps(caps: TaskCaps) {
    CAPS.with(|c| c.set(caps));
}

/// An operation was answered or released: it no longer counts.
pub fn settled(op: u64) {
    crate::clock::settled(op);
    if let Some(task) = OP_TASK.with(|o| o.borrow_mut().remove(&op)) {
        USAGE.with(|u| {
            if let Some(usage) = u.borrow_mut().get_mut(&task) {
                usage.pending_ops = usage.pending_ops.saturating_sub(1);
            }
        });
    }
}

/// Makes `task` live and current: what runs now runs on its behalf (the
/// runtime's `begin`, and `vm::call_inline`'s). Live from here to its done.
pub fn begin(task: u64) {
    USAGE.with(|u| {
        u.borrow_mut().entry(task).or_default();
    });
    set_current(task);
}

/// Whether `task` was begun and is not yet done.
pub fn live(task: u64) -> bool {
    USAGE.with(|u| u.borrow().contains_key(&task))
}

/// A task is done or cancelled: it is no longer live, and its counts go.
/// False when it was not live.
pub fn forget(task: u64) -> bool {
    USAGE.with(|u| u.borrow_mut().remove(&task)).is_some()
}

/// Counts what the live `task` is about to produce with `count`; past a
/// cap, notes the task once (the entry stops it, see [`take_over_cap`]) and
/// returns the `RangeError` message for the script. `Ok(false)`, counting
/// nothing, when the task is not live: it may produce nothing more.
fn charge(
    task: u64,
    count: impl FnOnce(&mut Usage, TaskCaps) -> Option<(Cap, String)>,
) -> std::result::Result<bool, String> {
    let caps = CAPS.with(Cell::get);
    USAGE.with(|u| {
        let mut usage = u.borrow_mut();
        let Some(usage) = usage.get_mut(&task) else {
            return Ok(false);
        };
        if usage.over {
            return Err("this task ran into a cap of its sandbox and is being stopped".to_string());
        }
        match count(usage, caps) {
            None => Ok(true),
            Some((cap, detail)) => {
                usage.over = true;
                OVER_CAP.with(|o| {
                    o.borrow_mut().push((
                        task,
                        CapHit {
                            cap,
                            detail: detail.clone(),
                        },
                    ))
                });
                Err(detail)
            }
        }
    })
}

/// Whether QuickJS has a promise job waiting.
pub fn jobs_pending(ctx: &Ctx<'_>) -> bool {
    // SAFETY: `ctx` is a live context; this only reads its runtime's job
    // list.
    unsafe { rquickjs::qjs::JS_IsJobPending(rquickjs::qjs::JS_GetRuntime(ctx.as_raw().as_ptr())) }
}

/// `task` asks the host for `what`: a new op, counted against the task's
/// cap on pending operations (a RangeError past it), its request an effect.
/// The runtime asks only for a live task (core.js's `request` refuses the
/// others with an `AbortError` first).
fn request(ctx: &Ctx<'_>, task: u64, what: HostOp) -> Result<f64> {
    let live = charge(task, |usage, caps| {
        if caps.pending_ops > 0 && usage.pending_ops >= caps.pending_ops {
            return Some((
                Cap::Operations,
                format!(
                    "too many pending host operations (timers included): this task may have {} at once",
                    caps.pending_ops
                ),
            ));
        }
        usage.pending_ops += 1;
        None
    })
    .map_err(|message| Exception::throw_range(ctx, &message))?;
    if !live {
        return Err(Exception::throw_internal(
            ctx,
            &format!("task {task} is over: it can start nothing more"),
        ));
    }
    let op = NEXT_OP.with(|n| {
        let op = n.get();
        n.set(op + 1);
        op
    });
    OP_TASK.with(|o| o.borrow_mut().insert(op, task));
    crate::clock::requested(op, &what);
    push(Effect::Request(Request { op, task, what }));
    Ok(op as f64)
}

/// The operations `task` has pending, in the order asked; `None` (no array
/// to make) when it has none.
fn ops_of(task: u64) -> Option<Vec<f64>> {
    if pending_ops(task) == 0 {
        return None;
    }
    let mut ops: Vec<u64> = OP_TASK.with(|o| {
        o.borrow()
            .iter()
            .filter(|(_, t)| **t == task)
            .map(|(op, _)| *op)
            .collect()
    });
    ops.sort_unstable();
    Some(ops.into_iter().map(|op| op as f64).collect())
}

/// How many operations `task` has pending.
pub fn pending_ops(task: u64) -> u32 {
    USAGE.with(|u| u.borrow().get(&task).map_or(0, |usage| usage.pending_ops))
}

/// A task is done (core.js's `done`, after it released the task's
/// operations): `kind` is "ok" (then `payload` is the JSON of the result,
/// or of a turn when `is_turn`) or the failure's kind, with `payload` its
/// words (or, for "script", the error's JSON). A task ends once: nothing
/// happens for one that is not live (done already, or stopped).
pub fn done(task: u64, kind: &str, payload: String, is_turn: bool) {
    if !forget(task) {
        return;
    }
    // A task that ran into a cap during this entry fails with the cap, even
    // when its own code ended it first (the RangeError it saw, uncaught).
    let hit = OVER_CAP.with(|o| {
        let mut o = o.borrow_mut();
        let at = o.iter().position(|(t, _)| *t == task)?;
        Some(o.remove(at).1)
    });
    let outcome = match kind {
        _ if hit.is_some() => Err(Failure::OverCap(hit.expect("checked"))),
        "ok" if is_turn => convert::turn_from_json(&payload)
            .map(Value::Turn)
            .map_err(Failure::Script),
        // The host reads this text itself: JavaScript's lone surrogates
        // become U+FFFD here, as in all the guest reads.
        "ok" => Ok(Value::Json(convert::well_formed(payload))),
        "cancelled" => Err(Failure::Cancelled(payload)),
        "deadline" => Err(Failure::Deadline(payload)),
        "out-of-memory" => Err(Failure::OutOfMemory(payload)),
        "output" | "operations" => Err(Failure::OverCap(CapHit {
            cap: if kind == "output" {
                Cap::Output
            } else {
                Cap::Operations
            },
            detail: payload,
        })),
        _ => Err(script_failure(convert::error_from_json(&payload))),
    };
    push(Effect::Done(TaskDone { task, outcome }))
}

/// Queues an effect of the current entry.
pub fn push(effect: Effect) {
    EFFECTS.with(|e| e.borrow_mut().push(effect));
}

/// Takes every effect queued since the last call.
pub fn take() -> Vec<Effect> {
    EFFECTS.with(|e| std::mem::take(&mut *e.borrow_mut()))
}

/// Bytes handed to JavaScript as an `ArrayBuffer` (a `fetch` response's
/// body).
pub struct Bytes(pub Vec<u8>);

impl<'js> IntoJs<'js> for Bytes {
    fn into_js(self, ctx: &Ctx<'js>) -> Result<JsValue<'js>> {
        ArrayBuffer::new(ctx.clone(), self.0).map(ArrayBuffer::into_value)
    }
}

/// Task and op ids cross into JavaScript as numbers; the host hands out ids
/// far below 2^53, where every integer is exact.
fn id(n: f64) -> u64 {
    n as u64
}

fn level(name: &str) -> LogLevel {
    match name {
        "debug" => LogLevel::Debug,
        "warn" => LogLevel::Warn,
        "error" => LogLevel::Error,
        _ => LogLevel::Info,
    }
}

/// The object handed to `runtime.js` as `native`.
pub fn object<'js>(ctx: &Ctx<'js>) -> Result<Object<'js>> {
    let native = Object::new(ctx.clone())?;

    // Whether a `null` just thrown is QuickJS out of memory (see
    // `vm::heap_exhausted`).
    native.set(
        "heapExhausted",
        Function::new(ctx.clone(), |ctx: Ctx<'js>| crate::vm::heap_exhausted(&ctx))?,
    )?;

    // The path of a script's module QuickJS knows by another name (see
    // `loader`), for the errors the host sees.
    native.set(
        "modulePath",
        Function::new(ctx.clone(), |name: String| crate::loader::display(&name))?,
    )?;
    // `Date.now()` and `Math.random()` (see `clock.rs` and `js/clock.js`).
    native.set("now", Function::new(ctx.clone(), crate::clock::now_ms)?)?;
    native.set("random", Function::new(ctx.clone(), crate::clock::random)?)?;
    // Whether QuickJS has a promise job waiting: a task whose body returned
    // a plain value ends at once when none is (see `start` in core.js).
    native.set(
        "jobsPending",
        Function::new(ctx.clone(), |ctx: Ctx<'js>| jobs_pending(&ctx))?,
    )?;
    // What the host provides, once after each change (see
    // `vm::host_info_changed`).
    native.set(
        "hostInfo",
        Function::new(ctx.clone(), crate::vm::host_info_changed)?,
    )?;
    // The runtime's ids (see `clock::uuid`).
    native.set("uuid", Function::new(ctx.clone(), crate::clock::uuid)?)?;
    // For profiling by hand: `native.mark("label")` lines put in the
    // runtime's JavaScript reach the host's log at debug level, where the
    // bench's `entries jsfuel` reads the fuel used between each two (README,
    // "Profiling the guest"). The shipped JavaScript calls it nowhere.
    native.set(
        "mark",
        Function::new(ctx.clone(), |label: String| {
            host::log(LogLevel::Debug, &label)
        })?,
    )?;
    native.set("copy", Function::new(ctx.clone(), crate::copy::copy)?)?;
    native.set("json", Function::new(ctx.clone(), crate::copy::text)?)?;
    // The runtime set a script's namespace in its Map of scripts (see
    // `vm::script_loaded`).
    native.set(
        "scriptLoaded",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, name: String, namespace: Object<'js>| {
                crate::vm::script_loaded(&ctx, name, namespace);
            },
        )?,
    )?;

    // The runtime says which task its JavaScript runs for.
    native.set(
        "current",
        Function::new(ctx.clone(), |task: f64| CURRENT.with(|c| c.set(id(task))))?,
    )?;
    // The live tasks (core.js's `begin`, and what asks whether a task may
    // still act).
    native.set(
        "begin",
        Function::new(ctx.clone(), |task: f64| begin(id(task)))?,
    )?;
    native.set(
        "live",
        Function::new(ctx.clone(), |task: f64| live(id(task)))?,
    )?;

    // `body`: the bytes of a `fetch`'s body (a `Uint8Array`), beside the JSON.
    native.set(
        "request",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>,
             task: f64,
             what: String,
             body: Opt<TypedArray<'js, u8>>|
             -> Result<f64> {
                let body = match body.0 {
                    None => None,
                    Some(bytes) => Some(
                        bytes
                            .as_bytes()
                            .ok_or_else(|| {
                                Exception::throw_type(&ctx, "fetch: the body's buffer is detached")
                            })?
                            .to_vec(),
                    ),
                };
                let what = convert::host_op_from_json(&what, body)
                    .map_err(|e| Exception::throw_type(&ctx, &e.message))?;
                request(&ctx, id(task), what)
            },
        )?,
    )?;

    // The operations a task has pending, oldest first (core.js's
    // `pendingOf`, at the task's end).
    native.set(
        "opsOf",
        Function::new(ctx.clone(), |task: f64| ops_of(id(task)))?,
    )?;

    // `request` of `{op: "sleep", ms}`, without the JSON (the runtime's
    // timers: setTimeout, a tool call's timeout, a retry's backoff).
    native.set(
        "sleep",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, task: f64, ms: f64| -> Result<f64> {
                if !(ms >= 0.0 && ms.fract() == 0.0 && ms < u64::MAX as f64) {
                    return Err(Exception::throw_type(
                        &ctx,
                        &format!("a sleep of {ms} ms: not a whole number of milliseconds"),
                    ));
                }
                request(&ctx, id(task), HostOp::Sleep(ms as u64))
            },
        )?,
    )?;

    native.set(
        "validate",
        Function::new(
            ctx.clone(),
            |schema: String, arguments: String| -> Option<String> {
                host::validate_arguments(&schema, &arguments).err()
            },
        )?,
    )?;

    // A settlement waits for a turn of its own: the guest's drain gives it
    // one when the promise jobs before it have run.
    native.set(
        "defer",
        Function::new(ctx.clone(), || DEFERRED.with(|d| d.set(true)))?,
    )?;

    native.set(
        "release",
        Function::new(ctx.clone(), |op: f64| {
            settled(id(op));
            push(Effect::Release(id(op)))
        })?,
    )?;

    native.set(
        "console",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, task: f64, lvl: String, message: String| -> Result<()> {
                let task = id(task);
                let bytes = message.len() as u64;
                // A task that is over says nothing more.
                let live = charge(task, |usage, caps| {
                    usage.console_lines += 1;
                    usage.console_bytes += bytes;
                    if caps.console_lines > 0 && usage.console_lines > caps.console_lines {
                        return Some((
                            Cap::Output,
                            format!(
                                "too much console output: this task may write {} lines",
                                caps.console_lines
                            ),
                        ));
                    }
                    if caps.console_bytes > 0 && usage.console_bytes > caps.console_bytes {
                        return Some((
                            Cap::Output,
                            format!(
                                "too much console output: this task may write {} bytes",
                                caps.console_bytes
                            ),
                        ));
                    }
                    None
                })
                .map_err(|message| Exception::throw_range(&ctx, &message))?;
                if !live {
                    return Ok(());
                }
                push(Effect::Event(TaskEvent {
                    task,
                    event: Event::Console(ConsoleLine {
                        level: level(&lvl),
                        message,
                    }),
                }));
                Ok(())
            },
        )?,
    )?;

    // Whether the host reads `task`'s session events (see the WIT's
    // `wants-session-events`): asked once per session run.
    native.set(
        "wantsSessionEvents",
        Function::new(ctx.clone(), |task: f64| {
            host::wants_session_events(id(task))
        })?,
    )?;
    native.set(
        "sessionEvent",
        Function::new(ctx.clone(), |task: f64, json: String| {
            push(Effect::Event(TaskEvent {
                task: id(task),
                event: Event::Session(convert::well_formed(json)),
            }))
        })?,
    )?;

    native.set(
        "done",
        Function::new(
            ctx.clone(),
            |task: f64, kind: String, payload: String, is_turn: bool| {
                done(id(task), &kind, payload, is_turn)
            },
        )?,
    )?;

    crate::web::install(ctx, &native)?;
    Ok(native)
}

/// A task's error: QuickJS out of memory (its own `InternalError`, or the
/// `null` it throws when it cannot make one, which the runtime reports as
/// `InternalError: out of memory`) is the memory limit; anything else the
/// script's error.
pub fn script_failure(error: crate::marionette::runtime::types::ScriptError) -> Failure {
    if error.name == "InternalError" && error.message.contains("out of memory") {
        Failure::OutOfMemory(format!(
            "the script's memory reached its limit ({}: {})",
            error.name, error.message
        ))
    } else {
        Failure::Script(error)
    }
}

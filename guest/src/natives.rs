//! The functions `runtime.js` calls into Rust, and the queue of effects they
//! fill during one entry into the guest.
//!
//! Each native only records what happened; nothing here calls the host or
//! waits. The entry that is running takes the queue when JavaScript has
//! nothing left to do (see [`crate::vm`]).

use std::cell::{Cell, RefCell};

use rquickjs::{Ctx, Exception, Function, Object, Result};

use crate::convert;
use crate::marionette::runtime::host;
use crate::marionette::runtime::types::{
    ConsoleLine, Effect, Event, LogLevel, Request, TaskDone, TaskEvent, Value,
};

thread_local! {
    static EFFECTS: RefCell<Vec<Effect>> = const { RefCell::new(Vec::new()) };
    static NEXT_OP: Cell<u64> = const { Cell::new(1) };
}

/// Queues an effect of the current entry.
pub fn push(effect: Effect) {
    EFFECTS.with(|e| e.borrow_mut().push(effect));
}

/// Takes every effect queued since the last call.
pub fn take() -> Vec<Effect> {
    EFFECTS.with(|e| std::mem::take(&mut *e.borrow_mut()))
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

    native.set(
        "request",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, task: f64, what: String| -> Result<f64> {
                let what = convert::host_op_from_json(&what)
                    .map_err(|e| Exception::throw_type(&ctx, &e.message))?;
                let op = NEXT_OP.with(|n| {
                    let op = n.get();
                    n.set(op + 1);
                    op
                });
                push(Effect::Request(Request {
                    op,
                    task: id(task),
                    what,
                }));
                Ok(op as f64)
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

    native.set(
        "release",
        Function::new(ctx.clone(), |op: f64| push(Effect::Release(id(op))))?,
    )?;

    native.set(
        "console",
        Function::new(ctx.clone(), |task: f64, lvl: String, message: String| {
            push(Effect::Event(TaskEvent {
                task: id(task),
                event: Event::Console(ConsoleLine {
                    level: level(&lvl),
                    message,
                }),
            }))
        })?,
    )?;

    native.set(
        "done",
        Function::new(
            ctx.clone(),
            |task: f64, ok: bool, payload: String, is_turn: bool| {
                let outcome = if !ok {
                    Err(convert::error_from_json(&payload))
                } else if is_turn {
                    convert::turn_from_json(&payload).map(Value::Turn)
                } else {
                    Ok(Value::Json(payload))
                };
                push(Effect::Done(TaskDone {
                    task: id(task),
                    outcome,
                }))
            },
        )?,
    )?;

    Ok(native)
}

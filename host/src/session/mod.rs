//! Sessions driven from Rust: the tool loop, the middleware chain and the
//! event stream behind [`Session::builder`].
//!
//! A script's own sessions (`createSession` in JavaScript) no longer come
//! here: they run inside the guest (`guest/src/js/loop.js`), which asks the
//! host only for I/O (see `docs/protocol.md`). This Rust loop is still the
//! engine of the Rust API; moving that API onto the guest's loop, so that
//! there is one implementation, is open work (issue 9).
//!
//! A [`Session`] holds a conversation history (a list of [`Turn`]
//! snapshots) and runs one inference loop at a time over it:
//!
//! 1. the [middleware chain](chain) wraps the [`Engine`] call, the first
//!    middleware added being the outermost; it runs once per iteration;
//! 2. the tool calls the model asked for (`tool_call` blocks without a
//!    `tool_use` block of the same id) are executed through the
//!    [`ToolSet`]s, with [`ToolHooks`], argument validation against the
//!    tool's JSON Schema, a per-call timeout, retries and bounded
//!    parallelism, as [`ToolLoopSettings`] say;
//! 3. their results are appended as `tool_use` blocks and the engine runs
//!    again, until the model stops calling tools or the iterations run out.
//!
//! Every engine, middleware, tool set and hook is a trait object, so Rust
//! implementations and the sandbox's JavaScript adapters mix freely: a JS
//! middleware may wrap a Rust engine and sit inside a Rust middleware, in
//! any order and depth. Everything a run awaits is dropped when the run is
//! cancelled or times out; that drop is what cancels JavaScript work.
//!
//! Layout: `engine` (the [`Engine`] trait, `echo`, the [`EngineRegistry`])
//! and `scripted`; `middleware` (the chain, `systemPrompt`, the
//! [`MiddlewareRegistry`]); `tools`, `validate` (argument schemas);
//! `hooks` and `decisions`; `events`; `settings`; `run` (the loop) and
//! `execute` (one tool call); `handle` (the [`Session`] and its history),
//! `control` (stopping runs, [`RunHandle`]) and `builder`.
//!
//! ```
//! # async fn demo() -> marionette::Result<()> {
//! use std::sync::Arc;
//! use marionette::model::{Block, BlockKind, Turn};
//! use marionette::session::{EchoEngine, RunOptions, Session, SystemPrompt};
//!
//! let session = Session::builder()
//!     .engine(Arc::new(EchoEngine::new("hello")))
//!     .middleware(Arc::new(SystemPrompt::new("be brief")))
//!     .build()?;
//! let seed = Turn { id: "t1".into(), ..Turn::default() };
//! let out = session.run(Some(seed), RunOptions::default()).await?;
//! assert_eq!(out.blocks[0].kind, BlockKind::System);
//! assert_eq!(out.blocks[1].payload["text"], "hello");
//! # Ok(()) }
//! ```

mod builder;
mod control;
mod decisions;
mod engine;
mod events;
mod execute;
mod handle;
mod hooks;
mod middleware;
mod run;
mod scripted;
mod settings;
mod tools;
mod validate;

#[cfg(test)]
mod tests;

use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use async_trait::async_trait;
pub use futures::future::BoxFuture;

pub use builder::SessionBuilder;
pub use control::RunHandle;
pub use decisions::{AfterDecision, BeforeDecision, ErrorDecision, HookReturnError};
pub use engine::{EchoEngine, Engine, EngineRegistry, InferenceContext};
pub use events::{
    EventEmitter, EventKind, EventSink, EventToolCall, EventToolResult, SessionEvent,
};
pub use handle::{RunOptions, Session};
pub use hooks::{HookPayload, ToolHooks};
pub use middleware::{
    Middleware, MiddlewareContext, MiddlewareFactory, MiddlewareRegistry, Next, SystemPrompt, chain,
};
pub use run::RunError;
pub use scripted::{ScriptedEngine, ScriptedResponse, ScriptedToolCall};
pub use settings::{SettingsError, ToolChoice, ToolErrorHandling, ToolLoopSettings};
pub use tools::{HostTools, ToolContext, ToolHandler, ToolSet, Tools};

#[cfg(doc)]
use crate::model::Turn;

/// A fresh identifier `PREFIX-RANDOM-COUNTER`: unique within the process
/// (the counter) and unlikely to collide across processes (a random part
/// drawn once per process), without a UUID dependency.
pub(crate) fn new_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    static SALT: OnceLock<u32> = OnceLock::new();
    let salt = SALT.get_or_init(|| RandomState::new().hash_one(std::process::id()) as u32);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{salt:08x}-{n}")
}

/// Milliseconds since the Unix epoch (wall clock), as events and deadlines
/// carry them for JavaScript.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The text a model (or a hook) sees for a failure: a script error as
/// `Name: message`, a host error as its cause chain, anything else as the
/// error's own words. The `op` label of a host error is left out: it names
/// a Rust operation, which means nothing to the model.
pub(crate) fn error_text(error: &crate::Error) -> String {
    match error {
        crate::Error::Script { error, .. } => format!("{}: {}", error.name, error.message),
        crate::Error::Host { source, .. } => format!("{source:#}"),
        other => other.to_string(),
    }
}

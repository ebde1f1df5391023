//! Sessions driven from Rust: engines, middleware, tools and hooks written
//! in Rust or JavaScript, put together by [`Session::builder`].
//!
//! There is one session loop, the guest's (`guest/src/js/loop.js`), the
//! same that runs a script's `createSession`. A [`Session`] runs it in a
//! sandbox's guest (`sessions.run`, see `docs/protocol.md`), and its Rust
//! parts answer the loop's host operations: the guest asks for an
//! inference, a middleware, a tool call or a hook decision, and the sandbox
//! calls the Rust object. What this module keeps is the Rust side of that:
//! the traits, the history, the run slot, cancellation, and the events.
//!
//! A [`Session`] holds a conversation history (a list of [`Turn`]
//! snapshots) and runs one inference loop at a time over it:
//!
//! 1. the middleware chain wraps the [`Engine`] call, the first middleware
//!    added being the outermost; it runs once per iteration;
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
//! any order and depth. A run that is cancelled or times out stops its task
//! in the guest, and with it everything it awaits.
//!
//! Layout: `engine` (the [`Engine`] trait, `echo`, the [`EngineRegistry`])
//! and `scripted`; `middleware` (the trait, `systemPrompt`, the
//! [`MiddlewareRegistry`]); `tools`; `hooks` and `decisions`; `events`;
//! `settings`; `run` (the spec the guest's loop is given, and how it
//! ended); `handle` (the [`Session`] and its history), `control` (stopping
//! runs, [`RunHandle`]) and `builder`.
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
mod handle;
mod hooks;
mod middleware;
mod run;
mod scripted;
mod settings;
mod tools;

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
    Middleware, MiddlewareContext, MiddlewareFactory, MiddlewareRegistry, Next, SystemPrompt,
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

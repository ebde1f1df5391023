//! One run of a Rust session, on the guest's session loop: the spec that
//! names the session's parts to the guest (`sessions.run`), and reading
//! back how the loop ended.
//!
//! The loop itself (the middleware chain, tool calls with hooks, argument
//! validation, timeouts, retries, parallelism, events) is the one in the
//! guest (`guest/src/js/loop.js`), the same that runs a script's
//! `createSession`. The Rust parts of the session are host operations of
//! that loop: the guest asks for an inference, a middleware, a tool call or
//! a hook decision, and the sandbox answers by calling the Rust object.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::engine::Engine;
use super::hooks::ToolHooks;
use super::middleware::Middleware;
use super::settings::ToolLoopSettings;
use super::tools::{ToolSet, Tools};
use crate::error::{Error, Op, Result};
use crate::model::Turn;
use crate::sandbox::{Part, Registration};

/// Why a session run failed, beyond the engine's, a middleware's or the
/// runtime's own errors. It travels as the source of an
/// [`Error::Host`](crate::Error::Host); `downcast_ref::<RunError>()` on the
/// source gets it back, with the turn as far as the run got where there is
/// one (the history never holds it).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Another run of the session is still going.
    #[error("the session already has an active run")]
    AlreadyRunning,
    /// No seed was given and the history is empty.
    #[error("nothing to run: the session has no turn (pass a seed turn)")]
    NoTurn,
    /// The last allowed inference still asked for tools. Those calls were
    /// not executed: their results could never reach the model.
    #[error("max iterations ({max}) reached with tool calls still pending")]
    MaxIterations {
        /// `maxIterations`.
        max: u32,
        /// The turn after the last inference.
        turn: Box<Turn>,
    },
    /// A tool call failed and `toolErrorHandling` is `abort`, or an
    /// `onToolError` hook said `abort`.
    #[error("tool \"{tool}\" (call {call_id}) failed and {by}: {error}")]
    ToolAborted {
        /// The tool.
        tool: String,
        /// The model's call id.
        call_id: String,
        /// Its error.
        error: String,
        /// What aborted: `toolErrorHandling is abort` or `the onToolError
        /// hook aborted the run`.
        by: &'static str,
        /// The turn with the results of the calls that had finished, the
        /// failed one included, in call order.
        turn: Box<Turn>,
    },
}

impl RunError {
    /// The turn as far as the run got, for the errors that have one.
    pub fn turn(&self) -> Option<&Turn> {
        match self {
            RunError::MaxIterations { turn, .. } | RunError::ToolAborted { turn, .. } => Some(turn),
            _ => None,
        }
    }
}

/// What a session is made of: fixed when it was built.
pub(crate) struct LoopParts {
    pub engine: Arc<dyn Engine>,
    pub middlewares: Arc<[Arc<dyn Middleware>]>,
    pub tools: Tools,
    pub settings: Arc<ToolLoopSettings>,
    pub hooks: Option<Arc<dyn ToolHooks>>,
}

/// The run's inputs besides the turn, as the guest reads them.
pub(crate) struct RunSpec<'a> {
    pub session_id: &'a str,
    pub tags: &'a Map<String, Value>,
    pub timeout_ms: Option<u64>,
}

impl LoopParts {
    /// The `sessions.run` spec of one run: every part is the host's,
    /// registered in `registration` for as long as the run lasts.
    pub(crate) fn spec(
        &self,
        op: &Op,
        run: &RunSpec<'_>,
        registration: &mut Registration,
    ) -> Result<String> {
        let engine = registration.add("engine", Part::Engine(self.engine.clone()));
        let middlewares: Vec<Value> = self
            .middlewares
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let host =
                    registration.add(&format!("middleware/{i}"), Part::Middleware(m.clone()));
                json!({ "host": host, "name": m.name() })
            })
            .collect();
        let definitions = self.tools.definitions();
        let tools = if definitions.is_empty() {
            Vec::new()
        } else {
            let host = registration.add("tools", Part::Tools(self.tools.clone()));
            vec![json!({ "host": host, "name": "the session's tools", "tools": definitions })]
        };
        let hooks = match &self.hooks {
            Some(hooks) => {
                let host = registration.add("hooks", Part::Hooks(hooks.clone()));
                json!({ "host": host, "failOpen": hooks.fail_open() })
            }
            None => Value::Null,
        };
        let settings = serde_json::to_value(&*self.settings)
            .map_err(|e| Error::host(op.clone(), anyhow::anyhow!("tool loop settings: {e}")))?;
        let spec = json!({
            "sessionId": run.session_id,
            "engine": { "host": engine, "name": self.engine.name() },
            "middlewares": middlewares,
            "tools": tools,
            "hooks": hooks,
            "settings": settings,
            "tags": run.tags,
            "timeoutMs": run.timeout_ms,
        });
        Ok(spec.to_string())
    }
}

/// How the guest's loop ended: `{turn}`, or `{error, turn}`.
#[derive(Deserialize)]
struct Ended {
    turn: Turn,
    #[serde(default)]
    error: Option<LoopFailure>,
}

#[derive(Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
enum LoopFailure {
    MaxIterations {
        max: u32,
    },
    ToolAborted {
        tool: String,
        call_id: String,
        error: String,
        /// `hook` or `handling`.
        by: String,
    },
}

/// The final turn of a run the guest ended, or its typed failure.
pub(crate) fn ended(op: &Op, value: Value) -> Result<Turn> {
    let ended: Ended = serde_json::from_value(value).map_err(|e| {
        Error::host(
            op.clone(),
            anyhow::anyhow!(
                "the guest's session loop answered in a shape this host does not read: {e}"
            ),
        )
    })?;
    let turn = Box::new(ended.turn);
    let failure = match ended.error {
        None => return Ok(*turn),
        Some(LoopFailure::MaxIterations { max }) => RunError::MaxIterations { max, turn },
        Some(LoopFailure::ToolAborted {
            tool,
            call_id,
            error,
            by,
        }) => RunError::ToolAborted {
            tool,
            call_id,
            error,
            by: if by == "hook" {
                "the onToolError hook aborted the run"
            } else {
                "toolErrorHandling is abort"
            },
            turn,
        },
    };
    Err(Error::host(op.clone(), failure))
}

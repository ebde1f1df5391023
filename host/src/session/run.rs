//! The tool loop: infer through the middleware chain, execute the pending
//! tool calls, append their results, again.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use serde_json::{Map, Value};

use super::engine::{Engine, InferenceContext};
use super::events::{EventEmitter, EventKind, EventToolCall, EventToolResult};
use super::execute::{AbortCause, CallEnv, CallOutcome};
use super::hooks::ToolHooks;
use super::middleware::{Middleware, chain};
use super::new_id;
use super::settings::{ToolChoice, ToolLoopSettings};
use super::tools::Tools;
use super::validate::Schemas;
use crate::error::{Error, Op, Result};
use crate::model::{Block, BlockKind, ToolCall, ToolDefinition, Turn};

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

/// What one run needs from its session: fixed when the session was built.
pub(crate) struct LoopParts {
    pub engine: Arc<dyn Engine>,
    pub middlewares: Arc<[Arc<dyn Middleware>]>,
    pub tools: Tools,
    /// The tools offered to the engine: `tools` filtered by `allowedTools`.
    pub offered: Arc<[ToolDefinition]>,
    pub settings: Arc<ToolLoopSettings>,
    pub hooks: Option<Arc<dyn ToolHooks>>,
    pub schemas: Arc<Schemas>,
}

/// One run's inputs besides the turn.
pub(crate) struct RunScope {
    pub op: Op,
    pub session_id: String,
    pub tags: Map<String, Value>,
    pub deadline_ms: Option<u64>,
    pub events: EventEmitter,
}

/// Runs the loop on `turn` to its final turn.
pub(crate) async fn run_loop(parts: &LoopParts, scope: &RunScope, mut turn: Turn) -> Result<Turn> {
    let settings = &parts.settings;
    let max = settings.max_iterations.max(1);
    normalize(&mut turn);
    for iteration in 1..=max {
        let inference_id = new_id("inf");
        let events = scope.events.for_inference(&inference_id, &turn.id);
        let tool_choice = match settings.tool_choice {
            ToolChoice::Required if iteration > 1 => ToolChoice::Auto,
            choice => choice,
        };
        let ctx = InferenceContext {
            session_id: scope.session_id.clone(),
            inference_id: inference_id.clone(),
            turn_id: turn.id.clone(),
            tools: match tool_choice {
                ToolChoice::None => Arc::from([]),
                _ => parts.offered.clone(),
            },
            tool_choice,
            tags: scope.tags.clone(),
            deadline_ms: scope.deadline_ms,
            events: events.clone(),
        };
        events.emit(EventKind::Start);
        let before: HashSet<String> = turn.blocks.iter().map(|b| b.id.clone()).collect();
        turn = chain(&parts.middlewares, parts.engine.clone(), ctx)(turn).await?;
        normalize(&mut turn);
        let appended: Vec<&Block> = turn
            .blocks
            .iter()
            .filter(|b| !before.contains(&b.id))
            .collect();
        let text: Vec<&str> = appended
            .iter()
            .filter(|b| b.kind == BlockKind::LlmText)
            .filter_map(|b| b.payload.get("text").and_then(Value::as_str))
            .collect();
        // Provider engines put the inference's token usage on the last block
        // they append.
        let usage = appended
            .iter()
            .rev()
            .find_map(|b| b.metadata.get("usage").filter(|u| !u.is_null()).cloned());
        events.emit(EventKind::Final {
            text: text.join("\n"),
            usage,
        });
        if tool_choice == ToolChoice::None {
            return Ok(turn);
        }
        let pending = pending_calls(&turn);
        if pending.is_empty() {
            return Ok(turn);
        }
        if iteration == max {
            let error = RunError::MaxIterations {
                max,
                turn: Box::new(turn),
            };
            return Err(Error::host(scope.op.clone(), error));
        }
        let env = CallEnv {
            tools: parts.tools.clone(),
            hooks: parts.hooks.clone(),
            settings: settings.clone(),
            schemas: parts.schemas.clone(),
            session_id: scope.session_id.clone(),
            inference_id,
            tags: scope.tags.clone(),
            deadline_ms: scope.deadline_ms,
        };
        step(&env, &events, &mut turn, pending)
            .await
            .map_err(|e| Error::host(scope.op.clone(), e))?;
    }
    unreachable!("the last iteration returns")
}

/// Executes one step's calls, at most `maxParallelTools` at once, and
/// appends their `tool_use` blocks in call order. A call whose failure
/// aborts the run drops the calls still running.
async fn step(
    env: &CallEnv,
    events: &EventEmitter,
    turn: &mut Turn,
    pending: Vec<ToolCall>,
) -> Result<(), RunError> {
    for call in &pending {
        events.emit(EventKind::ToolCall {
            tool_call: EventToolCall {
                id: call.id.clone(),
                name: call.name.clone(),
                input: call.arguments.clone(),
            },
        });
    }
    let mut slots: Vec<Option<CallOutcome>> = vec![None; pending.len()];
    let mut abort = None;
    {
        let calls = pending.into_iter().enumerate().map(|(i, call)| async move {
            let outcome = env.execute(call).await;
            events.emit(EventKind::ToolResult {
                tool_result: EventToolResult {
                    id: outcome.id.clone(),
                    result: outcome.result.clone(),
                    error: outcome.error.clone(),
                },
            });
            (i, outcome)
        });
        let mut running =
            futures::stream::iter(calls).buffer_unordered(env.settings.max_parallel_tools.max(1));
        while let Some((i, outcome)) = running.next().await {
            if let Some(cause) = outcome.abort {
                abort = Some((outcome.clone(), cause));
                slots[i] = Some(outcome);
                break;
            }
            slots[i] = Some(outcome);
        }
    }
    turn.blocks
        .extend(slots.into_iter().flatten().map(tool_use_block));
    match abort {
        None => Ok(()),
        Some((outcome, cause)) => Err(RunError::ToolAborted {
            tool: outcome.tool,
            call_id: outcome.id,
            error: outcome.error.unwrap_or_default(),
            by: match cause {
                AbortCause::Handling => "toolErrorHandling is abort",
                AbortCause::Hook => "the onToolError hook aborted the run",
            },
            turn: Box::new(turn.clone()),
        }),
    }
}

fn tool_use_block(outcome: CallOutcome) -> Block {
    let mut payload = Map::new();
    payload.insert("id".into(), Value::String(outcome.id));
    payload.insert("result".into(), outcome.result);
    if let Some(error) = outcome.error {
        payload.insert("error".into(), Value::String(error));
    }
    Block {
        id: new_id("blk"),
        kind: BlockKind::ToolUse,
        role: Some("tool".into()),
        payload,
        metadata: Map::new(),
    }
}

/// Gives the turn and every block without an id a fresh one, and every
/// `tool_call` without a string `id` one, so blocks can be told apart and
/// results matched to calls.
fn normalize(turn: &mut Turn) {
    if turn.id.is_empty() {
        turn.id = new_id("turn");
    }
    for block in &mut turn.blocks {
        if block.id.is_empty() {
            block.id = new_id("blk");
        }
        if block.kind == BlockKind::ToolCall
            && !block.payload.get("id").is_some_and(Value::is_string)
        {
            block
                .payload
                .insert("id".into(), Value::String(new_id("call")));
        }
    }
}

/// The `tool_call` blocks without a `tool_use` block of the same payload id,
/// in turn order (a repeated id counts once). Arguments given as JSON text
/// (as some providers send them) are parsed.
pub(crate) fn pending_calls(turn: &Turn) -> Vec<ToolCall> {
    let payload_id = |b: &Block| {
        b.payload
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut answered: HashSet<String> = turn
        .blocks
        .iter()
        .filter(|b| b.kind == BlockKind::ToolUse)
        .filter_map(payload_id)
        .collect();
    let mut calls = Vec::new();
    for block in turn.blocks.iter().filter(|b| b.kind == BlockKind::ToolCall) {
        let Some(id) = payload_id(block) else {
            continue;
        };
        if !answered.insert(id.clone()) {
            continue;
        }
        let name = block
            .payload
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let arguments = match block.payload.get("args") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::String(text)) => {
                serde_json::from_str(text).unwrap_or(Value::String(text.clone()))
            }
            Some(args) => args.clone(),
        };
        calls.push(ToolCall {
            id,
            name: name.to_string(),
            arguments,
        });
    }
    calls
}

//! One tool call of the loop, start to end: allowed tools, the before hook,
//! argument validation, the timeout, retries and the error hook, the after
//! hook.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::decisions::{AfterDecision, BeforeDecision, ErrorDecision};
use super::hooks::{HookPayload, ToolHooks};
use super::settings::{ToolErrorHandling, ToolLoopSettings};
use super::tools::{ToolContext, ToolSet, Tools};
use super::validate::Schemas;
use super::{error_text, unix_ms};
use crate::error::Result;
use crate::model::ToolCall;

/// Why a failed call ends the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AbortCause {
    /// `toolErrorHandling` is `abort`.
    Handling,
    /// An `onToolError` hook said `abort`.
    Hook,
}

/// How one call ended: what its `tool_use` block and `tool-result` event
/// carry, and whether the run must stop.
#[derive(Debug, Clone)]
pub(crate) struct CallOutcome {
    /// The model's call id.
    pub id: String,
    /// The tool that ran (a before hook may have changed it).
    pub tool: String,
    /// What it returned; `null` when it failed.
    pub result: Value,
    /// Why it failed.
    pub error: Option<String>,
    /// Set when the failure ends the run.
    pub abort: Option<AbortCause>,
}

/// What every call of one loop step shares.
pub(crate) struct CallEnv {
    pub tools: Tools,
    pub hooks: Option<Arc<dyn ToolHooks>>,
    pub settings: Arc<ToolLoopSettings>,
    pub schemas: Arc<Schemas>,
    pub session_id: String,
    pub inference_id: String,
    pub tags: Map<String, Value>,
    pub deadline_ms: Option<u64>,
}

impl CallEnv {
    /// Runs `call` to its outcome. Never fails: every failure is an outcome
    /// the model (or the loop) sees.
    pub(crate) async fn execute(&self, mut call: ToolCall) -> CallOutcome {
        let started = tokio::time::Instant::now();
        if let Err(error) = self.admit(&call.name) {
            return self.failed(&call, error);
        }
        if let Some(hooks) = &self.hooks {
            let decision = hooks.before_tool_call(self.payload(&call, 1)).await;
            match self.settle("beforeToolCall", hooks.as_ref(), &call, decision) {
                Ok(BeforeDecision::Continue) => {}
                Ok(BeforeDecision::Abort { error }) => {
                    let error = error.unwrap_or_else(|| {
                        format!(
                            "tool \"{}\" was not run: the beforeToolCall hook aborted it",
                            call.name
                        )
                    });
                    return self.failed(&call, error);
                }
                Ok(BeforeDecision::Change { name, args }) => {
                    if let Some(name) = name.filter(|n| *n != call.name) {
                        if let Err(error) = self.admit(&name) {
                            return self.failed(&call, error);
                        }
                        call.name = name;
                    }
                    if let Some(args) = args {
                        call.arguments = args;
                    }
                }
                Err(error) => return self.failed(&call, error),
            }
        }
        if let Some(definition) = self.tools.get(&call.name)
            && let Err(error) = self.schemas.check(definition, &call.arguments)
        {
            return self.failed(&call, error);
        }
        let (attempt, mut outcome) = self.attempts(&call).await;
        if let Some(hooks) = &self.hooks {
            let mut payload = self.payload(&call, attempt);
            payload.result = outcome.error.is_none().then(|| outcome.result.clone());
            payload.error = outcome.error.clone();
            payload.duration_ms = Some(started.elapsed().as_millis() as u64);
            let decision = hooks.after_tool_call(payload).await;
            let replaced = match self.settle("afterToolCall", hooks.as_ref(), &call, decision) {
                Ok(AfterDecision::Keep) => None,
                Ok(AfterDecision::Replace(result)) => {
                    outcome.result = result;
                    outcome.error = None;
                    outcome.abort = None;
                    None
                }
                Ok(AfterDecision::Error(error)) => Some(error),
                Err(error) => Some(error),
            };
            if let Some(error) = replaced {
                if outcome.error.is_none() {
                    outcome.abort = self.default_abort();
                }
                outcome.result = Value::Null;
                outcome.error = Some(error);
            }
        }
        outcome
    }

    /// Runs the attempts: the first, then the retries the error hook or the
    /// error handling ask for. Returns the last attempt's number.
    async fn attempts(&self, call: &ToolCall) -> (u32, CallOutcome) {
        let settings = &self.settings;
        let timeout = settings.execution_timeout();
        let mut attempt = 1;
        let mut hook_retries = 0;
        loop {
            let run = self
                .tools
                .call(call.clone(), self.context(call, attempt, timeout));
            let message = match tokio::time::timeout(timeout, run).await {
                Ok(Ok(result)) => return (attempt, self.outcome(call, result, None, None)),
                Ok(Err(e)) => error_text(&e),
                Err(_) => format!(
                    "tool \"{}\" timed out after {}ms",
                    call.name, settings.execution_timeout_ms
                ),
            };
            let decision = match &self.hooks {
                None => ErrorDecision::Default,
                Some(hooks) => {
                    let mut payload = self.payload(call, attempt);
                    payload.error = Some(message.clone());
                    let decision = hooks.on_tool_error(payload).await;
                    match self.settle("onToolError", hooks.as_ref(), call, decision) {
                        Ok(decision) => decision,
                        Err(error) => {
                            let error = format!("{message} ({error})");
                            return (
                                attempt,
                                self.outcome(call, Value::Null, Some(error), self.default_abort()),
                            );
                        }
                    }
                }
            };
            let fail = |error: String, abort| {
                (attempt, self.outcome(call, Value::Null, Some(error), abort))
            };
            let wait = match decision {
                ErrorDecision::Retry { backoff_ms } if hook_retries < settings.max_hook_retries => {
                    hook_retries += 1;
                    backoff_ms.map_or_else(|| settings.backoff(attempt), Duration::from_millis)
                }
                ErrorDecision::Retry { .. } => {
                    let max = settings.max_hook_retries;
                    return fail(
                        format!(
                            "{message} (onToolError asked for more than maxHookRetries ({max}) retries)"
                        ),
                        self.default_abort(),
                    );
                }
                ErrorDecision::Abort => return fail(message, Some(AbortCause::Hook)),
                ErrorDecision::Continue => return fail(message, None),
                ErrorDecision::Default => match settings.tool_error_handling {
                    ToolErrorHandling::Continue => return fail(message, None),
                    ToolErrorHandling::Abort => return fail(message, Some(AbortCause::Handling)),
                    ToolErrorHandling::Retry if attempt <= settings.retry_max_retries => {
                        settings.backoff(attempt)
                    }
                    ToolErrorHandling::Retry => {
                        return fail(format!("{message} (after {attempt} attempts)"), None);
                    }
                },
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Whether the call may run at all: the tool exists and is allowed.
    fn admit(&self, name: &str) -> Result<(), String> {
        if name.is_empty() {
            return Err("the tool call names no tool".into());
        }
        if !self.settings.allows(name) {
            let allowed = self.settings.allowed_tools.as_deref().unwrap_or_default();
            return Err(format!(
                "tool \"{name}\" is not allowed (allowed tools: {})",
                if allowed.is_empty() {
                    "none".into()
                } else {
                    allowed.join(", ")
                }
            ));
        }
        if self.tools.get(name).is_none() {
            let known = self.tools.names();
            return Err(format!(
                "unknown tool \"{name}\" (tools: {})",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ));
        }
        Ok(())
    }

    /// A hook's result: its decision, or what its failure means under the
    /// fail-open / fail-closed policy (`Err` is the call's error).
    fn settle<T: Default>(
        &self,
        hook: &str,
        hooks: &dyn ToolHooks,
        call: &ToolCall,
        result: Result<T>,
    ) -> Result<T, String> {
        match result {
            Ok(decision) => Ok(decision),
            Err(e) if hooks.fail_open() => {
                tracing::warn!(hook, tool = %call.name, call = %call.id, error = %e,
                    "a tool hook failed; ignored (fail-open)");
                Ok(T::default())
            }
            Err(e) => Err(format!("the {hook} hook failed: {}", error_text(&e))),
        }
    }

    fn default_abort(&self) -> Option<AbortCause> {
        (self.settings.tool_error_handling == ToolErrorHandling::Abort)
            .then_some(AbortCause::Handling)
    }

    /// A call that failed before running.
    fn failed(&self, call: &ToolCall, error: String) -> CallOutcome {
        self.outcome(call, Value::Null, Some(error), self.default_abort())
    }

    fn outcome(
        &self,
        call: &ToolCall,
        result: Value,
        error: Option<String>,
        abort: Option<AbortCause>,
    ) -> CallOutcome {
        CallOutcome {
            id: call.id.clone(),
            tool: call.name.clone(),
            result,
            error,
            abort,
        }
    }

    fn payload(&self, call: &ToolCall, attempt: u32) -> HookPayload {
        HookPayload {
            call: call.clone(),
            attempt,
            result: None,
            error: None,
            session_id: self.session_id.clone(),
            duration_ms: None,
        }
    }

    fn context(&self, call: &ToolCall, attempt: u32, timeout: Duration) -> ToolContext {
        let own = unix_ms().saturating_add(timeout.as_millis() as u64);
        ToolContext {
            tool_name: call.name.clone(),
            call_id: call.id.clone(),
            session_id: self.session_id.clone(),
            inference_id: self.inference_id.clone(),
            tags: self.tags.clone(),
            deadline_ms: Some(self.deadline_ms.map_or(own, |run| run.min(own))),
            attempt,
        }
    }
}

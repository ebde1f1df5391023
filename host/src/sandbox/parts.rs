//! JavaScript engines, middleware, tool registries and hooks as the
//! session's trait objects, so that Rust and JavaScript parts mix freely in
//! one session: each call is a task in the sandbox's guest.
//!
//! An adapter made for a Rust caller holds the sandbox; one made for a
//! session a script started holds it weakly (the session runs inside the
//! sandbox's own operations, which must not keep the sandbox alive).

use serde_json::{Value as Json, json};

use super::owner::TaskKind;
use super::{Sandbox, TaskOptions, check_nesting, check_turn_nesting, convert};
use crate::bindings::marionette::runtime::types as wit;
use crate::bindings::marionette::runtime::types::Hook;
use crate::cassette::Call;
use crate::error::{Error, Op, Result};
use crate::model::{ToolCall, ToolDefinition, Turn};
use crate::session::{
    AfterDecision, BeforeDecision, Engine, ErrorDecision, HookPayload, InferenceContext,
    Middleware, MiddlewareContext, Next, ToolContext, ToolHooks, ToolSet, async_trait,
};

/// How an adapter reaches its sandbox: it keeps the sandbox alive.
#[derive(Clone)]
pub(crate) enum Link {
    Strong(Sandbox),
}

impl Link {
    fn sandbox(&self) -> &Sandbox {
        let Link::Strong(sandbox) = self;
        sandbox
    }

    /// Runs a task in the sandbox and waits for its value.
    async fn task(&self, op: &Op, next: Option<Next>, start: Call) -> Result<wit::Value> {
        self.sandbox()
            .task(
                op.clone(),
                TaskOptions::default(),
                TaskKind::Plain,
                next,
                start,
            )
            .await
    }
}

/// The JSON context a JavaScript engine function receives.
pub(crate) fn inference_context_json(op: &Op, ctx: &InferenceContext) -> Result<String> {
    context_text(
        op,
        json!({
            "sessionId": ctx.session_id,
            "inferenceId": ctx.inference_id,
            "turnId": ctx.turn_id,
            "tools": ctx.tools.iter().collect::<Vec<_>>(),
            "toolChoice": ctx.tool_choice,
            "tags": ctx.tags,
            "deadlineMs": ctx.deadline_ms,
        }),
    )
}

fn middleware_context_json(op: &Op, ctx: &MiddlewareContext) -> Result<String> {
    context_text(
        op,
        json!({
            "middlewareName": ctx.middleware_name,
            "sessionId": ctx.session_id,
            "inferenceId": ctx.inference_id,
            "turnId": ctx.turn_id,
            "tags": ctx.tags,
            "deadlineMs": ctx.deadline_ms,
        }),
    )
}

fn tool_context_json(op: &Op, ctx: &ToolContext) -> Result<String> {
    context_text(
        op,
        json!({
            "toolName": ctx.tool_name,
            "callId": ctx.call_id,
            "sessionId": ctx.session_id,
            "inferenceId": ctx.inference_id,
            "tags": ctx.tags,
            "deadlineMs": ctx.deadline_ms,
            "attempt": ctx.attempt,
        }),
    )
}

/// A context as the JSON text a script receives; its tags come from the
/// host's caller and may nest as deep as any JSON.
fn context_text(op: &Op, context: Json) -> Result<String> {
    check_nesting(op, "the context", &context)?;
    Ok(context.to_string())
}

/// A JavaScript engine (`engines.fromFunction`, `engines.echo`, ...).
pub(crate) struct JsEngine {
    pub(crate) link: Link,
    pub(crate) target: wit::Target,
    pub(crate) name: String,
}

#[async_trait]
impl Engine for JsEngine {
    fn name(&self) -> &str {
        &self.name
    }

    async fn infer(&self, turn: Turn, ctx: InferenceContext) -> Result<Turn> {
        let op: Op = format!("engine {}", self.name).into();
        check_turn_nesting(&op, &turn)?;
        let (target, input, context) = (
            self.target.clone(),
            convert::turn_to_wit(&turn),
            inference_context_json(&op, &ctx)?,
        );
        let value = self
            .link
            .task(
                &op,
                None,
                Call::Infer {
                    engine: target,
                    input,
                    context,
                },
            )
            .await?;
        super::turn_value(op, value)
    }
}

/// A JavaScript middleware (`middlewares.fromJS`, or a bare function).
pub(crate) struct JsMiddleware {
    pub(crate) link: Link,
    pub(crate) target: wit::Target,
    pub(crate) name: String,
}

#[async_trait]
impl Middleware for JsMiddleware {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, turn: Turn, ctx: MiddlewareContext, next: Next) -> Result<Turn> {
        let op: Op = format!("middleware {}", self.name).into();
        check_turn_nesting(&op, &turn)?;
        let (target, input, context) = (
            self.target.clone(),
            convert::turn_to_wit(&turn),
            middleware_context_json(&op, &ctx)?,
        );
        let value = self
            .link
            .task(
                &op,
                Some(next),
                Call::MiddlewareRun {
                    middleware: target,
                    input,
                    context,
                },
            )
            .await?;
        super::turn_value(op, value)
    }
}

/// The JavaScript tools of a registry (`tools.createRegistry()`); the host
/// tools it uses are the host's own tool sets.
pub(crate) struct JsTools {
    pub(crate) link: Link,
    pub(crate) target: wit::Target,
    pub(crate) name: String,
    pub(crate) definitions: Vec<ToolDefinition>,
}

impl JsTools {
    /// Asks the guest for the registry's tools once, at construction.
    pub(crate) async fn new(link: Link, target: wit::Target, name: String) -> Result<JsTools> {
        let op: Op = format!("tools of {name}").into();
        let sandbox = link.sandbox();
        let t = target.clone();
        let list = sandbox
            .query(op.clone(), move |store, b| {
                b.marionette_runtime_tools(&mut *store)?
                    .call_list_tools(store, &t)
            })
            .await?;
        let definitions = convert::tool_definitions(list).map_err(|e| Error::host(op, e))?;
        Ok(JsTools {
            link,
            target,
            name,
            definitions,
        })
    }
}

#[async_trait]
impl ToolSet for JsTools {
    fn name(&self) -> &str {
        &self.name
    }

    fn definitions(&self) -> Vec<ToolDefinition> {
        self.definitions.clone()
    }

    async fn call(&self, call: ToolCall, ctx: ToolContext) -> Result<Json> {
        let op: Op = format!("tool {}", call.name).into();
        // A model wrote these.
        check_nesting(&op, "the arguments", &call.arguments)?;
        let (target, c, context) = (
            self.target.clone(),
            convert::tool_call_to_wit(&call),
            tool_context_json(&op, &ctx)?,
        );
        let value = self
            .link
            .task(
                &op,
                None,
                Call::ToolsCall {
                    registry: target,
                    call: c,
                    context,
                },
            )
            .await?;
        super::json_value(op, value)
    }
}

/// JavaScript tool hooks (`{beforeToolCall, afterToolCall, onToolError}`).
pub(crate) struct JsHooks {
    pub(crate) link: Link,
    pub(crate) target: wit::Target,
    pub(crate) fail_open: bool,
}

impl JsHooks {
    async fn call(&self, hook: Hook, name: &'static str, payload: &HookPayload) -> Result<Json> {
        let op: Op = format!("hook {name}").into();
        let payload = serde_json::to_value(payload).map_err(|e| Error::host(op.clone(), e))?;
        // Tool results and arguments may come from anywhere.
        check_nesting(&op, "the hook's payload", &payload)?;
        let payload = payload.to_string();
        let target = self.target.clone();
        let value = self
            .link
            .task(
                &op,
                None,
                Call::HooksCall {
                    hooks: target,
                    hook,
                    payload,
                },
            )
            .await?;
        super::json_value(op, value)
    }
}

fn decision_error(name: &str, e: impl std::fmt::Display) -> Error {
    Error::host(
        format!("hook {name}"),
        anyhow::anyhow!("{name} returned something it may not: {e}"),
    )
}

#[async_trait]
impl ToolHooks for JsHooks {
    async fn before_tool_call(&self, payload: HookPayload) -> Result<BeforeDecision> {
        let v = self
            .call(Hook::BeforeToolCall, "beforeToolCall", &payload)
            .await?;
        BeforeDecision::from_json(&v).map_err(|e| decision_error("beforeToolCall", e))
    }

    async fn after_tool_call(&self, payload: HookPayload) -> Result<AfterDecision> {
        let v = self
            .call(Hook::AfterToolCall, "afterToolCall", &payload)
            .await?;
        AfterDecision::from_json(&v).map_err(|e| decision_error("afterToolCall", e))
    }

    async fn on_tool_error(&self, payload: HookPayload) -> Result<ErrorDecision> {
        let v = self
            .call(Hook::OnToolError, "onToolError", &payload)
            .await?;
        ErrorDecision::from_json(&v).map_err(|e| decision_error("onToolError", e))
    }

    fn fail_open(&self) -> bool {
        self.fail_open
    }
}

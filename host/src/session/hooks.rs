//! Tool hooks: code the loop asks before a tool runs, after it ran, and
//! when it failed, and what they are told.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::decisions::{AfterDecision, BeforeDecision, ErrorDecision};
use crate::error::Result;
use crate::model::ToolCall;

/// What a hook is told about a call, in the shape JavaScript sees it:
/// `{call: {id, name, args}, attempt, result?, error?, sessionId,
/// durationMs?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookPayload {
    /// The call (after a `beforeToolCall` change, the changed one).
    #[serde(with = "js_call")]
    pub call: ToolCall,
    /// 1 for the first attempt; the failed attempt for `onToolError`; the
    /// last attempt for `afterToolCall`.
    pub attempt: u32,
    /// What the tool returned (`afterToolCall` on success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why it failed (`onToolError`, and `afterToolCall` after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The session that runs.
    pub session_id: String,
    /// How long the call took, all attempts and waits included
    /// (`afterToolCall`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// `ToolCall` as `{id, name, args}` (the model's `arguments` is `args` in
/// JavaScript).
mod js_call {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct JsCall {
        id: String,
        name: String,
        #[serde(default)]
        args: Value,
    }

    pub(super) fn serialize<S: serde::Serializer>(
        call: &ToolCall,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        JsCall {
            id: call.id.clone(),
            name: call.name.clone(),
            args: call.arguments.clone(),
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<ToolCall, D::Error> {
        let call = JsCall::deserialize(d)?;
        Ok(ToolCall {
            id: call.id,
            name: call.name,
            arguments: call.args,
        })
    }
}
/// Code around each tool call. Every method has a default that changes
/// nothing, so an implementation overrides only what it needs.
///
/// A hook that fails is fail-closed by default: its error becomes the
/// call's error. With [`fail_open`](Self::fail_open) the error is logged
/// and the hook treated as having decided nothing.
#[async_trait]
pub trait ToolHooks: Send + Sync {
    /// Before a call runs (once per call, not per attempt).
    ///
    /// # Errors
    /// A failing hook; see the trait's docs.
    async fn before_tool_call(&self, _payload: HookPayload) -> Result<BeforeDecision> {
        Ok(BeforeDecision::Continue)
    }

    /// After a call ran, succeeded or not (once per call).
    ///
    /// # Errors
    /// A failing hook; see the trait's docs.
    async fn after_tool_call(&self, _payload: HookPayload) -> Result<AfterDecision> {
        Ok(AfterDecision::Keep)
    }

    /// After each failed attempt.
    ///
    /// # Errors
    /// A failing hook; see the trait's docs.
    async fn on_tool_error(&self, _payload: HookPayload) -> Result<ErrorDecision> {
        Ok(ErrorDecision::Default)
    }

    /// Whether a failing hook is ignored (logged) rather than failing the
    /// call.
    fn fail_open(&self) -> bool {
        false
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_has_the_javascript_shape() {
        let payload = HookPayload {
            call: ToolCall {
                id: "c".into(),
                name: "add".into(),
                arguments: json!({"a": 1}),
            },
            attempt: 2,
            result: None,
            error: Some("boom".into()),
            session_id: "s".into(),
            duration_ms: None,
        };
        let value = serde_json::to_value(&payload).unwrap();
        assert_eq!(
            value,
            json!({"call": {"id": "c", "name": "add", "args": {"a": 1}}, "attempt": 2,
                   "error": "boom", "sessionId": "s"})
        );
        assert_eq!(
            serde_json::from_value::<HookPayload>(value).unwrap(),
            payload
        );
    }
}

//! The built-in `scripted` engine: replays a given list of responses, tool
//! calls included, so tool loops can be tested without a model.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::engine::{Engine, InferenceContext, text_block, tool_call_block};
use crate::error::{Error, Result};
use crate::model::Turn;

/// One tool call a scripted response makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptedToolCall {
    /// The call's id (echoed by its `tool_use` block).
    pub id: String,
    /// The tool to call.
    pub name: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Value,
}

/// One answer of a [`ScriptedEngine`], in the order the engine replays them.
///
/// Its serde form is what a script would write:
/// `{text?, toolCalls?: [{id, name, args}], delayMs?, chunks?, error?}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScriptedResponse {
    /// The answer's text (an `llm_text` block). Without it, the chunks
    /// joined make the text; with neither, no text block is appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Tool calls, appended as `tool_call` blocks after the text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ScriptedToolCall>,
    /// How long the engine takes (a tokio sleep, so tests with paused time
    /// can simulate a slow engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Streaming pieces, sent as `partial` events before the answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<String>,
    /// Makes this inference fail with this message instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ScriptedResponse {
    /// A response that answers `text`.
    pub fn text(text: impl Into<String>) -> Self {
        ScriptedResponse {
            text: Some(text.into()),
            ..ScriptedResponse::default()
        }
    }

    /// A response that makes no text, only tool calls (add them with
    /// [`tool_call`](Self::tool_call)).
    pub fn calls() -> Self {
        ScriptedResponse::default()
    }

    /// A response whose inference fails with `message`.
    pub fn fail(message: impl Into<String>) -> Self {
        ScriptedResponse {
            error: Some(message.into()),
            ..ScriptedResponse::default()
        }
    }

    /// Adds a tool call.
    pub fn tool_call(
        mut self,
        id: impl Into<String>,
        name: impl Into<String>,
        args: Value,
    ) -> Self {
        self.tool_calls.push(ScriptedToolCall {
            id: id.into(),
            name: name.into(),
            args,
        });
        self
    }

    /// Makes the inference take `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay_ms = Some(delay.as_millis() as u64);
        self
    }

    /// Streams these pieces as `partial` events first.
    pub fn chunks<I: IntoIterator<Item = S>, S: Into<String>>(mut self, chunks: I) -> Self {
        self.chunks = chunks.into_iter().map(Into::into).collect();
        self
    }
}

/// An engine that replays its responses in order, one per inference,
/// across all the runs that use it. Deterministic, for tests.
#[derive(Debug)]
pub struct ScriptedEngine {
    name: String,
    responses: Vec<ScriptedResponse>,
    next: Mutex<usize>,
}

impl ScriptedEngine {
    /// An engine named `scripted` that replays `responses`.
    pub fn new(responses: Vec<ScriptedResponse>) -> Self {
        ScriptedEngine {
            name: "scripted".into(),
            responses,
            next: Mutex::new(0),
        }
    }

    /// The same engine with another name (for logs).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Reads responses from the JSON a script writes (an array of
    /// [`ScriptedResponse`]).
    ///
    /// # Errors
    /// [`Error::Host`] naming what is malformed.
    pub fn from_json(value: &Value) -> Result<Self> {
        let responses = serde_json::from_value(value.clone())
            .map_err(|e| Error::host("engines.scripted", anyhow::anyhow!("invalid script: {e}")))?;
        Ok(ScriptedEngine::new(responses))
    }

    /// How many responses were replayed so far.
    pub fn used(&self) -> usize {
        *self.next.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Result<ScriptedResponse> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let Some(response) = self.responses.get(*next) else {
            return Err(Error::host(
                format!("engine {}", self.name),
                anyhow::anyhow!(
                    "the script has {} responses and all were used (inference {} asked for one more)",
                    self.responses.len(),
                    *next + 1
                ),
            ));
        };
        *next += 1;
        Ok(response.clone())
    }
}

#[async_trait]
impl Engine for ScriptedEngine {
    fn name(&self) -> &str {
        &self.name
    }

    async fn infer(&self, mut turn: Turn, ctx: InferenceContext) -> Result<Turn> {
        let response = self.take()?;
        if let Some(ms) = response.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(message) = response.error {
            return Err(Error::host(
                format!("engine {}", self.name),
                anyhow::anyhow!(message),
            ));
        }
        let mut completion = String::new();
        for chunk in &response.chunks {
            completion.push_str(chunk);
            ctx.events.partial(chunk.clone(), completion.clone());
        }
        let text = response
            .text
            .or((!response.chunks.is_empty()).then_some(completion));
        if let Some(text) = text {
            turn.blocks.push(text_block(text));
        }
        for call in response.tool_calls {
            turn.blocks
                .push(tool_call_block(&call.id, &call.name, call.args));
        }
        Ok(turn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BlockKind;
    use serde_json::json;

    #[tokio::test]
    async fn replays_in_order_then_fails_clearly() {
        let engine = ScriptedEngine::from_json(&json!([
            {"toolCalls": [{"id": "c1", "name": "add", "args": {"a": 1}}]},
            {"chunks": ["he", "llo"]}
        ]))
        .unwrap();
        let ctx = InferenceContext::default();
        let first = engine.infer(Turn::default(), ctx.clone()).await.unwrap();
        assert_eq!(first.blocks[0].kind, BlockKind::ToolCall);
        assert_eq!(first.blocks[0].payload["args"], json!({"a": 1}));
        let second = engine.infer(Turn::default(), ctx.clone()).await.unwrap();
        assert_eq!(second.blocks[0].payload["text"], "hello");
        let e = engine
            .infer(Turn::default(), ctx)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the script has 2 responses and all were used"),
            "{e}"
        );
        assert_eq!(engine.used(), 2);
        let bad = ScriptedEngine::from_json(&json!([{"txt": "x"}])).unwrap_err();
        assert!(bad.to_string().contains("unknown field `txt`"), "{bad}");
    }
}

//! Real inference providers as session [`Engine`](crate::session::Engine)s.
//!
//! - [`OpenAiEngine`]: OpenAI-compatible Chat Completions
//!   (`POST {base_url}/chat/completions`), which many servers speak
//!   (OpenAI, Azure-style proxies, vLLM, llama.cpp, Ollama, OpenRouter).
//! - [`AnthropicEngine`]: Anthropic Messages (`POST {base_url}/v1/messages`).
//!
//! Both stream: text arrives as `partial` events while the model writes,
//! tool calls are assembled from their streamed pieces, and the answer is
//! appended as `llm_text` and `tool_call` blocks only once the stream ended
//! cleanly. A failed call returns an [`Error::Provider`](crate::Error)
//! (with a [`ProviderErrorKind`](crate::ProviderErrorKind)) and appends
//! nothing, so the loop never sees a half-answered turn.
//!
//! What an inference records: the last block it appends gets metadata
//! `{provider, model, finish_reason, usage}` (`usage` as the provider
//! reports it: OpenAI's `prompt_tokens`/`completion_tokens`/`total_tokens`,
//! Anthropic's `input_tokens`/`output_tokens`), and the turn's
//! `metadata.usage` is set to the latest inference's usage.
//!
//! Retries and timeouts, like the official OpenAI and Anthropic SDKs: a
//! failure before any byte of the answer (HTTP 408, 409, 429, 5xx with
//! Anthropic's 529 "overloaded", a refused or reset connection) is tried
//! again, by default twice, after the wait the server asks for
//! (`retry-after-ms`, `retry-after` in seconds or as an HTTP date) or a
//! jittered exponential backoff (0.5 s, 1 s, ... up to 8 s, each shortened
//! by up to a quarter at random), as long as the waits stay within
//! [`RetryPolicy::max_retry_wait`]. Once the answer has begun nothing is
//! retried: a stream cut off mid-way fails. Every retry is logged at
//! `warn`. Two timeouts bound a call: the request timeout (the whole call,
//! streaming included; 300 s) and the idle timeout between two events of
//! the stream (keep-alive comments do not count; 120 s).
//!
//! A server that ignores `"stream": true` and answers one JSON completion
//! (an OpenAI chat completion object, an Anthropic message object) is
//! understood as well; any other body fails naming its `Content-Type`.
//!
//! The engines read no environment variables: the application (the CLI's
//! config layer) fills the config, API key included, and names where the
//! key came from in `api_key_source` so a 401 can say what to fix.
//!
//! Layout: `http` (client, retries, timeouts, error mapping, the answer's
//! body), `openai`, `anthropic`.
//!
//! ```no_run
//! # fn demo() -> marionette::Result<()> {
//! use std::sync::Arc;
//! use marionette::engines::{OpenAiConfig, OpenAiEngine};
//! use marionette::Session;
//!
//! let engine = OpenAiEngine::new(OpenAiConfig {
//!     api_key: Some("sk-...".into()),
//!     model: "gpt-4o-mini".into(),
//!     ..OpenAiConfig::default()
//! })?;
//! let session = Session::builder().engine(Arc::new(engine)).build()?;
//! # let _ = session; Ok(()) }
//! ```

mod anthropic;
mod http;
mod openai;

pub use anthropic::{AnthropicConfig, AnthropicEngine};
pub use openai::{OpenAiConfig, OpenAiEngine};

use std::time::Duration;

use serde_json::{Map, Value};

/// Which failed requests an engine tries again, how often and how long
/// apart (see the [module docs](self)). The defaults are the official
/// SDKs': 2 retries, backoff from 0.5 s doubling up to 8 s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (2); 0 turns retrying off.
    pub max_retries: u32,
    /// The backoff before the first retry, doubled for each next one
    /// (0.5 s), when the server named no wait.
    pub initial_backoff: Duration,
    /// The longest backoff (8 s).
    pub max_backoff: Duration,
    /// The most the retries of one call may wait in all (60 s): a server
    /// asking for a longer wait fails the call at once.
    pub max_retry_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_retry_wait: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry + 1` when the server named
    /// none: `initial_backoff * 2^retry`, at most `max_backoff`, less up to
    /// a quarter at random so that clients failed together do not retry
    /// together.
    pub fn backoff(&self, retry: u32) -> Duration {
        let full = self
            .initial_backoff
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max_backoff);
        full.mul_f64(1.0 - 0.25 * fastrand::f64())
    }
}

/// The default idle timeout between two events of a stream.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The default request timeout: the whole call, streaming included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

use crate::model::{Block, BlockKind, Turn};
use crate::session::new_id;

/// An `llm_text` block the model wrote.
fn text_block(text: String) -> Block {
    let mut payload = Map::new();
    payload.insert("text".into(), Value::String(text));
    block(BlockKind::LlmText, payload)
}

/// A `tool_call` block `{id, name, args}`: `args` parsed from the streamed
/// JSON text, or that text as a string when it is not JSON (the tool
/// loop's argument validation then reports it to the model).
fn tool_call_block(id: String, name: String, arguments: &str) -> Block {
    let args = if arguments.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_string()))
    };
    let mut payload = Map::new();
    payload.insert("id".into(), Value::String(id));
    payload.insert("name".into(), Value::String(name));
    payload.insert("args".into(), args);
    block(BlockKind::ToolCall, payload)
}

fn block(kind: BlockKind, payload: Map<String, Value>) -> Block {
    Block {
        id: new_id("blk"),
        kind,
        role: Some("assistant".into()),
        payload,
        metadata: Map::new(),
    }
}

/// Appends an inference's blocks to `turn`, its `metadata` on the last
/// one, and its usage as the turn's `metadata.usage`.
fn append(mut turn: Turn, mut blocks: Vec<Block>, metadata: Map<String, Value>) -> Turn {
    if let Some(usage) = metadata.get("usage").filter(|u| !u.is_null()) {
        turn.metadata.insert("usage".into(), usage.clone());
    }
    if let Some(last) = blocks.last_mut() {
        last.metadata.extend(metadata);
    }
    turn.blocks.extend(blocks);
    turn
}

/// A block's `payload.text`; other JSON as its JSON text.
fn text_of(block: &Block) -> String {
    match block.payload.get("text") {
        Some(Value::String(text)) => text.clone(),
        None | Some(Value::Null) => String::new(),
        Some(other) => other.to_string(),
    }
}

/// A `tool_use` block's outcome as the text a model reads, and whether the
/// call failed.
fn tool_result_of(block: &Block) -> (String, bool) {
    if let Some(error) = block.payload.get("error").filter(|e| !e.is_null()) {
        let error = error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_string);
        return (format!("error: {error}"), true);
    }
    let result = match block.payload.get("result") {
        Some(Value::String(text)) => text.clone(),
        None => "null".into(),
        Some(other) => other.to_string(),
    };
    (result, false)
}

/// A `tool_call` block's `args` as JSON (arguments kept as text are parsed
/// when they are JSON).
fn args_of(block: &Block) -> Value {
    match block.payload.get("args") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(text)) => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
        }
        Some(args) => args.clone(),
    }
}

/// A block payload's string field, or "".
fn str_field<'a>(block: &'a Block, key: &str) -> &'a str {
    block
        .payload
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backoff_doubles_up_to_its_bound_with_at_most_a_quarter_off() {
        let policy = RetryPolicy::default();
        for (retry, full_ms) in [(0, 500), (1, 1000), (2, 2000), (4, 8000), (9, 8000)] {
            let full = Duration::from_millis(full_ms);
            for _ in 0..50 {
                let wait = policy.backoff(retry);
                assert!(
                    wait <= full && wait >= full.mul_f64(0.75),
                    "{retry}: {wait:?}"
                );
            }
        }
    }

    #[test]
    fn tool_call_args_keep_invalid_json_as_text() {
        let good = tool_call_block("c1".into(), "add".into(), r#"{"a": 1}"#);
        assert_eq!(good.payload["args"], json!({"a": 1}));
        let empty = tool_call_block("c2".into(), "now".into(), "");
        assert_eq!(empty.payload["args"], json!({}));
        let bad = tool_call_block("c3".into(), "add".into(), r#"{"a": "#);
        assert_eq!(bad.payload["args"], json!(r#"{"a": "#));
        assert_eq!(args_of(&bad), json!(r#"{"a": "#));
    }

    #[test]
    fn append_puts_metadata_on_the_last_block_and_usage_on_the_turn() {
        let mut metadata = Map::new();
        metadata.insert("usage".into(), json!({"total_tokens": 3}));
        let turn = append(
            Turn::default(),
            vec![text_block("a".into()), text_block("b".into())],
            metadata,
        );
        assert!(turn.blocks[0].metadata.is_empty());
        assert_eq!(turn.blocks[1].metadata["usage"], json!({"total_tokens": 3}));
        assert_eq!(turn.metadata["usage"], json!({"total_tokens": 3}));
    }
}

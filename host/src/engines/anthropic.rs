//! [`AnthropicEngine`]: Anthropic Messages, streamed.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};

use super::http::{Answer, Endpoint, header_map};
use super::{DEFAULT_IDLE_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, RetryPolicy};
use super::{append, args_of, str_field, text_block, text_of, tool_call_block, tool_result_of};
use crate::error::{ProviderErrorKind, Result};
use crate::model::{Block, BlockKind, Turn};
use crate::session::{Engine, InferenceContext, ToolChoice, new_id};

/// The API version the engine speaks (the `anthropic-version` header).
const API_VERSION: &str = "2023-06-01";

/// How to reach Anthropic's Messages API. `Debug` shows no key.
#[derive(Clone)]
pub struct AnthropicConfig {
    /// The API root, `/v1/messages` is appended (`https://api.anthropic.com`).
    pub base_url: String,
    /// Sent as `x-api-key`.
    pub api_key: Option<String>,
    /// Where the key comes from (`ANTHROPIC_API_KEY`, a config file),
    /// named by the error of a rejected key: the engine never reads it.
    pub api_key_source: String,
    /// The model (`claude-3-5-haiku-latest`).
    pub model: String,
    /// `max_tokens` of every request, which the API requires (4096).
    pub max_tokens: u32,
    /// The longest a whole call may take, streaming included (300 s).
    pub timeout: Duration,
    /// The longest wait for the next event of the stream (120 s);
    /// keep-alive comments do not count.
    pub idle_timeout: Duration,
    /// Which failed requests are tried again (see
    /// [`RetryPolicy`]: 2 retries by default).
    pub retry: RetryPolicy,
    /// More headers for every request (`anthropic-beta`, a proxy's).
    pub extra_headers: Vec<(String, String)>,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        AnthropicConfig {
            base_url: "https://api.anthropic.com".into(),
            api_key: None,
            api_key_source: "ANTHROPIC_API_KEY".into(),
            model: "claude-3-5-haiku-latest".into(),
            max_tokens: 4096,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            retry: RetryPolicy::default(),
            extra_headers: Vec::new(),
        }
    }
}

impl std::fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self.extra_headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("AnthropicConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("api_key_source", &self.api_key_source)
            .field("model", &self.model)
            .field("max_tokens", &self.max_tokens)
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("retry", &self.retry)
            .field("extra_headers", &headers)
            .finish()
    }
}

/// An [`Engine`] that asks Anthropic's Messages API, streaming (see the
/// [module docs](super) for what it appends).
#[derive(Clone)]
pub struct AnthropicEngine {
    config: AnthropicConfig,
    endpoint: Endpoint,
    url: String,
    headers: HeaderMap,
}

impl std::fmt::Debug for AnthropicEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicEngine")
            .field("config", &self.config)
            .finish()
    }
}

impl AnthropicEngine {
    /// An engine for `config`; builds its HTTP client.
    ///
    /// # Errors
    /// [`Error::Host`](crate::Error::Host) when an extra header is invalid
    /// or the TLS client cannot be built.
    pub fn new(config: AnthropicConfig) -> Result<Self> {
        let mut extra = vec![("anthropic-version".to_string(), API_VERSION.to_string())];
        extra.extend(config.extra_headers.iter().cloned());
        let headers = header_map("anthropic.new", &extra)?;
        let endpoint = Endpoint {
            provider: "anthropic",
            client: Endpoint::client(config.timeout)?,
            api_key: config.api_key.clone(),
            api_key_source: config.api_key_source.clone(),
            timeout: config.timeout,
            idle_timeout: config.idle_timeout,
            retry: config.retry.clone(),
        };
        let url = format!("{}/v1/messages", config.base_url.trim_end_matches('/'));
        Ok(AnthropicEngine {
            config,
            endpoint,
            url,
            headers,
        })
    }

    /// The engine's config.
    pub fn config(&self) -> &AnthropicConfig {
        &self.config
    }

    fn request_body(&self, turn: &Turn, ctx: &InferenceContext) -> Value {
        let (system, messages) = messages(turn);
        let mut body = json!({
            "model": self.config.model,
            "max_tokens": self.config.max_tokens,
            "messages": messages,
            "stream": true,
        });
        if let Some(system) = system {
            body["system"] = Value::String(system);
        }
        if !ctx.tools.is_empty() {
            let tools: Vec<Value> = ctx
                .tools
                .iter()
                .map(|t| {
                    json!({"name": t.name, "description": t.description,
                    "input_schema": t.parameters})
                })
                .collect();
            body["tools"] = Value::Array(tools);
            body["tool_choice"] = json!({"type": match ctx.tool_choice {
                ToolChoice::Auto => "auto",
                ToolChoice::None => "none",
                ToolChoice::Required => "any",
            }});
        }
        body
    }
}

#[async_trait]
impl Engine for AnthropicEngine {
    fn name(&self) -> &str {
        "anthropic"
    }

    #[tracing::instrument(skip_all, fields(model = %self.config.model))]
    async fn infer(&self, turn: Turn, ctx: InferenceContext) -> Result<Turn> {
        let body = self.request_body(&turn, &ctx);
        let response = self
            .endpoint
            .send(|| {
                let request = self
                    .endpoint
                    .client
                    .post(&self.url)
                    .headers(self.headers.clone());
                match &self.config.api_key {
                    Some(key) => request.header("x-api-key", key),
                    None => request,
                }
                .json(&body)
            })
            .await?;
        let mut answer = Assembly::default();
        let mut events = match self.endpoint.answer(response).await? {
            Answer::Stream(events) => events,
            Answer::Complete(body) => {
                let events = Assembly::events_of_message(&body)
                    .ok_or_else(|| self.endpoint.not_a_completion("a message", &body))?;
                for data in &events {
                    let delta = answer
                        .apply(data)
                        .map_err(|(kind, m)| self.endpoint.error(kind, m))?;
                    if let Some(delta) = delta.filter(|_| ctx.events.has_sinks()) {
                        ctx.events.partial(delta, answer.text.clone());
                    }
                }
                let metadata = answer.metadata(&self.config.model);
                return Ok(append(turn, answer.blocks(), metadata));
            }
        };
        while let Some(event) = self.endpoint.next_event(&mut events).await? {
            if event.data.trim().is_empty() {
                continue;
            }
            let data = self.endpoint.parse(&event.data)?;
            let delta = answer
                .apply(&data)
                .map_err(|(kind, m)| self.endpoint.error(kind, m))?;
            if let Some(delta) = delta.filter(|_| ctx.events.has_sinks()) {
                ctx.events.partial(delta, answer.text.clone());
            }
            if answer.done {
                break;
            }
        }
        if !answer.done {
            return Err(self.endpoint.error(
                ProviderErrorKind::Protocol,
                "the stream ended before its end (message_stop)",
            ));
        }
        let metadata = answer.metadata(&self.config.model);
        Ok(append(turn, answer.blocks(), metadata))
    }
}

/// The turn's blocks as the top-level `system` (system blocks joined by a
/// blank line) and Messages API messages: user and assistant text,
/// `tool_call` blocks as assistant `tool_use` content, `tool_use` blocks as
/// user `tool_result` content. Adjacent content of one role is one message.
pub(crate) fn messages(turn: &Turn) -> (Option<String>, Vec<Value>) {
    let mut system: Vec<String> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for block in &turn.blocks {
        let (role, content) = match block.kind {
            BlockKind::System => {
                system.push(text_of(block));
                continue;
            }
            BlockKind::User => ("user", json!({"type": "text", "text": text_of(block)})),
            BlockKind::LlmText => {
                let text = text_of(block);
                if text.is_empty() {
                    continue; // the API rejects empty text content
                }
                ("assistant", json!({"type": "text", "text": text}))
            }
            BlockKind::ToolCall => {
                let input = match args_of(block) {
                    Value::Object(input) => Value::Object(input),
                    // The API takes objects only; what the model sent is kept.
                    other => json!({"arguments": other}),
                };
                let id = str_field(block, "id");
                (
                    "assistant",
                    json!({"type": "tool_use", "id": id,
                    "name": str_field(block, "name"), "input": input}),
                )
            }
            BlockKind::ToolUse => {
                let (content, is_error) = tool_result_of(block);
                let mut result = json!({"type": "tool_result",
                    "tool_use_id": str_field(block, "id"), "content": content});
                if is_error {
                    result["is_error"] = Value::Bool(true);
                }
                ("user", result)
            }
            BlockKind::Reasoning | BlockKind::Other => continue,
        };
        match out.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(items) = last["content"].as_array_mut() {
                    items.push(content);
                }
            }
            _ => out.push(json!({"role": role, "content": [content]})),
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    (system, out)
}

/// A streamed answer being put together, event by event.
#[derive(Debug, Default)]
struct Assembly {
    /// Content blocks by their `index`.
    parts: BTreeMap<u64, Part>,
    /// All text so far, for `partial` events.
    text: String,
    stop_reason: Option<String>,
    usage: Map<String, Value>,
    model: Option<String>,
    /// Whether `message_stop` came: without it the stream broke off.
    done: bool,
}

#[derive(Debug)]
enum Part {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        json: String,
    },
    /// Thinking and other content the engine does not append.
    Other,
}

impl Assembly {
    /// A complete (non-streamed) message object as the stream events that
    /// would have carried it, for [`apply`](Self::apply); `None` when
    /// `body` is not a message. An error object is passed on as it is, for
    /// `apply` to report.
    fn events_of_message(body: &Value) -> Option<Vec<Value>> {
        match body.get("type").and_then(Value::as_str) {
            Some("error") => return Some(vec![body.clone()]),
            Some("message") => {}
            _ => return None,
        }
        let content = body.get("content")?.as_array()?;
        let mut events = vec![json!({"type": "message_start", "message": {
            "model": body.get("model").cloned().unwrap_or(Value::Null),
            "usage": body.get("usage").cloned().unwrap_or(Value::Null)}})];
        for (index, block) in content.iter().enumerate() {
            let (start, delta) = match block.get("type").and_then(Value::as_str) {
                Some("text") => (
                    json!({"type": "text", "text": ""}),
                    json!({"type": "text_delta", "text": block.get("text")?.as_str()?}),
                ),
                Some("tool_use") => (
                    json!({"type": "tool_use", "id": block.get("id"), "name": block.get("name"),
                        "input": {}}),
                    json!({"type": "input_json_delta",
                        "partial_json": block.get("input").unwrap_or(&json!({})).to_string()}),
                ),
                _ => (block.clone(), Value::Null),
            };
            events.push(json!({"type": "content_block_start", "index": index,
                "content_block": start}));
            if !delta.is_null() {
                events.push(json!({"type": "content_block_delta", "index": index,
                    "delta": delta}));
            }
        }
        events.push(json!({"type": "message_delta",
            "delta": {"stop_reason": body.get("stop_reason").cloned().unwrap_or(Value::Null)}}));
        events.push(json!({"type": "message_stop"}));
        Some(events)
    }

    /// Takes in one event's data; returns its text delta, if it has one.
    fn apply(&mut self, data: &Value) -> Result<Option<String>, (ProviderErrorKind, String)> {
        let protocol = |what: &str| (ProviderErrorKind::Protocol, format!("{what}: {data}"));
        match data["type"].as_str().unwrap_or_default() {
            "message_start" => {
                let message = &data["message"];
                self.model = message["model"].as_str().map(str::to_string);
                if let Some(usage) = message["usage"].as_object() {
                    self.usage.extend(usage.clone());
                }
            }
            "content_block_start" => {
                let index = data["index"].as_u64().ok_or_else(|| protocol("no index"))?;
                let block = &data["content_block"];
                let part = match block["type"].as_str() {
                    Some("text") => Part::Text(block["text"].as_str().unwrap_or("").into()),
                    Some("tool_use") => Part::ToolUse {
                        id: block["id"]
                            .as_str()
                            .map_or_else(|| new_id("call"), str::to_string),
                        name: block["name"].as_str().unwrap_or_default().to_string(),
                        json: String::new(),
                    },
                    _ => Part::Other,
                };
                self.parts.insert(index, part);
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().ok_or_else(|| protocol("no index"))?;
                let part = self
                    .parts
                    .get_mut(&index)
                    .ok_or_else(|| protocol("delta of a block that never started"))?;
                let delta = &data["delta"];
                match (part, delta["type"].as_str()) {
                    (Part::Text(text), Some("text_delta")) => {
                        let piece = delta["text"].as_str().unwrap_or_default();
                        text.push_str(piece);
                        self.text.push_str(piece);
                        return Ok((!piece.is_empty()).then(|| piece.to_string()));
                    }
                    (Part::ToolUse { json, .. }, Some("input_json_delta")) => {
                        json.push_str(delta["partial_json"].as_str().unwrap_or_default());
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(reason.to_string());
                }
                if let Some(usage) = data["usage"].as_object() {
                    self.usage.extend(usage.clone());
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                let error = &data["error"];
                let kind = match error["type"].as_str() {
                    Some("rate_limit_error") => ProviderErrorKind::RateLimited,
                    Some("authentication_error") => ProviderErrorKind::Unauthorized,
                    _ => ProviderErrorKind::Server,
                };
                let message = error["message"].as_str().unwrap_or("unknown");
                return Err((kind, format!("error in the stream: {message}")));
            }
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
        Ok(None)
    }

    /// The answer's blocks, in content order.
    fn blocks(&mut self) -> Vec<Block> {
        let mut blocks = Vec::new();
        for part in std::mem::take(&mut self.parts).into_values() {
            match part {
                Part::Text(text) if !text.is_empty() => blocks.push(text_block(text)),
                Part::ToolUse { id, name, json } => blocks.push(tool_call_block(id, name, &json)),
                Part::Text(_) | Part::Other => {}
            }
        }
        blocks
    }

    fn metadata(&self, model: &str) -> Map<String, Value> {
        let Value::Object(metadata) = json!({
            "provider": "anthropic",
            "model": self.model.as_deref().unwrap_or(model),
            "finish_reason": self.stop_reason,
            "usage": self.usage,
        }) else {
            unreachable!("json! of an object literal is an object")
        };
        metadata
    }
}

#[cfg(test)]
mod tests;

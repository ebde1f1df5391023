//! [`OpenAiEngine`]: OpenAI-compatible Chat Completions, streamed.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};

use super::http::{Answer, Endpoint, header_map};
use super::{DEFAULT_IDLE_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, RetryPolicy};
use super::{append, args_of, str_field, text_block, text_of, tool_call_block, tool_result_of};
use crate::error::{ProviderErrorKind, Result};
use crate::model::{BlockKind, Turn};
use crate::session::{Engine, InferenceContext, ToolChoice, new_id};

/// How to reach an OpenAI-compatible server. `Debug` shows no key.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// The API root, `/chat/completions` is appended
    /// (`https://api.openai.com/v1`; a local server's `http://host:port/v1`).
    pub base_url: String,
    /// Sent as `Authorization: Bearer`; `None` for servers that need none.
    pub api_key: Option<String>,
    /// Where the key comes from (`OPENAI_API_KEY`, `config.toml [openai]`),
    /// named by the error of a rejected key: the engine never reads it.
    pub api_key_source: String,
    /// The model (`gpt-4o-mini`).
    pub model: String,
    /// The longest a whole call may take, streaming included (300 s).
    pub timeout: Duration,
    /// The longest wait for the next event of the stream (120 s);
    /// keep-alive comments do not count.
    pub idle_timeout: Duration,
    /// Which failed requests are tried again (see
    /// [`RetryPolicy`]: 2 retries by default).
    pub retry: RetryPolicy,
    /// `max_tokens` of the request, when set.
    pub max_tokens: Option<u32>,
    /// More headers for every request (`OpenAI-Organization`, a proxy's).
    pub extra_headers: Vec<(String, String)>,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            base_url: "https://api.openai.com/v1".into(),
            api_key: None,
            api_key_source: "OPENAI_API_KEY".into(),
            model: "gpt-4o-mini".into(),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            retry: RetryPolicy::default(),
            max_tokens: None,
            extra_headers: Vec::new(),
        }
    }
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self.extra_headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("api_key_source", &self.api_key_source)
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("retry", &self.retry)
            .field("max_tokens", &self.max_tokens)
            .field("extra_headers", &headers)
            .finish()
    }
}

/// An [`Engine`] that asks an OpenAI-compatible Chat Completions endpoint,
/// streaming (see the [module docs](super) for what it appends).
#[derive(Clone)]
pub struct OpenAiEngine {
    config: OpenAiConfig,
    endpoint: Endpoint,
    url: String,
    headers: HeaderMap,
}

impl std::fmt::Debug for OpenAiEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEngine")
            .field("config", &self.config)
            .finish()
    }
}

impl OpenAiEngine {
    /// An engine for `config`; builds its HTTP client (connections are
    /// pooled across calls).
    ///
    /// # Errors
    /// [`Error::Host`](crate::Error::Host) when an extra header is invalid or the TLS client
    /// cannot be built.
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        let headers = header_map("openai.new", &config.extra_headers)?;
        let endpoint = Endpoint {
            provider: "openai",
            client: Endpoint::client(config.timeout)?,
            api_key: config.api_key.clone(),
            api_key_source: config.api_key_source.clone(),
            timeout: config.timeout,
            idle_timeout: config.idle_timeout,
            retry: config.retry.clone(),
        };
        let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        Ok(OpenAiEngine {
            config,
            endpoint,
            url,
            headers,
        })
    }

    /// The engine's config.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    fn request_body(&self, turn: &Turn, ctx: &InferenceContext) -> Value {
        let mut body = json!({
            "model": self.config.model,
            "messages": messages(turn),
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !ctx.tools.is_empty() {
            let tools: Vec<Value> = ctx
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters}})
                })
                .collect();
            body["tools"] = Value::Array(tools);
            body["tool_choice"] = json!(match ctx.tool_choice {
                ToolChoice::Auto => "auto",
                ToolChoice::None => "none",
                ToolChoice::Required => "required",
            });
        }
        if let Some(max_tokens) = self.config.max_tokens {
            body["max_tokens"] = json!(max_tokens);
        }
        body
    }
}

#[async_trait]
impl Engine for OpenAiEngine {
    fn name(&self) -> &str {
        "openai"
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
                    Some(key) => request.bearer_auth(key),
                    None => request,
                }
                .json(&body)
            })
            .await?;
        let mut answer = Assembly::default();
        let mut events = match self.endpoint.answer(response).await? {
            Answer::Stream(events) => events,
            Answer::Complete(body) => {
                let chunk = Assembly::chunk_of_completion(&body)
                    .ok_or_else(|| self.endpoint.not_a_completion("a chat completion", &body))?;
                let delta = answer
                    .apply(&chunk)
                    .map_err(|(kind, m)| self.endpoint.error(kind, m))?;
                if let Some(delta) = delta.filter(|_| ctx.events.has_sinks()) {
                    ctx.events.partial(delta, answer.text.clone());
                }
                let metadata = answer.metadata(&self.config.model);
                return Ok(append(turn, answer.blocks(), metadata));
            }
        };
        while let Some(event) = self.endpoint.next_event(&mut events).await? {
            let data = event.data.trim();
            if data == "[DONE]" {
                answer.done = true;
                break;
            }
            if data.is_empty() {
                continue;
            }
            let chunk = self.endpoint.parse(data)?;
            let delta = answer
                .apply(&chunk)
                .map_err(|(kind, m)| self.endpoint.error(kind, m))?;
            if let Some(delta) = delta.filter(|_| ctx.events.has_sinks()) {
                ctx.events.partial(delta, answer.text.clone());
            }
        }
        if !answer.done {
            return Err(self.endpoint.error(
                ProviderErrorKind::Protocol,
                "the stream ended before its end ([DONE])",
            ));
        }
        let metadata = answer.metadata(&self.config.model);
        Ok(append(turn, answer.blocks(), metadata))
    }
}

/// The turn's blocks as Chat Completions messages: system, user and
/// assistant text; `tool_call` blocks as the `tool_calls` of an assistant
/// message (joined to the text before them); `tool_use` blocks as `tool`
/// messages. Reasoning and other blocks are not sent.
pub(crate) fn messages(turn: &Turn) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for block in &turn.blocks {
        match block.kind {
            BlockKind::System => out.push(json!({"role": "system", "content": text_of(block)})),
            BlockKind::User => out.push(json!({"role": "user", "content": text_of(block)})),
            BlockKind::LlmText => out.push(json!({"role": "assistant", "content": text_of(block)})),
            BlockKind::ToolCall => {
                let arguments = match args_of(block) {
                    Value::String(raw) => raw,
                    args => args.to_string(),
                };
                let call = json!({"id": str_field(block, "id"), "type": "function",
                    "function": {"name": str_field(block, "name"), "arguments": arguments}});
                match out.last_mut() {
                    Some(last) if last["role"] == "assistant" => match last.get_mut("tool_calls") {
                        Some(Value::Array(calls)) => calls.push(call),
                        _ => last["tool_calls"] = json!([call]),
                    },
                    _ => out
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            BlockKind::ToolUse => {
                let (content, _) = tool_result_of(block);
                out.push(
                    json!({"role": "tool", "tool_call_id": str_field(block, "id"),
                    "content": content}),
                );
            }
            BlockKind::Reasoning | BlockKind::Other => {}
        }
    }
    out
}

/// A streamed answer being put together, chunk by chunk.
#[derive(Debug, Default)]
struct Assembly {
    text: String,
    /// Tool calls by their `index`; their pieces arrive interleaved.
    calls: BTreeMap<u64, PendingCall>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    model: Option<String>,
    /// Whether `[DONE]` came: without it the stream broke off.
    done: bool,
}

#[derive(Debug, Default)]
struct PendingCall {
    id: String,
    name: String,
    arguments: String,
}

impl Assembly {
    /// A complete (non-streamed) chat completion as the one chunk that
    /// carries all of it, for [`apply`](Self::apply); `None` when `body`
    /// is not a chat completion. An error object is passed on as it is,
    /// for `apply` to report.
    fn chunk_of_completion(body: &Value) -> Option<Value> {
        if body.get("error").is_some() {
            return Some(body.clone());
        }
        let choice = body.get("choices")?.as_array()?.first()?;
        let message = choice.get("message")?.as_object()?;
        let mut delta = json!({"content": message.get("content").cloned().unwrap_or(Value::Null)});
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(index, call)| {
                    let mut call = call.clone();
                    call["index"] = json!(index);
                    call
                })
                .collect();
            delta["tool_calls"] = Value::Array(calls);
        }
        let mut chunk = json!({"choices": [{"index": 0, "delta": delta,
            "finish_reason": choice.get("finish_reason").cloned().unwrap_or(Value::Null)}]});
        for key in ["model", "usage"] {
            if let Some(value) = body.get(key) {
                chunk[key] = value.clone();
            }
        }
        Some(chunk)
    }

    /// Takes in one chunk; returns its text delta, if it has one.
    fn apply(&mut self, chunk: &Value) -> Result<Option<String>, (ProviderErrorKind, String)> {
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            return Err((
                ProviderErrorKind::Server,
                format!("error in the stream: {message}"),
            ));
        }
        if let Some(model) = chunk.get("model").and_then(Value::as_str) {
            self.model = Some(model.to_string());
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(usage.clone());
        }
        let Some(choice) = chunk["choices"].as_array().and_then(|c| c.first()) else {
            return Ok(None);
        };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        let delta = &choice["delta"];
        for piece in delta["tool_calls"].as_array().into_iter().flatten() {
            let Some(index) = piece["index"].as_u64() else {
                return Err((
                    ProviderErrorKind::Protocol,
                    format!("tool call without index: {piece}"),
                ));
            };
            let call = self.calls.entry(index).or_default();
            if let Some(id) = piece["id"].as_str() {
                call.id = id.to_string();
            }
            if let Some(name) = piece["function"]["name"].as_str() {
                call.name.push_str(name);
            }
            if let Some(arguments) = piece["function"]["arguments"].as_str() {
                call.arguments.push_str(arguments);
            }
        }
        match delta["content"].as_str() {
            Some(text) if !text.is_empty() => {
                self.text.push_str(text);
                Ok(Some(text.to_string()))
            }
            _ => Ok(None),
        }
    }

    /// The answer's blocks: its text, then its tool calls in index order.
    fn blocks(&mut self) -> Vec<crate::model::Block> {
        let mut blocks = Vec::new();
        if !self.text.is_empty() {
            blocks.push(text_block(std::mem::take(&mut self.text)));
        }
        for call in std::mem::take(&mut self.calls).into_values() {
            let id = if call.id.is_empty() {
                new_id("call")
            } else {
                call.id
            };
            blocks.push(tool_call_block(id, call.name, &call.arguments));
        }
        blocks
    }

    fn metadata(&self, model: &str) -> Map<String, Value> {
        let Value::Object(metadata) = json!({
            "provider": "openai",
            "model": self.model.as_deref().unwrap_or(model),
            "finish_reason": self.finish_reason,
            "usage": self.usage,
        }) else {
            unreachable!("json! of an object literal is an object")
        };
        metadata
    }
}

#[cfg(test)]
mod tests;

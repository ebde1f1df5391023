//! Inference engines: the trait, what an engine call knows, the `echo`
//! engine and the registry of the application's host engines.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::events::EventEmitter;
use super::new_id;
use super::settings::ToolChoice;
use crate::error::{Error, Result};
use crate::model::{Block, BlockKind, ToolDefinition, Turn};

/// Something that produces the model's answer to a turn: a provider, a
/// JavaScript engine, a test double.
///
/// Object-safe and shareable: a session holds it as `Arc<dyn Engine>` and
/// calls it from whatever task runs the loop.
#[async_trait]
pub trait Engine: Send + Sync {
    /// A name for logs and error messages.
    fn name(&self) -> &str;

    /// Answers `turn`: returns it with the model's blocks appended
    /// (`llm_text`, `tool_call`, ...). Tools the model may call, and whether
    /// it must, are in `ctx`; streaming engines send `partial` events
    /// through `ctx.events` as text arrives.
    ///
    /// The future may be dropped at any await (cancellation, timeout); an
    /// engine must not rely on running to completion.
    ///
    /// # Errors
    /// Whatever stopped the inference; it fails the run.
    async fn infer(&self, turn: Turn, ctx: InferenceContext) -> Result<Turn>;
}

/// What an engine call knows besides the turn.
#[derive(Debug, Clone, Default)]
pub struct InferenceContext {
    /// The session that runs.
    pub session_id: String,
    /// This inference (one engine call of the loop); events carry it.
    pub inference_id: String,
    /// The id of the turn being answered.
    pub turn_id: String,
    /// The tools the model may call: the session's tools filtered by
    /// `allowedTools`; empty when the tool choice is `none`.
    pub tools: Arc<[ToolDefinition]>,
    /// Whether the model may, must or must not call tools.
    pub tool_choice: ToolChoice,
    /// The run's tags, for the application's own bookkeeping.
    pub tags: Map<String, Value>,
    /// When the run must be over, in ms since the Unix epoch, if it has a
    /// timeout; a provider can pass it on.
    pub deadline_ms: Option<u64>,
    /// Where `partial` events go (scoped to this inference).
    pub events: EventEmitter,
}

/// An `llm_text` block with a fresh id and the assistant role.
pub(crate) fn text_block(text: impl Into<String>) -> Block {
    let mut payload = Map::new();
    payload.insert("text".into(), Value::String(text.into()));
    Block {
        id: new_id("blk"),
        kind: BlockKind::LlmText,
        role: Some("assistant".into()),
        payload,
        metadata: Map::new(),
    }
}

/// A `tool_call` block (`{id, name, args}`) with a fresh block id.
pub(crate) fn tool_call_block(id: &str, name: &str, args: Value) -> Block {
    let Value::Object(payload) = json!({"id": id, "name": name, "args": args}) else {
        unreachable!("json! of an object literal is an object")
    };
    Block {
        id: new_id("blk"),
        kind: BlockKind::ToolCall,
        role: Some("assistant".into()),
        payload,
        metadata: Map::new(),
    }
}

/// The built-in `echo` engine: appends one `llm_text` block with a fixed
/// reply. Deterministic, for tests and smoke runs.
#[derive(Debug, Clone)]
pub struct EchoEngine {
    /// The text every inference answers.
    pub reply: String,
}

impl EchoEngine {
    /// An engine that always answers `reply`.
    pub fn new(reply: impl Into<String>) -> Self {
        EchoEngine {
            reply: reply.into(),
        }
    }
}

impl Default for EchoEngine {
    /// Answers `READY`, as geppetto's `engines.echo()` does.
    fn default() -> Self {
        EchoEngine::new("READY")
    }
}

#[async_trait]
impl Engine for EchoEngine {
    fn name(&self) -> &str {
        "echo"
    }

    async fn infer(&self, mut turn: Turn, _ctx: InferenceContext) -> Result<Turn> {
        turn.blocks.push(text_block(self.reply.clone()));
        Ok(turn)
    }
}

/// The engines an embedding application offers to scripts: what
/// `engines.host(name?)` resolves to.
///
/// Cheap to clone. The first engine registered is the default unless
/// [`set_default`](Self::set_default) names another.
#[derive(Clone, Default)]
pub struct EngineRegistry {
    engines: BTreeMap<String, Arc<dyn Engine>>,
    default: Option<String>,
}

impl std::fmt::Debug for EngineRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineRegistry")
            .field("engines", &self.engines.keys().collect::<Vec<_>>())
            .field("default", &self.default)
            .finish()
    }
}

impl EngineRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        EngineRegistry::default()
    }

    /// Offers `engine` under `name`, replacing an engine of that name.
    pub fn register(mut self, name: impl Into<String>, engine: Arc<dyn Engine>) -> Self {
        let name = name.into();
        if self.default.is_none() {
            self.default = Some(name.clone());
        }
        self.engines.insert(name, engine);
        self
    }

    /// Makes `name` the engine `get(None)` returns.
    ///
    /// # Errors
    /// [`Error::Host`] when no engine has that name.
    pub fn set_default(mut self, name: &str) -> Result<Self> {
        if !self.engines.contains_key(name) {
            return Err(self.unknown(name));
        }
        self.default = Some(name.to_string());
        Ok(self)
    }

    /// The engine named `name`, or the default one for `None`.
    ///
    /// # Errors
    /// [`Error::Host`] naming the known engines when there is no such
    /// engine, or no engine at all.
    pub fn get(&self, name: Option<&str>) -> Result<Arc<dyn Engine>> {
        let name = match name.or(self.default.as_deref()) {
            Some(name) => name,
            None => {
                return Err(Error::host(
                    "engines.host",
                    anyhow::anyhow!("the application registered no host engine"),
                ));
            }
        };
        self.engines
            .get(name)
            .cloned()
            .ok_or_else(|| self.unknown(name))
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.engines.keys().cloned().collect()
    }

    fn unknown(&self, name: &str) -> Error {
        let known: Vec<&str> = self.engines.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        Error::host(
            "engines.host",
            anyhow::anyhow!("unknown host engine \"{name}\" (known: {known})"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echo_appends_its_reply() {
        let out = EchoEngine::default()
            .infer(Turn::default(), InferenceContext::default())
            .await
            .unwrap();
        assert_eq!(out.blocks.len(), 1);
        assert_eq!(out.blocks[0].kind, BlockKind::LlmText);
        assert_eq!(out.blocks[0].payload["text"], "READY");
    }

    #[test]
    fn registry_resolves_names_and_the_default() {
        let registry = EngineRegistry::new()
            .register("a", Arc::new(EchoEngine::new("A")))
            .register("b", Arc::new(EchoEngine::new("B")));
        assert_eq!(registry.get(None).unwrap().name(), "echo");
        assert!(registry.get(Some("b")).is_ok());
        let e = registry.get(Some("gpt")).err().unwrap().to_string();
        assert_eq!(e, "engines.host: unknown host engine \"gpt\" (known: a, b)");
        assert!(registry.clone().set_default("zz").is_err());
        let e = EngineRegistry::new().get(None).err().unwrap().to_string();
        assert!(e.contains("registered no host engine"), "{e}");
    }
}

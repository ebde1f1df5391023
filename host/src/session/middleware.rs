//! Middleware: what wraps every engine call, the chain that nests them, and
//! the host middleware a script can ask for by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::new_id;
use crate::error::{Error, Result};
use crate::model::{Block, BlockKind, Turn};

/// The rest of the chain, as a middleware sees it: the inner middleware,
/// or at the end the engine.
///
/// A cheap-clone, `'static` callable, so it can be stored, moved into
/// spawned tasks, and called zero, one or several times (each call runs
/// the rest of the chain again). Its type is the sandbox's `NextFn`.
pub type Next = Arc<dyn Fn(Turn) -> BoxFuture<'static, Result<Turn>> + Send + Sync>;

/// What a middleware call knows besides the turn.
#[derive(Debug, Clone, Default)]
pub struct MiddlewareContext {
    /// The name of the middleware being called.
    pub middleware_name: String,
    /// The session that runs.
    pub session_id: String,
    /// The inference this engine call is.
    pub inference_id: String,
    /// The id of the turn being answered.
    pub turn_id: String,
    /// The run's tags.
    pub tags: Map<String, Value>,
    /// When the run must be over, in ms since the Unix epoch.
    pub deadline_ms: Option<u64>,
}

/// Code around every engine call of the loop: may rewrite the turn before
/// the engine sees it, rewrite the result, call the rest of the chain
/// several times, or not at all (answering by itself).
#[async_trait]
pub trait Middleware: Send + Sync {
    /// A name for the context, logs and error messages.
    fn name(&self) -> &str;

    /// Handles one engine call: usually `next(turn).await`, with work
    /// before and after.
    ///
    /// # Errors
    /// Whatever it decides; an error fails the run (unless an outer
    /// middleware handles it).
    async fn handle(&self, turn: Turn, ctx: MiddlewareContext, next: Next) -> Result<Turn>;
}

/// Host middleware that puts a system prompt at the start of the turn.
///
/// It replaces the text of a leading `system` block rather than stacking a
/// new one, so running once per tool-loop iteration (and once per run over
/// a growing history) keeps exactly one.
#[derive(Debug, Clone)]
pub struct SystemPrompt {
    /// The prompt's text.
    pub prompt: String,
}

impl SystemPrompt {
    /// A middleware that sets `prompt` as the system prompt.
    pub fn new(prompt: impl Into<String>) -> Self {
        SystemPrompt {
            prompt: prompt.into(),
        }
    }

    /// Applies the prompt to a turn (what [`handle`](Middleware::handle)
    /// does before calling `next`).
    pub fn apply(&self, turn: &mut Turn) {
        let text = Value::String(self.prompt.clone());
        match turn.blocks.first_mut() {
            Some(block) if block.kind == BlockKind::System => {
                block.payload.insert("text".into(), text);
            }
            _ => {
                let mut payload = Map::new();
                payload.insert("text".into(), text);
                let block = Block {
                    id: new_id("blk"),
                    kind: BlockKind::System,
                    role: Some("system".into()),
                    payload,
                    metadata: Map::new(),
                };
                turn.blocks.insert(0, block);
            }
        }
    }
}

#[async_trait]
impl Middleware for SystemPrompt {
    fn name(&self) -> &str {
        "systemPrompt"
    }

    async fn handle(&self, mut turn: Turn, _ctx: MiddlewareContext, next: Next) -> Result<Turn> {
        self.apply(&mut turn);
        next(turn).await
    }
}

/// Builds a host middleware from the options JSON a script passes.
pub type MiddlewareFactory = Arc<dyn Fn(&Value) -> Result<Arc<dyn Middleware>> + Send + Sync>;

/// The host middleware scripts can ask for by name
/// (`middlewares.host(name, options)`), with their factories.
///
/// [`with_builtins`](Self::with_builtins) has `systemPrompt` (`{prompt}`);
/// an application registers its own beside it.
#[derive(Clone, Default)]
pub struct MiddlewareRegistry {
    factories: BTreeMap<String, MiddlewareFactory>,
}

impl std::fmt::Debug for MiddlewareRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiddlewareRegistry")
            .field("names", &self.factories.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MiddlewareRegistry {
    /// A registry with no middleware.
    pub fn new() -> Self {
        MiddlewareRegistry::default()
    }

    /// A registry with the built-in host middleware: `systemPrompt`.
    pub fn with_builtins() -> Self {
        MiddlewareRegistry::new().register("systemPrompt", Arc::new(system_prompt_factory))
    }

    /// Offers the middleware `factory` builds under `name`, replacing one
    /// of that name.
    pub fn register(mut self, name: impl Into<String>, factory: MiddlewareFactory) -> Self {
        self.factories.insert(name.into(), factory);
        self
    }

    /// Builds the middleware `name` with `options`.
    ///
    /// # Errors
    /// [`Error::Host`] naming the known middleware for an unknown name, or
    /// the factory's error for bad options.
    pub fn create(&self, name: &str, options: &Value) -> Result<Arc<dyn Middleware>> {
        match self.factories.get(name) {
            Some(factory) => factory(options),
            None => {
                let known: Vec<&str> = self.factories.keys().map(String::as_str).collect();
                Err(Error::host(
                    "middlewares.host",
                    anyhow::anyhow!(
                        "unknown host middleware \"{name}\" (known: {})",
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                ))
            }
        }
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.factories.keys().cloned().collect()
    }
}

fn system_prompt_factory(options: &Value) -> Result<Arc<dyn Middleware>> {
    match options.get("prompt") {
        Some(Value::String(prompt)) => Ok(Arc::new(SystemPrompt::new(prompt.clone()))),
        other => Err(Error::host(
            "middlewares.host",
            anyhow::anyhow!(
                "systemPrompt needs the option \"prompt\" as a string, got {}",
                other.map_or("nothing".to_string(), Value::to_string)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn system_prompt_replaces_a_leading_system_block() {
        let prompt = SystemPrompt::new("one");
        let mut turn = Turn::default();
        prompt.apply(&mut turn);
        SystemPrompt::new("two").apply(&mut turn);
        assert_eq!(turn.blocks.len(), 1);
        assert_eq!(turn.blocks[0].payload["text"], "two");
        assert_eq!(turn.blocks[0].kind, BlockKind::System);
    }

    #[test]
    fn registry_builds_system_prompt_and_names_bad_options() {
        let registry = MiddlewareRegistry::with_builtins();
        let m = registry
            .create("systemPrompt", &json!({"prompt": "hi"}))
            .unwrap();
        assert_eq!(m.name(), "systemPrompt");
        let e = registry
            .create("systemPrompt", &json!({"prompt": 3}))
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("option \"prompt\" as a string, got 3"),
            "{e}"
        );
        let e = registry.create("systemPrompt", &json!({})).err().unwrap();
        assert!(e.to_string().contains("got nothing"), "{e}");
        let e = registry.create("turnLogging", &json!({})).err().unwrap();
        assert!(
            e.to_string()
                .contains("unknown host middleware \"turnLogging\" (known: systemPrompt)")
        );
    }
}

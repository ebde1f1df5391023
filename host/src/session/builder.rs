//! Putting a session together from engines, middleware, tools and hooks of
//! any origin.

use std::sync::{Arc, Mutex};

use super::engine::Engine;
use super::events::EventSink;
use super::handle::{Inner, Session, State};
use super::hooks::ToolHooks;
use super::middleware::Middleware;
use super::new_id;
use super::run::LoopParts;
use super::settings::ToolLoopSettings;
use super::tools::{ToolSet, Tools};
use crate::error::{Error, Result};
use crate::sandbox::Sandbox;

/// Builds a [`Session`]. Rust and JavaScript parts mix freely: each is a
/// trait object.
///
/// ```
/// # fn demo() -> marionette::Result<()> {
/// use std::sync::Arc;
/// use marionette::session::{EchoEngine, Session, SystemPrompt, ToolLoopSettings};
///
/// let session = Session::builder()
///     .engine(Arc::new(EchoEngine::default()))
///     .middleware(Arc::new(SystemPrompt::new("outermost")))
///     .tool_loop(ToolLoopSettings { max_iterations: 3, ..Default::default() })
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct SessionBuilder {
    id: Option<String>,
    engine: Option<Arc<dyn Engine>>,
    middlewares: Vec<Arc<dyn Middleware>>,
    tool_sets: Vec<Arc<dyn ToolSet>>,
    settings: ToolLoopSettings,
    hooks: Option<Arc<dyn ToolHooks>>,
    sinks: Vec<EventSink>,
    sandbox: Option<Sandbox>,
}

impl std::fmt::Debug for SessionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionBuilder")
            .field("id", &self.id)
            .field(
                "engine",
                &self.engine.as_ref().map(|e| e.name().to_string()),
            )
            .field(
                "middlewares",
                &self
                    .middlewares
                    .iter()
                    .map(|m| m.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field(
                "tool_sets",
                &self
                    .tool_sets
                    .iter()
                    .map(|t| t.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("settings", &self.settings)
            .field("hooks", &self.hooks.is_some())
            .field("sandbox", &self.sandbox.is_some())
            .finish()
    }
}

impl SessionBuilder {
    /// Uses `id` as the session id instead of a generated one.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The engine every inference calls (required).
    pub fn engine(mut self, engine: Arc<dyn Engine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Adds a middleware inside those added before: the first added is the
    /// outermost.
    pub fn middleware(mut self, middleware: Arc<dyn Middleware>) -> Self {
        self.middlewares.push(middleware);
        self
    }

    /// Adds a tool set. Tool names must be unique across all sets.
    pub fn tools(mut self, tools: Arc<dyn ToolSet>) -> Self {
        self.tool_sets.push(tools);
        self
    }

    /// How the tool loop runs (defaults otherwise).
    pub fn tool_loop(mut self, settings: ToolLoopSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Hooks around every tool call.
    pub fn hooks(mut self, hooks: Arc<dyn ToolHooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Sends the events of every run of the session to `sink` too.
    pub fn event_sink(mut self, sink: EventSink) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Runs the session's loop in `sandbox`'s guest. Without one, the
    /// session makes a sandbox of its own (default [`Policy`]) on its first
    /// run. The parts need not come from this sandbox: a JavaScript part of
    /// another one runs there, called like any Rust part.
    ///
    /// [`Policy`]: crate::Policy
    pub fn sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// The session, with an empty history.
    ///
    /// # Errors
    /// [`Error::Host`] when no engine was given, when two tool sets define
    /// the same tool, or when the settings are invalid.
    pub fn build(self) -> Result<Session> {
        const OP: &str = "session builder";
        let engine = self.engine.ok_or_else(|| {
            Error::host(
                OP,
                anyhow::anyhow!("no engine: call SessionBuilder::engine first"),
            )
        })?;
        self.settings
            .validate()
            .map_err(|e| Error::host(OP, anyhow::anyhow!("invalid tool loop settings: {e}")))?;
        let tools = Tools::new(self.tool_sets)?;
        if let Some(allowed) = &self.settings.allowed_tools {
            for name in allowed.iter().filter(|n| tools.get(n).is_none()) {
                tracing::debug!(tool = %name, "allowedTools names a tool no tool set defines");
            }
        }
        let parts = LoopParts {
            engine,
            middlewares: self.middlewares.into(),
            tools,
            settings: Arc::new(self.settings),
            hooks: self.hooks,
        };
        Ok(Session {
            inner: Arc::new(Inner {
                id: self.id.unwrap_or_else(|| new_id("session")),
                parts,
                sinks: self.sinks,
                state: Mutex::new(State::default()),
                sandbox: match self.sandbox {
                    Some(sandbox) => tokio::sync::OnceCell::new_with(Some(sandbox)),
                    None => tokio::sync::OnceCell::new(),
                },
            }),
        })
    }
}

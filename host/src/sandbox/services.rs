//! What the embedding application provides to scripts: named engines
//! (`engines.host(name)`), middleware (`middlewares.host(name, options)`)
//! and tools (`registry.useHostTools(names)`). Scripts reach only these, by
//! name; they never see a key, a URL or anything else behind them.

use std::sync::Arc;

use super::runtime::Provides;
use crate::error::Result;
use crate::session::{EchoEngine, EngineRegistry, MiddlewareRegistry, ToolSet, Tools};

/// The engines, middleware and tools a sandbox's scripts may use by name.
#[derive(Clone)]
pub struct HostServices {
    /// `engines.host(name)`; `engines.host()` is its default.
    pub engines: EngineRegistry,
    /// `middlewares.host(name, options)`.
    pub middlewares: MiddlewareRegistry,
    /// `registry.useHostTools(names)`.
    pub tools: Vec<Arc<dyn ToolSet>>,
}

impl Default for HostServices {
    /// The built-in `echo` engine as the default, the built-in middleware
    /// (`systemPrompt`), no tools: what a sandbox offers with no
    /// configuration, needing nothing from outside.
    fn default() -> Self {
        let engines = EngineRegistry::new()
            .register("echo", Arc::new(EchoEngine::default()))
            .set_default("echo")
            .expect("echo is registered");
        HostServices {
            engines,
            middlewares: MiddlewareRegistry::with_builtins(),
            tools: Vec::new(),
        }
    }
}

impl std::fmt::Debug for HostServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostServices")
            .field("engines", &self.engines.names())
            .field("middlewares", &self.middlewares.names())
            .field(
                "tools",
                &self
                    .tools
                    .iter()
                    .map(|t| t.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl HostServices {
    /// What the guest is told the host provides.
    pub(crate) fn provides(&self) -> Provides {
        Provides {
            engines: self.engines.names(),
            middlewares: self.middlewares.names(),
            tools: self.tools.iter().flat_map(|t| t.definitions()).collect(),
        }
    }

    /// All host tools as one set.
    ///
    /// # Errors
    /// When two tool sets define the same name.
    pub(crate) fn all_tools(&self) -> Result<Tools> {
        Tools::new(self.tools.clone())
    }
}

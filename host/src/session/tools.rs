//! Tools: the trait a set of tools implements, Rust tools, and the
//! collection a session calls through.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::{ToolCall, ToolDefinition};

/// What a tool call knows besides its arguments.
#[derive(Debug, Clone, Default)]
pub struct ToolContext {
    /// The tool being called.
    pub tool_name: String,
    /// The call's id (the model's).
    pub call_id: String,
    /// The session that runs.
    pub session_id: String,
    /// The inference that asked for the call.
    pub inference_id: String,
    /// The run's tags.
    pub tags: Map<String, Value>,
    /// When this attempt must be over, in ms since the Unix epoch: the
    /// earlier of the run's deadline and the execution timeout.
    pub deadline_ms: Option<u64>,
    /// 1 for the first attempt, then 2, 3... on retries.
    pub attempt: u32,
}

/// A set of tools: a Rust registry, a JavaScript tool registry, an MCP
/// server...
#[async_trait]
pub trait ToolSet: Send + Sync {
    /// The set's name, for error messages (two sets defining one tool).
    fn name(&self) -> &str;

    /// The tools, as the model sees them. Read once, when the session is
    /// built.
    fn definitions(&self) -> Vec<ToolDefinition>;

    /// Runs one call. Its arguments were validated against the tool's
    /// schema already. The future may be dropped at any await (timeout,
    /// cancellation).
    ///
    /// # Errors
    /// Whatever made the tool fail; the loop reports it to the model (or
    /// retries, or aborts, as the settings and hooks say).
    async fn call(&self, call: ToolCall, ctx: ToolContext) -> Result<Value>;
}

/// A Rust tool's code: takes the arguments and the context, returns the
/// result.
pub type ToolHandler =
    Arc<dyn Fn(Value, ToolContext) -> BoxFuture<'static, Result<Value>> + Send + Sync>;

/// Tools written in Rust, registered with their handlers.
///
/// ```
/// use marionette::model::ToolDefinition;
/// use marionette::session::HostTools;
/// use serde_json::json;
///
/// let tools = HostTools::new("calculator").register(
///     ToolDefinition {
///         name: "add".into(),
///         description: "add two numbers".into(),
///         parameters: json!({"type": "object", "required": ["a", "b"]}),
///     },
///     |args, _ctx| async move {
///         let (a, b) = (args["a"].as_f64(), args["b"].as_f64());
///         Ok(json!(a.unwrap_or(0.0) + b.unwrap_or(0.0)))
///     },
/// );
/// ```
#[derive(Clone)]
pub struct HostTools {
    name: String,
    tools: Vec<(ToolDefinition, ToolHandler)>,
}

impl std::fmt::Debug for HostTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tools.iter().map(|(d, _)| d.name.as_str()).collect();
        f.debug_struct("HostTools")
            .field("name", &self.name)
            .field("tools", &names)
            .finish()
    }
}

impl HostTools {
    /// An empty set named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        HostTools {
            name: name.into(),
            tools: Vec::new(),
        }
    }

    /// Adds a tool. Registering a name twice is reported when a session is
    /// built with the set.
    pub fn register<F, Fut>(self, definition: ToolDefinition, handler: F) -> Self
    where
        F: Fn(Value, ToolContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value>> + Send + 'static,
    {
        self.register_boxed(
            definition,
            Arc::new(move |args, ctx| Box::pin(handler(args, ctx))),
        )
    }

    /// Adds a tool whose handler is already boxed.
    pub fn register_boxed(mut self, definition: ToolDefinition, handler: ToolHandler) -> Self {
        self.tools.push((definition, handler));
        self
    }
}

#[async_trait]
impl ToolSet for HostTools {
    fn name(&self) -> &str {
        &self.name
    }

    fn definitions(&self) -> Vec<ToolDefinition> {
        self.tools.iter().map(|(d, _)| d.clone()).collect()
    }

    async fn call(&self, call: ToolCall, ctx: ToolContext) -> Result<Value> {
        let handler = self
            .tools
            .iter()
            .find(|(d, _)| d.name == call.name)
            .map(|(_, h)| h.clone())
            .ok_or_else(|| {
                Error::host(
                    format!("tool {}", call.name),
                    anyhow::anyhow!("no tool \"{}\" in tool set \"{}\"", call.name, self.name),
                )
            })?;
        handler(call.arguments, ctx).await
    }
}

/// Several tool sets seen as one, each tool name belonging to exactly one
/// set. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tools {
    sets: Arc<[Arc<dyn ToolSet>]>,
    /// Tool name -> (index of its set, its definition).
    index: Arc<HashMap<String, (usize, ToolDefinition)>>,
    /// Definitions in the order the sets list them.
    definitions: Arc<[ToolDefinition]>,
}

impl std::fmt::Debug for Tools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tools")
            .field("tools", &self.names())
            .finish()
    }
}

impl Tools {
    /// Combines `sets`, reading their definitions now.
    ///
    /// # Errors
    /// [`Error::Host`] when two sets (or one set twice) define the same
    /// tool name, naming the tool and both sets.
    pub fn new(sets: Vec<Arc<dyn ToolSet>>) -> Result<Self> {
        let mut index: HashMap<String, (usize, ToolDefinition)> = HashMap::new();
        let mut definitions = Vec::new();
        for (i, set) in sets.iter().enumerate() {
            for definition in set.definitions() {
                if let Some((j, _)) = index.get(&definition.name) {
                    let (first, second) = (sets[*j].name(), set.name());
                    let detail = if *j == i {
                        format!(
                            "tool \"{}\" is defined twice in tool set \"{first}\"",
                            definition.name
                        )
                    } else {
                        format!(
                            "tool \"{}\" is defined by two tool sets: \"{first}\" and \"{second}\"",
                            definition.name
                        )
                    };
                    return Err(Error::host("session tools", anyhow::anyhow!(detail)));
                }
                definitions.push(definition.clone());
                index.insert(definition.name.clone(), (i, definition));
            }
        }
        Ok(Tools {
            sets: sets.into(),
            index: Arc::new(index),
            definitions: definitions.into(),
        })
    }

    /// The definition of tool `name`.
    pub fn get(&self, name: &str) -> Option<&ToolDefinition> {
        self.index.get(name).map(|(_, d)| d)
    }

    /// The tool names, in order.
    pub fn names(&self) -> Vec<String> {
        self.definitions.iter().map(|d| d.name.clone()).collect()
    }

    /// Whether there is no tool at all.
    pub fn is_empty(&self) -> bool {
        self.definitions.is_empty()
    }
}

#[async_trait]
impl ToolSet for Tools {
    fn name(&self) -> &str {
        "tools"
    }

    /// Every tool's definition, in the order the sets list them.
    fn definitions(&self) -> Vec<ToolDefinition> {
        self.definitions.to_vec()
    }

    /// Runs the call on the set that defines the tool.
    async fn call(&self, call: ToolCall, ctx: ToolContext) -> Result<Value> {
        match self.index.get(&call.name) {
            Some((i, _)) => self.sets[*i].call(call, ctx).await,
            None => Err(Error::host(
                format!("tool {}", call.name),
                anyhow::anyhow!("unknown tool \"{}\"", call.name),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(name: &str) -> ToolDefinition {
        ToolDefinition {
            name: name.into(),
            description: String::new(),
            parameters: json!({}),
        }
    }

    fn set(name: &str, tools: &[&str]) -> Arc<dyn ToolSet> {
        let mut set = HostTools::new(name);
        for tool in tools {
            let t = tool.to_string();
            set = set.register(def(tool), move |_, _| {
                let t = t.clone();
                async move { Ok(json!(t)) }
            });
        }
        Arc::new(set)
    }

    #[tokio::test]
    async fn tools_route_calls_and_reject_duplicates() {
        let tools = Tools::new(vec![set("a", &["x"]), set("b", &["y"])]).unwrap();
        assert_eq!(tools.names(), ["x", "y"]);
        let call = ToolCall {
            id: "1".into(),
            name: "y".into(),
            arguments: json!({}),
        };
        assert_eq!(
            tools.call(call, ToolContext::default()).await.unwrap(),
            json!("y")
        );
        let e = Tools::new(vec![set("math", &["add"]), set("calc", &["add"])])
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains(r#"tool "add" is defined by two tool sets: "math" and "calc""#)
        );
        let e = Tools::new(vec![set("math", &["add", "add"])])
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains(r#"defined twice in tool set "math""#),
            "{e}"
        );
    }
}

//! The data model the host and scripts share: turns, blocks, tools, exports.
//!
//! These mirror the WIT records of `marionette:runtime/types`, with the
//! open-ended maps as parsed JSON instead of JSON text. Their serde form is
//! the JavaScript form (`{"kind": "llm_text", ...}`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// JSON object: the type of payloads, metadata and turn data.
pub type Object = Map<String, Value>;

/// What a block of a turn holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// Text from the user.
    User,
    /// Text the model produced.
    LlmText,
    /// A call the model asked for (`payload`: `id`, `name`, `args`).
    ToolCall,
    /// The result of a tool call (`payload`: `id`, `result`, `error`).
    ToolUse,
    /// A system prompt.
    System,
    /// The model's reasoning.
    Reasoning,
    /// Anything else.
    Other,
}

/// One entry of a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// Unique within the turn.
    pub id: String,
    /// What the block holds.
    pub kind: BlockKind,
    /// `user`, `assistant`, `system`, `tool`, when the block has a role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Keys `text`, `id`, `name`, `args`, `result`, `error`.
    #[serde(default)]
    pub payload: Object,
    /// Free-form.
    #[serde(default)]
    pub metadata: Object,
}

/// A conversation state handed to engines and middleware.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// The turn's id.
    pub id: String,
    /// The blocks, oldest first.
    #[serde(default)]
    pub blocks: Vec<Block>,
    /// Free-form.
    #[serde(default)]
    pub metadata: Object,
    /// Free-form.
    #[serde(default)]
    pub data: Object,
}

/// A tool as the model sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// The tool's name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: Value,
}

/// A model's request to run a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, echoed in its result.
    pub id: String,
    /// The tool to run.
    pub name: String,
    /// Its arguments.
    pub arguments: Value,
}

/// What a script's export is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportKind {
    /// The default export `main(input, ctx)`.
    Main,
    /// Any other exported function.
    Function,
    /// An inference engine (`engines.*`).
    Engine,
    /// A middleware (`middlewares.*`).
    Middleware,
    /// A tool registry (`tools.createRegistry()`).
    ToolRegistry,
    /// An object of tool hooks.
    ToolHooks,
    /// Any other value.
    Value,
}

/// One export of a loaded script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportInfo {
    /// The export's name (`default` for `main`).
    pub name: String,
    /// What it is.
    pub kind: ExportKind,
    /// For a tool registry, its tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition>,
}

/// The level of a console line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// `console.debug`, `console.trace`.
    Debug,
    /// `console.log`, `console.info`.
    Info,
    /// `console.warn`.
    Warn,
    /// `console.error`.
    Error,
}

/// Something a running task reported.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A line the script printed with `console.*`.
    Console {
        /// Its level.
        level: LogLevel,
        /// The formatted line.
        message: String,
    },
    /// An event of a session the script started (`start`, `partial`,
    /// `final`, `tool-call`, `tool-result`, `error`).
    Session(crate::session::SessionEvent),
}

impl Event {
    /// The event as one JSON object: `{"type": "console", level, message}`,
    /// or the session event in the shape scripts see.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Event::Console { level, message } => {
                serde_json::json!({ "type": "console", "level": level, "message": message })
            }
            Event::Session(e) => serde_json::to_value(e).unwrap_or(serde_json::Value::Null),
        }
    }
}

//! Between the generated WIT types and the host's [`model`](crate::model).
//!
//! Everything the guest returns is untrusted: a script (or a broken guest)
//! decides what is in it. Decoding never panics; malformed data becomes an
//! error that says which field was wrong.

use anyhow::{Context as _, bail};
use serde_json::Value as Json;

use crate::bindings::marionette::runtime::types as wit;
use crate::error::ScriptError;
use crate::model::{
    Block, BlockKind, Event, ExportInfo, ExportKind, LogLevel, Object, ToolCall, ToolDefinition,
    Turn,
};

fn object(text: &str, what: &str) -> anyhow::Result<Object> {
    match serde_json::from_str::<Json>(text).with_context(|| format!("{what} is not valid JSON"))? {
        Json::Object(map) => Ok(map),
        other => bail!("{what} must be a JSON object, not {}", kind_of(&other)),
    }
}

pub(crate) fn kind_of(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// JSON text from the guest, parsed.
pub(crate) fn json(text: &str, what: &str) -> anyhow::Result<Json> {
    serde_json::from_str(text).with_context(|| format!("{what} is not valid JSON"))
}

pub(crate) fn block_kind_to_wit(kind: BlockKind) -> wit::BlockKind {
    match kind {
        BlockKind::User => wit::BlockKind::User,
        BlockKind::LlmText => wit::BlockKind::LlmText,
        BlockKind::ToolCall => wit::BlockKind::ToolCall,
        BlockKind::ToolUse => wit::BlockKind::ToolUse,
        BlockKind::System => wit::BlockKind::System,
        BlockKind::Reasoning => wit::BlockKind::Reasoning,
        BlockKind::Other => wit::BlockKind::Other,
    }
}

fn block_kind_from_wit(kind: wit::BlockKind) -> BlockKind {
    match kind {
        wit::BlockKind::User => BlockKind::User,
        wit::BlockKind::LlmText => BlockKind::LlmText,
        wit::BlockKind::ToolCall => BlockKind::ToolCall,
        wit::BlockKind::ToolUse => BlockKind::ToolUse,
        wit::BlockKind::System => BlockKind::System,
        wit::BlockKind::Reasoning => BlockKind::Reasoning,
        wit::BlockKind::Other => BlockKind::Other,
    }
}

pub(crate) fn turn_to_wit(turn: &Turn) -> wit::Turn {
    wit::Turn {
        id: turn.id.clone(),
        blocks: turn
            .blocks
            .iter()
            .map(|b| wit::Block {
                id: b.id.clone(),
                kind: block_kind_to_wit(b.kind),
                role: b.role.clone(),
                payload: Json::Object(b.payload.clone()).to_string(),
                metadata: Json::Object(b.metadata.clone()).to_string(),
            })
            .collect(),
        metadata: Json::Object(turn.metadata.clone()).to_string(),
        data: Json::Object(turn.data.clone()).to_string(),
    }
}

pub(crate) fn turn_from_wit(turn: wit::Turn) -> anyhow::Result<Turn> {
    let mut blocks = Vec::with_capacity(turn.blocks.len());
    for (i, b) in turn.blocks.into_iter().enumerate() {
        blocks.push(Block {
            id: b.id,
            kind: block_kind_from_wit(b.kind),
            role: b.role,
            payload: object(&b.payload, &format!("turn.blocks[{i}].payload"))?,
            metadata: object(&b.metadata, &format!("turn.blocks[{i}].metadata"))?,
        });
    }
    Ok(Turn {
        id: turn.id,
        blocks,
        metadata: object(&turn.metadata, "turn.metadata")?,
        data: object(&turn.data, "turn.data")?,
    })
}

pub(crate) fn script_error(e: wit::ScriptError) -> ScriptError {
    ScriptError {
        name: e.name,
        message: e.message,
        stack: e.stack,
        file: e.file,
        line: e.line,
        column: e.column,
    }
}

pub(crate) fn script_error_to_wit(e: &ScriptError) -> wit::ScriptError {
    wit::ScriptError {
        name: e.name.clone(),
        message: e.message.clone(),
        stack: e.stack.clone(),
        file: e.file.clone(),
        line: e.line,
        column: e.column,
    }
}

/// An error the host hands to a script (it sees `name: message`).
pub(crate) fn host_error(name: &str, message: impl Into<String>) -> wit::ScriptError {
    wit::ScriptError {
        name: name.into(),
        message: message.into(),
        stack: None,
        file: None,
        line: None,
        column: None,
    }
}

pub(crate) fn tool_definitions(
    tools: Vec<wit::ToolDefinition>,
) -> anyhow::Result<Vec<ToolDefinition>> {
    tools
        .into_iter()
        .map(|t| {
            let parameters = json(
                &t.parameters,
                &format!("the parameters of tool {:?}", t.name),
            )?;
            Ok(ToolDefinition {
                name: t.name,
                description: t.description,
                parameters,
            })
        })
        .collect()
}

/// The value of a finished `script.load`: the script's export list as JSON
/// (what `script.exports` lists, its tools' parameters as JSON objects).
pub(crate) fn export_list(value: wit::Value) -> anyhow::Result<Vec<ExportInfo>> {
    match value {
        wit::Value::Json(text) => {
            serde_json::from_str(&text).context("the load's value is not an export list")
        }
        wit::Value::Turn(_) | wit::Value::HttpResponse(_) => {
            bail!("the load's value is not JSON")
        }
    }
}

pub(crate) fn exports(list: Vec<wit::ExportInfo>) -> anyhow::Result<Vec<ExportInfo>> {
    list.into_iter()
        .map(|e| {
            Ok(ExportInfo {
                kind: match e.kind {
                    wit::ExportKind::Main => ExportKind::Main,
                    wit::ExportKind::Function => ExportKind::Function,
                    wit::ExportKind::Engine => ExportKind::Engine,
                    wit::ExportKind::Middleware => ExportKind::Middleware,
                    wit::ExportKind::ToolRegistry => ExportKind::ToolRegistry,
                    wit::ExportKind::ToolHooks => ExportKind::ToolHooks,
                    wit::ExportKind::Value => ExportKind::Value,
                },
                tools: tool_definitions(e.tools).with_context(|| format!("export {:?}", e.name))?,
                name: e.name,
            })
        })
        .collect()
}

pub(crate) fn tool_call_to_wit(call: &ToolCall) -> wit::ToolCall {
    wit::ToolCall {
        id: call.id.clone(),
        name: call.name.clone(),
        arguments: call.arguments.to_string(),
    }
}

/// A task's event as the host hands it on; `None` for a session event the
/// guest wrote in a shape this host does not read (logged).
pub(crate) fn event(e: wit::Event) -> Option<Event> {
    match e {
        wit::Event::Console(line) => Some(Event::Console {
            level: match line.level {
                wit::LogLevel::Debug => LogLevel::Debug,
                wit::LogLevel::Info => LogLevel::Info,
                wit::LogLevel::Warn => LogLevel::Warn,
                wit::LogLevel::Error => LogLevel::Error,
            },
            message: line.message,
        }),
        wit::Event::Session(json) => match serde_json::from_str(&json) {
            Ok(event) => Some(Event::Session(event)),
            Err(e) => {
                tracing::error!(error = %e, event = %json, "a session event of the guest could not be read");
                None
            }
        },
    }
}

#[cfg(test)]
mod proptests;

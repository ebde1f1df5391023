//! JSON <-> WIT conversions at the boundary.
//!
//! Inside the VM everything is a JavaScript value; across the boundary,
//! open-ended maps are JSON text (see `wit/types.wit`). JavaScript produces
//! and consumes JSON with its own `JSON`; this module maps that JSON to the
//! WIT records and back, and turns anything malformed into a `TypeError`
//! that names the field.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::marionette::runtime::types::{
    Block, BlockKind, ExportInfo, ExportKind, Hook, HostHookCall, HostInference,
    HostMiddlewareCall, HostOp, HostToolCall, HttpRequest, HttpResponse, Outcome, RedirectMode,
    ScriptError, Target, ToolCall, ToolChoice, ToolDefinition, Turn, Value,
};

/// A `TypeError` with no location: the error is in data, not in a script.
pub fn type_error(message: impl Into<String>) -> ScriptError {
    unlocated("TypeError", message)
}

/// An `InternalError` with no location: the VM failed, not a script's line.
pub fn internal_error(message: impl Into<String>) -> ScriptError {
    unlocated("InternalError", message)
}

fn unlocated(name: &str, message: impl Into<String>) -> ScriptError {
    ScriptError {
        name: name.into(),
        message: message.into(),
        stack: None,
        file: None,
        line: None,
        column: None,
    }
}

/// Reads JSON text that JavaScript wrote (`JSON.stringify`). A JavaScript
/// string may hold a lone surrogate, which `JSON.stringify` writes as the
/// escape `\ud800` and serde_json refuses (a Rust string cannot hold it):
/// each becomes U+FFFD, as a lossy UTF-16 decode does. Everything the guest
/// reads from JavaScript goes through here, and a task's JSON result, which
/// the host reads, through [`well_formed`].
fn from_js<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    serde_json::from_str(&without_lone_surrogates(text))
}

/// JSON text from JavaScript with its lone surrogates replaced; see
/// [`from_js`].
pub fn well_formed(text: String) -> String {
    match without_lone_surrogates(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(fixed) => fixed,
    }
}

/// `text` with each escaped lone surrogate replaced by `\ufffd`; text
/// without one is not copied.
fn without_lone_surrogates(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    // How much of `text` is in `out` already.
    let mut copied = 0;
    let mut i = 0;
    while let Some(offset) = bytes
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\\'))
    {
        let at = i + offset;
        let lone = match escaped_unit(bytes, at) {
            // `\"`, `\\`, `\n`, ...: the escaped character is skipped with it.
            None => {
                i = at + 2;
                continue;
            }
            Some(0xd800..=0xdbff) => {
                if matches!(escaped_unit(bytes, at + 6), Some(0xdc00..=0xdfff)) {
                    i = at + 12; // a pair
                    continue;
                }
                true
            }
            Some(0xdc00..=0xdfff) => true,
            Some(_) => false,
        };
        if lone {
            out.push_str(&text[copied..at]);
            out.push_str("\\ufffd");
            copied = at + 6;
        }
        i = at + 6;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// The UTF-16 code unit of the escape `\uXXXX` at `at`, if there is one.
fn escaped_unit(bytes: &[u8], at: usize) -> Option<u16> {
    match bytes.get(at..at + 6)? {
        [b'\\', b'u', hex @ ..] if hex.iter().all(u8::is_ascii_hexdigit) => {
            u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
        }
        _ => None,
    }
}

#[derive(Serialize, Deserialize)]
struct JsonTurn {
    id: String,
    blocks: Vec<JsonBlock>,
    metadata: Map<String, Json>,
    data: Map<String, Json>,
}

#[derive(Serialize, Deserialize)]
struct JsonBlock {
    id: String,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    payload: Map<String, Json>,
    metadata: Map<String, Json>,
}

#[derive(Deserialize)]
struct JsonError {
    name: String,
    message: String,
    stack: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    column: Option<u32>,
}

fn kind_to_str(kind: BlockKind) -> &'static str {
    match kind {
        BlockKind::User => "user",
        BlockKind::LlmText => "llm_text",
        BlockKind::ToolCall => "tool_call",
        BlockKind::ToolUse => "tool_use",
        BlockKind::System => "system",
        BlockKind::Reasoning => "reasoning",
        BlockKind::Other => "other",
    }
}

fn kind_from_str(kind: &str) -> Option<BlockKind> {
    Some(match kind {
        "user" => BlockKind::User,
        "llm_text" => BlockKind::LlmText,
        "tool_call" => BlockKind::ToolCall,
        "tool_use" => BlockKind::ToolUse,
        "system" => BlockKind::System,
        "reasoning" => BlockKind::Reasoning,
        "other" => BlockKind::Other,
        _ => return None,
    })
}

fn object(text: &str, what: &str) -> Result<Map<String, Json>, ScriptError> {
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(_) => Err(type_error(format!("{what} must be a JSON object"))),
        Err(e) => Err(type_error(format!("{what} is not valid JSON: {e}"))),
    }
}

/// A WIT turn as the JSON text JavaScript parses.
pub fn turn_to_json(turn: &Turn) -> Result<String, ScriptError> {
    let mut blocks = Vec::with_capacity(turn.blocks.len());
    for (i, b) in turn.blocks.iter().enumerate() {
        blocks.push(JsonBlock {
            id: b.id.clone(),
            kind: kind_to_str(b.kind).into(),
            role: b.role.clone(),
            payload: object(&b.payload, &format!("turn.blocks[{i}].payload"))?,
            metadata: object(&b.metadata, &format!("turn.blocks[{i}].metadata"))?,
        });
    }
    let json = JsonTurn {
        id: turn.id.clone(),
        blocks,
        metadata: object(&turn.metadata, "turn.metadata")?,
        data: object(&turn.data, "turn.data")?,
    };
    serde_json::to_string(&json).map_err(|e| type_error(format!("turn: {e}")))
}

/// The JSON of a (normalised) JavaScript turn as a WIT turn.
pub fn turn_from_json(text: &str) -> Result<Turn, ScriptError> {
    let json: JsonTurn = from_js(text).map_err(|e| type_error(format!("not a turn: {e}")))?;
    turn_from_parsed(json)
}

fn turn_from_parsed(json: JsonTurn) -> Result<Turn, ScriptError> {
    let mut blocks = Vec::with_capacity(json.blocks.len());
    for (i, b) in json.blocks.into_iter().enumerate() {
        let kind = kind_from_str(&b.kind).ok_or_else(|| {
            type_error(format!(
                "turn.blocks[{i}].kind {:?} is not a block kind",
                b.kind
            ))
        })?;
        blocks.push(Block {
            id: b.id,
            kind,
            role: b.role,
            payload: Json::Object(b.payload).to_string(),
            metadata: Json::Object(b.metadata).to_string(),
        });
    }
    Ok(Turn {
        id: json.id,
        blocks,
        metadata: Json::Object(json.metadata).to_string(),
        data: Json::Object(json.data).to_string(),
    })
}

/// A host operation a script asked for (`{"op": "sleep", "ms": 10}`, ...);
/// `body` is the bytes of a `fetch`'s body, which travel beside the JSON.
pub fn host_op_from_json(text: &str, body: Option<Vec<u8>>) -> Result<HostOp, ScriptError> {
    #[derive(Deserialize)]
    struct Call {
        id: String,
        name: String,
        arguments: Json,
    }
    #[derive(Deserialize)]
    #[serde(tag = "op", rename_all = "kebab-case")]
    enum Op {
        Sleep {
            ms: u64,
        },
        Next {
            turn: JsonTurn,
        },
        #[serde(rename_all = "camelCase")]
        Infer {
            engine: Option<String>,
            turn: JsonTurn,
            context: Json,
            #[serde(default)]
            tools: Vec<JsonTool>,
            #[serde(default)]
            tool_choice: Option<String>,
        },
        CallTool {
            call: Call,
            #[serde(default)]
            context: Json,
            #[serde(default)]
            provider: Option<String>,
        },
        Hook {
            provider: String,
            hook: String,
            payload: Json,
        },
        Middleware {
            name: String,
            options: Json,
            turn: JsonTurn,
            context: Json,
        },
        Fetch {
            method: String,
            url: String,
            headers: Vec<(String, String)>,
            redirect: String,
        },
    }
    match from_js::<Op>(text) {
        Ok(Op::Fetch {
            method,
            url,
            headers,
            redirect,
        }) => Ok(HostOp::Fetch(HttpRequest {
            method,
            url,
            headers,
            body,
            redirect: match redirect.as_str() {
                "follow" => RedirectMode::Follow,
                "error" => RedirectMode::Error,
                "manual" => RedirectMode::Manual,
                other => {
                    return Err(type_error(format!(
                        "malformed host operation: redirect {other:?} (expected follow, error or manual)"
                    )));
                }
            },
        })),
        Ok(Op::Sleep { ms }) => Ok(HostOp::Sleep(ms)),
        Ok(Op::Next { turn }) => Ok(HostOp::Next(turn_from_parsed(turn)?)),
        Ok(Op::Infer {
            engine,
            turn,
            context,
            tools,
            tool_choice,
        }) => Ok(HostOp::Infer(HostInference {
            engine,
            input: turn_from_parsed(turn)?,
            context: context.to_string(),
            tools: tools.into_iter().map(tool_from_parsed).collect(),
            tool_choice: match tool_choice.as_deref() {
                None | Some("auto") => ToolChoice::Auto,
                Some("none") => ToolChoice::None,
                Some("required") => ToolChoice::Required,
                Some(other) => {
                    return Err(type_error(format!(
                        "malformed host operation: tool choice {other:?} (expected auto, none or required)"
                    )));
                }
            },
        })),
        Ok(Op::CallTool {
            call,
            context,
            provider,
        }) => Ok(HostOp::CallTool(HostToolCall {
            call: ToolCall {
                id: call.id,
                name: call.name,
                arguments: call.arguments.to_string(),
            },
            context: object_text(context),
            provider,
        })),
        Ok(Op::Hook {
            provider,
            hook,
            payload,
        }) => Ok(HostOp::Hook(HostHookCall {
            provider,
            hook: match hook.as_str() {
                "beforeToolCall" => Hook::BeforeToolCall,
                "afterToolCall" => Hook::AfterToolCall,
                "onToolError" => Hook::OnToolError,
                other => {
                    return Err(type_error(format!(
                        "malformed host operation: hook {other:?} (expected beforeToolCall, afterToolCall or onToolError)"
                    )));
                }
            },
            payload: object_text(payload),
        })),
        Ok(Op::Middleware {
            name,
            options,
            turn,
            context,
        }) => Ok(HostOp::Middleware(HostMiddlewareCall {
            name,
            options: object_text(options),
            input: turn_from_parsed(turn)?,
            context: object_text(context),
        })),
        Err(e) => Err(type_error(format!("malformed host operation: {e}"))),
    }
}

/// JSON text of an object a script handed over; nothing (`null`) is `{}`.
fn object_text(value: Json) -> String {
    match value {
        Json::Null => "{}".into(),
        other => other.to_string(),
    }
}

/// Everything of a response but its body, as the JSON `fetch.js` reads
/// (`{status, statusText, url, redirected, headers: [[name, value]]}`).
pub fn response_to_json(r: &HttpResponse) -> String {
    serde_json::json!({
        "status": r.status,
        "statusText": r.status_text,
        "url": r.url,
        "redirected": r.redirected,
        "headers": r.headers,
    })
    .to_string()
}

/// The JSON error objects `runtime.js` produces.
pub fn error_from_json(text: &str) -> ScriptError {
    match from_js::<JsonError>(text) {
        Ok(e) => ScriptError {
            name: e.name,
            message: e.message,
            stack: e.stack,
            file: e.file,
            line: e.line,
            column: e.column,
        },
        Err(e) => ScriptError {
            name: "InternalError".into(),
            message: format!("the guest produced a malformed error ({e}): {text}"),
            stack: None,
            file: None,
            line: None,
            column: None,
        },
    }
}

/// A WIT error as the JSON `runtime.js` turns back into an `Error`.
pub fn error_to_json(e: &ScriptError) -> String {
    serde_json::json!({
        "name": e.name,
        "message": e.message,
        "stack": e.stack,
        "file": e.file,
        "line": e.line,
        "column": e.column,
    })
    .to_string()
}

/// How `resume` hands an outcome to JavaScript: `(ok, json)`; an
/// `http-response` is handed over by [`response_to_json`] instead.
pub fn outcome_to_json(outcome: &Outcome) -> Result<(bool, String), ScriptError> {
    match outcome {
        Ok(Value::HttpResponse(r)) => Ok((true, response_to_json(r))),
        Ok(Value::Json(text)) => {
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .map_err(|e| type_error(format!("the host's reply is not valid JSON: {e}")))?;
            Ok((true, text.clone()))
        }
        Ok(Value::Turn(turn)) => Ok((true, turn_to_json(turn)?)),
        Err(e) => Ok((false, error_to_json(e))),
    }
}

/// A WIT tool call as the JSON `runtime.js` reads (`arguments` parsed).
pub fn tool_call_to_json(call: &ToolCall) -> Result<String, ScriptError> {
    let arguments: Json = if call.arguments.trim().is_empty() {
        Json::Object(Map::new())
    } else {
        serde_json::from_str(&call.arguments).map_err(|e| {
            type_error(format!(
                "the arguments of tool call {:?} ({}) are not valid JSON: {e}",
                call.id, call.name
            ))
        })?
    };
    Ok(serde_json::json!({ "id": call.id, "name": call.name, "arguments": arguments }).to_string())
}

#[derive(Deserialize)]
struct JsonTool {
    name: String,
    description: String,
    parameters: Json,
}

fn tool_from_parsed(t: JsonTool) -> ToolDefinition {
    ToolDefinition {
        name: t.name,
        description: t.description,
        parameters: t.parameters.to_string(),
    }
}

fn tool_definitions(tools: Vec<JsonTool>) -> Vec<ToolDefinition> {
    tools.into_iter().map(tool_from_parsed).collect()
}

/// What `dispatch.listTools` returns.
pub fn tools_from_json(text: &str) -> Result<Vec<ToolDefinition>, ScriptError> {
    let tools: Vec<JsonTool> =
        from_js(text).map_err(|e| type_error(format!("malformed tool list: {e}")))?;
    Ok(tool_definitions(tools))
}

/// What `dispatch.exports` returns.
pub fn exports_from_json(text: &str) -> Result<Vec<ExportInfo>, ScriptError> {
    #[derive(Deserialize)]
    struct JsonExport {
        name: String,
        kind: String,
        tools: Vec<JsonTool>,
    }
    let exports: Vec<JsonExport> =
        from_js(text).map_err(|e| type_error(format!("malformed export list: {e}")))?;
    Ok(exports
        .into_iter()
        .map(|e| ExportInfo {
            kind: match e.kind.as_str() {
                "main" => ExportKind::Main,
                "function" => ExportKind::Function,
                "engine" => ExportKind::Engine,
                "middleware" => ExportKind::Middleware,
                "tool-registry" => ExportKind::ToolRegistry,
                "tool-hooks" => ExportKind::ToolHooks,
                _ => ExportKind::Value,
            },
            name: e.name,
            tools: tool_definitions(e.tools),
        })
        .collect())
}

/// A target as the JSON `dispatch.resolve` reads.
pub fn target_to_json(target: &Target) -> String {
    match target {
        Target::Export(e) => serde_json::json!({ "script": e.script, "name": e.name }),
        Target::Handle(h) => serde_json::json!({ "handle": h }),
    }
    .to_string()
}

/// What the host provides, as `dispatch.configure` reads it.
pub fn host_info_to_json(
    engines: &[String],
    middlewares: &[String],
    tools: &[ToolDefinition],
) -> String {
    let tools: Vec<Json> = tools
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "description": t.description,
                "parameters": serde_json::from_str::<Json>(&t.parameters).unwrap_or_else(|_| serde_json::json!({})),
            })
        })
        .collect();
    serde_json::json!({ "engines": engines, "middlewares": middlewares, "tools": tools })
        .to_string()
}

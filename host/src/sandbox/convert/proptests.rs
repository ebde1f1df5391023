//! Property tests of the host's decoding of what the guest hands it: JSON
//! texts of values, turns, tool definitions and export lists, script errors,
//! console events, and the payloads of host operations (tool arguments,
//! inference requests, the session specs of `run-session`, tool schemas for
//! `validate-arguments`, hook decisions and tool loop settings).
//!
//! Everything here is untrusted (SECURITY.md): a script, or a broken guest,
//! decides what is in it. The properties: decoding never panics; it either
//! decodes, or fails with an error whose message names what was being
//! decoded; and where the host encodes and decodes the same thing (model ->
//! WIT -> model), the round trip is the identity.
//!
//! Budget: each property runs a fixed number of cases (`CASES`, a few
//! hundred, about a second in all) in the normal test command.
//! `MARIONETTE_FUZZ_CASES=N` runs every property N cases instead, by hand:
//!
//! ```sh
//! MARIONETTE_FUZZ_CASES=20000 cargo test --release -p marionette --lib proptests
//! ```
//!
//! A failure prints the minimised input. Nothing is written to disk
//! (no `proptest-regressions/`): a case worth keeping becomes a plain test.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value as Json, json};

use super::*;
use crate::bindings::marionette::runtime::types as wit;
use crate::error::{Error, Limit, Op};
use crate::model::{Block, BlockKind, ExportKind, LogLevel, Object, ToolDefinition, Turn};
use crate::runner::{Runner, RunnerOptions};
use crate::sandbox::owner::Owner;
use crate::sandbox::{HostServices, WeakSandbox, host_ops};
use crate::session::{
    AfterDecision, BeforeDecision, ErrorDecision, HostTools, MiddlewareRegistry, ToolLoopSettings,
};

/// Cases per property by default: enough to meet every branch of the
/// generators below many times, cheap enough for every `cargo test`.
const CASES: u32 = 256;

/// The cases of a property: `MARIONETTE_FUZZ_CASES`, or `default`.
fn config(default: u32) -> Config {
    let cases = std::env::var("MARIONETTE_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ------------------------------------------------------------ generators

/// Strings a script may produce: any Unicode, control characters, bytes
/// decoded lossily, and words that mean something to JavaScript or JSON.
fn odd_string() -> impl Strategy<Value = String> {
    #[rustfmt::skip]
    const SPECIAL: &[&str] = &[
        "", "\0", "\u{2028}\u{2029}", "\u{feff}", "\u{fffd}", "\u{ffff}", "\u{10ffff}", "😀",
        "e\u{301}", "__proto__", "constructor", "toString", "\\ud800", "\"", "\\", "0",
        "4294967295", "9007199254740993",
    ];
    prop_oneof![
        3 => any::<String>(),
        2 => "[a-z]{0,8}",
        2 => prop::sample::select(SPECIAL).prop_map(str::to_string),
        1 => "[\\x00-\\x1f\\x7f]{0,4}",
        1 => prop::collection::vec(any::<u8>(), 0..24)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

fn json_leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        // Every finite double, subnormals and -0 included.
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Json::Number)),
        odd_string().prop_map(Json::String),
    ]
}

/// Any JSON value a decoder can meet, up to a few levels deep.
fn arb_json() -> impl Strategy<Value = Json> {
    json_leaf().prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Json::Array),
            prop::collection::btree_map(odd_string(), inner, 0..5)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_object() -> impl Strategy<Value = Object> {
    prop::collection::btree_map(odd_string(), arb_json(), 0..4)
        .prop_map(|m| m.into_iter().collect())
}

/// Arrays or objects nested `depth` levels (a pattern of bits says which),
/// closed or cut off.
fn deep_text() -> impl Strategy<Value = String> {
    (1usize..3000, any::<u64>(), any::<bool>()).prop_map(|(depth, bits, closed)| {
        let mut open = String::new();
        let mut close = String::new();
        for i in 0..depth {
            if bits >> (i % 64) & 1 == 1 {
                open.push_str("{\"k\":");
                close.insert(0, '}');
            } else {
                open.push('[');
                close.insert(0, ']');
            }
        }
        open.push('1');
        if closed {
            open.push_str(&close);
        }
        open
    })
}

/// Inference contexts with the fields the host reads, of any type.
fn context_fields() -> impl Strategy<Value = Object> {
    let name = prop::sample::select(vec![
        "sessionId",
        "inferenceId",
        "turnId",
        "tags",
        "deadlineMs",
        "middlewareName",
    ]);
    let value = prop_oneof![
        json_leaf(),
        odd_string().prop_map(Json::from),
        any::<u32>().prop_map(Json::from),
        arb_object().prop_map(Json::Object),
    ];
    prop::collection::btree_map(name.prop_map(str::to_string), value, 0..5)
        .prop_map(|m| m.into_iter().collect())
}

/// Text that is JSON, almost JSON, or not JSON at all.
fn jsonish_text() -> impl Strategy<Value = String> {
    #[rustfmt::skip]
    const TOKENS: &[&str] = &[
        "{", "}", "[", "]", ",", ":", "\"k\"", "\"\"", "0", "-0", "1.5", "1e400", "-1e400",
        "1e-400", "18446744073709551616", "-9223372036854775809", "123456789012345678901234567890",
        "1.", ".5", "01", "true", "false", "null", "nul", "\"\\ud800\"", "\"\\udc00\"",
        "\"\\ud800\\udc00\"", "\"\\u12\"", "\"\\x41\"", "\"\u{0}\"", " ", "\n", "\u{feff}", "NaN",
        "Infinity", "'a'", "//", "/*",
    ];
    prop_oneof![
        3 => arb_json().prop_map(|v| v.to_string()),
        2 => prop::collection::vec(prop::sample::select(TOKENS), 0..24).prop_map(|t| t.concat()),
        1 => deep_text(),
        1 => any::<String>(),
        1 => prop::collection::vec(any::<u8>(), 0..48)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        // Valid JSON cut short.
        1 => (arb_json(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let text = v.to_string();
            let at = cut.index(text.len() + 1);
            let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            text[..at].to_string()
        }),
    ]
}

/// The JSON text of an object most of the time, anything else sometimes.
fn object_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => arb_object().prop_map(|o| Json::Object(o).to_string()),
        1 => jsonish_text(),
    ]
}

const KINDS: [BlockKind; 7] = [
    BlockKind::User,
    BlockKind::LlmText,
    BlockKind::ToolCall,
    BlockKind::ToolUse,
    BlockKind::System,
    BlockKind::Reasoning,
    BlockKind::Other,
];

fn arb_turn() -> impl Strategy<Value = Turn> {
    let block = (
        odd_string(),
        prop::sample::select(&KINDS[..]),
        prop::option::of(odd_string()),
        arb_object(),
        arb_object(),
    )
        .prop_map(|(id, kind, role, payload, metadata)| Block {
            id,
            kind,
            role,
            payload,
            metadata,
        });
    (
        odd_string(),
        prop::collection::vec(block, 0..4),
        arb_object(),
        arb_object(),
    )
        .prop_map(|(id, blocks, metadata, data)| Turn {
            id,
            blocks,
            metadata,
            data,
        })
}

fn wit_turn() -> impl Strategy<Value = wit::Turn> {
    let block = (
        odd_string(),
        prop::sample::select(&KINDS[..]),
        prop::option::of(odd_string()),
        object_text(),
        object_text(),
    )
        .prop_map(|(id, kind, role, payload, metadata)| wit::Block {
            id,
            kind: block_kind_to_wit(kind),
            role,
            payload,
            metadata,
        });
    (
        odd_string(),
        prop::collection::vec(block, 0..4),
        object_text(),
        object_text(),
    )
        .prop_map(|(id, blocks, metadata, data)| wit::Turn {
            id,
            blocks,
            metadata,
            data,
        })
}

/// Schema-ish JSON: keywords of JSON Schema with odd values, patterns
/// included, mixed with plain JSON.
fn arb_schema() -> impl Strategy<Value = Json> {
    #[rustfmt::skip]
    const PATTERNS: &[&str] = &[
        "^a+$", "(a+)+$", "(a|aa)+b", "[", "(?<n>x)\\k<n>", "\\p{L}+", "(?=a)a", "x{2,1}",
        "\\u{1F600}", ".*.*.*=.*",
    ];
    #[rustfmt::skip]
    const TYPES: &[&str] = &[
        "object", "array", "string", "number", "integer", "boolean", "null", "nope",
    ];
    #[rustfmt::skip]
    const REFS: &[&str] = &[
        "#", "#/definitions/a", "#/$defs/a", "#/nope", "other.json", "file:///nonexistent/s.json",
    ];
    let leaf = prop_oneof![
        Just(json!({})),
        Just(json!(true)),
        Just(json!(false)),
        prop::sample::select(TYPES).prop_map(|t| json!({ "type": t })),
        prop::sample::select(PATTERNS).prop_map(|p| json!({ "type": "string", "pattern": p })),
        prop::sample::select(REFS).prop_map(|r| json!({ "$ref": r })),
        (json_leaf(), json_leaf()).prop_map(|(a, b)| json!({ "minimum": a, "maxLength": b })),
        arb_json(),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::btree_map("[a-c]", inner.clone(), 0..3).prop_map(
                |p| json!({ "type": "object", "properties": p, "required": ["a"], "additionalProperties": false })
            ),
            inner.clone().prop_map(|s| json!({ "type": "array", "items": s, "minItems": 1 })),
            prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({ "anyOf": v })),
            prop::collection::vec(inner.clone(), 1..3).prop_map(|v| json!({ "oneOf": v, "not": {} })),
            inner.prop_map(|s| json!({ "$defs": { "a": s }, "definitions": { "a": s }, "$ref": "#/$defs/a" })),
        ]
    })
}

// ------------------------------------------------------------ helpers

fn is_object(text: &str) -> bool {
    matches!(serde_json::from_str::<Json>(text), Ok(Json::Object(_)))
}

/// Whether an error of `object(text, what)` says what it should: the field,
/// then why.
fn names_field(message: &str, what: &str) -> bool {
    message.starts_with(&format!("{what} is not valid JSON"))
        || message.starts_with(&format!("{what} must be a JSON object, not "))
}

/// The first field of a WIT turn that is not a JSON object, as
/// `turn_from_wit` names it.
fn first_bad_field(turn: &wit::Turn) -> Option<String> {
    for (i, b) in turn.blocks.iter().enumerate() {
        for (field, text) in [("payload", &b.payload), ("metadata", &b.metadata)] {
            if !is_object(text) {
                return Some(format!("turn.blocks[{i}].{field}"));
            }
        }
    }
    [("turn.metadata", &turn.metadata), ("turn.data", &turn.data)]
        .into_iter()
        .find(|(_, text)| !is_object(text))
        .map(|(field, _)| field.to_string())
}

/// Levels of arrays and objects (a scalar is 0), counted recursively: an
/// oracle for the host's iterative count.
fn serde_nesting(v: &Json) -> usize {
    match v {
        Json::Array(a) => 1 + a.iter().map(serde_nesting).max().unwrap_or(0),
        Json::Object(o) => 1 + o.values().map(serde_nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// What `infer` says of a malformed inference context (the start of its
/// message), or `None` for a good one: `null`, or an object whose fields
/// the host reads are missing, `null` or of their type (`sessionId`,
/// `inferenceId` and `turnId` strings, `tags` an object, `deadlineMs` a
/// whole number); they are checked in that order.
fn bad_context(text: &str) -> Option<String> {
    let prefix = "malformed inference context: ";
    let fields = match serde_json::from_str::<Json>(text) {
        Err(_) => return Some(format!("{prefix}not valid JSON")),
        Ok(Json::Null) => return None,
        Ok(Json::Object(fields)) => fields,
        Ok(_) => return Some(format!("{prefix}it must be an object")),
    };
    let good = |name: &str, v: &Json| match name {
        "tags" => v.is_object(),
        "deadlineMs" => v.is_u64(),
        _ => v.is_string(),
    };
    let names = ["sessionId", "inferenceId", "turnId", "tags", "deadlineMs"];
    names.into_iter().find_map(|name| match fields.get(name) {
        None | Some(Json::Null) => None,
        Some(v) if good(name, v) => None,
        Some(_) => Some(format!("{prefix}{name}: ")),
    })
}

/// A WIT turn as text, to compare (the generated records have no `PartialEq`).
fn wit_turn_text(turn: &wit::Turn) -> String {
    format!("{turn:?}")
}

fn export_kind_to_wit(kind: ExportKind) -> wit::ExportKind {
    match kind {
        ExportKind::Main => wit::ExportKind::Main,
        ExportKind::Function => wit::ExportKind::Function,
        ExportKind::Engine => wit::ExportKind::Engine,
        ExportKind::Middleware => wit::ExportKind::Middleware,
        ExportKind::ToolRegistry => wit::ExportKind::ToolRegistry,
        ExportKind::ToolHooks => wit::ExportKind::ToolHooks,
        ExportKind::Value => wit::ExportKind::Value,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A sandbox that is gone: what a session a script started holds after its
/// sandbox was dropped. Its JavaScript parts fail with `Closed`; decoding
/// the session needs nothing more.
fn dead_sandbox() -> WeakSandbox {
    let runner: Runner<Owner> = Runner::spawn(RunnerOptions::default(), || {
        // Unwinds without the panic hook: no noise on stderr.
        std::panic::resume_unwind(Box::new("no owner: a sandbox that is gone"))
    })
    .expect("a runner");
    let weak = WeakSandbox {
        runner: runner.downgrade(),
        interrupts: Arc::default(),
        next_task: Arc::new(AtomicU64::new(1)),
        provided: Arc::default(),
    };
    drop(runner);
    weak
}

/// Host services with one host tool: `add` of two numbers.
fn services_with_add() -> Arc<HostServices> {
    let add = ToolDefinition {
        name: "add".into(),
        description: "adds".into(),
        parameters: json!({
            "type": "object",
            "properties": { "a": { "type": "number" }, "b": { "type": "number" } },
            "required": ["a", "b"],
        }),
    };
    let tools = HostTools::new("fuzz").register(add, |args: Json, _ctx| async move {
        let sum = args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0);
        Ok(json!(sum))
    });
    Arc::new(HostServices {
        tools: vec![Arc::new(tools)],
        ..HostServices::default()
    })
}

// ------------------------------------------------------------ properties

proptest! {
    #![proptest_config(config(CASES))]

    /// `json`: decodes exactly what serde_json accepts (deep nesting stops
    /// at serde_json's limit, without exhausting the stack); otherwise the
    /// error names the field.
    #[test]
    fn json_text_decodes_or_names_the_field(text in jsonish_text()) {
        let what = "the tool's parameters";
        match json(&text, what) {
            Ok(v) => prop_assert_eq!(Some(v), serde_json::from_str::<Json>(&text).ok()),
            Err(e) => {
                let message = format!("{e:#}");
                prop_assert!(names_field(&message, what), "{}", message);
                prop_assert!(serde_json::from_str::<Json>(&text).is_err());
            }
        }
    }

    /// Any JSON value survives its text: what the host encodes for the
    /// guest, it decodes back unchanged (floats included, bit for bit).
    #[test]
    fn json_values_survive_their_text(v in arb_json()) {
        let back = json(&v.to_string(), "a value").expect("the host's own JSON decodes");
        prop_assert_eq!(&back, &v);
        // `==` says 0.0 == -0.0; the text does not lose the sign either.
        prop_assert_eq!(back.to_string(), v.to_string());
    }

    /// `turn_from_wit`: a turn decodes when every open-ended map is a JSON
    /// object, and otherwise the error names the first field that is not.
    #[test]
    fn wit_turns_decode_or_name_the_bad_field(turn in wit_turn()) {
        let expected = first_bad_field(&turn);
        let original = turn.clone();
        match (turn_from_wit(turn), expected) {
            (Ok(t), None) => {
                prop_assert_eq!(&t.id, &original.id);
                prop_assert_eq!(t.blocks.len(), original.blocks.len());
                for (b, w) in t.blocks.iter().zip(&original.blocks) {
                    prop_assert_eq!(&b.id, &w.id);
                    prop_assert_eq!(block_kind_to_wit(b.kind), w.kind);
                    prop_assert_eq!(&b.role, &w.role);
                    prop_assert_eq!(Some(Json::Object(b.payload.clone())), serde_json::from_str(&w.payload).ok());
                    prop_assert_eq!(Some(Json::Object(b.metadata.clone())), serde_json::from_str(&w.metadata).ok());
                }
                prop_assert_eq!(Some(Json::Object(t.metadata)), serde_json::from_str(&original.metadata).ok());
                prop_assert_eq!(Some(Json::Object(t.data)), serde_json::from_str(&original.data).ok());
            }
            (Err(e), Some(field)) => {
                let message = format!("{e:#}");
                prop_assert!(names_field(&message, &field), "expected {} in: {}", field, message);
            }
            (Ok(t), Some(field)) => prop_assert!(false, "decoded although {} is bad: {:?}", field, t),
            (Err(e), None) => prop_assert!(false, "refused a good turn: {:#}", e),
        }
    }

    /// model -> WIT -> model is the identity for turns.
    #[test]
    fn turns_round_trip_through_wit(turn in arb_turn()) {
        let back = turn_from_wit(turn_to_wit(&turn)).expect("the host's own turn decodes");
        prop_assert_eq!(&back, &turn);
        // And WIT -> model -> WIT, from the host's own encoding.
        let wit = turn_to_wit(&turn);
        let again = turn_to_wit(&turn_from_wit(wit.clone()).unwrap());
        prop_assert_eq!(wit_turn_text(&again), wit_turn_text(&wit));
    }

    /// `tool_definitions` and `exports`: the error names the export and the
    /// tool whose parameters are not JSON; the good ones round-trip.
    #[test]
    fn export_lists_decode_or_name_the_export_and_tool(
        list in prop::collection::vec(
            (
                odd_string(),
                prop::sample::select(vec![
                    wit::ExportKind::Main, wit::ExportKind::Function, wit::ExportKind::Engine,
                    wit::ExportKind::Middleware, wit::ExportKind::ToolRegistry,
                    wit::ExportKind::ToolHooks, wit::ExportKind::Value,
                ]),
                prop::collection::vec(
                    (odd_string(), odd_string(), prop_oneof![
                        3 => arb_schema().prop_map(|s| s.to_string()),
                        1 => jsonish_text(),
                    ]),
                    0..3,
                ),
            ),
            0..4,
        )
    ) {
        let wit_list: Vec<wit::ExportInfo> = list
            .iter()
            .map(|(name, kind, tools)| wit::ExportInfo {
                name: name.clone(),
                kind: *kind,
                tools: tools
                    .iter()
                    .map(|(n, d, p)| wit::ToolDefinition {
                        name: n.clone(),
                        description: d.clone(),
                        parameters: p.clone(),
                    })
                    .collect(),
            })
            .collect();
        let first_bad = list.iter().find_map(|(export, _, tools)| {
            tools
                .iter()
                .find(|(_, _, p)| serde_json::from_str::<Json>(p).is_err())
                .map(|(tool, _, _)| (export.clone(), tool.clone()))
        });
        match (exports(wit_list), first_bad) {
            (Ok(decoded), None) => {
                prop_assert_eq!(decoded.len(), list.len());
                for (d, (name, kind, tools)) in decoded.iter().zip(&list) {
                    prop_assert_eq!(&d.name, name);
                    prop_assert_eq!(export_kind_to_wit(d.kind), *kind);
                    let expected: Vec<ToolDefinition> = tools
                        .iter()
                        .map(|(n, desc, p)| ToolDefinition {
                            name: n.clone(),
                            description: desc.clone(),
                            parameters: serde_json::from_str(p).unwrap(),
                        })
                        .collect();
                    prop_assert_eq!(&d.tools, &expected);
                }
            }
            (Err(e), Some((export, tool))) => {
                let message = format!("{e:#}");
                let prefix = format!("export {export:?}: the parameters of tool {tool:?} is not valid JSON");
                prop_assert!(message.starts_with(&prefix), "expected {:?} in: {}", prefix, message);
            }
            (Ok(_), Some(bad)) => prop_assert!(false, "decoded although {:?} is bad", bad),
            (Err(e), None) => prop_assert!(false, "refused a good list: {:#}", e),
        }
    }

    /// Script errors and console events carry every field unchanged, both ways.
    #[test]
    fn script_errors_and_events_keep_every_field(
        name in odd_string(),
        message in odd_string(),
        stack in prop::option::of(odd_string()),
        file in prop::option::of(odd_string()),
        line in prop::option::of(any::<u32>()),
        column in prop::option::of(any::<u32>()),
        level in prop::sample::select(vec![
            wit::LogLevel::Debug, wit::LogLevel::Info, wit::LogLevel::Warn, wit::LogLevel::Error,
        ]),
    ) {
        let w = wit::ScriptError { name, message, stack, file, line, column };
        let e = script_error(w.clone());
        prop_assert_eq!(format!("{:?}", script_error_to_wit(&e)), format!("{w:?}"));
        prop_assert_eq!(script_error(script_error_to_wit(&e)), e.clone());
        let event = event(wit::Event::Console(wit::ConsoleLine { level, message: e.message.clone() }));
        let expected_level = match level {
            wit::LogLevel::Debug => LogLevel::Debug,
            wit::LogLevel::Info => LogLevel::Info,
            wit::LogLevel::Warn => LogLevel::Warn,
            wit::LogLevel::Error => LogLevel::Error,
        };
        prop_assert_eq!(event, Some(crate::model::Event::Console { level: expected_level, message: e.message }));
    }

    /// A task's result (`json_value`, `turn_value`): a value, the output
    /// limit for nesting past serde_json's depth, or a host error that says
    /// the result is not JSON; never a panic, never a stack overflow. (The
    /// guest replaces JavaScript's lone surrogates before the host reads a
    /// result: see `strings_of_any_code_units_come_back_or_fail_typed` in
    /// the integration tests.)
    #[test]
    fn task_results_decode_or_fail_typed(text in jsonish_text(), turn in wit_turn()) {
        let parsed = serde_json::from_str::<Json>(&text);
        match (crate::sandbox::json_value("fuzz".into(), wit::Value::Json(text.clone())), parsed) {
            (Ok(v), Ok(p)) => prop_assert_eq!(v, p),
            (Err(Error::Limit { limit: Limit::Output, detail, op }), Err(p)) => {
                prop_assert!(p.to_string().starts_with("recursion limit exceeded"), "{}", p);
                prop_assert!(detail.contains("128 levels"), "{}", detail);
                prop_assert_eq!(op, "fuzz");
            }
            (Err(Error::Host { source, op }), Err(_)) => {
                prop_assert!(format!("{source:#}").starts_with("the task's result is not valid JSON"), "{:#}", source);
                prop_assert_eq!(op, "fuzz");
            }
            (other, p) => prop_assert!(false, "{:?} for serde_json's {:?}", other, p),
        }
        let bad = first_bad_field(&turn);
        match crate::sandbox::turn_value("fuzz".into(), wit::Value::Turn(turn)) {
            Ok(_) => prop_assert!(bad.is_none()),
            Err(Error::Host { source, .. }) => {
                let message = format!("{source:#}");
                let field = bad.unwrap_or_default();
                prop_assert!(
                    message.starts_with("decoding the guest's turn: ")
                        && names_field(&message["decoding the guest's turn: ".len()..], &field),
                    "expected {} in: {}", field, message
                );
            }
            Err(other) => prop_assert!(false, "not a host error: {:?}", other),
        }
        let wrong = crate::sandbox::turn_value("fuzz".into(), wit::Value::Json(text));
        prop_assert!(matches!(wrong, Err(Error::Host { .. })), "{:?}", wrong);
    }

    /// JSON the host hands a script is refused when it nests deeper than
    /// what the host decodes from a script (serde_json's bound, 127 levels),
    /// with a limit naming it and its depth; on its own and in a turn.
    #[test]
    fn inputs_nest_no_deeper_than_results(depth in 0usize..300, bits in any::<u64>(), wide in any::<bool>()) {
        let mut v = json!(1);
        for i in 0..depth {
            v = if bits >> (i % 64) & 1 == 1 {
                Json::Object([("k".to_string(), v)].into_iter().collect())
            } else {
                Json::Array(vec![v])
            };
            if wide && i % 7 == 0 {
                v = json!([[], v, {"a": [1]}]);
            }
        }
        let depth = serde_nesting(&v);
        let op: Op = "fuzz".into();
        let decodes = serde_json::from_str::<Json>(&v.to_string()).is_ok();
        match crate::sandbox::check_nesting(&op, "the input", &v) {
            Ok(()) => prop_assert!(decodes && depth <= crate::sandbox::MAX_NESTING, "{}", depth),
            Err(Error::Limit { limit: Limit::Output, detail, op }) => {
                prop_assert!(!decodes, "{}", depth);
                let expected = format!("the input is nested {depth} levels deep; ");
                prop_assert!(detail.starts_with(&expected), "{}", detail);
                prop_assert_eq!(op, "fuzz");
            }
            Err(e) => prop_assert!(false, "{:?}", e),
        }
        let mut turn = Turn::default();
        turn.blocks.push(Block {
            id: "b".into(),
            kind: BlockKind::User,
            role: None,
            payload: [("k".to_string(), v)].into_iter().collect(),
            metadata: Object::new(),
        });
        match crate::sandbox::check_turn_nesting(&op, &turn) {
            Ok(()) => prop_assert!(depth < crate::sandbox::MAX_NESTING, "{}", depth),
            Err(Error::Limit { limit: Limit::Output, detail, .. }) => {
                let expected = format!("turn.blocks[0].payload is nested {} levels deep; ", depth + 1);
                prop_assert!(detail.starts_with(&expected), "{}", detail);
            }
            Err(e) => prop_assert!(false, "{:?}", e),
        }
    }

    /// `validate-arguments` (a script's own tool schema and arguments):
    /// never a panic, never a long stall of the owner thread; an error says
    /// whether the arguments, the schema's JSON or the schema is at fault.
    #[test]
    fn tool_schemas_and_arguments_check_or_say_why(
        schema in prop_oneof![4 => arb_schema().prop_map(|s| s.to_string()), 1 => jsonish_text()],
        arguments in prop_oneof![
            4 => arb_json().prop_map(|v| v.to_string()),
            1 => "a{0,40}b?".prop_map(|s| Json::String(s).to_string()),
            1 => jsonish_text(),
        ],
    ) {
        let mut cache = crate::schema::SchemaCache::default();
        let started = Instant::now();
        let result = cache.check(&schema, &arguments);
        prop_assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        if let Err(message) = &result {
            prop_assert!(!message.is_empty());
            if serde_json::from_str::<Json>(&arguments).is_err() {
                prop_assert!(message.starts_with("the arguments are not valid JSON"), "{}", message);
            } else if serde_json::from_str::<Json>(&schema).is_err() {
                prop_assert!(message.starts_with("the tool's schema is not valid JSON"), "{}", message);
            }
        }
        // A second check of the same pair gives the same verdict (the cache).
        // Not always the same words: a schema with two unresolvable `$ref`s
        // may name either (jsonschema's order is not fixed).
        let again = cache.check(&schema, &arguments);
        prop_assert_eq!(again.is_ok(), result.is_ok(), "{:?} then {:?}", result, again);
    }

    /// Hook decisions and tool loop settings (JSON a script returns):
    /// decoded, or an error naming the hook or the setting.
    #[test]
    fn decisions_and_settings_decode_or_name_the_culprit(
        v in arb_json(),
        fields in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "action", "error", "call", "result", "backoffMs", "maxIterations",
                    "maxParallelTools", "executionTimeoutMs", "toolChoice", "toolErrorHandling",
                    "retryMaxRetries", "retryBackoffMs", "retryBackoffFactor", "allowedTools",
                    "maxHookRetries", "other",
                ]),
                prop_oneof![
                    json_leaf(),
                    prop::sample::select(vec!["abort", "continue", "retry", "auto", "none", "required"])
                        .prop_map(Json::from),
                    arb_json(),
                ],
            ),
            0..5,
        ),
    ) {
        let shaped = Json::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        for v in [&v, &shaped] {
            for (hook, result) in [
                ("beforeToolCall", BeforeDecision::from_json(v).map(|_| ())),
                ("afterToolCall", AfterDecision::from_json(v).map(|_| ())),
                ("onToolError", ErrorDecision::from_json(v).map(|_| ())),
            ] {
                if let Err(e) = result {
                    prop_assert_eq!(e.hook, hook);
                    prop_assert!(
                        e.to_string().starts_with(&format!("{hook} returned an invalid decision: ")),
                        "{}",
                        e
                    );
                }
            }
            match ToolLoopSettings::from_json(v) {
                Ok(s) => prop_assert!(s.validate().is_ok()),
                Err(e) => {
                    prop_assert!(e.message.contains(&e.key), "{:?}", e);
                    // The key at fault, or "" when the whole value is not an object.
                    prop_assert!(
                        v.get(&e.key).is_some() || (e.key.is_empty() && !v.is_object() && !v.is_null()),
                        "{:?} names a key not in {}",
                        e,
                        v
                    );
                }
            }
            // A host middleware's options, as `run-session` hands them over.
            if let Err(e) = MiddlewareRegistry::with_builtins().create("systemPrompt", v) {
                prop_assert!(format!("{e}").contains("systemPrompt needs the option \"prompt\""), "{}", e);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(CASES / 2))]

    /// `call-tool` of a host tool: the tool's result, or a `TypeError` that
    /// names the tool and says what is wrong with the call.
    #[test]
    fn host_tool_calls_run_or_say_why(
        name in prop_oneof![3 => Just("add".to_string()), 1 => odd_string()],
        arguments in prop_oneof![
            2 => (json_leaf(), json_leaf()).prop_map(|(a, b)| json!({"a": a, "b": b}).to_string()),
            2 => arb_json().prop_map(|v| v.to_string()),
            1 => jsonish_text(),
        ],
        id in odd_string(),
    ) {
        let call = wit::ToolCall { id, name: name.clone(), arguments: arguments.clone() };
        let request = wit::HostToolCall { call, context: "{}".into(), provider: None };
        let outcome = runtime().block_on(host_ops::call_tool(services_with_add(), Default::default(), request));
        let parsed = serde_json::from_str::<Json>(&arguments);
        match outcome {
            Ok(wit::Value::Json(text)) => {
                let args = parsed.expect("ran with arguments that are not JSON");
                prop_assert_eq!(name.as_str(), "add");
                prop_assert!(args["a"].is_number() && args["b"].is_number(), "{}", args);
                prop_assert!(serde_json::from_str::<Json>(&text).is_ok(), "{}", text);
            }
            Ok(other) => prop_assert!(false, "a tool answered {:?}", other),
            Err(e) => {
                prop_assert_eq!(e.name.as_str(), "TypeError");
                prop_assert!(e.message.contains(&format!("{name:?}")), "{}", e.message);
                let expected = match &parsed {
                    Err(_) => "are not valid JSON",
                    Ok(_) if name != "add" => "the host provides no tool named",
                    Ok(_) => "invalid arguments for tool",
                };
                prop_assert!(e.message.contains(expected), "expected {:?}: {}", expected, e.message);
            }
        }
    }

    /// `infer` on a host engine: the engine's turn, a `TypeError` naming the
    /// field of the turn that is not a JSON object or the field of the
    /// context that is malformed, or an error naming the unknown engine.
    #[test]
    fn host_inference_requests_run_or_say_why(
        engine in prop_oneof![Just(None), Just(Some("echo".to_string())), odd_string().prop_map(Some)],
        input in wit_turn(),
        context in prop_oneof![
            arb_object().prop_map(|o| Json::Object(o).to_string()),
            context_fields().prop_map(|o| Json::Object(o).to_string()),
            jsonish_text(),
        ],
    ) {
        let (bad_turn, bad_context) = (first_bad_field(&input), bad_context(&context));
        let blocks = input.blocks.len();
        let request = wit::HostInference {
            engine: engine.clone(), input, context, tools: Vec::new(), tool_choice: wit::ToolChoice::Auto,
        };
        let (events, _received) = tokio::sync::mpsc::unbounded_channel();
        let outcome = runtime().block_on(host_ops::infer(Arc::new(HostServices::default()), Default::default(), request, events));
        let known = engine.as_deref().is_none_or(|e| e == "echo");
        match outcome {
            Ok(wit::Value::Turn(out)) => {
                prop_assert!(known && bad_turn.is_none() && bad_context.is_none());
                prop_assert_eq!(out.blocks.len(), blocks + 1);
            }
            Ok(other) => prop_assert!(false, "an engine answered {:?}", other),
            Err(e) if !known => {
                prop_assert!(e.message.contains(&format!("unknown host engine \"{}\"", engine.unwrap())), "{}", e.message);
            }
            Err(e) => {
                prop_assert_eq!(e.name.as_str(), "TypeError");
                match (bad_turn, bad_context) {
                    (Some(field), _) => prop_assert!(names_field(&e.message, &field), "expected {} in: {}", field, e.message),
                    (None, Some(prefix)) => prop_assert!(e.message.starts_with(&prefix), "expected {:?} in: {}", prefix, e.message),
                    (None, None) => prop_assert!(false, "a good request failed: {:?}", e),
                }
            }
        }
    }

    /// `middleware`: whatever request a script's session hands over, the
    /// host runs its middleware or answers with a script error naming what
    /// is wrong. The middleware's `next` needs the sandbox, which is gone
    /// here: it fails as closed, and that error reaches the answer.
    #[test]
    fn host_middleware_requests_run_or_say_why(
        name in prop_oneof![4 => Just("systemPrompt".to_string()), 1 => odd_string()],
        options in prop_oneof![4 => odd_string().prop_map(|p| json!({ "prompt": p }).to_string()), 1 => jsonish_text()],
        input in arb_turn(),
        context in prop_oneof![3 => Just("{}".to_string()), 1 => jsonish_text()],
    ) {
        let request = wit::HostMiddlewareCall { name, options, input: turn_to_wit(&input), context };
        let outcome = runtime().block_on(async {
            tokio::time::timeout(
                Duration::from_secs(10),
                host_ops::middleware(Arc::new(HostServices::default()), Default::default(), dead_sandbox(), request, 1, None),
            )
            .await
        });
        let outcome = outcome.map_err(|_| TestCaseError::fail("hung"))?;
        match outcome {
            Ok(other) => prop_assert!(false, "a middleware answered without its next: {:?}", other),
            Err(e) => prop_assert!(!e.name.is_empty() && !e.message.is_empty(), "{:?}", e),
        }
    }
}

/// The harness of `host_middleware_requests_run_or_say_why` reaches the
/// middleware: a well-formed request fails only at its `next`.
#[test]
fn a_well_formed_host_middleware_request_reaches_next() {
    let request = wit::HostMiddlewareCall {
        name: "systemPrompt".into(),
        options: json!({ "prompt": "be brief" }).to_string(),
        input: turn_to_wit(&Turn::default()),
        context: json!({ "sessionId": "s", "tags": { "k": 1 } }).to_string(),
    };
    let outcome = runtime().block_on(host_ops::middleware(
        Arc::new(HostServices::default()),
        Default::default(),
        dead_sandbox(),
        request,
        1,
        None,
    ));
    let Err(e) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(e.message.contains("closed"), "{e:?}");
}

/// Nesting far past serde_json's limit is an error naming the field, not a
/// stack overflow, however deep.
#[test]
fn very_deep_json_is_an_error_not_a_stack_overflow() {
    for depth in [129, 10_000, 1_000_000] {
        let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let message = format!("{:#}", json(&text, "a result").unwrap_err());
        assert!(
            message.starts_with("a result is not valid JSON: recursion limit exceeded"),
            "{message}"
        );
        match crate::sandbox::json_value("deep".into(), wit::Value::Json(text)) {
            Err(Error::Limit {
                limit: Limit::Output,
                ..
            }) => {}
            other => panic!("depth {depth}: {other:?}"),
        }
    }
    // The deepest that decodes.
    let text = format!("{}{}", "[".repeat(127), "]".repeat(127));
    assert!(json(&text, "a result").is_ok());
}

/// The inference context a script hands to `engines.host().infer(turn,
/// ctx)` is decoded, or refused with a `TypeError` naming its field.
///
/// Found a bug: `host_ops::infer` read it with `unwrap_or_default()`, so
/// one field of the wrong type silently dropped the whole context.
/// Minimised: `{"sessionId": 5, "tags": {"k": "v"}}` ran the engine with an
/// empty session id and no tags.
#[test]
fn inference_contexts_decode_or_say_why() {
    use crate::session::{Engine, EngineRegistry, InferenceContext, async_trait};

    /// Keeps the context it was called with.
    #[derive(Default)]
    struct Keeping(std::sync::Mutex<Option<InferenceContext>>);

    #[async_trait]
    impl Engine for Keeping {
        fn name(&self) -> &str {
            "keeping"
        }
        async fn infer(&self, turn: Turn, ctx: InferenceContext) -> crate::Result<Turn> {
            *self.0.lock().unwrap() = Some(ctx);
            Ok(turn)
        }
    }

    let engine = Arc::new(Keeping::default());
    let services = Arc::new(HostServices {
        engines: EngineRegistry::new().register("keeping", engine.clone()),
        ..HostServices::default()
    });
    let infer = |context: Json| {
        let request = wit::HostInference {
            engine: None,
            input: turn_to_wit(&Turn::default()),
            context: context.to_string(),
            tools: Vec::new(),
            tool_choice: wit::ToolChoice::Auto,
        };
        let (events, _received) = tokio::sync::mpsc::unbounded_channel();
        runtime().block_on(host_ops::infer(
            services.clone(),
            Default::default(),
            request,
            events,
        ))
    };

    let e = infer(json!({ "sessionId": 5, "tags": { "k": "v" } })).unwrap_err();
    assert_eq!(e.name, "TypeError", "{e:?}");
    assert!(
        e.message
            .starts_with("malformed inference context: sessionId: invalid type: integer `5`"),
        "{e:?}"
    );
    assert!(engine.0.lock().unwrap().is_none(), "the engine ran");
    let e = infer(json!([1])).unwrap_err();
    assert_eq!(
        e.message,
        "malformed inference context: it must be an object, not an array"
    );

    // A good one arrives whole; what the host does not read is ignored.
    infer(json!({
        "sessionId": "s", "inferenceId": "i", "turnId": "t", "tags": { "k": "v" },
        "deadlineMs": 5, "middlewareName": "m",
    }))
    .unwrap();
    let ctx = engine.0.lock().unwrap().take().unwrap();
    assert_eq!(
        (
            ctx.session_id.as_str(),
            ctx.inference_id.as_str(),
            ctx.turn_id.as_str()
        ),
        ("s", "i", "t")
    );
    assert_eq!(Json::Object(ctx.tags), json!({ "k": "v" }));
    assert_eq!(ctx.deadline_ms, Some(5));
    // `null` is no context, as is a `null` field.
    for context in [Json::Null, json!({ "sessionId": null, "tags": null })] {
        infer(context).unwrap();
        let ctx = engine.0.lock().unwrap().take().unwrap();
        assert!(ctx.session_id.is_empty() && ctx.tags.is_empty());
    }
}

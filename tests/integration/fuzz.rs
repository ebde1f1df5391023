//! Property tests through a real [`Sandbox`]: arbitrary inputs, turns,
//! scripts and tool arguments end with a value or a typed error, never an
//! untyped host error, a trap, a panic or a hang, and the sandbox serves
//! after each case.
//!
//! Each property reuses one sandbox across its cases. The budget is fixed
//! (`CASES` per property: the module runs in a few seconds); by hand, for
//! longer:
//!
//! ```sh
//! MARIONETTE_FUZZ_CASES=5000 cargo test --release -p marionette --test integration fuzz::
//! ```
//!
//! A failure prints the minimised case; nothing is written to disk. The
//! properties that found a bug say which in their docs, with the minimised
//! input.
//!
//! # The contract for JSON that goes through a script
//!
//! Values reach JavaScript as JSON and come back through `JSON.stringify`,
//! so numbers are JavaScript numbers (doubles): every number comes back as
//! the double nearest to it (integers beyond ±2^53 are rounded, `-0` comes
//! back as `0`, `1.0` as `1`), also where the guest's Rust parses the JSON
//! on the way (tool calls, turns, host operations); strings, keys, arrays
//! and nesting come back unchanged. (`1e400` and other numbers no double
//! holds cannot be in a `serde_json::Value`, so they are not inputs.) A
//! string a script builds may hold a lone surrogate, which no Rust string
//! can: each comes back as U+FFFD, as `String::from_utf16_lossy` decodes.
//! JSON nested deeper than 127 levels is `Limit(Output)` both ways: the
//! host's JSON parser stops at 128, and the host refuses an input that
//! deep before the script sees it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use marionette::model::{Block, BlockKind, ToolCall, ToolDefinition, Turn};
use marionette::sandbox::NextFn;
use marionette::session::HostTools;
use marionette::{Error, HostServices, Limit, Policy, Runtime, Sandbox, TaskOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value as Json, json};

/// Cases per property by default: the module runs in a few seconds on
/// two cores.
const CASES: u32 = 256;

/// The deepest result the host decodes.
const MAX_DEPTH: usize = 127;

/// How long any one call may take before the case fails as a hang.
const HANG: Duration = Duration::from_secs(10);

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

/// Runs `property` on the values of `strategy()` with a sandbox shared by
/// every case. The runner works on a thread with a large stack: deep values
/// are built, printed and dropped by recursive code. (Strategies are not
/// `Send`: the thread builds its own.)
fn check<S, F>(cases: u32, strategy: fn() -> S, property: F)
where
    S: Strategy + 'static,
    F: Fn(&Sandbox, &tokio::runtime::Runtime, S::Value) -> Result<(), TestCaseError>
        + Send
        + 'static,
{
    let thread = std::thread::Builder::new()
        .name("fuzz".into())
        .stack_size(256 << 20)
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            let policy = Policy {
                entry_deadline: Duration::from_millis(250),
                ..Policy::default()
            };
            let sandbox = rt.block_on(async {
                let runtime = Runtime::shared().expect("the runtime");
                let sb = Sandbox::with_services(runtime, policy, services())
                    .await
                    .expect("a sandbox");
                sb.load("fuzz.js", SCRIPT).await.expect("the fuzz script");
                sb
            });
            let mut runner = TestRunner::new(config(cases));
            let result = runner.run(&strategy(), |v| property(&sandbox, &rt, v));
            rt.block_on(sandbox.shutdown());
            // The minimised case, as proptest prints it.
            result.map_err(|e| e.to_string())
        })
        .expect("the fuzz thread");
    if let Err(e) = thread.join().expect("the fuzz thread panicked") {
        panic!("{e}");
    }
}

/// The script every property uses: echoes, a witness, a JS tool with a
/// schema, a registry that calls the host's tool, an engine and a
/// middleware that pass turns through, and strings built of code units
/// (returned, in a turn, through a host engine).
const SCRIPT: &str = r#"
import { engines, middlewares, tools } from "marionette";

export default async (input) => input;
export const echo = (...args) => args;
export const witness = (n) => n + 1;
export const fromUnits = (units) => String.fromCharCode(...units);

export const registry = tools.createRegistry().register({
  name: "shape",
  description: "returns its arguments",
  parameters: {
    type: "object",
    properties: {
      a: { type: "number" },
      b: { type: "string", maxLength: 8 },
      c: { type: "array", items: { type: "integer" } },
      d: { type: "object" },
    },
    required: ["a"],
  },
  handler: async (args) => args,
});

const host = tools.createRegistry().useHostTools();
export const callHost = (name, args) => host.call(name, args);

export const same = engines.fromFunction((turn) => turn);
export const pass = middlewares.fromJS((turn, next) => next(turn), "pass");

export const decode = engines.fromFunction((turn) => {
  turn.data = { text: String.fromCharCode(...turn.data.units) };
  return turn;
});
export const hostEcho = async (units) => {
  const text = String.fromCharCode(...units);
  const out = await engines.host("echo").infer({ id: "t", blocks: [], metadata: {}, data: { text } });
  return out.data.text;
};
"#;

/// The schema of the script's `shape` tool.
fn shape_schema() -> Json {
    json!({
        "type": "object",
        "properties": {
            "a": { "type": "number" },
            "b": { "type": "string", "maxLength": 8 },
            "c": { "type": "array", "items": { "type": "integer" } },
            "d": { "type": "object" },
        },
        "required": ["a"],
    })
}

/// The schema of the host's `add` tool.
fn add_schema() -> Json {
    json!({
        "type": "object",
        "properties": { "a": { "type": "number" }, "b": { "type": "number" } },
        "required": ["a", "b"],
    })
}

/// The host's tool: `add` of two numbers.
fn services() -> HostServices {
    let add = ToolDefinition {
        name: "add".into(),
        description: "adds".into(),
        parameters: add_schema(),
    };
    let tools = HostTools::new("fuzz").register(add, |args: Json, _ctx| async move {
        let sum = args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0);
        Ok(json!(sum))
    });
    HostServices {
        tools: vec![Arc::new(tools)],
        ..HostServices::default()
    }
}

// ------------------------------------------------------------ generators

fn odd_string() -> impl Strategy<Value = String> {
    #[rustfmt::skip]
    const SPECIAL: &[&str] = &[
        "", "\0", "\u{2028}\u{2029}", "\u{feff}", "\u{fffd}", "\u{ffff}", "\u{10ffff}", "😀",
        "e\u{301}", "__proto__", "constructor", "hasOwnProperty", "\\ud800", "\"", "\\",
        "</script>", "0", "-1", "4294967295", "9007199254740993",
    ];
    prop_oneof![
        3 => any::<String>(),
        2 => "[a-d]{0,3}",
        2 => prop::sample::select(SPECIAL).prop_map(str::to_string),
        1 => "[\\x00-\\x1f\\x7f]{0,4}",
    ]
}

fn double() -> impl Strategy<Value = Json> {
    any::<f64>().prop_filter_map("finite", |f| {
        serde_json::Number::from_f64(f).map(Json::Number)
    })
}

fn number() -> impl Strategy<Value = Json> {
    prop_oneof![
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        double(),
        prop::sample::select(vec![
            json!(0),
            json!(-0.0),
            json!(1.0),
            json!(9007199254740993u64),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1e308),
            json!(5e-324),
            json!(1e21),
            json!(0.1 + 0.2),
        ]),
    ]
}

fn arb_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        number(),
        odd_string().prop_map(Json::String),
    ];
    leaf.prop_recursive(5, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Json::Array),
            prop::collection::btree_map(odd_string(), inner, 0..5)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_object() -> impl Strategy<Value = serde_json::Map<String, Json>> {
    prop::collection::btree_map(odd_string(), arb_json(), 0..4)
        .prop_map(|m| m.into_iter().collect())
}

/// A value wrapped in `depth` arrays or objects (a pattern of bits says
/// which, with odd keys).
fn nest(mut v: Json, depth: usize, bits: u64, key: &str) -> Json {
    for i in 0..depth {
        // Not `json!`, which would copy `v` at each level.
        v = if bits >> (i % 64) & 1 == 1 {
            Json::Object([(key.to_string(), v)].into_iter().collect())
        } else {
            Json::Array(vec![v])
        };
    }
    v
}

/// Values of any shape, sometimes nested past the host's limit.
fn input() -> impl Strategy<Value = Json> {
    prop_oneof![
        3 => arb_json(),
        1 => (arb_json(), 0usize..200, any::<u64>(), odd_string())
            .prop_map(|(v, depth, bits, key)| nest(v, depth, bits, &key)),
    ]
}

/// Turns of any content. Ids are not empty: a script's turn gets a fresh
/// id in place of an empty one (`turns.normalize`).
fn arb_turn() -> impl Strategy<Value = Turn> {
    const KINDS: [BlockKind; 7] = [
        BlockKind::User,
        BlockKind::LlmText,
        BlockKind::ToolCall,
        BlockKind::ToolUse,
        BlockKind::System,
        BlockKind::Reasoning,
        BlockKind::Other,
    ];
    let id = || odd_string().prop_map(|s| format!("i{s}"));
    let block = (
        id(),
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
        id(),
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

/// Tokens of a JavaScript-ish grammar: keywords, punctuation, strings,
/// numbers, identifiers (none of them a builtin global, so that a script
/// cannot break the shared realm, a known gap of SECURITY.md), imports and
/// exports, Unicode.
fn soup() -> impl Strategy<Value = String> {
    #[rustfmt::skip]
    const TOKENS: &[&str] = &[
        "import", "export", "default", "from", "as", "const", "let", "var", "function", "async",
        "await", "return", "if", "else", "for", "while", "do", "new", "class", "extends", "this",
        "super", "yield", "typeof", "delete", "in", "of", "try", "catch", "finally", "throw",
        "null", "undefined", "true", "false", "switch", "case", "break", "continue", "static",
        "get", "set", "{", "}", "(", ")", "[", "]", ";", ",", ".", "...", "=>", "=", "==", "===",
        "!", "+", "-", "*", "/", "%", "**", "++", "--", "&&", "||", "??", "?.", "?", ":", "<",
        ">", "<<", "&", "|", "^", "~", "+=", "`", "${", "#x", "@", "\"marionette\"", "'fs'",
        "\"./fuzz.js\"", "\"a\"", "'\\ud800'", "\"\\u{10FFFF}\"", "\"unterminated", "'\\x4'",
        "`t ${a} t`", "/a+/g", "/(/", "0", "1", "1e400", "0x1F", "1n", "0.5", "08", "1_000",
        "NaN", "Infinity", "a", "b", "x", "main", "tools", "turns", "engines", "consts", "ä",
        "𝑥", "\\u0061", "😀", "\u{2028}", "\u{feff}", "\u{0}", "// c\n", "/* c */", "<!--",
        "\n", "* as m", "{ tools }", "{ a as b }", "import.meta", "import(\"marionette\")",
        "export default async function main(input) {", "export const a =",
        "import { tools, turns } from \"marionette\";", "export { a };",
    ];
    prop::collection::vec(
        (
            prop::sample::select(TOKENS),
            prop::sample::select(&[" ", "", "\n"][..]),
        ),
        0..40,
    )
    .prop_map(|tokens| tokens.into_iter().flat_map(|(t, sep)| [t, sep]).collect())
}

/// Arguments for the tools: shaped like their schemas most of the time.
fn arguments() -> impl Strategy<Value = Json> {
    let shaped = (
        prop::option::of(prop_oneof![number(), arb_json()]),
        prop::option::of(prop_oneof![odd_string().prop_map(Json::from), arb_json()]),
        prop::option::of(prop_oneof![
            prop::collection::vec(number(), 0..4).prop_map(Json::from),
            arb_json()
        ]),
        prop::option::of(arb_json()),
        prop::option::of(number()),
    )
        .prop_map(|(a, b, c, d, b_number)| {
            let mut o = serde_json::Map::new();
            for (k, v) in [("a", a), ("b", b), ("c", c), ("d", d)] {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            }
            // `add` wants `b` as a number.
            if let Some(n) = b_number {
                o.insert("b".into(), n);
            }
            Json::Object(o)
        });
    prop_oneof![4 => shaped, 1 => arb_json()]
}

fn tool_name(known: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![4 => Just(known.to_string()), 1 => odd_string()]
}

// ------------------------------------------------------------ helpers

/// Equal under the contract of the module's doc: numbers compare as doubles.
fn same(sent: &Json, got: &Json) -> bool {
    match (sent, got) {
        (Json::Number(a), Json::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
        (Json::Array(a), Json::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
        }
        (Json::Object(a), Json::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        _ => sent == got,
    }
}

/// Turns equal under the contract.
fn same_turn(sent: &Turn, got: &Turn) -> bool {
    let object = |o: &serde_json::Map<String, Json>| Json::Object(o.clone());
    let same_object = |a: &serde_json::Map<String, Json>, b| same(&object(a), &object(b));
    sent.id == got.id
        && sent.blocks.len() == got.blocks.len()
        && sent.blocks.iter().zip(&got.blocks).all(|(a, b)| {
            (&a.id, a.kind, &a.role) == (&b.id, b.kind, &b.role)
                && same_object(&a.payload, &b.payload)
                && same_object(&a.metadata, &b.metadata)
        })
        && same_object(&sent.metadata, &got.metadata)
        && same_object(&sent.data, &got.data)
}

/// Levels of arrays and objects (a scalar is 0).
fn nesting(v: &Json) -> usize {
    match v {
        Json::Array(a) => 1 + a.iter().map(nesting).max().unwrap_or(0),
        Json::Object(o) => 1 + o.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// What a result must be: `expected` (under the contract), or the output
/// limit when it is nested too deeply.
fn check_echo(result: marionette::Result<Json>, expected: &Json) -> Result<(), TestCaseError> {
    match result {
        Ok(got) => {
            let depth = nesting(expected);
            prop_assert!(depth <= MAX_DEPTH, "decoded at depth {}", depth);
            prop_assert!(same(expected, &got), "sent {} got {}", expected, got);
        }
        Err(Error::Limit {
            limit: Limit::Output,
            ..
        }) => {
            let depth = nesting(expected);
            prop_assert!(depth > MAX_DEPTH, "refused at depth {}", depth);
        }
        Err(e) => prop_assert!(false, "not a typed outcome: {:?}", e),
    }
    Ok(())
}

/// The sandbox still answers a plain call correctly.
fn witness(sb: &Sandbox, rt: &tokio::runtime::Runtime) -> Result<(), TestCaseError> {
    let n = rt.block_on(sb.call(
        "fuzz.js",
        "witness",
        &[json!(41)],
        TaskOptions::timeout(HANG),
    ));
    prop_assert_eq!(n.map_err(|e| e.to_string()), Ok(json!(42)));
    Ok(())
}

/// A host chain for the middleware: keeps the turn it was handed, answers
/// with it.
fn keeping_next() -> (NextFn, Arc<Mutex<Option<Turn>>>) {
    let kept = Arc::new(Mutex::new(None));
    let k = kept.clone();
    let next: NextFn = Arc::new(move |turn: Turn| {
        *k.lock().unwrap() = Some(turn.clone());
        Box::pin(std::future::ready(Ok(turn)))
    });
    (next, kept)
}

// ------------------------------------------------------------ (a) values

/// Any JSON input to `main` and to an exported function comes back equal
/// under the contract, or as `Limit(Output)` when nested too deeply.
#[test]
fn inputs_come_back_equal_or_as_a_typed_limit() {
    check(CASES, input, |sb, rt, v| {
        let main = rt.block_on(sb.run_main("fuzz.js", &v, TaskOptions::timeout(HANG)));
        check_echo(main, &v)?;
        let args = [v, json!("second")];
        let call = rt.block_on(sb.call("fuzz.js", "echo", &args, TaskOptions::timeout(HANG)));
        check_echo(call, &Json::Array(args.to_vec()))?;
        witness(sb, rt)
    });
}

/// Any turn crosses a JavaScript engine that returns it, and a JavaScript
/// middleware that hands it to the host's chain (which sees it) and
/// returns what the chain answered, unchanged under the contract.
#[test]
fn turns_cross_js_engines_and_middleware_unchanged() {
    check(CASES, arb_turn, |sb, rt, turn| {
        let out = rt.block_on(sb.infer("fuzz.js", "same", &turn, TaskOptions::timeout(HANG)));
        let out = out.map_err(|e| TestCaseError::fail(format!("engine: {e:?}")))?;
        prop_assert!(same_turn(&turn, &out), "sent {:?}\ngot {:?}", turn, out);

        let (next, kept) = keeping_next();
        let out = rt.block_on(sb.run_middleware(
            "fuzz.js",
            "pass",
            &turn,
            next,
            TaskOptions::timeout(HANG),
        ));
        let out = out.map_err(|e| TestCaseError::fail(format!("middleware: {e:?}")))?;
        let seen = kept.lock().unwrap().take();
        let seen = seen.ok_or_else(|| TestCaseError::fail("next() was not called"))?;
        prop_assert!(
            same_turn(&turn, &seen),
            "sent {:?}\nnext saw {:?}",
            turn,
            seen
        );
        prop_assert!(same_turn(&turn, &out), "sent {:?}\ngot {:?}", turn, out);
        witness(sb, rt)
    });
}

/// Numbers cross the guest's Rust (tool calls, turns) as the same double.
///
/// Found a bug: the guest's serde_json was built without `float_roundtrip`
/// (the host got it only by accident, through jsonschema) and misread
/// about three doubles in ten by 1-2 ulps. Minimised (any one double):
/// tool arguments `{"a": -4.05110099187598e-61}` came back as
/// `-4.0511009918759805e-61`, `1.2106447161838181e55` as
/// `1.210644716183818e55`, `5.97784313508202e-145` as
/// `5.9778431350820204e-145`. The workspace's serde_json now has the
/// feature.
#[test]
fn numbers_cross_the_guest_exactly() {
    check(CASES, double, |sb, rt, n| {
        let call = ToolCall {
            id: "n".into(),
            name: "shape".into(),
            arguments: json!({ "a": n }),
        };
        let out =
            rt.block_on(sb.call_tool("fuzz.js", "registry", &call, TaskOptions::timeout(HANG)));
        let out = out.map_err(|e| TestCaseError::fail(format!("tool: {e:?}")))?;
        prop_assert!(
            same(&call.arguments, &out),
            "sent {} got {}",
            call.arguments,
            out
        );
        let turn = Turn {
            id: "t".into(),
            data: [("n".to_string(), n)].into_iter().collect(),
            ..Turn::default()
        };
        let out = rt.block_on(sb.infer("fuzz.js", "same", &turn, TaskOptions::timeout(HANG)));
        let out = out.map_err(|e| TestCaseError::fail(format!("engine: {e:?}")))?;
        prop_assert!(
            same_turn(&turn, &out),
            "sent {:?} got {:?}",
            turn.data,
            out.data
        );
        Ok(())
    });
}

/// An input nested far past the limit is refused with a typed limit, like
/// a result nested too deeply, and does not trap the instance (which would
/// fail every other task in it).
///
/// Found a bug: the host handed the input to the guest whatever its depth,
/// and QuickJS's `JSON.parse`, which recurses on the wasm stack, trapped.
/// Minimised: an array nested about 3,840 levels (`[[[...1...]]]`; the
/// guest's stack use varies), observed `Trapped { limit: Some(Stack) }`.
/// The host now refuses inputs nested deeper than results may be, before
/// the guest is entered, whatever their depth (100,000 levels here too).
#[test]
fn inputs_nested_too_deeply_are_a_typed_limit_not_a_trap() {
    check(
        CASES / 4,
        || {
            let depth = prop_oneof![8 => 128usize..20_000, 1 => Just(100_000usize)];
            (depth, any::<u64>())
        },
        |sb, rt, (depth, bits)| {
            let v = nest(json!(1), depth, bits, "k");
            match rt.block_on(sb.run_main("fuzz.js", &v, TaskOptions::timeout(HANG))) {
                Err(Error::Limit {
                    limit: Limit::Output,
                    detail,
                    ..
                }) => prop_assert!(
                    detail.starts_with(&format!("the input is nested {depth} levels deep")),
                    "{}",
                    detail
                ),
                other => prop_assert!(false, "depth {}: {:?}", depth, other.map(|_| "a value")),
            }
            let args = [json!("first"), v];
            match rt.block_on(sb.call("fuzz.js", "echo", &args, TaskOptions::timeout(HANG))) {
                Err(Error::Limit {
                    limit: Limit::Output,
                    detail,
                    ..
                }) => prop_assert!(
                    detail.starts_with(&format!("argument 2 is nested {depth} levels deep")),
                    "{}",
                    detail
                ),
                other => prop_assert!(false, "depth {}: {:?}", depth, other.map(|_| "a value")),
            }
            witness(sb, rt)
        },
    );
}

/// Whatever string a script builds, from any UTF-16 code units, comes back
/// as the string a lossy UTF-16 decode makes of it (each lone surrogate
/// becomes U+FFFD; `String::from_utf16_lossy`), as a result, in a turn, and
/// as tool arguments a script hands the host.
///
/// Found a bug: a string with a lone surrogate was `Error::Host` ("the
/// task's result is not valid JSON"), and a turn with one a `TypeError`.
/// Minimised: code units `[0xD800]`. `JSON.stringify` writes it as the
/// escape `"\ud800"`, which serde_json refuses (a Rust string cannot hold
/// it); the guest now reads JavaScript's JSON lossily, and hands the host
/// task results made well-formed.
#[test]
fn strings_of_any_code_units_come_back_or_fail_typed() {
    let units = || {
        prop::collection::vec(
            prop_oneof![any::<u16>(), 0xd800u16..0xe000, 0u16..0x80],
            0..12,
        )
    };
    check(CASES, units, |sb, rt, units| {
        let expected = json!(String::from_utf16_lossy(&units));
        let args = [json!(units)];
        let out = rt.block_on(sb.call("fuzz.js", "fromUnits", &args, TaskOptions::timeout(HANG)));
        prop_assert_eq!(out.map_err(|e| e.to_string()), Ok(expected.clone()));

        let turn = Turn {
            id: "t".into(),
            data: [("units".to_string(), json!(units))].into_iter().collect(),
            ..Turn::default()
        };
        let out = rt.block_on(sb.infer("fuzz.js", "decode", &turn, TaskOptions::timeout(HANG)));
        let out = out.map_err(|e| TestCaseError::fail(format!("engine: {e:?}")))?;
        prop_assert_eq!(&out.data["text"], &expected);

        // In a host operation: a turn through the host's echo engine.
        let out = rt.block_on(sb.call("fuzz.js", "hostEcho", &args, TaskOptions::timeout(HANG)));
        prop_assert_eq!(out.map_err(|e| e.to_string()), Ok(expected));
        witness(sb, rt)
    });
}

// ------------------------------------------------------------ (b) scripts

/// What loading a source may end with: its exports, a script error of the
/// load (whose location, when it has one, is the file), or for top-level
/// code that loops or awaits what never comes, the deadline or the
/// caller's timeout. Returns the script error, if any.
fn check_load(
    loaded: marionette::Result<Vec<marionette::model::ExportInfo>>,
) -> Result<Option<marionette::ScriptError>, TestCaseError> {
    match loaded {
        Ok(exports) => prop_assert!(exports.iter().all(|e| e.tools.is_empty())),
        Err(Error::Script { op, error }) => {
            prop_assert_eq!(op, "load soup.js");
            prop_assert!(
                error.file.as_deref().is_none_or(|f| f == "soup.js"),
                "{:?}",
                error
            );
            return Ok(Some(*error));
        }
        Err(Error::Limit {
            limit: Limit::Deadline,
            ..
        })
        | Err(Error::Timeout { .. }) => {}
        Err(e) => prop_assert!(false, "not a typed outcome: {:?}", e),
    }
    Ok(None)
}

fn load_soup(
    sb: &Sandbox,
    rt: &tokio::runtime::Runtime,
    source: String,
) -> marionette::Result<Vec<marionette::model::ExportInfo>> {
    rt.block_on(sb.load_with(
        "soup.js",
        source,
        TaskOptions::timeout(Duration::from_secs(1)),
    ))
}

/// Any script source either loads or fails typed (see `check_load`),
/// within the caller's timeout; the sandbox answers a witness call after
/// every case.
#[test]
fn any_source_loads_or_fails_typed() {
    check(CASES, soup, |sb, rt, source| {
        check_load(load_soup(sb, rt, source))?;
        witness(sb, rt)
    });
}

/// A script error of a load says which file it is in: its location, or
/// its message.
///
/// Found a bug: three kinds of errors had no location (`file: None`, empty
/// stack) and did not name the file, only the call's `op` did. Minimised:
/// `"\0"` (InternalError "String contained internal null bytes": a source
/// with a NUL byte, even inside a string literal, could not load at all),
/// `"/(/"` (SyntaxError "expecting ')'", and "invalid regular expression
/// flags": regular expression literals), `"export { a };"` (SyntaxError
/// "exported variable 'a' does not exist"). The guest now gives a load's
/// error without a file the module's name, and hands QuickJS the source
/// with its length (see `sources_with_nul_bytes_load`).
#[test]
fn load_errors_name_the_file() {
    check(CASES, soup, |sb, rt, source| {
        if let Some(error) = check_load(load_soup(sb, rt, source))? {
            let named =
                error.file.as_deref() == Some("soup.js") || error.message.contains("soup.js");
            prop_assert!(named, "{:?}", error);
        }
        witness(sb, rt)
    });
}

/// Kept from `load_errors_name_the_file`: a NUL byte is source text like
/// any other (in a string literal it loads, and the string holds it;
/// elsewhere it is a syntax error of the file), and what a top level
/// throws names the file even when it is no error, before and after an
/// `await`.
#[tokio::test]
async fn sources_with_nul_bytes_load() {
    let sb = Sandbox::new(Policy::default()).await.expect("a sandbox");
    sb.load("nul.js", "export default () => \"a\0b\"; // \0")
        .await
        .expect("a NUL in a string literal and a comment loads");
    let out = sb
        .run_main("nul.js", &Json::Null, TaskOptions::timeout(HANG))
        .await;
    assert_eq!(out.map_err(|e| e.to_string()), Ok(json!("a\0b")));
    for (name, source) in [
        ("bare.js", "export const a = 1;\n\0"),
        ("throw.js", "throw 1;"),
        ("await.js", "await null; throw 1;"),
        ("regexp.js", "/(/"),
        ("export.js", "export { a };"),
    ] {
        match sb.load(name, source).await {
            Err(Error::Script { error, .. }) => {
                assert_eq!(error.file.as_deref(), Some(name), "{error:?}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    sb.shutdown().await;
}

// ------------------------------------------------------------ (c) tools

/// Arbitrary arguments to a JavaScript tool with a JSON Schema, and to the
/// host's tool through a script's registry: the tool's result (for the JS
/// tool: its arguments, under the contract) when the schema accepts them,
/// otherwise a `TypeError` naming the tool; an unknown tool is a
/// `TypeError` too.
#[test]
fn tool_arguments_run_or_fail_validation() {
    let strategy = || (tool_name("shape"), tool_name("add"), arguments());
    check(CASES, strategy, |sb, rt, (name, host_name, args)| {
        let valid = jsonschema::is_valid(&shape_schema(), &args);
        let call = ToolCall {
            id: "fuzz".into(),
            name: name.clone(),
            arguments: args.clone(),
        };
        let out =
            rt.block_on(sb.call_tool("fuzz.js", "registry", &call, TaskOptions::timeout(HANG)));
        match out {
            Ok(got) => {
                prop_assert!(name == "shape" && valid, "ran {:?} with {}", name, args);
                prop_assert!(same(&args, &got), "sent {} got {}", args, got);
            }
            Err(Error::Script { error, .. }) => {
                prop_assert_eq!(error.name.as_str(), "TypeError", "{:?}", error);
                if name != "shape" {
                    prop_assert!(error.message.contains("unknown tool"), "{:?}", error);
                } else {
                    prop_assert!(!valid, "refused valid arguments {}: {:?}", args, error);
                    let prefix = "invalid arguments for tool \"shape\": ";
                    prop_assert!(error.message.starts_with(prefix), "{:?}", error);
                }
            }
            Err(e) => prop_assert!(false, "not a typed outcome: {:?}", e),
        }

        let valid = jsonschema::is_valid(&add_schema(), &args);
        let call_args = [json!(host_name), args.clone()];
        let out = rt.block_on(sb.call(
            "fuzz.js",
            "callHost",
            &call_args,
            TaskOptions::timeout(HANG),
        ));
        match out {
            Ok(got) => {
                prop_assert!(
                    host_name == "add" && valid,
                    "ran {:?} with {}",
                    host_name,
                    args
                );
                prop_assert!(got.is_number() || got.is_null(), "{}", got);
            }
            Err(Error::Script { error, .. }) => {
                prop_assert_eq!(error.name.as_str(), "TypeError", "{:?}", error);
                // The guest names the tool as JSON, the host with Rust's `{:?}`.
                let json_name = serde_json::to_string(&host_name).unwrap();
                let debug_name = format!("{host_name:?}");
                prop_assert!(
                    error.message.contains(&json_name) || error.message.contains(&debug_name),
                    "{:?}",
                    error
                );
                prop_assert!(
                    host_name != "add" || !valid,
                    "refused valid arguments {}: {:?}",
                    args,
                    error
                );
            }
            Err(e) => prop_assert!(false, "not a typed outcome: {:?}", e),
        }
        witness(sb, rt)
    });
}

//! The guest's JavaScript runtime, through the sandbox: modules, errors and
//! their locations, promises, timers, console, the API objects.

use std::time::Duration;

use marionette::model::{BlockKind, Event, ExportKind, LogLevel, ToolCall, Turn};
use marionette::{Error, Limit, Policy, Sandbox, TaskOptions};
use serde_json::json;

use crate::common::fixture;

async fn sandbox() -> Sandbox {
    Sandbox::new(Policy::default()).await.expect("sandbox")
}

fn script_error(result: Result<impl std::fmt::Debug, Error>) -> marionette::ScriptError {
    match result {
        Err(Error::Script { error, .. }) => *error,
        other => panic!("expected a script error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_syntax_error_names_file_line_and_column() {
    let sb = sandbox().await;
    let source = "export default function main() {\n  const x = 1;\n  return x +* 2;\n}\n";
    let error = script_error(sb.load("broken.js", source).await);
    assert_eq!(error.name, "SyntaxError");
    assert_eq!(error.file.as_deref(), Some("broken.js"));
    assert_eq!(error.line, Some(3));
    // QuickJS-ng's parser reports a lazily tracked column for syntax errors,
    // so only its presence is certain; lines are exact.
    assert!(error.column.is_some());
    assert!(
        error.message.contains("unexpected token"),
        "{}",
        error.message
    );
    // The sandbox is fine: a good script loads after a broken one.
    sb.load("good.js", "export default () => 1;").await.unwrap();
}

#[tokio::test]
async fn a_thrown_error_carries_its_stack_and_location() {
    let sb = sandbox().await;
    sb.load("errors.js", fixture("errors.js")).await.unwrap();

    for function in ["syncThrow", "asyncThrow"] {
        let error = script_error(
            sb.call("errors.js", function, &[], TaskOptions::default())
                .await,
        );
        assert_eq!(error.name, "TypeError");
        assert!(error.message.starts_with("bad "), "{}", error.message);
        assert_eq!(error.file.as_deref(), Some("errors.js"));
        // QuickJS points a `new X(...)` at the constructor's name.
        assert_eq!(
            (error.line, error.column),
            (Some(3), Some(13)),
            "{function}"
        );
        let stack = error.stack.expect("a stack");
        assert!(stack.contains("at inner (errors.js:3:13)"), "{stack}");
        assert!(
            stack.contains(&format!("at {function} (errors.js:")),
            "{stack}"
        );
    }

    let error = script_error(
        sb.run_main("errors.js", &json!({}), TaskOptions::default())
            .await,
    );
    assert_eq!(error.to_string(), "errors.js:3:13: TypeError: bad main");
}

#[tokio::test]
async fn thrown_non_errors_and_unserializable_results_are_errors_too() {
    let sb = sandbox().await;
    sb.load("errors.js", fixture("errors.js")).await.unwrap();
    let error = script_error(
        sb.call("errors.js", "throwString", &[], TaskOptions::default())
            .await,
    );
    assert_eq!(error.name, "Error");
    assert!(
        error.message.contains("\"just a string\""),
        "{}",
        error.message
    );

    let error = script_error(
        sb.call("errors.js", "unserializable", &[], TaskOptions::default())
            .await,
    );
    assert_eq!(error.name, "TypeError");
    assert!(
        error.message.contains("not JSON-serialisable"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn main_gets_its_input_and_returns_json() {
    let sb = sandbox().await;
    sb.load(
        "m.js",
        "export default async (input, ctx) => ({ doubled: input.n * 2, task: typeof ctx.taskId });\nexport const nothing = () => undefined;\nexport const sync = (a, b) => [a, b];",
    )
    .await
    .unwrap();
    let out = sb
        .run_main("m.js", &json!({"n": 21}), TaskOptions::default())
        .await
        .unwrap();
    assert_eq!(out, json!({"doubled": 42, "task": "number"}));
    assert_eq!(
        sb.call("m.js", "nothing", &[], TaskOptions::default())
            .await
            .unwrap(),
        json!(null)
    );
    assert_eq!(
        sb.call(
            "m.js",
            "sync",
            &[json!("x"), json!({"y": 1})],
            TaskOptions::default()
        )
        .await
        .unwrap(),
        json!(["x", {"y": 1}])
    );
    // A script without a default export says so.
    sb.load("nomain.js", "export const x = 1;").await.unwrap();
    let error = script_error(
        sb.run_main("nomain.js", &json!({}), TaskOptions::default())
            .await,
    );
    assert!(
        error.message.contains("no default export"),
        "{}",
        error.message
    );
    // So does an unknown script or function.
    let error = script_error(
        sb.run_main("missing.js", &json!({}), TaskOptions::default())
            .await,
    );
    assert!(
        error.message.contains("no script named \"missing.js\""),
        "{}",
        error.message
    );
    let error = script_error(sb.call("m.js", "absent", &[], TaskOptions::default()).await);
    assert!(
        error.message.contains("no export named \"absent\""),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn async_main_awaits_timers_in_order_and_cleared_timers_never_fire() {
    let sb = sandbox().await;
    sb.load("timers.js", fixture("timers.js")).await.unwrap();
    let out = sb
        .run_main(
            "timers.js",
            &json!({"slow": 30, "fast": 1}),
            TaskOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(out, json!(["fast", "slow"]));
    let out = sb
        .call("timers.js", "timeoutArgs", &[], TaskOptions::default())
        .await
        .unwrap();
    assert_eq!(out, json!(5));
}

#[tokio::test]
async fn console_lines_reach_the_host_in_order_with_their_levels() {
    let sb = sandbox().await;
    sb.load("console.js", fixture("console.js")).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = TaskOptions {
        events: Some(tx),
        ..TaskOptions::default()
    };
    let out = sb
        .run_main("console.js", &json!({}), options)
        .await
        .unwrap();
    assert_eq!(out, json!("done"));
    let mut lines = Vec::new();
    while let Ok(Event::Console { level, message }) = rx.try_recv() {
        lines.push((level, message));
    }
    assert_eq!(
        lines,
        vec![
            (LogLevel::Info, r#"log 1 {"a":[1,2]}"#.to_string()),
            (LogLevel::Info, "info".to_string()),
            (LogLevel::Warn, "warn".to_string()),
            (LogLevel::Error, "error boom".to_string()),
            (LogLevel::Debug, "debug".to_string()),
        ]
    );
}

#[tokio::test]
async fn two_scripts_live_side_by_side_and_a_reload_replaces_one() {
    let sb = sandbox().await;
    sb.load(
        "a.js",
        "let n = 0; export default () => `a${++n}`; export const which = (x) => `old ${x}`;",
    )
    .await
    .unwrap();
    sb.load("b.js", "let n = 100; export default () => `b${++n}`;")
        .await
        .unwrap();
    let run = |name: &'static str| {
        let sb = sb.clone();
        async move {
            sb.run_main(name, &json!({}), TaskOptions::default())
                .await
                .unwrap()
        }
    };
    assert_eq!(run("a.js").await, json!("a1"));
    assert_eq!(run("b.js").await, json!("b101"));
    assert_eq!(run("a.js").await, json!("a2"));
    // A function called by name (the call Rust makes without the
    // dispatcher, vm.rs's `call_inline`) is the latest load's, and a load
    // that fails replaces nothing.
    let which = || async {
        sb.call("a.js", "which", &[json!(1)], TaskOptions::default())
            .await
            .unwrap()
    };
    assert_eq!(which().await, json!("old 1"));
    sb.load(
        "a.js",
        "export default () => 'a, new'; export const which = (x) => `new ${x}`;",
    )
    .await
    .unwrap();
    assert_eq!(run("a.js").await, json!("a, new"));
    assert_eq!(which().await, json!("new 1"));
    sb.load(
        "a.js",
        "export const which = () => 'never'; throw new Error('no');",
    )
    .await
    .unwrap_err();
    assert_eq!(which().await, json!("new 1"));
    assert_eq!(run("b.js").await, json!("b102"));
}

#[tokio::test]
async fn each_export_called_by_name_is_the_binding_it_names_now() {
    // vm.rs's `call_inline` keeps the atoms of the names it was called by
    // (32 a script) and looks the rest up each time: every name answers
    // for its own export, past the kept ones too, a reassigned `let` binding
    // answers as it is now, and a reload's exports replace the old ones'.
    let sb = sandbox().await;
    let script = |base: u32| {
        let mut s = String::from(
            "export let live = () => 'before'; export function swap() { live = () => 'after'; }\n\
             export const value = 7;\n",
        );
        for i in 0..40 {
            s.push_str(&format!(
                "export function f{i}(x) {{ return x + {}; }}\n",
                base + i
            ));
        }
        s
    };
    let call = |function: String, args: Vec<serde_json::Value>| {
        let sb = sb.clone();
        async move {
            sb.call("many.js", &function, &args, TaskOptions::default())
                .await
        }
    };
    sb.load("many.js", &script(0)).await.unwrap();
    for round in 0..2 {
        for i in 0..40 {
            let out = call(format!("f{i}"), vec![json!(1000 * round)])
                .await
                .unwrap();
            assert_eq!(out, json!(1000 * round + i), "f{i} in round {round}");
        }
    }
    assert_eq!(call("live".into(), vec![]).await.unwrap(), json!("before"));
    call("swap".into(), vec![]).await.unwrap();
    assert_eq!(call("live".into(), vec![]).await.unwrap(), json!("after"));
    for (name, says) in [
        ("value", "is not a function"),
        ("nope", "has no export named"),
    ] {
        for _ in 0..2 {
            match call(name.into(), vec![]).await {
                Err(Error::Script { error, .. }) => {
                    assert!(error.message.contains(says), "{name}: {}", error.message)
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }
    sb.load("many.js", &script(500)).await.unwrap();
    for i in (0..40).rev() {
        let out = call(format!("f{i}"), vec![json!(1)]).await.unwrap();
        assert_eq!(out, json!(501 + i), "f{i} after the reload");
    }
    assert_eq!(call("live".into(), vec![]).await.unwrap(), json!("before"));
}

#[tokio::test]
async fn scripts_can_import_only_marionette() {
    let sb = sandbox().await;
    // A script loaded alone imports `marionette` and nothing else; each
    // refusal says why (modules of a graph: tests/integration/modules.rs).
    for (specifier, why) in [
        ("fs", "bare specifier"),
        ("./other.js", "loaded as a single module"),
        ("std", "bare specifier"),
        ("os", "bare specifier"),
        ("a.js", "bare specifier"),
        ("node:fs", "no Node.js or QuickJS built-in"),
        ("/etc/passwd", "no filesystem"),
    ] {
        let source = format!("import x from {specifier:?};\nexport default () => x;");
        let error = script_error(sb.load("importer.js", source).await);
        assert!(
            error.name == "TypeError"
                && error.message.contains(&format!("{specifier:?}"))
                && error.message.contains(why),
            "{specifier}: {}",
            error.message
        );
    }
    // Dynamic import is refused the same way.
    sb.load(
        "dyn.js",
        "export default async () => { await import('fs'); };",
    )
    .await
    .unwrap();
    let error = script_error(
        sb.run_main("dyn.js", &json!({}), TaskOptions::default())
            .await,
    );
    assert!(error.message.contains("esbuild"), "{}", error.message);
}

#[tokio::test]
async fn the_host_learns_each_export_by_name_and_kind() {
    let sb = sandbox().await;
    let mut exports = sb
        .load("parts.js", fixture("agent_parts.js"))
        .await
        .unwrap();
    exports.sort_by(|a, b| a.name.cmp(&b.name));
    let kinds: Vec<_> = exports.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            ("answer", ExportKind::Value),
            ("calculator", ExportKind::ToolRegistry),
            ("callDirectly", ExportKind::Function),
            ("echo", ExportKind::Engine),
            ("helper", ExportKind::Function),
            ("hooks", ExportKind::ToolHooks),
            ("shout", ExportKind::Engine),
            ("tagger", ExportKind::Middleware),
        ]
    );
    let tools = &exports[1].tools;
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0].name, "add");
    assert_eq!(tools[0].description, "add two numbers");
    assert_eq!(tools[0].parameters["required"], json!(["a", "b"]));
    assert_eq!(
        sb.list_tools("parts.js", "calculator").await.unwrap(),
        *tools
    );
    // The load's list (the load task's value) is what `exports` says.
    let mut asked = sb.exports("parts.js").await.unwrap();
    asked.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(asked, exports);
}

/// A load's value is the runtime's export list, not a script's result: the
/// policy's cap on results does not refuse a load, and still caps a call.
#[tokio::test]
async fn the_cap_on_results_caps_calls_and_never_a_load() {
    let policy = Policy {
        max_result_bytes: 16,
        ..Policy::default()
    };
    let sb = Sandbox::with_runtime(marionette::Runtime::shared().unwrap(), policy)
        .await
        .unwrap();
    let exports = sb
        .load("parts.js", fixture("agent_parts.js"))
        .await
        .expect("a load is not capped");
    assert_eq!(exports.len(), 8);
    let big = sb
        .load("big.js", "export const big = () => 'x'.repeat(100);")
        .await
        .expect("a load is not capped");
    assert_eq!(big.len(), 1);
    match sb.call("big.js", "big", &[], TaskOptions::default()).await {
        Err(Error::Limit {
            limit: Limit::Output,
            ..
        }) => {}
        other => panic!("expected the output cap, got {other:?}"),
    }
}

#[tokio::test]
async fn js_tools_run_through_the_tools_interface() {
    let sb = sandbox().await;
    sb.load("parts.js", fixture("agent_parts.js"))
        .await
        .unwrap();
    let call = ToolCall {
        id: "c1".into(),
        name: "add".into(),
        arguments: json!({"a": 2, "b": 40}),
    };
    assert_eq!(
        sb.call_tool("parts.js", "calculator", &call, TaskOptions::default())
            .await
            .unwrap(),
        json!(42)
    );
    let call = ToolCall {
        id: "c2".into(),
        name: "fail".into(),
        arguments: json!({}),
    };
    let error = script_error(
        sb.call_tool("parts.js", "calculator", &call, TaskOptions::default())
            .await,
    );
    assert_eq!(
        (error.name.as_str(), error.message.as_str()),
        ("RangeError", "tool failed on purpose")
    );
    let call = ToolCall {
        id: "c3".into(),
        name: "nope".into(),
        arguments: json!({}),
    };
    let error = script_error(
        sb.call_tool("parts.js", "calculator", &call, TaskOptions::default())
            .await,
    );
    assert!(
        error.message.contains("unknown tool \"nope\""),
        "{}",
        error.message
    );
    // Arguments are checked against the tool's schema before its handler runs.
    let call = ToolCall {
        id: "c4".into(),
        name: "add".into(),
        arguments: json!({"a": "two", "b": 40}),
    };
    let error = script_error(
        sb.call_tool("parts.js", "calculator", &call, TaskOptions::default())
            .await,
    );
    assert_eq!(error.name, "TypeError");
    assert_eq!(
        error.message,
        r#"invalid arguments for tool "add": "two" is not of type "number" at /a"#
    );
    // The same from inside a script, through registry.call().
    let out = sb
        .call(
            "parts.js",
            "callDirectly",
            &[json!({"a": 1, "b": 2})],
            TaskOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(out, json!({"ok": 3}));
    let out = sb
        .call(
            "parts.js",
            "callDirectly",
            &[json!({"a": 1})],
            TaskOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"error": r#"TypeError: invalid arguments for tool "add": "b" is a required property"#})
    );
    // Asking for a registry that is another kind of export says what it is.
    let error = script_error(sb.list_tools("parts.js", "shout").await);
    assert!(
        error
            .message
            .contains("is not a tool-registry (it is engine)"),
        "{}",
        error.message
    );
}

fn user_turn(text: &str) -> Turn {
    serde_json::from_value(json!({
        "id": "t1",
        "blocks": [{"id": "b1", "kind": "user", "role": "user", "payload": {"text": text}}]
    }))
    .unwrap()
}

#[tokio::test]
async fn js_engines_run_on_turns() {
    let sb = sandbox().await;
    sb.load("parts.js", fixture("agent_parts.js"))
        .await
        .unwrap();
    let out = sb
        .infer(
            "parts.js",
            "shout",
            &user_turn("hello"),
            TaskOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(out.id, "t1");
    assert_eq!(out.blocks.len(), 2);
    assert_eq!(out.blocks[1].kind, BlockKind::LlmText);
    assert_eq!(out.blocks[1].payload["text"], json!("HELLO"));
    let out = sb
        .infer("parts.js", "echo", &user_turn("x"), TaskOptions::default())
        .await
        .unwrap();
    assert_eq!(out.blocks[1].payload["text"], json!("READY"));
}

#[tokio::test]
async fn a_js_middleware_calls_the_host_chain_through_next() {
    let sb = sandbox().await;
    sb.load("parts.js", fixture("agent_parts.js"))
        .await
        .unwrap();
    let next: marionette::sandbox::NextFn = std::sync::Arc::new(|mut turn: Turn| {
        Box::pin(async move {
            assert_eq!(
                turn.metadata["before"],
                json!("tagger"),
                "the middleware ran before next"
            );
            turn.metadata.insert("host".into(), json!("was here"));
            Ok(turn)
        })
    });
    let out = sb
        .run_middleware(
            "parts.js",
            "tagger",
            &user_turn("hi"),
            next,
            TaskOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(out.metadata["before"], json!("tagger"));
    assert_eq!(out.metadata["host"], json!("was here"));
    assert_eq!(out.metadata["after"], json!(true));

    // An error of the host chain reaches the script as a rejection.
    let failing: marionette::sandbox::NextFn = std::sync::Arc::new(|_turn: Turn| {
        Box::pin(async move { Err(Error::host("engine", anyhow::anyhow!("the engine is down"))) })
    });
    let error = script_error(
        sb.run_middleware(
            "parts.js",
            "tagger",
            &user_turn("hi"),
            failing,
            TaskOptions::default(),
        )
        .await,
    );
    assert!(
        error.message.contains("the engine is down"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn the_api_objects_cannot_be_tampered_with() {
    let sb = sandbox().await;
    sb.load(
        "tamper.js",
        r#"import * as m from "marionette";
        import { turns, engines } from "marionette";
        export default () => {
          const attempts = [];
          const attempt = (name, f) => { try { f(); attempts.push(name + ": allowed"); } catch (e) { attempts.push(name + ": " + e.name); } };
          attempt("replace turns.newTurn", () => { turns.newTurn = () => "pwned"; });
          attempt("add to engines", () => { engines.evil = 1; });
          attempt("replace a const", () => { m.consts.BlockKind.USER = "x"; });
          attempt("redefine the module binding", () => { m.turns = {}; });
          return { attempts, kind: m.consts.BlockKind.USER, newTurn: typeof turns.newTurn({}) };
        };"#,
    )
    .await
    .unwrap();
    let out = sb
        .run_main("tamper.js", &json!({}), TaskOptions::default())
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({
            "attempts": [
                "replace turns.newTurn: TypeError",
                "add to engines: TypeError",
                "replace a const: TypeError",
                "redefine the module binding: TypeError"
            ],
            "kind": "user",
            "newTurn": "object"
        })
    );
    // Nothing internal is left on the global object.
    sb.load(
        "globals.js",
        "export default () => Object.getOwnPropertyNames(globalThis).filter((k) => /marionette|native|dispatch/i.test(k));",
    )
    .await
    .unwrap();
    assert_eq!(
        sb.run_main("globals.js", &json!({}), TaskOptions::default())
            .await
            .unwrap(),
        json!([])
    );
}

#[tokio::test]
async fn top_level_code_runs_for_the_load_task() {
    let sb = sandbox().await;
    // A cancelled task right before must not leak into the next load.
    sb.load("hostile.js", fixture("hostile.js")).await.unwrap();
    let turn = Turn::default();
    let never: marionette::sandbox::NextFn =
        std::sync::Arc::new(|_t: Turn| Box::pin(std::future::pending()));
    let _ = sb
        .run_middleware(
            "hostile.js",
            "recordAbort",
            &turn,
            never,
            TaskOptions::timeout(std::time::Duration::from_millis(20)),
        )
        .await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = TaskOptions {
        events: Some(tx),
        ..TaskOptions::default()
    };
    let source = "console.log('top level');\nawait new Promise((r) => setTimeout(r, 5));\nexport const ready = true;";
    let exports = sb.load_with("tla.js", source, options).await.unwrap();
    assert_eq!(exports[0].name, "ready");
    assert!(matches!(rx.try_recv(), Ok(Event::Console { message, .. }) if message == "top level"));
}

/// Each delay a script passes reaches the host clamped as browsers clamp
/// it; measured on tokio's paused clock, which only moves to the next timer
/// due, so the virtual time a timer took is exactly the delay the host got.
#[tokio::test(start_paused = true)]
async fn timer_delays_are_clamped_like_browsers_do() {
    let sb = sandbox().await;
    sb.load(
        "t.js",
        "let fired = false;\n\
         export const wait = (delay) => new Promise((r) => setTimeout(() => r(true), (0, eval)(delay)));\n\
         export const cleared = async () => { clearTimeout(setTimeout(() => { fired = true; }, 1)); await new Promise((r) => setTimeout(r, 5)); return fired; };",
    )
    .await
    .unwrap();
    const MAX_DELAY: u64 = 2_147_483_647;
    for (delay, want) in [
        ("1500", 1500),
        ("2.7", 2),
        ("Infinity", MAX_DELAY),
        ("1e20", MAX_DELAY),
        ("-5", 0),
        ("'soon'", 0),
        ("NaN", 0),
        ("undefined", 0),
    ] {
        let started = tokio::time::Instant::now();
        let out = sb
            .call("t.js", "wait", &[json!(delay)], TaskOptions::default())
            .await
            .unwrap();
        assert_eq!(out, json!(true));
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(want),
            "setTimeout(f, {delay})"
        );
    }
    // A cleared timer never runs its callback.
    assert_eq!(
        sb.call("t.js", "cleared", &[], TaskOptions::default())
            .await
            .unwrap(),
        json!(false)
    );
}

/// A function that returns a plain value ends its task at once (no promise
/// job for its result) only when no promise job waits. One that queued a
/// job still has it run first, as when every result went through a
/// promise: 'job 1' was queued before the result's job and is the task's;
/// 'job 2', queued by it, comes after the task's end and is dropped.
#[tokio::test]
async fn a_plain_result_waits_for_the_jobs_its_call_queued() {
    let sb = sandbox().await;
    let source = "export function queued() {\n  Promise.resolve().then(() => console.log('job 1')).then(() => console.log('job 2'));\n  return 7;\n}\nexport function plain(n) { return n * 2; }\nexport function nothing() {}\n";
    sb.load("jobs.js", source).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = TaskOptions {
        events: Some(tx),
        ..TaskOptions::default()
    };
    let out = sb.call("jobs.js", "queued", &[], options).await.unwrap();
    assert_eq!(out, json!(7));
    let mut lines = Vec::new();
    while let Ok(Event::Console { message, .. }) = rx.try_recv() {
        lines.push(message);
    }
    assert_eq!(lines, vec!["job 1".to_string()]);
    let out = sb
        .call("jobs.js", "plain", &[json!(21)], TaskOptions::default())
        .await
        .unwrap();
    assert_eq!(out, json!(42));
    let out = sb
        .call("jobs.js", "nothing", &[], TaskOptions::default())
        .await
        .unwrap();
    assert_eq!(out, json!(null));
}

/// The usual call runs without the dispatcher's JavaScript (vm.rs,
/// `call_inline`) and must do all that the dispatcher did: the task is live
/// while its function runs (its console lines are delivered, it may ask for
/// a timer), a timer still pending when a plain result ends the task is
/// released (the host keeps nothing), a result that is not
/// plain and a thrown error still settle the task, and a missing script is
/// the task's error.
#[tokio::test]
async fn a_call_made_without_the_dispatcher_does_all_the_dispatcher_did() {
    let sb = sandbox().await;
    let source = "export function leaves(n) {\n\
  console.log('running ' + n);\n\
  setTimeout(() => console.log('late'), 20);\n\
  return n + 1;\n\
}\n\
export function object(n) { return { n }; }\n\
export function text() { return 'a \"quoted\" \\ud800 text'; }\n\
export function throwsPlain() { throw 3; }\n";
    sb.load("inline.js", source).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = TaskOptions {
        events: Some(tx),
        ..TaskOptions::default()
    };
    let out = sb
        .call("inline.js", "leaves", &[json!(1)], options)
        .await
        .unwrap();
    assert_eq!(out, json!(2));
    // The timer is released with the task: the host holds nothing.
    let stats = sb.stats().await.unwrap();
    assert_eq!((stats.tasks, stats.pending_ops), (0, 0), "{stats:?}");
    // The line the call wrote while it ran reached its caller (it was live
    // to its code); its events are delivered before its answer.
    let mut lines = Vec::new();
    while let Ok(Event::Console { message, .. }) = rx.try_recv() {
        lines.push(message);
    }
    assert_eq!(
        lines,
        vec!["running 1".to_string()],
        "the call's console lines"
    );

    let out = sb
        .call("inline.js", "object", &[json!(5)], TaskOptions::default())
        .await
        .unwrap();
    assert_eq!(out, json!({"n": 5}));
    let out = sb
        .call("inline.js", "text", &[], TaskOptions::default())
        .await
        .unwrap();
    assert_eq!(out, json!("a \"quoted\" \u{FFFD} text"));
    let thrown = sb
        .call("inline.js", "throwsPlain", &[], TaskOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&thrown, Error::Script { error, .. } if error.message.contains('3')),
        "{thrown:?}"
    );
    let missing = sb
        .call("nowhere.js", "leaves", &[json!(1)], TaskOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, Error::Script { error, .. } if error.message.contains("nowhere.js")),
        "{missing:?}"
    );
}

/// A call's plain result (a number, a boolean, null, undefined) is written
/// without JSON.stringify (a short call's cost); it must read as
/// JSON.stringify would write it: each value's answer equals what the
/// guest's own JSON.stringify made of it (returned as a string, which does
/// go through JSON.stringify). NaN and the infinities are null, -0 is 0.
/// A call that throws, or names nothing callable, still fails as a script
/// error, from the call's body as from any task's.
#[tokio::test]
async fn a_plain_result_reads_as_json_stringify_writes_it() {
    let sb = sandbox().await;
    let source = "const values = [0, -0, 1, -1, 3, 2 ** 31, -(2 ** 31) - 1, 2 ** 53 + 2, 0.1 + 0.2, 1e21, 1e-7, -1.5e300, 5e-324, NaN, Infinity, -Infinity, true, false, null, undefined];\n\
export const count = () => values.length;\n\
export function value(i) { return values[i]; }\n\
export function stringified(i) { return JSON.stringify(values[i] === undefined ? null : values[i]); }\n\
export function throws() { throw new RangeError('on purpose'); }\n\
export const notAFunction = 1;\n";
    sb.load("plain.js", source).await.unwrap();
    let count = sb
        .call("plain.js", "count", &[], TaskOptions::default())
        .await
        .unwrap();
    let count = count.as_u64().expect("a count");
    assert_eq!(count, 20);
    for i in 0..count {
        let got = sb
            .call("plain.js", "value", &[json!(i)], TaskOptions::default())
            .await
            .unwrap();
        let text = sb
            .call(
                "plain.js",
                "stringified",
                &[json!(i)],
                TaskOptions::default(),
            )
            .await
            .unwrap();
        let want: serde_json::Value =
            serde_json::from_str(text.as_str().expect("JSON text")).expect("JSON");
        assert_eq!(got, want, "value {i}: {text}");
    }
    let thrown = sb
        .call("plain.js", "throws", &[], TaskOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&thrown, Error::Script { error, .. } if error.name == "RangeError" && error.message == "on purpose"),
        "{thrown:?}"
    );
    for name in ["notAFunction", "missing"] {
        let refused = sb
            .call("plain.js", name, &[], TaskOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, Error::Script { error, .. } if error.name == "TypeError" && error.message.contains(name)),
            "{name}: {refused:?}"
        );
    }
}

/// The runtime's copy (native for plain data, JSON text for the rest) has
/// JSON's meaning for every value a script can hand over: the same result
/// to the key order and the sign of zero, the same error, the same getters,
/// traps and `toJSON` calls in the same order (tests/fixtures/copies.js: a
/// list of odd values and 300 random plain ones, each copied the ways a
/// script's values are, against `JSON.parse(JSON.stringify(v))`).
#[tokio::test]
async fn the_runtimes_copy_means_what_json_means() {
    let sb = sandbox().await;
    sb.load("copies.js", fixture("copies.js")).await.unwrap();
    let out = sb
        .call("copies.js", "differences", &[], TaskOptions::default())
        .await
        .unwrap();
    let differences = out["differences"].as_array().expect("a list");
    assert!(differences.is_empty(), "{differences:#?}");
    assert!(out["cases"].as_u64().unwrap() > 350, "{out}");
    let independent = sb
        .call(
            "copies.js",
            "copiesAreIndependent",
            &[],
            TaskOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(independent, json!({"type": "number", "list": [1, 2]}));
}

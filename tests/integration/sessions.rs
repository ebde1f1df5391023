//! Sessions: the tool loop and middleware chain in Rust, driven from
//! scripts (geppetto's module scenarios) and from Rust with JavaScript parts.

use std::sync::Arc;
use std::time::Duration;

use marionette::model::{BlockKind, Event, ToolDefinition, Turn};
use marionette::session::{
    EchoEngine, EventKind, HostTools, Middleware, MiddlewareContext, Next, RunOptions,
    ScriptedEngine, ScriptedResponse, Session, SessionEvent, async_trait,
};
use marionette::{HostServices, Policy, Runtime, Sandbox, TaskOptions};
use serde_json::{Value, json};

use crate::common::fixture;

async fn sandbox() -> Sandbox {
    let shout = HostTools::new("host").register(
        ToolDefinition {
            name: "shout".into(),
            description: "upper-cases text".into(),
            parameters: json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
        },
        |args: Value, _ctx| async move { Ok(json!(format!("{}!", args["text"].as_str().unwrap_or("").to_uppercase()))) },
    );
    let streamer = ScriptedEngine::new(vec![
        ScriptedResponse::text("hello world").chunks(["hel", "lo ", "world"]),
    ]);
    let services = HostServices {
        tools: vec![Arc::new(shout)],
        engines: HostServices::default()
            .engines
            .register("streamer", Arc::new(streamer)),
        ..HostServices::default()
    };
    let sb = Sandbox::with_services(Runtime::shared().unwrap(), Policy::default(), services)
        .await
        .unwrap();
    sb.load("sessions.js", fixture("sessions.js"))
        .await
        .unwrap();
    sb
}

async fn scenario(sb: &Sandbox, name: &str, args: &[Value]) -> Value {
    sb.call("sessions.js", name, args, TaskOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[tokio::test]
async fn turn_helpers_and_consts() {
    let out = scenario(&sandbox().await, "helpersAndConsts", &[]).await;
    assert_eq!(
        out["kinds"],
        json!([
            "system",
            "user",
            "llm_text",
            "tool_call",
            "tool_use",
            "tool_use"
        ])
    );
    assert_eq!(
        out["roles"],
        json!(["system", "user", "assistant", "assistant", "tool", "tool"])
    );
    assert_eq!(
        out["payloads"][3],
        json!({"id": "c1", "name": "add", "args": {"a": 1}})
    );
    assert_eq!(out["payloads"][4], json!({"id": "c1", "result": 3}));
    assert_eq!(
        out["payloads"][5],
        json!({"id": "c2", "result": null, "error": "failed"})
    );
    assert_eq!(out["metadata"], json!({"m": 1}));
    assert_eq!(out["hasIds"], json!(true));
    assert_eq!(
        out["consts"],
        json!(["llm_text", "tool-result", "required", "retry", "abort"])
    );
}

#[tokio::test]
async fn a_run_with_the_echo_engine_and_history_copies() {
    let sb = sandbox().await;
    let out = scenario(&sb, "echoRun", &[]).await;
    // The seed and the final turn are both in the history.
    assert_eq!(out, json!({"text": "pong", "count": 2, "running": false}));
    let out = scenario(&sb, "snapshotsAreCopies", &[]).await;
    assert_eq!(out, json!({"blocks": 2, "turns": 2}));
}

#[tokio::test]
async fn js_and_host_middleware_compose_in_order() {
    let out = scenario(&sandbox().await, "middlewareOrder", &[]).await;
    assert_eq!(
        out["order"],
        json!([
            "outer:before:outer",
            "bare",
            "inner:before:inner",
            "engine",
            "inner:after",
            "outer:after"
        ])
    );
    // The host's systemPrompt middleware ran between them.
    assert_eq!(out["first"]["kind"], "system");
    assert_eq!(out["first"]["payload"]["text"], "be brief");
}

#[tokio::test]
async fn a_middleware_may_call_next_twice() {
    let out = scenario(&sandbox().await, "nextTwice", &[]).await;
    assert_eq!(
        out,
        json!({"engineCalls": 2, "first": "answer 1", "last": "answer 2"})
    );
}

#[tokio::test]
async fn tools_from_js_and_from_the_host() {
    let out = scenario(&sandbox().await, "toolsFromJsAndHost", &[]).await;
    assert_eq!(out["text"], r#"results: 5, "HEY!""#);
    assert_eq!(out["listed"], json!(["add", "upper", "boom", "shout"]));
    assert_eq!(out["direct"], "DIRECT!");
}

#[tokio::test]
async fn bad_arguments_are_a_tool_error_the_model_sees() {
    let out = scenario(&sandbox().await, "badArguments", &[]).await;
    let text = out.as_str().unwrap();
    assert!(text.starts_with("results: error: "), "{text}");
    assert!(
        text.contains(r#"invalid arguments for tool "add""#),
        "{text}"
    );
    assert!(
        text.contains(r#""two" is not of type "number" at /a"#),
        "{text}"
    );
}

#[tokio::test]
async fn hooks_mutate_abort_retry_and_fail_open_or_closed() {
    let sb = sandbox().await;
    let out = scenario(&sb, "hooks", &[json!("mutate")]).await;
    assert_eq!(
        out["text"], "results: 60",
        "args changed to 10+20, result doubled"
    );
    assert_eq!(
        out["seen"],
        json!([r#"before add {"a":1,"b":2} #1"#, "after 30"])
    );

    let out = scenario(&sb, "hooks", &[json!("abort")]).await;
    let text = out["text"].as_str().unwrap();
    assert!(text.contains("not allowed: add"), "{text}");

    let out = scenario(&sb, "hooks", &[json!("retry")]).await;
    let seen: Vec<&str> = out["seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(seen.len(), 3, "retried exactly as told: {seen:?}");
    assert!(
        seen[0].starts_with("error #1: ") && seen[2].starts_with("error #3: "),
        "{seen:?}"
    );
    assert!(out["text"].as_str().unwrap().contains("boom"), "{out}");

    let out = scenario(&sb, "hooks", &[json!("failClosed")]).await;
    let text = out["text"].as_str().unwrap();
    assert!(
        text.starts_with("results: error: ") && text.contains("hook exploded"),
        "{text}"
    );

    let out = scenario(&sb, "hooks", &[json!("failOpen")]).await;
    assert_eq!(out["text"], "results: 3");

    let out = scenario(&sb, "hooks", &[json!("async")]).await;
    assert_eq!(out["text"], "results: error: rejected after the fact");
}

#[tokio::test]
async fn invalid_settings_throw_type_errors_naming_them() {
    let out = scenario(&sandbox().await, "invalidSettings", &[]).await;
    let errors: Vec<&str> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let expect = [
        "invalid toolChoice \"sometimes\"",
        "invalid maxIterations 0",
        "unknown tool loop setting \"colour\"",
        "expected an engine",
        "no engine",
        "no engine named \"nope\" (it provides: echo, streamer)",
        "no middleware named \"nope\" (it provides: systemPrompt)",
        "no tool named \"nope\" (it provides: shout)",
    ];
    assert_eq!(errors.len(), expect.len());
    for (error, expect) in errors.iter().zip(expect) {
        assert!(
            error.starts_with("TypeError: ") && error.contains(expect),
            "{error:?} should mention {expect:?}"
        );
    }
}

#[tokio::test]
async fn reaching_max_iterations_fails_the_run_saying_so() {
    let out = scenario(&sandbox().await, "maxIterations", &[]).await;
    assert!(
        out.as_str().unwrap().contains("max iterations (2) reached"),
        "{out}"
    );
}

#[tokio::test]
async fn run_options_reach_the_contexts_and_the_timeout_is_enforced() {
    let out = scenario(&sandbox().await, "runOptions", &[]).await;
    assert_eq!(out["seen"]["engineTags"], json!({"slow": true}));
    assert_eq!(out["seen"]["middlewareTags"], json!({"slow": true}));
    assert_eq!(out["seen"]["sessionId"], json!(true));
    assert_eq!(out["seen"]["deadline"], "number");
    assert!(
        out["timeout"]
            .as_str()
            .unwrap()
            .starts_with("TimeoutError: "),
        "{out}"
    );
    assert_eq!(out["running"], json!(false));
}

/// A JavaScript engine's context: its keys in order, and its own copy of
/// the tools offered (made when the engine first reads them), which it may
/// change or replace without changing what the next inference is offered
/// or which tools the loop runs.
#[tokio::test]
async fn an_engines_context_holds_its_own_copy_of_the_tools() {
    let out = scenario(&sandbox().await, "engineContext", &[]).await;
    let seen = out["seen"].as_array().expect("two inferences");
    assert_eq!(seen.len(), 2, "{out}");
    for inference in seen {
        assert_eq!(
            inference["keys"],
            json!([
                "sessionId",
                "inferenceId",
                "turnId",
                "tags",
                "tools",
                "toolChoice",
                "signal"
            ]),
            "{out}"
        );
        assert_eq!(inference["names"], json!(["add", "upper", "boom"]), "{out}");
        assert_eq!(inference["firstType"], "object", "{out}");
        assert_eq!(
            inference["jsonTools"],
            json!(["add", "upper", "boom"]),
            "{out}"
        );
        assert_eq!(
            inference["changed"],
            json!(["changed", "upper", "boom", "extra"]),
            "{out}"
        );
        assert_eq!(inference["replaced"], "replaced", "{out}");
        assert_eq!(inference["signal"], true, "{out}");
    }
    assert_eq!(out["text"], "done", "{out}");
    assert_eq!(out["toolUse"], json!({"id": "c1", "result": "X"}), "{out}");
}

#[tokio::test]
async fn start_delivers_every_event_in_order_even_to_late_handlers() {
    let out = scenario(&sandbox().await, "eventsInOrder", &[]).await;
    assert_eq!(
        out["events"],
        json!([
            "start",
            "final:",
            "tool-call",
            "tool-result",
            "start",
            "final:results: 3"
        ])
    );
    assert_eq!(
        out["late"],
        json!([
            "start",
            "final",
            "tool-call",
            "tool-result",
            "start",
            "final"
        ])
    );
}

#[tokio::test]
async fn run_async_and_start_with_a_js_engine_and_js_middleware() {
    let out = scenario(&sandbox().await, "startWithJsEngineAndMiddleware", &[]).await;
    assert_eq!(
        out,
        json!({"a": ["from js", true], "b": ["from js", true], "finals": ["from js"], "turns": 4})
    );
}

#[tokio::test]
async fn parallel_tools_really_overlap() {
    // Each tool waits for the other: the run only finishes if they overlap.
    let out = scenario(&sandbox().await, "parallelTools", &[]).await;
    assert_eq!(out, json!("results: 2, 2"));
}

#[tokio::test]
async fn cancelling_a_run_mid_tool_stops_the_javascript() {
    let out = scenario(&sandbox().await, "cancelMidTool", &[]).await;
    assert_eq!(
        out,
        json!({"during": "started", "error": "AbortError: stop now", "after": "started", "running": false})
    );
}

#[tokio::test]
async fn a_nested_run_started_by_a_cancelled_tool_is_cancelled_with_it() {
    let out = scenario(&sandbox().await, "nestedRunOfACancelledTool", &[]).await;
    assert_eq!(
        out["nested"],
        json!("AbortError: tool \"spawner\" timed out after 20ms"),
        "{out}"
    );
    // Only the run started afterwards asked the inner model.
    assert_eq!(out["innerCalls"], json!(1), "{out}");
    assert_eq!(out["after"], json!("inner answer"), "{out}");
    assert_eq!(
        out["result"],
        json!("results: error: tool \"spawner\" timed out after 20ms"),
        "{out}"
    );
}

/// A context's signal is made when its code first reads it: in its place
/// among the keys, and aborted already, with the attempt's error, when first
/// read after the attempt timed out. Read through an object that inherits
/// from the context, the tools and the signal are the context's own.
#[tokio::test]
async fn a_contexts_signal_read_late_is_aborted_already() {
    let out = scenario(&sandbox().await, "aSignalReadLate", &[]).await;
    assert_eq!(
        out["seen"],
        json!({
            "keys": "toolName,callId,sessionId,inferenceId,tags,deadlineMs,attempt,signal",
            "aborted": true,
            "reason": "AbortError: tool \"slow\" timed out after 20ms",
            "same": true,
        }),
        "{out}"
    );
    assert_eq!(
        out["engineKeys"],
        json!("sessionId,inferenceId,turnId,tags,tools,toolChoice,signal"),
        "{out}"
    );
    assert_eq!(
        out["inherited"],
        json!({"tools": "slow", "signal": true, "own": 0}),
        "{out}"
    );
    assert_eq!(
        out["result"],
        json!("results: error: tool \"slow\" timed out after 20ms"),
        "{out}"
    );
}

#[tokio::test]
async fn code_awaiting_a_run_cancelled_by_its_handler_starts_the_next_run() {
    let out = scenario(&sandbox().await, "cancelFromAHandlerThenRunAgain", &[]).await;
    assert_eq!(
        out,
        json!({"first": "AbortError: enough", "second": "no tools; tools offered: add,upper,boom"})
    );
}

#[tokio::test]
async fn a_run_follows_its_signal() {
    let out = scenario(&sandbox().await, "signalledRuns", &[]).await;
    assert_eq!(out["done"], json!("no tools; tools offered: "));
    assert_eq!(out["aborted"], json!("stop"));
}

/// What a session makes is freed when its last reference goes, not left
/// for the cycle collector, a pass over the whole heap: with 200 sessions
/// at once that pass was a sixth of their time (docs/architecture.md §11).
/// Each scenario runs once (caches and shapes grow to their size), then
/// ten times; the script heap may grow by at most 1 KiB a run. Before,
/// a session with one tool call left 23 KiB in cycles: methods of the
/// registry, the builder, the session and the run that returned their own
/// object, a step's launch and settlement that called each other, a
/// scope's kids that knew their parent, a run's signal, its handlers.
/// (A script can make cycles of its own: `nestedRunOfACancelledTool`
/// resolves a promise with the abort event, whose `target` is the signal
/// that holds the listener. Those are the collector's to free.)
#[tokio::test]
async fn sessions_leave_nothing_for_the_cycle_collector() {
    let sb = sandbox().await;
    let scenarios = [
        ("oneOfMany", vec![json!(7), json!(0)]),
        ("middlewareOrder", vec![]),
        ("eventsInOrder", vec![]),
        ("hooks", vec![json!("mutate")]),
        ("hooks", vec![json!("retry")]),
        ("toolsFromJsAndHost", vec![]),
        ("parallelTools", vec![]),
        ("cancelMidTool", vec![]),
        ("cancelFromAHandlerThenRunAgain", vec![]),
        ("signalledRuns", vec![]),
    ];
    let mut grown = Vec::new();
    for (name, args) in &scenarios {
        scenario(&sb, name, args).await;
        let before = sb.heap_usage().await.unwrap();
        for _ in 0..10 {
            scenario(&sb, name, args).await;
        }
        let after = sb.heap_usage().await.unwrap();
        let per_run = after.bytes.saturating_sub(before.bytes) / 10;
        if per_run > 1024 {
            grown.push(format!("{name}{args:?}: {per_run} bytes a run"));
        }
    }

    // A session the host starts (`sessions.run`): a Rust engine calling a
    // JS tool.
    let rust_session = || async {
        let scripted = ScriptedEngine::new(vec![
            ScriptedResponse::calls().tool_call("c1", "add", json!({"a": 40, "b": 2})),
            ScriptedResponse::text("done"),
        ]);
        let session = Session::builder()
            .engine(Arc::new(scripted))
            .tools(sb.tools("sessions.js", "registry").await.unwrap())
            .build()
            .unwrap();
        session
            .run(Some(seed("add")), RunOptions::default())
            .await
            .unwrap();
    };
    rust_session().await;
    let before = sb.heap_usage().await.unwrap();
    for _ in 0..10 {
        rust_session().await;
    }
    let after = sb.heap_usage().await.unwrap();
    let per_run = after.bytes.saturating_sub(before.bytes) / 10;
    if per_run > 1024 {
        grown.push(format!(
            "a Rust session with a JS tool: {per_run} bytes a run"
        ));
    }
    assert!(grown.is_empty(), "the heap grew: {grown:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_share_one_sandbox() {
    let sb = sandbox().await;
    let runs: Vec<_> = (0..200)
        .map(|i| {
            let sb = sb.clone();
            tokio::spawn(async move {
                sb.call(
                    "sessions.js",
                    "oneOfMany",
                    &[json!(i)],
                    TaskOptions::default(),
                )
                .await
            })
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        assert_eq!(
            run.await.unwrap().unwrap(),
            json!(format!("results: {}", i + 1000))
        );
    }
}

/// The bench's floor under a session loop (`sessions --bare`) is a measure
/// only while it does the session's work: it answers what the session
/// answers, for the same inputs, tool call included.
#[tokio::test]
async fn the_bare_loop_answers_what_the_session_answers() {
    let sb = sandbox().await;
    for i in [0, 7, 41] {
        let args = [json!(i), json!(0)];
        let session = sb
            .call("sessions.js", "oneOfMany", &args, TaskOptions::default())
            .await
            .unwrap();
        let bare = sb
            .call("sessions.js", "bareOfMany", &args, TaskOptions::default())
            .await
            .unwrap();
        assert_eq!(session, json!(format!("results: {}", i + 1000)));
        assert_eq!(bare, session, "input {i}");
    }
}

/// A Rust middleware that records its place around the rest of the chain.
struct Recording;

#[async_trait]
impl Middleware for Recording {
    fn name(&self) -> &str {
        "recording"
    }

    async fn handle(
        &self,
        mut turn: Turn,
        _ctx: MiddlewareContext,
        next: Next,
    ) -> marionette::Result<Turn> {
        turn.metadata.insert("rust".into(), json!("before"));
        let mut out = next(turn).await?;
        let js_ran_inside = out.metadata.get("js") == Some(&json!("after"));
        out.metadata.insert(
            "rust".into(),
            json!(if js_ran_inside {
                "around js"
            } else {
                "js missing"
            }),
        );
        Ok(out)
    }
}

fn seed(text: &str) -> Turn {
    serde_json::from_value(json!({
        "id": "t1",
        "blocks": [{"id": "b1", "kind": "user", "role": "user", "payload": {"text": text}}]
    }))
    .unwrap()
}

#[tokio::test]
async fn rust_sessions_mix_rust_and_js_parts_at_any_depth() {
    let sb = sandbox().await;
    // Rust middleware > JS middleware > Rust engine.
    let session = Session::builder()
        .middleware(Arc::new(Recording))
        .middleware(sb.middleware("sessions.js", "jsMiddleware"))
        .engine(Arc::new(EchoEngine::new("from rust")))
        .build()
        .unwrap();
    let out = session
        .run(Some(seed("hi")), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(out.metadata["rust"], json!("around js"));
    assert_eq!(out.blocks[1].kind, BlockKind::System);
    assert_eq!(
        out.blocks[1].payload["text"],
        json!("js saw 1 blocks in jsMiddleware")
    );
    assert_eq!(out.blocks[2].payload["text"], json!("from rust"));

    // A scripted Rust engine calling JS tools, with a JS engine elsewhere.
    let scripted = ScriptedEngine::new(vec![
        ScriptedResponse::calls().tool_call("c1", "add", json!({"a": 40, "b": 2})),
        ScriptedResponse::text("done"),
    ]);
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let session = Session::builder()
        .engine(Arc::new(scripted))
        .tools(sb.tools("sessions.js", "registry").await.unwrap())
        .build()
        .unwrap();
    let options = RunOptions {
        events: Some(events),
        ..RunOptions::default()
    };
    let out = session.run(Some(seed("add")), options).await.unwrap();
    let tool_use = out
        .blocks
        .iter()
        .find(|b| b.kind == BlockKind::ToolUse)
        .unwrap();
    assert_eq!(tool_use.payload["result"], json!(42));
    let mut kinds = Vec::new();
    while let Ok(e) = received.try_recv() {
        kinds.push(e.kind.name());
    }
    assert_eq!(
        kinds,
        [
            "start",
            "final",
            "tool-call",
            "tool-result",
            "start",
            "final"
        ]
    );

    let js_engine = sb.engine("sessions.js", "shouting");
    let session = Session::builder().engine(js_engine).build().unwrap();
    let out = session
        .run(Some(seed("x")), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(out.blocks[1].payload["text"], json!("JS ENGINE"));
}

/// Calls `function` of sessions.js with a listener, and returns its result
/// with the session events the listener got, in order.
async fn call_listening(function: &str, args: &[Value]) -> (Value, Vec<SessionEvent>) {
    let sb = sandbox().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = TaskOptions {
        events: Some(tx),
        ..TaskOptions::default()
    };
    let out = sb
        .call("sessions.js", function, args, options)
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let Event::Session(e) = e {
            events.push(e);
        }
    }
    (out, events)
}

#[tokio::test]
async fn a_scripts_session_events_reach_the_rust_caller_too() {
    let (_, events) = call_listening("eventsInOrder", &[]).await;
    let types: Vec<_> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        types,
        [
            "start",
            "final",
            "tool-call",
            "tool-result",
            "start",
            "final"
        ]
    );
}

/// A run started by `run()` (no run object, so no script handlers) makes
/// its events for a host that listens all the same, with what the loop
/// gives them: the final texts, the tool call's input, the tool's result.
#[tokio::test]
async fn a_run_started_by_run_reports_every_event_to_a_host_that_listens() {
    let (out, events) = call_listening("oneOfMany", &[json!(7), json!(0)]).await;
    assert_eq!(out, json!("results: 1007"));
    let seen: Vec<String> = events
        .iter()
        .map(|e| match &e.kind {
            EventKind::Final { text, .. } => format!("final:{text}"),
            EventKind::ToolCall { tool_call } => {
                format!("tool-call:{}:{}", tool_call.name, tool_call.input)
            }
            EventKind::ToolResult { tool_result } => {
                format!("tool-result:{}", tool_result.result)
            }
            other => other.name().to_string(),
        })
        .collect();
    assert_eq!(
        seen,
        [
            "start",
            "final:",
            "tool-call:add:{\"a\":7,\"b\":1000}",
            "tool-result:1007",
            "start",
            "final:results: 1007"
        ]
    );
}

#[tokio::test]
async fn cancelling_a_rust_run_cancels_its_javascript_tool() {
    let sb = sandbox().await;
    let scripted = ScriptedEngine::new(vec![ScriptedResponse::calls().tool_call(
        "c1",
        "slowTool",
        json!({}),
    )]);
    sb.load(
        "slow.js",
        "import { tools } from 'marionette';\n\
         export let state = 'idle';\n\
         export const slow = tools.createRegistry().register({ name: 'slowTool', handler: async () => {\n\
           state = 'running';\n\
           await new Promise((r) => setTimeout(r, 60000));\n\
           state = 'finished';\n\
         } });\n\
         export const getState = () => state;",
    )
    .await
    .unwrap();
    let session = Session::builder()
        .engine(Arc::new(scripted))
        .tools(sb.tools("slow.js", "slow").await.unwrap())
        .build()
        .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let options = RunOptions {
        cancel: Some(cancel.clone()),
        ..RunOptions::default()
    };
    let run = tokio::spawn({
        let session = session.clone();
        async move { session.run(Some(seed("go")), options).await }
    });
    let state = |sb: Sandbox| async move {
        sb.call("slow.js", "getState", &[], TaskOptions::default())
            .await
            .unwrap()
    };
    // Probes, not sleeps: ask until the tool is waiting on its timer.
    for _ in 0..100_000 {
        if state(sb.clone()).await == json!("running") {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(state(sb.clone()).await, json!("running"));
    assert_eq!(sb.stats().await.unwrap().pending_ops, 1, "the tool's timer");
    cancel.cancel();
    assert!(matches!(
        run.await.unwrap(),
        Err(marionette::Error::Canceled { .. })
    ));
    assert!(!session.is_running());
    // The tool's task was cancelled in the guest: its timer was released
    // (a tool left running would hold it for a minute) and it never
    // finishes.
    for _ in 0..100_000 {
        if sb.stats().await.unwrap().pending_ops == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let stats = sb.stats().await.unwrap();
    assert_eq!(
        (stats.tasks, stats.pending_ops),
        (0, 0),
        "the tool's task still lives in the guest"
    );
    assert_eq!(state(sb.clone()).await, json!("running"));
}

#[tokio::test]
async fn scripts_reach_host_engines_by_name_and_see_partials_as_they_stream() {
    let out = scenario(&sandbox().await, "hostEngines", &[]).await;
    assert_eq!(out["streamed"], "hello world");
    assert_eq!(
        out["partials"],
        json!([["hel", "hel"], ["lo ", "hello "], ["world", "hello world"]])
    );
    assert_eq!(out["byDefault"], "READY");
    assert_eq!(out["routed"], "READY");
}

#[tokio::test]
async fn cancelling_a_rust_run_interrupts_a_js_tool_that_never_yields() {
    // No deadline that could end the loop within the test: only the
    // interrupt of the run's timeout can.
    let policy = Policy {
        entry_deadline: Duration::from_secs(3600),
        run_deadline: None,
        ..Policy::default()
    };
    let sb = Sandbox::new(policy).await.unwrap();
    sb.load("sessions.js", fixture("sessions.js"))
        .await
        .unwrap();
    let scripted = ScriptedEngine::new(vec![ScriptedResponse::calls().tool_call(
        "c1",
        "spin",
        json!({}),
    )]);
    let session = Session::builder()
        .engine(Arc::new(scripted))
        .tools(sb.tools("sessions.js", "spinning").await.unwrap())
        .build()
        .unwrap();
    // The timeout is what is tested: it must interrupt the tool. It is long
    // enough for the tool to start on any machine (checked below).
    let options = RunOptions {
        timeout: Some(Duration::from_secs(2)),
        ..RunOptions::default()
    };
    let result = session.run(Some(seed("spin")), options).await;
    assert!(
        matches!(result, Err(marionette::Error::Timeout { .. })),
        "{result:?}"
    );
    // The owner is free: the spinning tool was interrupted, not waited out.
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        sb.call("sessions.js", "echoRun", &[], TaskOptions::default()),
    )
    .await
    .expect("the owner is still busy: the tool was not interrupted")
    .unwrap();
    assert_eq!(out["text"], "pong");
    assert_eq!(
        sb.call("sessions.js", "spinsStarted", &[], TaskOptions::default())
            .await
            .unwrap(),
        json!(1),
        "the tool ran"
    );
    assert_eq!(sb.stats().await.unwrap().rebuilds, 0);
}

/// A session whose JavaScript engine routes to the host's provider engine.
const ROUTED_AGENT: &str = r#"
import { createSession, engines, tools, turns } from "marionette";

const router = engines.fromFunction((turn, ctx) => engines.host().infer(turn, ctx));
const registry = tools.createRegistry()
  .register({
    name: "add",
    description: "the add tool",
    parameters: { type: "object" },
    handler: ({ a, b }) => { console.log(`add(${a}, ${b})`); return a + b; },
  })
  .register({ name: "weather", description: "the weather tool", parameters: { type: "object" }, handler: () => "sunny" });

export default async function main() {
  const run = createSession({ engine: router, tools: registry }).start(turns.newTurn({ blocks: [turns.newUserBlock("hi")] }));
  const partials = [];
  run.on("partial", (e) => partials.push(e.delta));
  const out = await run.promise;
  return { text: out.blocks.at(-1).payload.text, partials };
}
"#;

/// Issue 13: `engines.host().infer(turn, ctx)` from a JS engine passes the
/// session's tools, tool choice and event stream on to the host engine (the
/// provider's request carries the tools; its partials reach the run), and
/// `console.*` in a tool handler reaches the task's events.
#[tokio::test]
async fn a_js_engine_routing_to_a_provider_passes_tools_and_streams_and_tool_console_is_seen() {
    use crate::fake_provider::{FakeProvider, Reply};
    use marionette::engines::{OpenAiConfig, OpenAiEngine};

    let server = FakeProvider::start(vec![
        Reply::sse_fixture("openai_tool_calls.sse"),
        Reply::sse_fixture("openai_text.sse"),
    ])
    .await;
    let engine = OpenAiEngine::new(OpenAiConfig {
        base_url: format!("{}/v1", server.url),
        api_key: Some("sk-test-key-0123456789".into()),
        model: "gpt-test".into(),
        timeout: Duration::from_secs(10),
        ..OpenAiConfig::default()
    })
    .unwrap();
    let services = HostServices {
        engines: marionette::session::EngineRegistry::new().register("openai", Arc::new(engine)),
        ..HostServices::default()
    };
    let sb = Sandbox::with_services(Runtime::shared().unwrap(), Policy::default(), services)
        .await
        .unwrap();
    sb.load("routed.js", ROUTED_AGENT).await.unwrap();
    let (sink, mut events) = tokio::sync::mpsc::unbounded_channel();
    let options = TaskOptions {
        events: Some(sink),
        ..TaskOptions::default()
    };
    let out = sb.run_main("routed.js", &json!({}), options).await.unwrap();
    assert_eq!(out["text"], "Hello, world!");
    assert_eq!(out["partials"], json!(["Hello", ", world", "!"]));

    let requests = server.requests();
    let names: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .expect("the provider was offered tools")
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["add", "weather"]);

    let mut console = Vec::new();
    let mut kinds = Vec::new();
    while let Ok(event) = events.try_recv() {
        match event {
            Event::Console { message, .. } => console.push(message),
            Event::Session(e) => kinds.push(e.kind.name()),
            _ => {}
        }
    }
    assert_eq!(console, ["add(2, 3)"]);
    assert!(kinds.contains(&"partial"), "{kinds:?}");
    assert_eq!(kinds.first(), Some(&"start"), "{kinds:?}");
}

//! Tool execution: validation, timeouts, retries, parallelism, abort.

use std::time::Duration;

use super::*;

#[tokio::test]
async fn invalid_arguments_are_a_tool_error_the_model_sees() {
    let engine = call_then_done("add", json!({"a": "x", "b": 2}));
    let out = build(engine, calculator(), ToolLoopSettings::default())
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(
        tool_uses(&out)[0]["error"],
        r#"invalid arguments for tool "add": "x" is not of type "number" at /a"#
    );
}

#[tokio::test]
async fn unknown_tool_is_a_tool_error() {
    let engine = call_then_done("sqrt", json!({}));
    let out = build(engine, calculator(), ToolLoopSettings::default())
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(
        tool_uses(&out)[0]["error"],
        r#"unknown tool "sqrt" (tools: add, mul)"#
    );
}

fn never_returns(dropped: Dropped) -> HostTools {
    HostTools::new("slow").register(def("slow", Value::Null), move |_, _| {
        let flag = dropped.guard();
        async move {
            let _flag = flag;
            std::future::pending::<()>().await;
            Ok(Value::Null)
        }
    })
}

#[tokio::test]
async fn execution_timeout_is_enforced_and_drops_the_call() {
    let dropped = Dropped::default();
    let settings = ToolLoopSettings {
        execution_timeout_ms: 50,
        ..Default::default()
    };
    let session = build(
        call_then_done("slow", json!({})),
        never_returns(dropped.clone()),
        settings,
    );
    let out = session
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(
        tool_uses(&out)[0]["error"],
        r#"tool "slow" timed out after 50ms"#
    );
    assert!(dropped.wait().await, "the tool's future was dropped");
}

#[tokio::test]
async fn retry_runs_exactly_n_times_with_exponential_backoff() {
    let flaky = Flaky::default();
    let settings = ToolLoopSettings {
        tool_error_handling: ToolErrorHandling::Retry,
        retry_max_retries: 3,
        retry_backoff_ms: 100,
        retry_backoff_factor: 2.0,
        ..Default::default()
    };
    let session = build(
        call_then_done("flaky", json!({})),
        flaky.tools(u32::MAX),
        settings,
    );
    let started = tokio::time::Instant::now();
    let out = session
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(flaky.calls(), 4, "one attempt and three retries");
    assert_eq!(*flaky.attempts.lock().unwrap(), [1, 2, 3, 4]);
    assert_eq!(
        tool_uses(&out)[0]["error"],
        "Error: failure 4 (after 4 attempts)"
    );
    // 100 + 200 + 400 ms of backoff at least (no upper bound: the
    // machine may be slow).
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
}

#[tokio::test]
async fn retry_stops_at_the_first_success() {
    let flaky = Flaky::default();
    let settings = ToolLoopSettings {
        tool_error_handling: ToolErrorHandling::Retry,
        ..Default::default()
    };
    let session = build(call_then_done("flaky", json!({})), flaky.tools(2), settings);
    let out = session
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(flaky.calls(), 3);
    assert_eq!(tool_uses(&out)[0]["result"], "ok");
}

#[tokio::test]
async fn continue_reports_the_error_once() {
    let flaky = Flaky::default();
    let session = build(
        call_then_done("flaky", json!({})),
        flaky.tools(1),
        ToolLoopSettings::default(),
    );
    let out = session
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(flaky.calls(), 1);
    assert_eq!(tool_uses(&out)[0]["error"], "Error: failure 1");
}

#[tokio::test]
async fn abort_handling_fails_the_run_naming_the_tool() {
    let flaky = Flaky::default();
    let settings = ToolLoopSettings {
        tool_error_handling: ToolErrorHandling::Abort,
        ..Default::default()
    };
    let engine = call_then_done("flaky", json!({}));
    let session = build(engine.clone(), flaky.tools(1), settings);
    let error = session
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap_err();
    assert!(
        error.to_string().ends_with(
            r#"tool "flaky" (call c1) failed and toolErrorHandling is abort: Error: failure 1"#
        ),
        "{error}"
    );
    let RunError::ToolAborted { turn, .. } = run_error(&error) else {
        panic!("{error}")
    };
    assert_eq!(tool_uses(turn)[0]["error"], "Error: failure 1");
    assert_eq!(engine.used(), 1, "the loop stopped");
    assert_eq!(session.turn_count(), 1, "the seed only");
}

/// `meet` waits at a barrier of two: two calls finish only if they overlap.
#[tokio::test]
async fn tools_of_one_step_run_concurrently() {
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let tools = HostTools::new("meet").register(def("meet", Value::Null), move |args, _| {
        let barrier = barrier.clone();
        async move {
            barrier.wait().await;
            Ok(args)
        }
    });
    let engine = scripted(vec![
        ScriptedResponse::calls()
            .tool_call("c1", "meet", json!(1))
            .tool_call("c2", "meet", json!(2)),
        ScriptedResponse::text("done"),
    ]);
    let settings = ToolLoopSettings {
        max_parallel_tools: 2,
        ..Default::default()
    };
    let out = build(engine, tools, settings)
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    let results: Vec<Value> = tool_uses(&out)
        .into_iter()
        .map(|u| u["result"].clone())
        .collect();
    assert_eq!(results, [json!(1), json!(2)]);
}

#[tokio::test]
async fn results_are_appended_in_call_order_whatever_finishes_first() {
    // Each call waits until all three have started, then finishes after the
    // ones started later: `fast` first, `slow` last.
    let started = Arc::new(tokio::sync::Barrier::new(3));
    let finished = Arc::new(tokio::sync::Mutex::new(Vec::<String>::new()));
    let order = Arc::new(tokio::sync::Notify::new());
    let tools = HostTools::new("ordered").register(def("wait", Value::Null), {
        let (started, finished, order) = (started.clone(), finished.clone(), order.clone());
        move |args, _| {
            let (started, finished, order) = (started.clone(), finished.clone(), order.clone());
            async move {
                let rank = args.as_u64().unwrap_or(0) as usize;
                started.wait().await;
                // Finish when `rank` calls have finished before this one.
                loop {
                    let next = order.notified();
                    if finished.lock().await.len() == rank {
                        break;
                    }
                    next.await;
                }
                finished.lock().await.push(rank.to_string());
                order.notify_waiters();
                Ok(json!(rank))
            }
        }
    });
    let engine = scripted(vec![
        ScriptedResponse::calls()
            .tool_call("slow", "wait", json!(2))
            .tool_call("mid", "wait", json!(1))
            .tool_call("fast", "wait", json!(0)),
        ScriptedResponse::text("done"),
    ]);
    let (sink, mut events) = tokio::sync::mpsc::unbounded_channel();
    let session = build(engine, tools, ToolLoopSettings::default());
    let options = RunOptions {
        events: Some(sink),
        ..Default::default()
    };
    // The barrier of three is passed only if the calls overlap.
    let out = session.run(Some(user_turn("x")), options).await.unwrap();
    let ids: Vec<Value> = tool_uses(&out)
        .into_iter()
        .map(|u| u["id"].clone())
        .collect();
    assert_eq!(ids, [json!("slow"), json!("mid"), json!("fast")]);
    let finished: Vec<String> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ToolResult { tool_result } => Some(tool_result.id),
            _ => None,
        })
        .collect();
    assert_eq!(
        finished,
        ["fast", "mid", "slow"],
        "tool-result events come as calls finish"
    );
}

#[tokio::test]
async fn a_tool_that_panics_is_a_tool_error_not_a_hung_run() {
    let tools = HostTools::new("panics").register(def("boom", Value::Null), |_, _| async move {
        if true {
            panic!("the tool's own bug");
        }
        Ok(Value::Null)
    });
    let session = build(
        call_then_done("boom", json!({})),
        tools,
        ToolLoopSettings::default(),
    );
    // The timeout only keeps a regression from hanging the suite. Before,
    // a panicking host part never answered its operation: a tool's call
    // ended only at its execution timeout (as "timed out", which this test
    // tells apart), and a panicking middleware hung the run.
    let options = RunOptions {
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let out = session.run(Some(user_turn("x")), options).await.unwrap();
    let error = tool_uses(&out)[0]["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("the host operation panicked: the tool's own bug"),
        "{error}"
    );
}

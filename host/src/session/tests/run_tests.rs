//! Runs as a whole: events, history, one run at a time, cancellation,
//! timeouts, the builder.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;

#[tokio::test]
async fn events_come_in_order_with_start_and_final_per_inference() {
    let engine = scripted(vec![
        ScriptedResponse::calls()
            .chunks(["thinking", " hard"])
            .tool_call("c1", "add", json!({"a": 1, "b": 2})),
        ScriptedResponse::text("3"),
    ]);
    let session = build(engine, calculator(), ToolLoopSettings::default());
    let mut handle = session
        .start(Some(user_turn("x")), RunOptions::default())
        .unwrap();
    while !handle.is_finished() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Taken after the run ended: every event is still there.
    let events = drain(&mut handle.events().unwrap());
    assert!(handle.events().is_none(), "the receiver is taken once");
    let out = handle.result().await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        kinds,
        [
            "start",
            "partial",
            "partial",
            "final",
            "tool-call",
            "tool-result",
            "start",
            "final"
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.session_id == session.id() && e.turn_id == "t1")
    );
    let (first, second) = (&events[0].inference_id, &events[6].inference_id);
    assert_ne!(first, second);
    assert!(events[..6].iter().all(|e| &e.inference_id == first));
    assert_eq!(
        events[2].kind,
        EventKind::Partial {
            delta: " hard".into(),
            completion: "thinking hard".into()
        }
    );
    assert_eq!(
        events[3].kind,
        EventKind::Final {
            text: "thinking hard".into(),
            usage: None,
        }
    );
    let EventKind::ToolCall { tool_call } = &events[4].kind else {
        panic!()
    };
    assert_eq!(
        (tool_call.name.as_str(), &tool_call.input),
        ("add", &json!({"a": 1, "b": 2}))
    );
    let EventKind::ToolResult { tool_result } = &events[5].kind else {
        panic!()
    };
    assert_eq!(
        (tool_result.result.clone(), tool_result.error.clone()),
        (json!(3), None)
    );
    assert_eq!(
        events[7].kind,
        EventKind::Final {
            text: "3".into(),
            usage: None
        }
    );
    assert_eq!(session.latest().unwrap(), out);
}

#[tokio::test]
async fn a_failed_run_emits_an_error_event() {
    let session = Session::builder()
        .engine(scripted(vec![ScriptedResponse::fail("boom")]))
        .build()
        .unwrap();
    let (sink, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = RunOptions {
        events: Some(sink),
        ..Default::default()
    };
    session
        .run(Some(user_turn("x")), options)
        .await
        .unwrap_err();
    let events = drain(&mut rx);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["start", "error"]);
    assert_eq!(events[1].inference_id, events[0].inference_id);
    let EventKind::Error { error } = &events[1].kind else {
        panic!()
    };
    assert!(error.contains("boom"), "{error}");
}

#[tokio::test]
async fn history_snapshots_are_copies() {
    let session = Session::builder()
        .engine(Arc::new(EchoEngine::default()))
        .build()
        .unwrap();
    session
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    let mut latest = session.latest().unwrap();
    latest.blocks.clear();
    let mut all = session.turns();
    all[0].id = "changed".into();
    all.clear();
    assert_eq!(session.latest().unwrap().blocks.len(), 2);
    assert_eq!(session.turn(0).unwrap().id, "t1");
}

#[tokio::test]
async fn a_second_concurrent_run_is_rejected() {
    let slow = scripted(vec![
        ScriptedResponse::text("late").delay(Duration::from_secs(3600)),
    ]);
    let session = Session::builder().engine(slow).build().unwrap();
    let handle = session
        .start(Some(user_turn("x")), RunOptions::default())
        .unwrap();
    assert!(session.is_running());
    let error = session
        .run(Some(user_turn("y")), RunOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(run_error(&error), RunError::AlreadyRunning));
    assert!(
        error.to_string().contains("already has an active run"),
        "{error}"
    );
    assert!(session.start(None, RunOptions::default()).is_err());
    assert_eq!(
        session.turn_count(),
        1,
        "the rejected seed was not appended"
    );
    assert!(session.cancel_active());
    assert!(matches!(handle.result().await, Err(Error::Canceled { .. })));
    assert!(!session.is_running());
}

fn hanging_session(dropped: Dropped) -> Session {
    let tools = HostTools::new("hang").register(def("hang", Value::Null), move |_, _| {
        let flag = dropped.guard();
        async move {
            let _flag = flag;
            std::future::pending::<()>().await;
            Ok(Value::Null)
        }
    });
    let settings = ToolLoopSettings {
        execution_timeout_ms: u64::MAX / 4,
        ..Default::default()
    };
    build(call_then_done("hang", json!({})), tools, settings)
}

/// Waits until the run's tool call started.
async fn until_tool_call(events: &mut tokio::sync::mpsc::UnboundedReceiver<SessionEvent>) {
    while let Some(event) = events.recv().await {
        if event.kind.name() == "tool-call" {
            tokio::task::yield_now().await;
            return;
        }
    }
    panic!("the run ended before calling its tool");
}

#[tokio::test]
async fn cancel_stops_a_run_and_drops_its_tool_call() {
    let dropped = Dropped::default();
    let session = hanging_session(dropped.clone());
    let mut handle = session
        .start(Some(user_turn("x")), RunOptions::default())
        .unwrap();
    let mut events = handle.events().unwrap();
    until_tool_call(&mut events).await;
    dropped.started().await;
    handle.cancel("the user left");
    // Bounded, so that a cancel that does not stop the run fails the test
    // instead of hanging it (the tool never returns on its own).
    let error = tokio::time::timeout(Duration::from_secs(60), handle.result())
        .await
        .expect("the cancelled run ended")
        .unwrap_err();
    let Error::Canceled { op, reason } = &error else {
        panic!("{error}")
    };
    assert_eq!(reason.as_deref(), Some("the user left"));
    assert_eq!(op, &format!("session {}: run", session.id()));
    assert!(dropped.wait().await, "the tool's future was dropped");
    assert_eq!(session.turns(), [user_turn("x")]);
    assert!(!session.is_running());
    let last = drain(&mut events).pop().unwrap();
    assert_eq!(last.kind.name(), "error");
}

#[tokio::test]
async fn a_caller_token_cancels_a_run() {
    let session = hanging_session(Dropped::default());
    let token = CancellationToken::new();
    let (sink, mut events) = tokio::sync::mpsc::unbounded_channel();
    let options = RunOptions {
        cancel: Some(token.clone()),
        events: Some(sink),
        ..Default::default()
    };
    let run = session.run(Some(user_turn("x")), options);
    let cancel = async {
        until_tool_call(&mut events).await;
        token.cancel();
    };
    let (result, ()) =
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(run, cancel) })
            .await
            .expect("the cancelled run ended");
    assert!(matches!(result, Err(Error::Canceled { .. })));
    assert!(!session.is_running());
}

#[tokio::test]
async fn a_run_timeout_stops_it() {
    let dropped = Dropped::default();
    let session = hanging_session(dropped.clone());
    let options = RunOptions {
        timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    let error = session
        .run(Some(user_turn("x")), options)
        .await
        .unwrap_err();
    let Error::Timeout { after, .. } = error else {
        panic!("{error}")
    };
    assert_eq!(after, Duration::from_secs(2));
    assert!(dropped.wait().await);
    assert_eq!(session.turn_count(), 1, "the seed only");
    // The session is free for the next run.
    assert!(session.start(None, RunOptions::default()).is_ok());
}

#[tokio::test]
async fn dropping_the_run_future_frees_the_session() {
    let dropped = Dropped::default();
    let session = hanging_session(dropped.clone());
    let (sink, mut events) = tokio::sync::mpsc::unbounded_channel();
    let options = RunOptions {
        events: Some(sink),
        ..Default::default()
    };
    let run = session.run(Some(user_turn("x")), options);
    // The run is dropped once it waits in its hanging tool.
    tokio::select! {
        ended = run => panic!("the run ended on its own: {ended:?}"),
        () = async {
            until_tool_call(&mut events).await;
            dropped.started().await;
        } => {}
    }
    assert!(dropped.wait().await, "the tool's future was dropped");
    assert!(!session.is_running());
}

#[tokio::test]
async fn contexts_carry_tags_and_the_deadline() {
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    let tools = HostTools::new("ctx").register(def("ctx", Value::Null), move |_, ctx| {
        *record.lock().unwrap() = Some(ctx);
        async { Ok(Value::Null) }
    });
    let session = build(
        call_then_done("ctx", json!({})),
        tools,
        ToolLoopSettings::default(),
    );
    let mut tags = Map::new();
    tags.insert("user".into(), json!("ada"));
    let options = RunOptions {
        tags,
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    session.run(Some(user_turn("x")), options).await.unwrap();
    let ctx = seen.lock().unwrap().clone().unwrap();
    assert_eq!(
        (ctx.tool_name.as_str(), ctx.call_id.as_str(), ctx.attempt),
        ("ctx", "c1", 1)
    );
    assert_eq!(ctx.tags["user"], "ada");
    assert_eq!(ctx.session_id, session.id());
    assert!(ctx.deadline_ms.is_some() && !ctx.inference_id.is_empty());
}

#[tokio::test]
async fn builder_errors_are_clear() {
    let e = Session::builder().build().unwrap_err().to_string();
    assert!(e.contains("no engine"), "{e}");
    let e = Session::builder()
        .engine(Arc::new(EchoEngine::default()))
        .tools(Arc::new(calculator()))
        .tools(Arc::new(
            HostTools::new("other")
                .register(def("add", Value::Null), |_, _| async { Ok(Value::Null) }),
        ))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(r#"tool "add" is defined by two tool sets: "calculator" and "other""#),
        "{e}"
    );
    let e = Session::builder()
        .engine(Arc::new(EchoEngine::default()))
        .tool_loop(ToolLoopSettings {
            max_iterations: 0,
            ..Default::default()
        })
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("maxIterations must be a positive integer"),
        "{e}"
    );
    let empty = Session::builder()
        .engine(Arc::new(EchoEngine::default()))
        .build()
        .unwrap();
    let e = empty.run(None, RunOptions::default()).await.unwrap_err();
    assert!(matches!(run_error(&e), RunError::NoTurn));
}

//! The loop itself: engines, the middleware chain, iterations, tool choice.

use super::*;

#[tokio::test]
async fn echo_run_appends_seed_and_result() {
    let session = Session::builder()
        .engine(Arc::new(EchoEngine::default()))
        .build()
        .unwrap();
    let out = session
        .run(Some(user_turn("hi")), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(out.blocks.len(), 2);
    assert_eq!(out.blocks[1].kind, BlockKind::LlmText);
    assert_eq!(out.blocks[1].payload["text"], "READY");
    assert_eq!(out.id, "t1", "the run keeps the turn's id");
    assert_eq!(session.turn_count(), 2, "the seed, then the result");
    assert_eq!(session.turn(0).unwrap(), user_turn("hi"));
    assert_eq!(session.latest().unwrap(), out);
    assert!(!session.is_running());
}

#[tokio::test]
async fn scripted_tool_loop_with_a_rust_tool() {
    let spy = Spy::new(call_then_done("add", json!({"a": 1, "b": 2})));
    let session = build(spy.clone(), calculator(), ToolLoopSettings::default());
    let out = session
        .run(Some(user_turn("1+2?")), RunOptions::default())
        .await
        .unwrap();
    let kinds: Vec<BlockKind> = out.blocks.iter().map(|b| b.kind).collect();
    use BlockKind::*;
    assert_eq!(kinds, [User, ToolCall, ToolUse, LlmText]);
    assert_eq!(
        tool_uses(&out)[0],
        json!({"id": "c1", "result": 3})
            .as_object()
            .unwrap()
            .clone()
    );
    assert_eq!(out.blocks[3].payload["text"], "done");
    let seen = spy.seen();
    assert_eq!(seen.len(), 2, "two iterations");
    assert_eq!(seen[0].0, ["add", "mul"]);
}

/// Records `NAME-before` and `NAME-after` around `next`.
struct Recorder {
    name: String,
    log: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Middleware for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, turn: Turn, ctx: MiddlewareContext, next: Next) -> Result<Turn> {
        assert_eq!(ctx.middleware_name, self.name);
        self.log
            .lock()
            .unwrap()
            .push(format!("{}-before", self.name));
        let out = next(turn).await;
        self.log
            .lock()
            .unwrap()
            .push(format!("{}-after", self.name));
        out
    }
}

/// An engine that logs `engine` and echoes.
struct LoggingEngine(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl Engine for LoggingEngine {
    fn name(&self) -> &str {
        "logging"
    }

    async fn infer(&self, turn: Turn, ctx: InferenceContext) -> Result<Turn> {
        self.0.lock().unwrap().push("engine".into());
        EchoEngine::default().infer(turn, ctx).await
    }
}

#[tokio::test]
async fn first_middleware_is_outermost() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let recorder = |name: &str| -> Arc<dyn Middleware> {
        Arc::new(Recorder {
            name: name.into(),
            log: log.clone(),
        })
    };
    let session = Session::builder()
        .engine(Arc::new(LoggingEngine(log.clone())))
        .middleware(recorder("outer"))
        .middleware(recorder("inner"))
        .build()
        .unwrap();
    session
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [
            "outer-before",
            "inner-before",
            "engine",
            "inner-after",
            "outer-after"
        ]
    );
}

/// Calls `next` twice (say, a self-check) and returns the second answer.
struct Twice;

#[async_trait]
impl Middleware for Twice {
    fn name(&self) -> &str {
        "twice"
    }

    async fn handle(&self, turn: Turn, _ctx: MiddlewareContext, next: Next) -> Result<Turn> {
        let first = next(turn.clone()).await?;
        assert_eq!(first.blocks.last().unwrap().payload["text"], "first");
        // `next` is 'static: it can run in another task.
        tokio::spawn(next(turn)).await.unwrap()
    }
}

#[tokio::test]
async fn a_middleware_may_call_next_twice() {
    let engine = scripted(vec![
        ScriptedResponse::text("first"),
        ScriptedResponse::text("second"),
    ]);
    let session = Session::builder()
        .engine(engine.clone())
        .middleware(Arc::new(Twice))
        .build()
        .unwrap();
    let out = session
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(engine.used(), 2);
    assert_eq!(out.blocks.len(), 2, "the second answer replaced the first");
    assert_eq!(out.blocks[1].payload["text"], "second");
}

#[tokio::test]
async fn system_prompt_stays_single_across_iterations() {
    let session = Session::builder()
        .engine(call_then_done("add", json!({"a": 1, "b": 1})))
        .middleware(Arc::new(SystemPrompt::new("be exact")))
        .tools(Arc::new(calculator()))
        .build()
        .unwrap();
    let out = session
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    let systems = out
        .blocks
        .iter()
        .filter(|b| b.kind == BlockKind::System)
        .count();
    assert_eq!(systems, 1);
    assert_eq!(out.blocks[0].payload["text"], "be exact");
}

#[tokio::test]
async fn max_iterations_reached_is_an_error_and_leaves_history() {
    let always_calls = (0..3)
        .map(|i| {
            ScriptedResponse::calls().tool_call(format!("c{i}"), "add", json!({"a": 1, "b": 1}))
        })
        .collect();
    let engine = scripted(always_calls);
    let settings = ToolLoopSettings {
        max_iterations: 2,
        ..Default::default()
    };
    let session = build(engine.clone(), calculator(), settings);
    let error = session
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("max iterations (2) reached"),
        "{error}"
    );
    let RunError::MaxIterations { max: 2, turn } = run_error(&error) else {
        panic!("{error}")
    };
    assert_eq!(
        tool_uses(turn).len(),
        1,
        "the last inference's calls were not executed"
    );
    assert_eq!(engine.used(), 2);
    assert_eq!(session.turns(), [user_turn("x")], "only the seed");
}

#[tokio::test]
async fn tool_choice_none_offers_no_tools_and_runs_none() {
    let spy = Spy::new(call_then_done("add", json!({"a": 1, "b": 2})));
    let settings = ToolLoopSettings {
        tool_choice: ToolChoice::None,
        ..Default::default()
    };
    let session = build(spy.clone(), calculator(), settings);
    let out = session
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(spy.seen(), [(vec![], ToolChoice::None)]);
    assert!(tool_uses(&out).is_empty(), "the call stays pending");
    assert_eq!(out.blocks.last().unwrap().kind, BlockKind::ToolCall);
}

#[tokio::test]
async fn tool_choice_required_applies_to_the_first_inference() {
    let spy = Spy::new(call_then_done("add", json!({"a": 1, "b": 2})));
    let settings = ToolLoopSettings {
        tool_choice: ToolChoice::Required,
        ..Default::default()
    };
    build(spy.clone(), calculator(), settings)
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    let choices: Vec<ToolChoice> = spy.seen().into_iter().map(|(_, c)| c).collect();
    assert_eq!(choices, [ToolChoice::Required, ToolChoice::Auto]);
}

#[tokio::test]
async fn allowed_tools_filter_offers_and_calls() {
    let spy = Spy::new(scripted(vec![
        ScriptedResponse::calls()
            .tool_call("c1", "mul", json!({"a": 2, "b": 3}))
            .tool_call("c2", "add", json!({"a": 2, "b": 3})),
        ScriptedResponse::text("done"),
    ]));
    let settings = ToolLoopSettings {
        allowed_tools: Some(vec!["add".into()]),
        ..Default::default()
    };
    let out = build(spy.clone(), calculator(), settings)
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(spy.seen()[0].0, ["add"]);
    let uses = tool_uses(&out);
    assert_eq!(
        uses[0]["error"],
        r#"tool "mul" is not allowed (allowed tools: add)"#
    );
    assert_eq!(uses[0]["result"], Value::Null);
    assert_eq!(uses[1]["result"], 5.0);
    assert!(uses[1].get("error").is_none());
}

#[tokio::test]
async fn arguments_sent_as_json_text_are_parsed() {
    let engine = scripted(vec![
        ScriptedResponse::calls().tool_call("c1", "add", json!("{\"a\": 4, \"b\": 5}")),
        ScriptedResponse::text("done"),
    ]);
    let out = build(engine, calculator(), ToolLoopSettings::default())
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(tool_uses(&out)[0]["result"], 9.0);
}

#[tokio::test]
async fn engine_failure_leaves_history_and_the_seed_can_be_rerun() {
    let engine = scripted(vec![
        ScriptedResponse::fail("provider down"),
        ScriptedResponse::text("ok"),
    ]);
    let session = Session::builder().engine(engine).build().unwrap();
    let error = session
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("provider down"), "{error}");
    assert_eq!(session.turns(), [user_turn("x")], "the seed only");
    let out = session.run(None, RunOptions::default()).await.unwrap();
    assert_eq!(out.blocks[1].payload["text"], "ok");
    assert_eq!(session.turn_count(), 2);
}

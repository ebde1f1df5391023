//! Tool hooks: decisions, retries, the fail-open / fail-closed policy.

use std::time::Duration;

use super::*;

/// Hooks that answer with fixed JSON, as a JavaScript hook would, and log
/// the payloads they saw.
#[derive(Default)]
struct JsonHooks {
    before: Value,
    after: Value,
    on_error: Value,
    /// `beforeToolCall` throws.
    before_throws: bool,
    fail_open: bool,
    seen: Mutex<Vec<(String, HookPayload)>>,
}

impl JsonHooks {
    fn seen(&self, hook: &str) -> Vec<HookPayload> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(h, _)| h == hook)
            .map(|(_, p)| p.clone())
            .collect()
    }

    fn log(&self, hook: &str, payload: HookPayload) {
        self.seen.lock().unwrap().push((hook.into(), payload));
    }
}

#[async_trait]
impl ToolHooks for JsonHooks {
    async fn before_tool_call(&self, payload: HookPayload) -> Result<BeforeDecision> {
        self.log("before", payload);
        if self.before_throws {
            return Err(Error::host(
                "hook",
                anyhow::anyhow!("policy service unreachable"),
            ));
        }
        Ok(BeforeDecision::from_json(&self.before).unwrap())
    }

    async fn after_tool_call(&self, payload: HookPayload) -> Result<AfterDecision> {
        self.log("after", payload);
        Ok(AfterDecision::from_json(&self.after).unwrap())
    }

    async fn on_tool_error(&self, payload: HookPayload) -> Result<ErrorDecision> {
        self.log("error", payload);
        Ok(ErrorDecision::from_json(&self.on_error).unwrap())
    }

    fn fail_open(&self) -> bool {
        self.fail_open
    }
}

async fn run_with(
    hooks: Arc<JsonHooks>,
    tools: HostTools,
    tool: &str,
    args: Value,
) -> Result<Turn> {
    Session::builder()
        .engine(call_then_done(tool, args))
        .tools(Arc::new(tools))
        .hooks(hooks)
        .build()
        .unwrap()
        .run(Some(user_turn("x")), RunOptions::default())
        .await
}

#[tokio::test]
async fn before_abort_skips_the_call() {
    let flaky = Flaky::default();
    let hooks = Arc::new(JsonHooks {
        before: json!({"action": "abort", "error": "not today"}),
        ..Default::default()
    });
    let out = run_with(hooks.clone(), flaky.tools(0), "flaky", json!({}))
        .await
        .unwrap();
    assert_eq!(flaky.calls(), 0);
    assert_eq!(tool_uses(&out)[0]["error"], "not today");
    assert!(hooks.seen("after").is_empty());
    let before = &hooks.seen("before")[0];
    assert_eq!((before.call.id.as_str(), before.attempt), ("c1", 1));
}

#[tokio::test]
async fn before_may_change_the_arguments() {
    let hooks = Arc::new(JsonHooks {
        before: json!({"call": {"args": {"a": 10, "b": 20}}}),
        ..Default::default()
    });
    let out = run_with(hooks, calculator(), "add", json!({"a": 1, "b": 2}))
        .await
        .unwrap();
    assert_eq!(tool_uses(&out)[0]["result"], 30.0);
    assert_eq!(
        tool_uses(&out)[0]["id"],
        "c1",
        "the result still answers the model's call"
    );
}

#[tokio::test]
async fn changed_arguments_are_validated() {
    let hooks = Arc::new(JsonHooks {
        before: json!({"call": {"name": "mul", "args": {"a": true}}}),
        ..Default::default()
    });
    let out = run_with(hooks, calculator(), "add", json!({"a": 1, "b": 2}))
        .await
        .unwrap();
    let error = tool_uses(&out)[0]["error"].as_str().unwrap().to_string();
    assert!(
        error.starts_with(r#"invalid arguments for tool "mul": "#),
        "{error}"
    );
    assert!(
        error.contains(r#"true is not of type "number" at /a"#),
        "{error}"
    );
}

#[tokio::test]
async fn after_may_replace_the_result() {
    let hooks = Arc::new(JsonHooks {
        after: json!({"result": "redacted"}),
        ..Default::default()
    });
    let out = run_with(hooks.clone(), calculator(), "add", json!({"a": 1, "b": 2}))
        .await
        .unwrap();
    assert_eq!(tool_uses(&out)[0]["result"], "redacted");
    let after = &hooks.seen("after")[0];
    assert_eq!(after.result, Some(json!(3)));
    assert!(after.duration_ms.is_some());
}

#[tokio::test]
async fn after_may_turn_a_result_into_an_error() {
    let hooks = Arc::new(JsonHooks {
        after: json!({"error": "too big"}),
        ..Default::default()
    });
    let out = run_with(hooks, calculator(), "add", json!({"a": 1, "b": 2}))
        .await
        .unwrap();
    assert_eq!(tool_uses(&out)[0]["error"], "too big");
    assert_eq!(tool_uses(&out)[0]["result"], Value::Null);
}

#[tokio::test]
async fn on_error_retry_retries_with_its_backoff() {
    let flaky = Flaky::default();
    let hooks = Arc::new(JsonHooks {
        on_error: json!({"action": "retry", "backoffMs": 250}),
        ..Default::default()
    });
    let started = tokio::time::Instant::now();
    let out = run_with(hooks.clone(), flaky.tools(2), "flaky", json!({}))
        .await
        .unwrap();
    assert_eq!(tool_uses(&out)[0]["result"], "ok");
    assert_eq!(*flaky.attempts.lock().unwrap(), [1, 2, 3]);
    let errors: Vec<(u32, Option<String>)> = hooks
        .seen("error")
        .into_iter()
        .map(|p| (p.attempt, p.error))
        .collect();
    assert_eq!(
        errors,
        [
            (1, Some("Error: failure 1".into())),
            (2, Some("Error: failure 2".into()))
        ]
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(hooks.seen("after")[0].attempt, 3);
}

#[tokio::test]
async fn hook_retries_are_capped() {
    let flaky = Flaky::default();
    let hooks = Arc::new(JsonHooks {
        on_error: json!({"action": "retry", "backoffMs": 0}),
        ..Default::default()
    });
    let session = Session::builder()
        .engine(call_then_done("flaky", json!({})))
        .tools(Arc::new(flaky.tools(u32::MAX)))
        .hooks(hooks)
        .tool_loop(ToolLoopSettings {
            max_hook_retries: 3,
            ..Default::default()
        })
        .build()
        .unwrap();
    let out = session
        .run(Some(user_turn("x")), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(flaky.calls(), 4);
    let error = tool_uses(&out)[0]["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("more than maxHookRetries (3) retries"),
        "{error}"
    );
}

#[tokio::test]
async fn on_error_abort_fails_the_run() {
    let flaky = Flaky::default();
    let hooks = Arc::new(JsonHooks {
        on_error: json!({"action": "abort"}),
        ..Default::default()
    });
    let error = run_with(hooks, flaky.tools(1), "flaky", json!({}))
        .await
        .unwrap_err();
    let RunError::ToolAborted { by, .. } = run_error(&error) else {
        panic!("{error}")
    };
    assert_eq!(*by, "the onToolError hook aborted the run");
}

#[tokio::test]
async fn a_failing_hook_fails_the_call_by_default() {
    let flaky = Flaky::default();
    let hooks = Arc::new(JsonHooks {
        before_throws: true,
        ..Default::default()
    });
    let out = run_with(hooks, flaky.tools(0), "flaky", json!({}))
        .await
        .unwrap();
    assert_eq!(flaky.calls(), 0, "fail-closed: the call did not run");
    assert_eq!(
        tool_uses(&out)[0]["error"],
        "the beforeToolCall hook failed: Error: policy service unreachable"
    );
}

#[tokio::test]
async fn a_failing_hook_is_ignored_when_fail_open() {
    let flaky = Flaky::default();
    let hooks = Arc::new(JsonHooks {
        before_throws: true,
        fail_open: true,
        ..Default::default()
    });
    let out = run_with(hooks, flaky.tools(0), "flaky", json!({}))
        .await
        .unwrap();
    assert_eq!(flaky.calls(), 1);
    assert_eq!(tool_uses(&out)[0]["result"], "ok");
}

//! The sandbox: limits are contained, traps rebuild the instance, callers
//! can time out and cancel, and every caller gets exactly one answer.

use std::sync::Arc;
use std::time::Duration;

use marionette::model::Turn;
use marionette::sandbox::NextFn;
use marionette::{Error, Limit, Policy, Sandbox, TaskOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::fixture;

async fn hostile(policy: Policy) -> Sandbox {
    let sb = Sandbox::new(policy).await.expect("sandbox");
    sb.load("hostile.js", fixture("hostile.js"))
        .await
        .expect("load");
    sb
}

async fn call(sb: &Sandbox, function: &str) -> marionette::Result<serde_json::Value> {
    sb.call("hostile.js", function, &[], TaskOptions::default())
        .await
}

/// The sandbox answers a normal call correctly.
async fn assert_serves(sb: &Sandbox) {
    let out = sb
        .run_main(
            "hostile.js",
            &json!({"after": "trouble"}),
            TaskOptions::default(),
        )
        .await
        .expect("a normal call right after");
    assert_eq!(out, json!({"ok": true, "echo": {"after": "trouble"}}));
}

#[tokio::test]
async fn deep_recursion_traps_and_the_instance_is_rebuilt() {
    let sb = hostile(Policy::default()).await;
    assert_eq!(call(&sb, "count").await.unwrap(), json!(1));
    match call(&sb, "recurse").await {
        Err(Error::Trapped { limit, message, op }) => {
            assert_eq!(limit, Some(Limit::Stack), "{message}");
            assert!(op.contains("recurse"), "{op}");
        }
        other => panic!("expected a stack trap, got {other:?}"),
    }
    assert_serves(&sb).await;
    // The script was reloaded into a fresh instance: its state starts over.
    assert_eq!(call(&sb, "count").await.unwrap(), json!(1));
}

#[tokio::test]
async fn allocation_loops_hit_the_memory_limit_and_the_sandbox_serves_after() {
    let policy = Policy {
        memory_limit: 64 << 20,
        ..Policy::default()
    };
    let sb = hostile(policy).await;
    for function in ["allocate", "allocateStrings"] {
        match call(&sb, function).await {
            Err(Error::Limit {
                limit: Limit::Memory,
                ..
            }) => {}
            // Past QuickJS's own limit, linear memory may refuse to grow first.
            Err(Error::Trapped {
                limit: Some(Limit::Memory),
                ..
            }) => {}
            other => panic!("{function}: expected the memory limit, got {other:?}"),
        }
        assert_serves(&sb).await;
    }
}

#[tokio::test]
async fn an_infinite_loop_is_interrupted_at_the_deadline_and_the_vm_stays_usable() {
    let policy = Policy {
        entry_deadline: Duration::from_millis(200),
        ..Policy::default()
    };
    let sb = hostile(policy).await;
    assert_eq!(call(&sb, "count").await.unwrap(), json!(1));
    for function in ["spin", "spinLater"] {
        match call(&sb, function).await {
            Err(Error::Limit {
                limit: Limit::Deadline,
                detail,
                ..
            }) => assert!(detail.contains("200ms"), "{detail}"),
            other => panic!("{function}: expected the deadline, got {other:?}"),
        }
        assert_serves(&sb).await;
    }
    // A soft stop keeps the instance: module state survived.
    assert_eq!(call(&sb, "count").await.unwrap(), json!(2));
}

#[tokio::test]
async fn a_trap_fails_every_task_of_the_instance_and_only_those() {
    let sb = hostile(Policy::default()).await;
    let waiting = {
        let sb = sb.clone();
        tokio::spawn(async move { call(&sb, "waitLong").await })
    };
    // Let the waiting task reach its timer before the trap.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(matches!(
        call(&sb, "recurse").await,
        Err(Error::Trapped { .. })
    ));
    match waiting.await.unwrap() {
        Err(Error::Trapped { op, limit, .. }) => {
            assert!(op.contains("waitLong"), "{op}");
            assert_eq!(limit, Some(Limit::Stack));
        }
        other => panic!("the waiting task should have failed with the trap, got {other:?}"),
    }
    assert_serves(&sb).await;
}

/// A host chain that never answers: the middleware waits on it forever.
fn never() -> NextFn {
    Arc::new(|_turn: Turn| Box::pin(std::future::pending()))
}

async fn last_abort(sb: &Sandbox) -> serde_json::Value {
    // The cancellation reaches the guest just after the caller got its answer.
    for _ in 0..200 {
        let seen = call(sb, "lastAbort").await.unwrap();
        if !seen.is_null() {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    json!(null)
}

#[tokio::test]
async fn a_timeout_answers_the_caller_and_cancels_the_task_in_the_guest() {
    let sb = hostile(Policy::default()).await;
    let options = TaskOptions::timeout(Duration::from_millis(50));
    match sb
        .run_middleware(
            "hostile.js",
            "recordAbort",
            &Turn::default(),
            never(),
            options,
        )
        .await
    {
        Err(Error::Timeout { after, op }) => {
            assert_eq!(after, Duration::from_millis(50));
            assert!(op.contains("recordAbort"), "{op}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The task was cancelled in the guest: the promise it awaited rejected.
    assert_eq!(
        last_abort(&sb).await,
        json!("AbortError: the caller stopped waiting")
    );
    assert_serves(&sb).await;
}

#[tokio::test]
async fn cancelling_interrupts_running_javascript() {
    // A deadline far away: only the cancellation can stop the loop.
    let policy = Policy {
        entry_deadline: Duration::from_secs(120),
        ..Policy::default()
    };
    let sb = hostile(policy).await;
    let token = CancellationToken::new();
    let options = TaskOptions {
        cancel: Some(token.clone()),
        ..TaskOptions::default()
    };
    let spinning = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.call("hostile.js", "spin", &[], options).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    token.cancel();
    assert!(matches!(
        spinning.await.unwrap(),
        Err(Error::Canceled { .. })
    ));
    // The owner is free again only if the loop was really interrupted.
    assert_serves(&sb).await;
    assert_eq!(
        call(&sb, "count").await.unwrap(),
        json!(1),
        "the instance was kept"
    );
}

#[tokio::test]
async fn dropping_the_call_cancels_the_task() {
    let sb = hostile(Policy::default()).await;
    let turn = Turn::default();
    let call = sb.run_middleware(
        "hostile.js",
        "recordAbort",
        &turn,
        never(),
        TaskOptions::default(),
    );
    // Poll it long enough to start, then drop it.
    assert!(
        tokio::time::timeout(Duration::from_millis(30), call)
            .await
            .is_err()
    );
    assert_eq!(
        last_abort(&sb).await,
        json!("AbortError: the caller stopped waiting")
    );
}

#[tokio::test]
async fn shutdown_answers_every_caller_and_then_refuses_work() {
    let sb = hostile(Policy::default()).await;
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let sb = sb.clone();
            tokio::spawn(async move { call(&sb, "waitLong").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    sb.shutdown().await;
    assert!(sb.is_closed());
    for waiter in waiters {
        assert!(matches!(waiter.await.unwrap(), Err(Error::Closed { .. })));
    }
    assert!(matches!(
        call(&sb, "count").await,
        Err(Error::Closed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_concurrent_tasks_interleave_in_one_vm() {
    let sb = Sandbox::new(Policy::default()).await.unwrap();
    sb.load(
        "conc.js",
        "const sleep = (ms) => new Promise((r) => setTimeout(r, ms));\n\
         export default async ({ i }) => { await sleep(i % 7); const a = i * 2; await sleep(1); return { i, a }; };",
    )
    .await
    .unwrap();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let sb = sb.clone();
            tokio::spawn(async move {
                sb.run_main("conc.js", &json!({ "i": i }), TaskOptions::default())
                    .await
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().unwrap(), json!({"i": i, "a": i * 2}));
    }
}

#[tokio::test]
async fn a_result_nested_too_deeply_is_a_typed_limit() {
    let sb = Sandbox::new(Policy::default()).await.unwrap();
    sb.load(
        "deep.js",
        "export default ({ depth }) => { let v = 0; for (let i = 0; i < depth; i++) v = [v]; return v; };",
    )
    .await
    .unwrap();
    let ok = sb
        .run_main("deep.js", &json!({"depth": 100}), TaskOptions::default())
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    match sb
        .run_main("deep.js", &json!({"depth": 200}), TaskOptions::default())
        .await
    {
        Err(Error::Limit {
            limit: Limit::Output,
            detail,
            ..
        }) => assert!(detail.contains("128 levels"), "{detail}"),
        other => panic!("expected the output limit, got {other:?}"),
    }
    assert_serves_plain(&sb).await;
}

async fn assert_serves_plain(sb: &Sandbox) {
    sb.load("plain.js", "export default () => 'fine';")
        .await
        .unwrap();
    assert_eq!(
        sb.run_main("plain.js", &json!({}), TaskOptions::default())
            .await
            .unwrap(),
        json!("fine")
    );
}

#[tokio::test]
async fn bad_input_from_the_host_side_is_a_clear_error() {
    let sb = Sandbox::new(Policy::default()).await.unwrap();
    sb.load(
        "m.js",
        "export default (x) => x; export const id = (x) => x;",
    )
    .await
    .unwrap();
    // A turn whose payload is not an object cannot be built in Rust (types),
    // but a tool call with malformed JSON arguments can reach the guest from
    // other hosts; from Rust, arguments are always JSON. Unknown names are
    // the common mistake:
    let error = sb.list_tools("m.js", "id").await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("is not a tool-registry (it is function)"),
        "{error}"
    );
    let error = sb.exports("nope.js").await.unwrap_err();
    assert!(matches!(error, Error::Script { .. }), "{error}");
}

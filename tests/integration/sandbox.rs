//! The sandbox: limits are contained, traps rebuild the instance, callers
//! can time out and cancel, and every caller gets exactly one answer.

use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use marionette::model::Turn;
use marionette::sandbox::NextFn;
use marionette::session::{ScriptedEngine, ScriptedResponse};
use marionette::{Error, HostServices, Limit, Policy, Runtime, Sandbox, TaskOptions};
use serde_json::json;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;
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

/// The guest keeps small blocks it frees on lists for the next request of
/// their size (guest/src/alloc.rs), a bounded amount: the rest goes back to
/// the allocator, which merges it into room for large blocks. Here a
/// script fills most of its heap with small objects and drops them, then
/// fills it with buffers of 1 MiB, four times over: each time the room the
/// small objects left serves the buffers. With nothing sent back (lists
/// without a bound), the first fill of buffers finds the memory held by
/// the lists and runs out.
#[tokio::test]
async fn memory_freed_in_small_objects_serves_large_ones() {
    let policy = Policy {
        memory_limit: 40 << 20,
        ..Policy::default()
    };
    // QuickJS's heap may take 32 MiB of the 40.
    let sb = Sandbox::new(policy).await.expect("sandbox");
    let source = "export function small(n) {\n\
                    const keep = [];\n\
                    for (let i = 0; i < n; i++) keep.push(i % 2 ? [i] : { i, s: 'small ' + i });\n\
                    return keep.length;\n\
                  }\n\
                  export function large(n) {\n\
                    const keep = [];\n\
                    for (let i = 0; i < n; i++) keep.push(new ArrayBuffer(1 << 20));\n\
                    return keep.length;\n\
                  }";
    sb.load("fill.js", source).await.expect("load");
    for round in 0..4 {
        for (function, n) in [("small", 150_000), ("large", 20)] {
            let out = sb
                .call("fill.js", function, &[json!(n)], TaskOptions::default())
                .await;
            assert_eq!(
                out.as_ref().ok(),
                Some(&json!(n)),
                "round {round}: {function}({n}) answered {out:?}"
            );
        }
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

/// Waits until the sandbox holds `n` host operations in flight (the tasks
/// reached their timers): a probe of the owner's state, not a sleep.
async fn until_pending_ops(sb: &Sandbox, n: usize) {
    for _ in 0..100_000 {
        if sb.stats().await.unwrap().pending_ops == n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the sandbox never held {n} host operations");
}

#[tokio::test]
async fn a_trap_fails_every_task_of_the_instance_and_only_those() {
    let sb = hostile(Policy::default()).await;
    // Several tasks wait on their timers when the instance traps.
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let sb = sb.clone();
            tokio::spawn(async move { call(&sb, "waitLong").await })
        })
        .collect();
    until_pending_ops(&sb, 3).await;
    assert!(matches!(
        call(&sb, "recurse").await,
        Err(Error::Trapped { .. })
    ));
    for waiting in waiting {
        match waiting.await.unwrap() {
            Err(Error::Trapped { op, limit, .. }) => {
                assert!(op.contains("waitLong"), "{op}");
                assert_eq!(limit, Some(Limit::Stack));
            }
            other => panic!("the waiting task should have failed with the trap, got {other:?}"),
        }
    }
    let stats = sb.stats().await.unwrap();
    assert_eq!((stats.tasks, stats.pending_ops, stats.rebuilds), (0, 0, 1));
    assert_serves(&sb).await;
}

/// A host chain that never answers: the middleware waits on it forever.
fn never() -> NextFn {
    Arc::new(|_turn: Turn| Box::pin(std::future::pending()))
}

async fn last_abort(sb: &Sandbox) -> serde_json::Value {
    // The cancellation reaches the guest just after the caller got its
    // answer (it is posted to the owner by a task of its own): ask again,
    // yielding to it, until the guest has seen it.
    for _ in 0..10_000 {
        let seen = call(sb, "lastAbort").await.unwrap();
        if !seen.is_null() {
            return seen;
        }
        tokio::task::yield_now().await;
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

/// A host chain that answers at once and says it was called.
fn answering(called: UnboundedSender<()>) -> NextFn {
    Arc::new(move |turn: Turn| {
        let called = called.clone();
        Box::pin(async move {
            let _ = called.send(());
            Ok(turn)
        })
    })
}

/// Waits for the owner to be free, failing (instead of hanging) when it is
/// stuck in a loop nothing stopped.
async fn assert_serves_soon(sb: &Sandbox) {
    tokio::time::timeout(Duration::from_secs(60), assert_serves(sb))
        .await
        .expect("the owner is still busy: the loop was not interrupted");
}

#[tokio::test]
async fn cancelling_interrupts_running_javascript() {
    // No deadline that could end the loop within the test: only the
    // cancellation's interrupt can.
    let policy = Policy {
        entry_deadline: Duration::from_secs(3600),
        run_deadline: None,
        ..Policy::default()
    };
    let sb = hostile(policy).await;
    assert_eq!(call(&sb, "count").await.unwrap(), json!(1));
    let token = CancellationToken::new();
    let options = TaskOptions {
        cancel: Some(token.clone()),
        ..TaskOptions::default()
    };
    let (called, mut was_called) = unbounded_channel();
    let spinning = {
        let sb = sb.clone();
        tokio::spawn(async move {
            sb.run_middleware(
                "hostile.js",
                "spinAfterNext",
                &Turn::default(),
                answering(called),
                options,
            )
            .await
        })
    };
    // The host answered `next`: the entry that loops is the next one the
    // owner runs (the answer is queued before the cancellation below).
    was_called.recv().await.unwrap();
    token.cancel();
    assert!(matches!(
        spinning.await.unwrap(),
        Err(Error::Canceled { .. })
    ));
    // The owner is free again only if the loop was really interrupted.
    assert_serves_soon(&sb).await;
    // The looping entry ran, and the promise job it left ran in that same
    // entry, after the stop, among the stopped task's leftover jobs: it
    // ends well within their budget, so the instance was kept.
    assert_eq!(
        call(&sb, "spinsStarted").await.unwrap(),
        json!({"spins": 1, "jobsRun": 1}),
    );
    assert_eq!(
        call(&sb, "count").await.unwrap(),
        json!(2),
        "the instance was kept"
    );
    assert_eq!(sb.stats().await.unwrap().rebuilds, 0);
}

#[tokio::test]
async fn dropping_the_call_cancels_the_task() {
    let sb = hostile(Policy::default()).await;
    let turn = Turn::default();
    let (called, mut was_called) = unbounded_channel();
    let waits_forever: NextFn = Arc::new(move |_turn: Turn| {
        let _ = called.send(());
        Box::pin(std::future::pending())
    });
    let call = sb.run_middleware(
        "hostile.js",
        "recordAbort",
        &turn,
        waits_forever,
        TaskOptions::default(),
    );
    // Poll the call until the middleware is waiting on the host, then drop it.
    tokio::select! {
        out = call => panic!("the call ended: {out:?}"),
        _ = was_called.recv() => {}
    }
    assert_eq!(
        last_abort(&sb).await,
        json!("AbortError: the caller stopped waiting")
    );
}

/// A host chain that says it was called, then answers once `release` fires.
fn held(called: UnboundedSender<()>, release: oneshot::Receiver<()>) -> NextFn {
    let release = Arc::new(Mutex::new(Some(release)));
    Arc::new(move |turn: Turn| {
        let _ = called.send(());
        let release = release.lock().unwrap().take();
        Box::pin(async move {
            if let Some(release) = release {
                let _ = release.await;
            }
            Ok(turn)
        })
    })
}

/// [`Policy::queue_capacity`]: with the owner busy and the queue full, a
/// call fails at once with `Rejected`; the answer of a host operation a
/// task awaits is not shed but waits for room, and its task completes.
#[tokio::test]
async fn a_full_queue_rejects_calls_but_never_sheds_a_host_answer() {
    let policy = Policy {
        queue_capacity: 4,
        entry_deadline: Duration::from_secs(3600),
        run_deadline: None,
        ..Policy::default()
    };
    let sb = hostile(policy).await;
    // Task A waits in a middleware for a host answer held back until the
    // queue is full.
    let (a_called, mut a_was_called) = unbounded_channel();
    let (release_a, a_release) = oneshot::channel();
    let a = {
        let sb = sb.clone();
        tokio::spawn(async move {
            let options = TaskOptions::default();
            sb.run_middleware(
                "hostile.js",
                "recordAbort",
                &Turn::default(),
                held(a_called, a_release),
                options,
            )
            .await
        })
    };
    a_was_called.recv().await.unwrap();
    // Call B keeps the owner busy: it loops until cancelled. Polled once,
    // it is queued, and every call queued after it waits behind it.
    let token = CancellationToken::new();
    let options = TaskOptions {
        cancel: Some(token.clone()),
        ..TaskOptions::default()
    };
    let mut b = Box::pin(sb.call("hostile.js", "spin", &[], options));
    assert!(futures::poll!(b.as_mut()).is_pending());
    // Queue calls (each is queued when first polled) until one is refused.
    let mut queued = Vec::new();
    let mut rejected = None;
    for _ in 0..=4 {
        let mut call = Box::pin(sb.call("hostile.js", "count", &[], TaskOptions::default()));
        match futures::poll!(call.as_mut()) {
            Poll::Pending => queued.push(call),
            Poll::Ready(Err(e @ Error::Rejected { .. })) => {
                rejected = Some(e);
                break;
            }
            Poll::Ready(other) => panic!("a queued call answered at once: {other:?}"),
        }
    }
    let rejected = rejected.expect("no call was rejected: the queue took more than its capacity");
    assert!(
        matches!(&rejected, Error::Rejected { capacity: 4, .. }),
        "{rejected}"
    );
    // A's answer comes while the queue is full: it must wait, not be shed.
    release_a.send(()).unwrap();
    token.cancel();
    assert!(matches!(b.await, Err(Error::Canceled { .. })));
    tokio::time::timeout(Duration::from_secs(60), async {
        for call in queued {
            call.await.expect("a queued call");
        }
        a.await.unwrap().expect("task A got its host answer");
    })
    .await
    .expect("the owner is stuck, or task A's host answer was shed");
}

/// What the host provides reaches scripts by name, in the first instance
/// and in the one rebuilt after a trap: `configure` runs no JavaScript, and
/// the runtime reads the host's list when a script first asks (once per
/// instance, since every instance starts from the snapshot's empty list).
#[tokio::test]
async fn scripts_see_the_host_engines_in_every_instance_and_only_those() {
    use marionette::session::EchoEngine;

    const ASKS: &str = r#"
        import { engines, turns } from 'marionette';
        export async function ask(name) {
            const out = await engines.host(name).infer(turns.newTurn({ blocks: [turns.newUserBlock('hi')] }));
            return out.blocks[out.blocks.length - 1].payload.text;
        }
        export function absent() {
            try { engines.host('absent'); } catch (e) { return e.message; }
            return 'no error';
        }
    "#;
    let services = HostServices {
        engines: HostServices::default()
            .engines
            .register("mine", Arc::new(EchoEngine::new("from mine"))),
        ..HostServices::default()
    };
    let sb = Sandbox::with_services(Runtime::shared().unwrap(), Policy::default(), services)
        .await
        .unwrap();
    sb.load("hostile.js", fixture("hostile.js")).await.unwrap();
    sb.load("asks.js", ASKS).await.unwrap();
    for round in ["first instance", "rebuilt instance"] {
        let answer = sb
            .call("asks.js", "ask", &[json!("mine")], TaskOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{round}: {e:?}"));
        assert_eq!(answer, json!("from mine"), "{round}");
        let refused = sb
            .call("asks.js", "absent", &[], TaskOptions::default())
            .await
            .unwrap();
        assert_eq!(
            refused,
            json!(
                "engines.host: the host provides no engine named \"absent\" (it provides: echo, mine)"
            ),
            "{round}"
        );
        assert!(matches!(
            call(&sb, "recurse").await,
            Err(Error::Trapped { .. })
        ));
    }
    assert_eq!(sb.stats().await.unwrap().rebuilds, 2);
}

/// After a trap, scripts are reloaded in a fresh instance: a script
/// replaced before the trap comes back as its last version, and a script
/// whose reload fails is dropped while the others serve.
#[tokio::test]
async fn a_trap_reloads_the_last_version_of_each_script_and_drops_one_that_fails() {
    // The engine answers once: a script that infers at its top level loads
    // the first time and fails when reloaded.
    let once = ScriptedEngine::new(vec![ScriptedResponse::text("ready")]);
    let services = HostServices {
        engines: HostServices::default()
            .engines
            .register("once", Arc::new(once)),
        ..HostServices::default()
    };
    let sb = Sandbox::with_services(Runtime::shared().unwrap(), Policy::default(), services)
        .await
        .unwrap();
    sb.load("hostile.js", fixture("hostile.js")).await.unwrap();
    sb.load("version.js", "export default () => 1;")
        .await
        .unwrap();
    sb.load("version.js", "export default () => 2;")
        .await
        .unwrap();
    sb.load(
        "once.js",
        "import { engines, turns } from 'marionette';\n\
         await engines.host('once').infer(turns.newTurn({ blocks: [turns.newUserBlock('hi')] }));\n\
         export default () => 'loaded';",
    )
    .await
    .unwrap();
    assert_eq!(sb.stats().await.unwrap().scripts, 3);
    assert!(matches!(
        call(&sb, "recurse").await,
        Err(Error::Trapped { .. })
    ));
    assert_serves(&sb).await;
    assert_eq!(
        sb.run_main("version.js", &json!({}), TaskOptions::default())
            .await
            .unwrap(),
        json!(2),
        "the replaced script came back as its last version"
    );
    // The failed reload settles when the engine's refusal comes back.
    for _ in 0..100_000 {
        if sb.stats().await.unwrap().scripts == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(sb.stats().await.unwrap().scripts, 2, "once.js was dropped");
    match sb
        .run_main("once.js", &json!({}), TaskOptions::default())
        .await
    {
        Err(Error::Script { error, .. }) => {
            assert!(error.message.contains("once.js"), "{}", error.message)
        }
        other => panic!("once.js should be gone, got {other:?}"),
    }
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
    until_pending_ops(&sb, 5).await;
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

/// Sandboxes share a pool of owner threads; a sandbox whose JavaScript
/// spins to its deadline holds up another on the same thread for one entry
/// (at most that deadline), not for all its queued work.
#[tokio::test]
async fn a_spinning_sandbox_holds_up_another_on_its_thread_for_one_entry_only() {
    use marionette::{OwnerPool, OwnerPoolOptions, SandboxOptions};

    let pool = OwnerPool::new(OwnerPoolOptions {
        threads: 1,
        ..OwnerPoolOptions::default()
    })
    .expect("a pool of one thread");
    let runtime = Runtime::shared().expect("runtime");
    let on_pool = || SandboxOptions::default().on_pool(pool.clone());
    let spinner_policy = Policy {
        entry_deadline: Duration::from_secs(1),
        ..Policy::default()
    };
    let spinner = Sandbox::with_options(
        runtime.clone(),
        spinner_policy,
        HostServices::default(),
        on_pool(),
    )
    .await
    .expect("spinner");
    spinner
        .load("hostile.js", fixture("hostile.js"))
        .await
        .expect("load");
    let quick = Sandbox::with_options(
        runtime,
        Policy::default(),
        HostServices::default(),
        on_pool(),
    )
    .await
    .expect("quick");
    quick
        .load("add.js", "export function add(a, b) { return a + b; }")
        .await
        .expect("load");

    let call =
        |sb: &Sandbox, file: &'static str, function: &'static str, args: Vec<serde_json::Value>| {
            let sb = sb.clone();
            Box::pin(async move { sb.call(file, function, &args, TaskOptions::default()).await })
        };
    let mut spin1 = call(&spinner, "hostile.js", "spin", vec![]);
    let mut spin2 = call(&spinner, "hostile.js", "spin", vec![]);
    let mut add = call(&quick, "add.js", "add", vec![json!(1), json!(2)]);
    // Each call is queued on its first poll: both spins, then the add.
    for f in [&mut spin1, &mut spin2, &mut add] {
        assert!(futures::poll!(f).is_pending());
    }
    assert_eq!(add.await.expect("add"), json!(3));
    // The add waited for the entry that was running: its answer was sent
    // before the add's job began, so it is there. It went before the
    // spinner's next entry, which is still spinning (for a second).
    let Poll::Ready(spin1) = futures::poll!(&mut spin1) else {
        panic!("the add answered before the spin that was running ended");
    };
    assert!(
        futures::poll!(&mut spin2).is_pending(),
        "the add waited for both spins"
    );
    for spun in [spin1, spin2.await] {
        match spun {
            Err(Error::Limit {
                limit: Limit::Deadline,
                detail,
                ..
            }) => assert!(detail.contains("1000ms"), "{detail}"),
            other => panic!("expected the deadline, got {other:?}"),
        }
    }
}

/// A runtime on wasmtime's pooling allocator told to refuse past its room
/// (`PoolFull::Refuse`): the memory limit still holds, a trap frees its
/// slot for the rebuilt instance, and a sandbox past the pool's room is
/// refused with a typed error.
#[tokio::test]
async fn a_pooled_runtime_keeps_the_memory_limit_and_refuses_sandboxes_past_its_room() {
    use marionette::{PoolFull, RuntimeOptions};

    let runtime = Runtime::new(&RuntimeOptions {
        pooled_instances: Some(2),
        pool_full: PoolFull::Refuse,
        ..RuntimeOptions::default()
    })
    .expect("a pooled runtime");
    let policy = Policy {
        memory_limit: 64 << 20,
        ..Policy::default()
    };
    let sb = Sandbox::with_runtime(runtime.clone(), policy)
        .await
        .expect("a pooled sandbox");
    sb.load("hostile.js", fixture("hostile.js"))
        .await
        .expect("load");
    for function in ["allocate", "recurse", "allocateStrings"] {
        match call(&sb, function).await {
            Err(Error::Limit {
                limit: Limit::Memory,
                ..
            })
            | Err(Error::Trapped {
                limit: Some(Limit::Memory | Limit::Stack),
                ..
            }) => {}
            other => panic!("{function}: expected the memory or stack limit, got {other:?}"),
        }
        assert_serves(&sb).await;
    }
    let _second = Sandbox::with_runtime(runtime.clone(), Policy::default())
        .await
        .expect("a second sandbox fits");
    match Sandbox::with_runtime(runtime, Policy::default()).await {
        Err(Error::Host { .. }) => {}
        other => panic!("expected the full pool's refusal, got {other:?}"),
    }
}

/// Runtimes are pooled by default, and past the pool's room an instance is
/// made on demand (`PoolFull::OnDemand`, the default), by an engine of its
/// own that keeps every limit: with room for one, three sandboxes at once
/// each serve, each meets the memory limit, and one past the pool meets
/// the epoch's hard stop, which only that engine's own ticker can give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_a_full_pool_sandboxes_are_made_on_demand_and_keep_every_limit() {
    use marionette::RuntimeOptions;

    assert!(Runtime::shared().expect("the shared runtime").pooled());
    let runtime = Runtime::new(&RuntimeOptions {
        pooled_instances: Some(1),
        ..RuntimeOptions::default()
    })
    .expect("a pooled runtime");
    assert!(runtime.pooled());
    let policy = Policy {
        memory_limit: 64 << 20,
        entry_deadline: Duration::from_millis(300),
        ..Policy::default()
    };
    let mut sandboxes = Vec::new();
    for i in 0..3 {
        let sb = Sandbox::with_runtime(runtime.clone(), policy.clone())
            .await
            .unwrap_or_else(|e| panic!("sandbox {i}, past the pool's room of one: {e:?}"));
        sb.load("hostile.js", fixture("hostile.js"))
            .await
            .expect("load");
        sandboxes.push(sb);
    }
    for (i, sb) in sandboxes.iter().enumerate() {
        match call(sb, "allocate").await {
            Err(Error::Limit {
                limit: Limit::Memory,
                ..
            })
            | Err(Error::Trapped {
                limit: Some(Limit::Memory),
                ..
            }) => {}
            other => panic!("sandbox {i}: expected the memory limit, got {other:?}"),
        }
        assert_serves(sb).await;
    }
    let last = sandboxes.last().expect("three sandboxes");
    last.load("stuck.js", fixture("hostile/stuck_in_native.js"))
        .await
        .expect("load");
    let stuck = last
        .run_main(
            "stuck.js",
            &json!({}),
            // Only there so that a missing hard stop fails the test, not hangs it.
            TaskOptions::timeout(Duration::from_secs(60)),
        )
        .await;
    match stuck {
        Err(Error::Trapped {
            limit: Some(Limit::Deadline),
            ..
        }) => {}
        other => panic!("expected the epoch hard stop on demand, got {other:?}"),
    }
    assert_serves(last).await;
}

/// A pool that cannot be reserved (room for a million instances: 4 PiB of
/// address space, more than any 64-bit process has) leaves a runtime whose
/// instances are all made on demand, which serves; told to refuse past its
/// room instead, the runtime is not made, and the error says why.
#[tokio::test]
async fn a_pool_that_cannot_be_reserved_falls_back_to_instances_on_demand() {
    use marionette::{PoolFull, RuntimeOptions};

    let too_big = RuntimeOptions {
        pooled_instances: Some(1 << 20),
        ..RuntimeOptions::default()
    };
    let runtime = Runtime::new(&too_big).expect("a runtime on demand");
    assert!(!runtime.pooled());
    let sb = Sandbox::with_runtime(runtime, Policy::default())
        .await
        .expect("a sandbox on demand");
    sb.load("hostile.js", fixture("hostile.js")).await.unwrap();
    assert_serves(&sb).await;

    let refused = Runtime::new(&RuntimeOptions {
        pool_full: PoolFull::Refuse,
        ..too_big
    })
    .expect_err("a pool that cannot be reserved, and no fallback");
    assert!(
        format!("{refused:#}").contains("configuring wasmtime"),
        "{refused:#}"
    );
}

/// A pooled runtime resets a slot's memory in place when its instance is
/// dropped (`linear_memory_keep_resident`): the next sandbox on that slot
/// starts from the snapshot, with nothing of what the last one wrote (its
/// script, which the guest's VM would answer for, and its heap).
#[tokio::test]
async fn a_pooled_slot_reused_holds_nothing_of_the_sandbox_before() {
    use marionette::RuntimeOptions;

    const WRITES: &str = r#"
        let kept = [];
        // A heap well past the snapshot's pages, written all over.
        export function mark() {
            kept = Array.from({ length: 20000 }, (_, i) => "row " + i);
            return kept.length;
        }
    "#;
    // Room for one: each sandbox takes the slot the one before left.
    let runtime = Runtime::new(&RuntimeOptions {
        pooled_instances: Some(1),
        ..RuntimeOptions::default()
    })
    .expect("a pooled runtime");
    for round in 0..3 {
        let sb = Sandbox::with_runtime(runtime.clone(), Policy::default())
            .await
            .expect("the slot is free");
        match sb
            .call("writes.js", "mark", &[], TaskOptions::default())
            .await
        {
            Err(Error::Script { error, .. }) => {
                assert!(
                    error.message.contains("no script named"),
                    "round {round}: {error:?}"
                )
            }
            other => panic!("round {round}: the script of the sandbox before answered: {other:?}"),
        }
        sb.load("writes.js", WRITES).await.expect("load");
        let marked = sb.call("writes.js", "mark", &[], TaskOptions::default());
        assert_eq!(marked.await.expect("mark"), json!(20000));
        sb.shutdown().await;
    }
}

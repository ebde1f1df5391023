use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{CallOptions, Runner, RunnerOptions};
use crate::error::Error;

fn options(name: &str) -> RunnerOptions {
    RunnerOptions {
        name: name.to_owned(),
        ..RunnerOptions::default()
    }
}

/// Keeps the owner busy in a job until the returned sender is used or
/// dropped; returns once that job has started.
async fn block<S: 'static>(runner: &Runner<S>) -> std::sync::mpsc::Sender<()> {
    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    runner
        .post("block", move |_| {
            let _ = started_tx.send(());
            // Ok or Err (sender dropped): either way, released.
            let _ = release_rx.recv();
            Ok(())
        })
        .expect("post the blocking job");
    started_rx.await.expect("the blocking job started");
    release_tx
}

/// A posted job that counts.
fn increment(n: &mut u64) -> anyhow::Result<()> {
    *n += 1;
    Ok(())
}

/// Sets `flag` when run.
fn mark(flag: &Arc<AtomicBool>) -> impl FnOnce(&mut u64) + Send + 'static {
    let flag = Arc::clone(flag);
    move |_| flag.store(true, Ordering::SeqCst)
}

#[test]
fn handle_is_send_sync_clone_whatever_the_state() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    // `Rc` is neither Send nor Sync: the state never leaves the owner.
    check::<Runner<Rc<RefCell<u32>>>>();
}

#[tokio::test]
async fn call_runs_jobs_in_order_on_the_owner_thread() {
    // A state that is not `Send`, built on the owner thread.
    let runner = Runner::spawn(options("basic"), || Rc::new(RefCell::new(Vec::new()))).unwrap();
    assert_eq!(runner.name(), "basic");
    assert!(!runner.is_owner());
    assert!(!runner.is_closed());

    let calls: Vec<_> = (0..10)
        .map(|i| {
            runner.call(format!("push {i}"), move |v: &mut Rc<RefCell<Vec<i32>>>| {
                v.borrow_mut().push(i)
            })
        })
        .collect();
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    let (seen, is_owner, thread_name) = {
        let r = runner.clone();
        runner
            .call("read", move |v| {
                let name = thread::current().name().map(str::to_owned);
                (v.borrow().clone(), r.is_owner(), name)
            })
            .await
            .unwrap()
    };
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    assert!(is_owner, "a job runs on the owner thread");
    assert_eq!(thread_name.as_deref(), Some("basic"));
    runner.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_queued_job_never_runs() {
    let runner = Runner::spawn(options("cancel"), || 0u64).unwrap();
    let release = block(&runner).await;

    // 1. The caller gives up first: its future answers Canceled at once.
    let first = Arc::new(AtomicBool::new(false));
    let token = CancellationToken::new();
    let mut call =
        Box::pin(runner.call_with("first", CallOptions::cancel(token.clone()), mark(&first)));
    assert!(
        futures::poll!(call.as_mut()).is_pending(),
        "queued behind the blocking job"
    );
    token.cancel();
    match call.await {
        Err(Error::Canceled { op, reason: None }) => assert_eq!(op, "first"),
        other => panic!("expected Canceled, got {other:?}"),
    }

    // 2. The owner sees the cancelled token while the caller still waits
    //    (its future is not polled again until after the owner passed).
    let second = Arc::new(AtomicBool::new(false));
    let token = CancellationToken::new();
    let mut late =
        Box::pin(runner.call_with("second", CallOptions::cancel(token.clone()), mark(&second)));
    assert!(futures::poll!(late.as_mut()).is_pending());

    // 3. The caller's future is dropped while queued.
    let third = Arc::new(AtomicBool::new(false));
    let mut dropped = Box::pin(runner.call("third", mark(&third)));
    assert!(futures::poll!(dropped.as_mut()).is_pending());
    drop(dropped);

    // 4. A token cancelled before the call: not even queued.
    let fourth = Arc::new(AtomicBool::new(false));
    let token4 = CancellationToken::new();
    token4.cancel();
    let err = runner
        .call_with("fourth", CallOptions::cancel(token4), mark(&fourth))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Canceled { .. }) && err.op() == "fourth",
        "{err:?}"
    );

    token.cancel();
    drop(release);
    // Later jobs still run, after the skipped ones (jobs run in order).
    assert_eq!(runner.call("after", |n| *n + 1).await.unwrap(), 1);
    match late.await {
        Err(Error::Canceled { op, .. }) => assert_eq!(op, "second"),
        other => panic!("expected Canceled, got {other:?}"),
    }
    for (name, ran) in [
        ("first", first),
        ("second", second),
        ("third", third),
        ("fourth", fourth),
    ] {
        assert!(
            !ran.load(Ordering::SeqCst),
            "the {name} job ran though it was cancelled"
        );
    }
}

#[tokio::test]
async fn a_full_queue_rejects_at_once() {
    let runner = Runner::spawn(
        RunnerOptions {
            queue_capacity: 2,
            ..options("full")
        },
        || 0u64,
    )
    .unwrap();
    let release = block(&runner).await;
    // The running job does not count: two places in the queue.
    runner.post("one", increment).unwrap();
    let (drained_tx, drained_rx) = oneshot::channel();
    runner
        .post("two", |n| {
            *n += 1;
            // Taken out of the queue before it runs: the queue is empty now.
            let _ = drained_tx.send(());
            Ok(())
        })
        .unwrap();
    match runner.post("three", increment) {
        Err(Error::Rejected { op, capacity: 2 }) => assert_eq!(op, "three"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    match runner.call("four", |n| *n).await {
        Err(Error::Rejected { op, capacity: 2 }) => assert_eq!(op, "four"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    drop(release);
    drained_rx.await.unwrap();
    // Once the queue drains there is room again; the rejected jobs never ran.
    assert_eq!(runner.call("count", |n| *n).await.unwrap(), 2);
    // ("count" was out of the queue before it answered: both places free.)
    runner.post("five", increment).unwrap();
    assert_eq!(runner.call("count", |n| *n).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn timeouts_default_and_per_call() {
    let default = Duration::from_secs(30);
    let runner = Runner::spawn(
        RunnerOptions {
            default_timeout: Some(default),
            ..options("timeouts")
        },
        || 0u64,
    )
    .unwrap();
    // The owner is blocked, so these waits can only end by timing out (the
    // paused clock jumps to the deadline).
    let release = block(&runner).await;
    let by_default = Arc::new(AtomicBool::new(false));
    match runner.call("slow", mark(&by_default)).await {
        Err(Error::Timeout { op, after }) => {
            assert_eq!(op, "slow");
            assert_eq!(after, default);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    let per_call = Arc::new(AtomicBool::new(false));
    let short = Duration::from_secs(5);
    match runner
        .call_with("slower", CallOptions::timeout(short), mark(&per_call))
        .await
    {
        Err(Error::Timeout { op, after }) => {
            assert_eq!(op, "slower");
            assert_eq!(after, short, "the per-call timeout overrides the default");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }

    // From here on, waits must end by an answer: real time again.
    tokio::time::resume();
    drop(release);
    assert_eq!(runner.call("after", |n| *n + 1).await.unwrap(), 1);
    assert!(
        !by_default.load(Ordering::SeqCst),
        "a timed-out queued job ran"
    );
    assert!(
        !per_call.load(Ordering::SeqCst),
        "a timed-out queued job ran"
    );
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn shutdown_finishes_the_queue_then_refuses_work() {
    let dropped = Arc::new(AtomicBool::new(false));
    let state_flag = Arc::clone(&dropped);
    let runner = Runner::spawn(options("shutdown"), move || (0u64, DropFlag(state_flag))).unwrap();
    let release = block(&runner).await;

    let mut queued = Box::pin(runner.call("queued call", |(n, _)| {
        *n += 1;
        *n
    }));
    assert!(futures::poll!(queued.as_mut()).is_pending());
    let posted = Arc::new(AtomicBool::new(false));
    let posted_flag = Arc::clone(&posted);
    runner
        .post("queued post", move |_| {
            posted_flag.store(true, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();

    let mut first = Box::pin(runner.shutdown());
    assert!(
        futures::poll!(first.as_mut()).is_pending(),
        "the owner is still busy"
    );
    assert!(runner.is_closed(), "closed as soon as shutdown starts");
    let second = runner.clone();
    let mut second = Box::pin(async move { second.shutdown().await });
    assert!(futures::poll!(second.as_mut()).is_pending());
    match runner.call("too late", |_| ()).await {
        Err(Error::Closed { op }) => assert_eq!(op, "too late"),
        other => panic!("expected Closed, got {other:?}"),
    }
    match runner.post("too late post", |_| Ok(())) {
        Err(Error::Closed { op }) => assert_eq!(op, "too late post"),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(!dropped.load(Ordering::SeqCst));

    drop(release);
    first.await;
    assert!(
        dropped.load(Ordering::SeqCst),
        "the state is dropped before shutdown resolves"
    );
    assert_eq!(
        queued.await.unwrap(),
        1,
        "a call queued before shutdown still completes"
    );
    assert!(
        posted.load(Ordering::SeqCst),
        "a post queued before shutdown still runs"
    );
    // Every caller resolves, concurrent or later.
    second.await;
    runner.shutdown().await;
    assert!(runner.is_closed());
    assert!(matches!(
        runner.call("after", |_| ()).await,
        Err(Error::Closed { .. })
    ));
}

#[tokio::test]
async fn shutdown_from_inside_a_job_does_not_deadlock() {
    let runner = Runner::spawn(options("self-stop"), || 0u64).unwrap();
    let inner = runner.clone();
    runner
        .call("stop", move |_| {
            futures::executor::block_on(inner.shutdown())
        })
        .await
        .unwrap();
    assert!(runner.is_closed());
    runner.shutdown().await;
    assert!(matches!(
        runner.call("after", |_| ()).await,
        Err(Error::Closed { .. })
    ));
}

#[tokio::test]
async fn a_panicking_job_fails_its_call_and_the_owner_survives() {
    let runner = Runner::spawn(options("panics"), || 0u64).unwrap();
    match runner.call("literal", |_| -> u64 { panic!("boom") }).await {
        Err(Error::Panicked { op, message }) => {
            assert_eq!(op, "literal");
            assert_eq!(message, "boom");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    match runner
        .call("formatted", |n| -> u64 { panic!("boom {}", *n + 7) })
        .await
    {
        Err(Error::Panicked { op, message }) => {
            assert_eq!(op, "formatted");
            assert_eq!(message, "boom 7");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    let err = runner
        .call("any", |_| -> u64 { std::panic::panic_any(42u8) })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Panicked { .. }) && err.op() == "any",
        "{err:?}"
    );
    runner.call("ok", |n| *n += 1).await.unwrap();
    assert_eq!(runner.call("read", |n| *n).await.unwrap(), 1);
}

#[tokio::test]
async fn a_call_from_inside_a_job_fails_fast() {
    let runner = Runner::spawn(options("reentrant"), || 0u64).unwrap();
    let inner = runner.clone();
    let nested = runner
        .call("outer", move |_| {
            let timed = CallOptions::timeout(Duration::from_secs(1));
            (
                futures::executor::block_on(inner.call("inner", |n| *n)),
                futures::executor::block_on(inner.call_with("inner timed", timed, |n| *n)),
                // Posting from a job is fine: it queues behind this one.
                inner.post("inner post", increment),
            )
        })
        .await
        .unwrap();
    match nested {
        (Err(Error::Reentrant { op }), Err(Error::Reentrant { op: timed }), Ok(())) => {
            assert_eq!(op, "inner");
            assert_eq!(timed, "inner timed");
        }
        other => panic!("expected Reentrant twice and a queued post, got {other:?}"),
    }
    assert_eq!(runner.call("read", |n| *n).await.unwrap(), 1);
}

thread_local! {
    /// Signals when the thread it was set on exits.
    static ON_EXIT: RefCell<Option<ExitSignal>> = const { RefCell::new(None) };
}

struct ExitSignal(Option<oneshot::Sender<()>>);

impl Drop for ExitSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Sends the thread it is dropped on.
struct DropThread(Option<oneshot::Sender<thread::ThreadId>>);

impl Drop for DropThread {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(thread::current().id());
        }
    }
}

#[tokio::test]
async fn dropping_every_handle_stops_the_owner() {
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let runner = Runner::spawn(options("dropped"), move || DropThread(Some(dropped_tx))).unwrap();
    let (exit_tx, exit_rx) = oneshot::channel();
    let owner = runner
        .call("whoami", move |_| {
            ON_EXIT.with(|slot| *slot.borrow_mut() = Some(ExitSignal(Some(exit_tx))));
            thread::current().id()
        })
        .await
        .unwrap();
    assert_ne!(owner, thread::current().id());
    let clone = runner.clone();
    drop(runner);
    drop(clone);
    assert_eq!(
        dropped_rx.await.unwrap(),
        owner,
        "the state is dropped on the owner thread"
    );
    exit_rx.await.expect("the owner thread exits");
}

#[tokio::test]
async fn a_panicking_init_closes_the_runner() {
    let runner: Runner<u64> =
        Runner::spawn(options("no-state"), || panic!("cannot build")).unwrap();
    // Whether it was queued before the owner died or refused after: Closed.
    match runner.call("first", |n| *n).await {
        Err(Error::Closed { op }) => assert_eq!(op, "first"),
        other => panic!("expected Closed, got {other:?}"),
    }
    runner.shutdown().await;
    assert!(runner.is_closed());
}

/// Collects every event as one line: `LEVEL field=value ...`.
#[derive(Clone, Default)]
struct Capture {
    lines: Arc<Mutex<Vec<String>>>,
    next_span: Arc<AtomicU64>,
}

impl Capture {
    fn errors(&self) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.starts_with("ERROR"))
            .cloned()
            .collect()
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        struct Line<'a>(&'a mut String);
        impl tracing::field::Visit for Line<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }
        let mut line = event.metadata().level().to_string();
        event.record(&mut Line(&mut line));
        self.lines.lock().unwrap().push(line);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn a_failed_or_panicking_post_is_logged() {
    let capture = Capture::default();
    // The owner thread inherits the subscriber that is the default here.
    let _guard = tracing::subscriber::set_default(capture.clone());
    let runner = Runner::spawn(options("logger"), || 0u64).unwrap();

    runner
        .post("save-note", |_| {
            Err(anyhow::anyhow!("disk on fire").context("saving the note"))
        })
        .unwrap();
    runner.post("explode", |_| panic!("kaboom")).unwrap();
    // Jobs run in order: once this returns, both posts have run.
    runner.call("sync", |_| ()).await.unwrap();

    let errors = capture.errors();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let failed = &errors[0];
    for needle in ["save-note", "saving the note: disk on fire", "logger"] {
        assert!(failed.contains(needle), "{failed:?} lacks {needle:?}");
    }
    let panicked = &errors[1];
    for needle in ["explode", "kaboom", "logger"] {
        assert!(panicked.contains(needle), "{panicked:?} lacks {needle:?}");
    }
}

/// A counter that is deliberately not atomic: only `&mut` keeps it right.
struct Counter {
    value: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_callers_each_get_exactly_one_answer() {
    const CALLERS: usize = 500;
    let runner = Runner::spawn(options("stress"), || Counter { value: 0 }).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));

    let mut callers = Vec::with_capacity(CALLERS);
    for i in 0..CALLERS {
        let runner = runner.clone();
        let ran = Arc::clone(&ran);
        // A fixed pseudo-random choice per caller (splitmix64).
        let mut x = (i as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        callers.push(tokio::spawn(async move {
            let job = move |c: &mut Counter| {
                ran.fetch_add(1, Ordering::SeqCst);
                // Read, dawdle, write: torn if two jobs ever overlapped.
                // Long enough (20µs) for timeouts and cancellations to catch
                // jobs both queued and running.
                let before = c.value;
                let until = Instant::now() + Duration::from_micros(20);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                c.value = before + 1;
                c.value
            };
            match x % 4 {
                0 | 1 => ("plain", runner.call("plain", job).await),
                2 => {
                    let token = CancellationToken::new();
                    let canceller = token.clone();
                    let yields = (x >> 8) % 8;
                    tokio::spawn(async move {
                        for _ in 0..yields {
                            tokio::task::yield_now().await;
                        }
                        canceller.cancel();
                    });
                    let answer = runner
                        .call_with("cancelled", CallOptions::cancel(token), job)
                        .await;
                    ("cancelled", answer)
                }
                _ => {
                    let after = Duration::from_micros((x >> 8) % 3000);
                    let answer = runner
                        .call_with("timed", CallOptions::timeout(after), job)
                        .await;
                    ("timed", answer)
                }
            }
        }));
    }

    let (mut ok, mut canceled, mut timed_out) = (0, 0, 0);
    let mut seen = HashSet::new();
    for caller in callers {
        let (kind, answer) = caller.await.expect("no caller panicked");
        match answer {
            Ok(value) => {
                ok += 1;
                assert!(seen.insert(value), "two jobs saw the counter at {value}");
            }
            // A plain call has nothing that could stop it: only the other
            // kinds may end early, each with its own error.
            Err(Error::Canceled { op, .. }) if kind == "cancelled" => {
                assert_eq!(op, "cancelled");
                canceled += 1;
            }
            Err(Error::Timeout { op, .. }) if kind == "timed" => {
                assert_eq!(op, "timed");
                timed_out += 1;
            }
            Err(other) => panic!("a {kind} call failed: {other:?}"),
        }
    }
    // Every plain call was answered, and some calls of each stoppable kind
    // were stopped (or the test shows nothing about them): 500 jobs of 20µs
    // queue for 10 ms, far longer than most timeouts (0-3 ms) and than the
    // few yields before a cancel.
    assert!(
        canceled > 0 && timed_out > 0,
        "stopped: {canceled} cancelled, {timed_out} timed out"
    );

    // Queued after every caller's job (or its skipping): the final count.
    let value = runner.call("read", |c| c.value).await.unwrap();
    let ran = ran.load(Ordering::SeqCst);
    assert_eq!(
        value, ran as u64,
        "the counter counts exactly the jobs that ran"
    );
    assert!(ok <= ran && ran <= CALLERS, "ok {ok}, ran {ran}");
    runner.shutdown().await;
    assert!(
        runner
            .call("after", |c| c.value)
            .now_or_never()
            .is_some_and(|r| r.is_err())
    );
}

// ---- Runners on an owner pool: M owners on N threads. ----

fn pool(threads: usize) -> super::OwnerPool {
    super::OwnerPool::new(super::OwnerPoolOptions {
        threads,
        name: "test-pool".into(),
        ..super::OwnerPoolOptions::default()
    })
    .expect("a pool")
}

#[tokio::test]
async fn many_runners_on_two_threads_each_keep_their_own_state_in_order() {
    let pool = pool(2);
    let runners: Vec<Runner<Vec<u64>>> = (0..50)
        .map(|i| Runner::spawn_on(&pool, options(&format!("r{i}")), Vec::new))
        .collect();
    for round in 0..20u64 {
        for (i, r) in runners.iter().enumerate() {
            let v = round * 100 + i as u64;
            r.post("push", move |s| {
                s.push(v);
                Ok(())
            })
            .expect("post");
        }
    }
    let mut threads = HashSet::new();
    for (i, r) in runners.iter().enumerate() {
        let (seen, owner, thread) = r
            .call("read", {
                let r = r.clone();
                move |s| {
                    (
                        s.clone(),
                        r.is_owner(),
                        thread::current().name().map(str::to_owned),
                    )
                }
            })
            .await
            .expect("read");
        let expected: Vec<u64> = (0..20).map(|round| round * 100 + i as u64).collect();
        assert_eq!(
            seen, expected,
            "runner {i}: its jobs, in order, and only its own"
        );
        assert!(owner, "inside a job the runner is the owner");
        assert!(!r.is_owner(), "outside it is not");
        threads.insert(thread.expect("a named pool thread"));
    }
    assert!(
        threads.len() <= 2,
        "two threads served them all: {threads:?}"
    );
    assert!(
        threads.iter().all(|t| t.starts_with("test-pool-")),
        "{threads:?}"
    );
}

#[tokio::test]
async fn a_pooled_runner_refuses_a_reentrant_call() {
    let pool = pool(1);
    let runner = Runner::spawn_on(&pool, options("reentrant"), || 0u64);
    let inner = runner.clone();
    let result = runner
        .call("outer", move |_| {
            futures::executor::block_on(inner.call("inner", |n| *n))
        })
        .await
        .expect("outer");
    assert!(matches!(result, Err(Error::Reentrant { .. })), "{result:?}");
}

#[tokio::test]
async fn runners_on_one_thread_take_turns_a_job_each() {
    let pool = pool(1);
    let a = Runner::spawn_on(&pool, options("a"), || ());
    let b = Runner::spawn_on(&pool, options("b"), || ());
    let order = Arc::new(Mutex::new(Vec::new()));
    // a's first job holds the only thread until released.
    let release = block(&a).await;
    let log = |name: &'static str| {
        let order = Arc::clone(&order);
        move |_: &mut ()| {
            order.lock().unwrap().push(name);
            Ok(())
        }
    };
    a.post("a1", log("a1")).unwrap();
    a.post("a2", log("a2")).unwrap();
    b.post("b1", log("b1")).unwrap();
    b.post("b2", log("b2")).unwrap();
    a.post("a3", log("a3")).unwrap();
    drop(release);
    let (ra, rb) = tokio::join!(a.call("end", |_| ()), b.call("end", |_| ()));
    ra.unwrap();
    rb.unwrap();
    // b was queued while a's block ran; after each job a runner goes to
    // the back of the queue: they alternate, a job each, instead of a
    // running all it has queued before b gets the thread.
    assert_eq!(*order.lock().unwrap(), ["b1", "a1", "b2", "a2", "a3"]);
}

#[test]
fn a_pool_for_one_cpu_does_not_spin_and_one_for_several_does() {
    let one = super::OwnerPoolOptions::for_cpus(1);
    assert_eq!((one.threads, one.spin), (1, Duration::ZERO));
    let two = super::OwnerPoolOptions::for_cpus(2);
    assert_eq!((two.threads, two.spin), (2, Duration::from_micros(50)));
    assert_eq!(super::OwnerPoolOptions::for_cpus(0).threads, 1);
}

/// A pool whose threads park as soon as they find nothing to do.
fn parking_pool(threads: usize) -> super::OwnerPool {
    super::OwnerPool::new(super::OwnerPoolOptions {
        threads,
        name: "test-pool".into(),
        spin: Duration::ZERO,
    })
    .expect("a pool")
}

#[tokio::test]
async fn a_runner_with_jobs_in_a_row_wakes_no_other_thread() {
    let pool = parking_pool(2);
    let runner = Runner::spawn_on(&pool, options("in-a-row"), || 0u64);
    // Its first job holds a thread while the rest are queued behind it.
    let release = block(&runner).await;
    let before = pool.wakes();
    for _ in 0..99 {
        runner.post("inc", increment).unwrap();
    }
    let (done_tx, done_rx) = oneshot::channel();
    runner
        .post("last", move |n| {
            *n += 1;
            let _ = done_tx.send(*n);
            Ok(())
        })
        .unwrap();
    drop(release);
    assert_eq!(done_rx.await.expect("the last job ran"), 100);
    // After each job the thread that served it looks for work again and
    // takes the runner back: the other thread, parked, is never woken to
    // find nothing or to take the runner's state to another CPU.
    assert_eq!(pool.wakes() - before, 0);
}

#[tokio::test]
async fn a_runner_queued_while_the_other_threads_are_busy_or_parked_gets_a_thread() {
    let pool = parking_pool(2);
    let busy = Runner::spawn_on(&pool, options("busy"), || ());
    let other = Runner::spawn_on(&pool, options("other"), || 0u64);
    // One thread held by `busy`; the other looks for work and parks.
    let release = block(&busy).await;
    for round in 1..=20u64 {
        let counted = tokio::time::timeout(Duration::from_secs(10), async {
            other.post("inc", increment).unwrap();
            other.call("read", |n| *n).await
        })
        .await
        .expect("served while the busy runner holds the other thread")
        .unwrap();
        assert_eq!(counted, round);
    }
    drop(release);
    busy.call("end", |_| ()).await.unwrap();
}

#[tokio::test]
async fn a_pooled_runner_drops_its_state_when_the_last_handle_goes() {
    let pool = pool(1);
    let (tx, rx) = oneshot::channel();
    let runner = Runner::spawn_on(&pool, options("dropped"), move || DropThread(Some(tx)));
    let weak = runner.downgrade();
    runner.call("touch", |_| ()).await.unwrap();
    drop(runner);
    let on = rx.await.expect("the state was dropped");
    assert!(weak.upgrade().is_none());
    assert_ne!(on, thread::current().id(), "on a pool thread");
}

#[tokio::test]
async fn a_pooled_runner_shuts_down_after_its_queued_jobs() {
    let pool = pool(1);
    let runner = Runner::spawn_on(&pool, options("shutdown"), || 0u64);
    let release = block(&runner).await;
    for _ in 0..5 {
        runner.post("inc", increment).unwrap();
    }
    let counted = runner.call("read", |n| *n);
    let shutdown = runner.shutdown();
    drop(release);
    let (counted, ()) = tokio::join!(counted, shutdown);
    assert_eq!(counted.unwrap(), 5);
    assert!(runner.is_closed());
    assert!(matches!(
        runner.call("late", |n| *n).await,
        Err(Error::Closed { .. })
    ));
}

#[tokio::test]
async fn a_pooled_runner_whose_init_panics_is_closed_and_the_pool_serves_on() {
    let pool = pool(1);
    let bad: Runner<u64> = Runner::spawn_on(&pool, options("bad"), || panic!("no state"));
    assert!(matches!(
        bad.call("job", |n| *n).await,
        Err(Error::Closed { .. })
    ));
    let good = Runner::spawn_on(&pool, options("good"), || 7u64);
    assert_eq!(good.call("job", |n| *n).await.unwrap(), 7);
}

/// A caller looks for its reply for the pool's spin before it sleeps on it,
/// but by yielding to its runtime, not by holding its thread: here the job
/// waits for a task of the caller's own (single) thread, which must run
/// while the caller spins. A spin that held the thread would starve that
/// task for the whole spin, and the job would give up first.
#[tokio::test(flavor = "current_thread")]
async fn a_caller_spinning_for_its_reply_lets_its_thread_run_other_tasks() {
    let pool = super::OwnerPool::new(super::OwnerPoolOptions {
        threads: 1,
        name: "spin-test".into(),
        spin: Duration::from_secs(6),
    })
    .expect("a pool");
    let runner = Runner::spawn_on(&pool, options("spinning"), || ());
    // Served once, so that the pool thread is idle (spinning) from here.
    runner.call("first", |()| ()).await.unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let signal = tokio::spawn(async move { tx.send(()).expect("the job waits") });
    let got = runner
        .call("wait", move |()| {
            rx.recv_timeout(Duration::from_secs(2)).is_ok()
        })
        .await
        .unwrap();
    assert!(
        got,
        "the task on the caller's thread ran while the caller waited for its reply"
    );
    signal.await.unwrap();
}

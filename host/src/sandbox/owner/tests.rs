//! The owner's order of timers, made deterministic: the answers of timers
//! that expire together reach the owner in an order tokio does not
//! promise; here they are posted latest first, on purpose.

use std::time::Duration;

use serde_json::{Value as Json, json};

use super::{Due, Owner};
use crate::bindings::marionette::runtime::types as wit;
use crate::policy::{Determinism, Policy};
use crate::sandbox::{Runtime, Sandbox, TaskOptions};

const SCRIPT: &str = r#"
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Three timers asked in no order of their deadlines, far enough away that
// none expires on its own during the test.
export async function order() {
  const order = [];
  await Promise.all([
    sleep(60_002).then(() => order.push("third")),
    sleep(60_000).then(() => order.push("first")),
    sleep(60_001).then(() => order.push("second")),
  ]);
  return order;
}
"#;

/// Waits until the owner holds `n` pending timers: until the calls that
/// ask for them have asked (a condition, not a time; each look is a job on
/// the owner, a millisecond apart).
async fn until_timers(sandbox: &Sandbox, n: usize) {
    while sandbox
        .runner
        .call("timers", |owner: &mut Owner| timers(owner).len())
        .await
        .unwrap()
        < n
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The timers the owner waits on, earliest deadline first.
fn timers(owner: &Owner) -> Vec<(Due, u64)> {
    let mut timers: Vec<(Due, u64)> = owner
        .ops
        .iter()
        .filter_map(|(&op, p)| p.due.map(|due| (due, op)))
        .collect();
    timers.sort_unstable();
    timers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_answered_out_of_order_still_fire_in_the_order_of_their_deadlines() {
    let sandbox = Sandbox::with_runtime(Runtime::shared().unwrap(), Policy::default())
        .await
        .unwrap();
    sandbox.load("timers.js", SCRIPT).await.unwrap();
    let call = {
        let sandbox = sandbox.clone();
        tokio::spawn(async move {
            sandbox
                .call("timers.js", "order", &[], TaskOptions::default())
                .await
        })
    };
    until_timers(&sandbox, 3).await;
    // They expire together: their answers arrive latest first.
    let answered = sandbox
        .runner
        .call("expire", |owner: &mut Owner| {
            let timers = timers(owner);
            let generation = owner.generation;
            for &(_, op) in timers.iter().rev() {
                owner.resume(generation, op, Ok(wit::Value::Json("null".into())));
            }
            timers.len()
        })
        .await
        .unwrap();
    assert_eq!(answered, 3);
    let order = call.await.unwrap().unwrap();
    assert_eq!(order, json!(["first", "second", "third"]));
    sandbox.shutdown().await;
}

const TWO_CALLS: &str = r#"
const order = [];
export async function wait(ms, name) {
  await new Promise((resolve) => setTimeout(resolve, ms));
  order.push(name);
  return order.slice();
}
"#;

/// Two timers asked by two calls, the longer one first and the shorter one
/// at least 30 ms of the machine's time later, both expiring together (their
/// answers posted in the order of the machine's deadlines). A live run fires
/// them in the machine's order; a deterministic run, whose virtual clock did
/// not move between the two, in its own: the shorter first.
async fn two_calls(policy: Policy) -> (Json, Json) {
    let sandbox = Sandbox::with_runtime(Runtime::shared().unwrap(), policy)
        .await
        .unwrap();
    sandbox.load("two.js", TWO_CALLS).await.unwrap();
    let start = |ms: u64, name: &'static str| {
        let sandbox = sandbox.clone();
        tokio::spawn(async move {
            sandbox
                .call(
                    "two.js",
                    "wait",
                    &[json!(ms), json!(name)],
                    TaskOptions::default(),
                )
                .await
        })
    };
    let long = start(60_010, "long");
    until_timers(&sandbox, 1).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let short = start(60_000, "short");
    until_timers(&sandbox, 2).await;
    sandbox
        .runner
        .call("expire", |owner: &mut Owner| {
            let generation = owner.generation;
            let mut by_machine: Vec<(Due, u64)> = timers(owner);
            by_machine.sort_unstable_by_key(|&(due, op)| match due {
                Due::Real(at) => (Some(at), op),
                Due::Virtual(_) => (None, op), // asked first, so op order
            });
            for (_, op) in by_machine {
                owner.resume(generation, op, Ok(wit::Value::Json("null".into())));
            }
        })
        .await
        .unwrap();
    let long = long.await.unwrap().unwrap();
    let short = short.await.unwrap().unwrap();
    sandbox.shutdown().await;
    (long, short)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_run_orders_timers_by_the_machines_clock() {
    let (long, short) = two_calls(Policy::default()).await;
    assert_eq!(long, json!(["long"]));
    assert_eq!(short, json!(["long", "short"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deterministic_run_orders_timers_by_its_virtual_clock() {
    let policy = Policy {
        determinism: Some(Determinism::seeded(7)),
        ..Policy::default()
    };
    let (long, short) = two_calls(policy).await;
    assert_eq!(short, json!(["short"]));
    assert_eq!(long, json!(["short", "long"]));
}

/// A stop the host asked for a task that has ended (its caller gave up as
/// it ended, and the cancellation has not reached the owner yet) names that
/// task only. An entry after it that starts no task (here the query of a
/// script's exports, long enough for QuickJS to poll for interrupts
/// several times) runs for no task until its JavaScript says otherwise; it
/// was stopped in the ended task's stead when the guest still named the
/// task the last entry ran for, and a resume stopped that way left its
/// task waiting for ever (the mixed load test lost an answer about one
/// run in eight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_asked_for_an_ended_task_stops_no_later_entry() {
    let sandbox = Sandbox::with_runtime(Runtime::shared().unwrap(), Policy::default())
        .await
        .unwrap();
    let mut source = String::from("export function quick(i) { return 2 * i + 1; }\n");
    for i in 0..20_000 {
        source += &format!("export const v{i} = {i};\n");
    }
    sandbox.load("many.js", &source).await.unwrap();
    // The last entry runs `quick` for its task, which ends in it...
    let answer = sandbox
        .call("many.js", "quick", &[json!(20)], TaskOptions::default())
        .await
        .unwrap();
    assert_eq!(answer, json!(41));
    // ...and a stop is asked for that task only now.
    let ended = sandbox.next_task.load(std::sync::atomic::Ordering::Relaxed) - 1;
    sandbox.interrupts.request(ended);
    let exports = sandbox
        .exports("many.js")
        .await
        .expect("an entry for no task is not stopped for a task that ended");
    assert_eq!(exports.len(), 20_001);
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        sandbox.call("many.js", "quick", &[json!(5)], TaskOptions::default()),
    )
    .await
    .expect("a later call is answered")
    .unwrap();
    assert_eq!(answer, json!(11));
    sandbox.shutdown().await;
}

/// The runtime's own code runs for no task, and no stop interrupts it: here
/// a cancellation, which releases the cancelled task's operations before
/// its done. A stop there (the entry deadline falling due while the machine
/// stalled the owner's thread; here asked outright, for no task) left some
/// operations released in the guest and still running in the host, for a
/// task that was over: the mixed load test saw one such leftover. The
/// cancellation is made in an owner job, and what the owner holds is read
/// in the same job, right after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_never_interrupts_the_runtime_releasing_a_cancelled_task() {
    const TIMERS: usize = 4000;
    let policy = Policy {
        max_pending_ops: 2 * TIMERS as u32,
        ..Policy::default()
    };
    let sandbox = Sandbox::with_runtime(Runtime::shared().unwrap(), policy)
        .await
        .unwrap();
    sandbox
        .load(
            "timers.js",
            "export async function wait(n) {\n\
               const all = [];\n\
               for (let i = 0; i < n; i++) all.push(new Promise((r) => setTimeout(r, 60_000 + i)));\n\
               await Promise.all(all);\n\
             }\n",
        )
        .await
        .unwrap();
    let call = {
        let sandbox = sandbox.clone();
        tokio::spawn(async move {
            sandbox
                .call(
                    "timers.js",
                    "wait",
                    &[json!(TIMERS)],
                    TaskOptions::default(),
                )
                .await
        })
    };
    until_timers(&sandbox, TIMERS).await;
    sandbox.interrupts.request(0);
    let (before, after) = sandbox
        .runner
        .call("cancel", |owner: &mut Owner| {
            let task = *owner.tasks.keys().next().expect("the call's task");
            let before = (owner.tasks.len(), owner.ops.len());
            owner.cancel(task, "canceled by the test");
            (before, (owner.tasks.len(), owner.ops.len()))
        })
        .await
        .unwrap();
    assert_eq!(before, (1, TIMERS));
    assert_eq!(
        after,
        (0, 0),
        "the cancelled task's {TIMERS} timers are all released (tasks, operations)"
    );
    call.abort();
    sandbox.shutdown().await;
}

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
    // Until the three sleeps are pending (no timing: their asking).
    while sandbox
        .runner
        .call("timers", |owner: &mut Owner| timers(owner).len())
        .await
        .unwrap()
        < 3
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
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
    let pending = |n: usize| {
        let sandbox = sandbox.clone();
        async move {
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
    };
    let long = start(60_010, "long");
    pending(1).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let short = start(60_000, "short");
    pending(2).await;
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

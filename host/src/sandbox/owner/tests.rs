//! The owner's order of timers, made deterministic: the answers of timers
//! that expire together reach the owner in an order tokio does not
//! promise; here they are posted latest first, on purpose.

use std::time::Instant;

use serde_json::json;

use super::Owner;
use crate::bindings::marionette::runtime::types as wit;
use crate::policy::Policy;
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
fn timers(owner: &Owner) -> Vec<(Instant, u64)> {
    let mut timers: Vec<(Instant, u64)> = owner
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
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
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

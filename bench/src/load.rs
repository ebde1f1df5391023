//! The mixed load of `load/*`, and the script of `recovery/*`.
//!
//! A *round* is [`CALLS_PER_ROUND`] calls made by [`CALLERS`] callers at
//! once (each makes its calls one after another) against one or more
//! sandboxes: a seeded random mix of quick calls, calls awaiting host
//! timers, calls cancelled at a random moment, calls with tiny timeouts,
//! calls that throw, a call that runs into the CPU deadline and a call that
//! traps (deep recursion: the instance is rebuilt and its scripts reloaded).
//! The same mix as the integration tests' load test
//! (`tests/integration/load.rs`), which asserts what this counts.
//!
//! Every answer is classified ([`Kind`]) and checked against what its call
//! asked for: a call that gets an answer of a kind it cannot legitimately
//! get is *unexpected*; a call without exactly one answer within
//! [`GIVE_UP`] is *lost*. Both must stay at zero; the report says loudly
//! when they do not.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use marionette::{Error, Limit, Policy, Sandbox, TaskOptions};
use serde::Serialize;
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

/// The module every call of a round runs.
pub const SCRIPT: &str = "load.js";

/// The load script. Stateless: a trap reloads it into a fresh instance, and
/// answers must not depend on which instance served them.
pub const LOAD_JS: &str = r#"
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export function quick(i) { return 2 * i + 1; }
export async function timer(i, ms) { await sleep(ms); return 2 * i + 1; }
export async function throws(i, ms) {
  if (ms > 0) await sleep(ms);
  throw new TypeError(`bad ${i}`);
}
export function spin() { for (;;) {} }
export function recurse() { const f = (n) => f(n + 1) + 1; return f(0); }
export default async function main(input) { return { ok: true, echo: input }; }
"#;

/// Callers at once.
pub const CALLERS: usize = 64;

/// Calls per round.
pub const CALLS_PER_ROUND: usize = 1500;

/// Calls of a round that run until the CPU deadline stops them.
pub const DEADLINES_PER_ROUND: usize = 1;

/// Calls of a round that trap.
pub const TRAPS_PER_ROUND: usize = 1;

/// The sandboxes' per-entry CPU deadline: small, so a call that spins
/// holds its sandbox's owner thread for 100 ms, far above what any other
/// call of the mix needs.
pub const ENTRY_DEADLINE: Duration = Duration::from_millis(100);

/// How long a round may take before its unanswered calls count as lost.
pub const GIVE_UP: Duration = Duration::from_secs(60);

/// How long a call that must time out would otherwise wait for its timer.
const NEVER_MS: u64 = 10_000;

/// The policy of the load's sandboxes.
pub fn policy() -> Policy {
    Policy {
        entry_deadline: ENTRY_DEADLINE,
        ..Policy::default()
    }
}

/// What a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// `quick(i)`: answers at once.
    Quick,
    /// `main({i})` through `run_main`.
    Main,
    /// `timer(i, ms)`: answers after a host timer.
    Timer {
        /// The timer, milliseconds.
        ms: u64,
    },
    /// `timer(i, ms)`, its cancellation token cancelled after `after_ms`.
    Cancel {
        /// The timer, milliseconds.
        ms: u64,
        /// When the token is cancelled, milliseconds after the call.
        after_ms: u64,
    },
    /// A 10 s `timer` with a timeout of `after_ms`.
    Timeout {
        /// The caller's timeout, milliseconds.
        after_ms: u64,
    },
    /// `throws(i, ms)`: a `TypeError`, at once or after a timer.
    Throw {
        /// The timer before the throw, milliseconds (0: none).
        ms: u64,
    },
    /// `spin()`: runs until the CPU deadline stops it.
    Deadline,
    /// `recurse()`: exhausts the stack; the instance is rebuilt.
    Trap,
}

impl Ask {
    /// Whether the call's task waits in the instance for a host timer,
    /// where another call's trap can catch it.
    fn awaits_the_host(self) -> bool {
        match self {
            Ask::Timer { .. } | Ask::Cancel { .. } | Ask::Timeout { .. } => true,
            Ask::Throw { ms } => ms > 0,
            Ask::Quick | Ask::Main | Ask::Deadline | Ask::Trap => false,
        }
    }
}

/// One call of a round.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// Its place in the round, also its argument.
    pub index: usize,
    /// Which sandbox it goes to.
    pub sandbox: usize,
    /// What it asks for.
    pub ask: Ask,
}

/// A round of `calls` calls over `sandboxes` sandboxes, from `seed`:
/// mostly quick calls and timers, a share of cancellations, timeouts and
/// throws, and `deadlines` calls past the deadline and `traps` traps at
/// random places.
pub fn plan(
    seed: u64,
    calls: usize,
    sandboxes: usize,
    deadlines: usize,
    traps: usize,
) -> Vec<Call> {
    let mut rng = Rng::new(seed);
    let mut plan: Vec<Call> = (0..calls)
        .map(|index| {
            let ask = match rng.below(100) {
                0..35 => Ask::Quick,
                35..43 => Ask::Main,
                43..63 => Ask::Timer { ms: rng.below(15) },
                63..78 => Ask::Cancel {
                    ms: rng.below(20),
                    after_ms: rng.below(20),
                },
                78..90 => Ask::Timeout {
                    after_ms: rng.below(6),
                },
                _ => Ask::Throw {
                    ms: if rng.below(2) == 0 { 0 } else { rng.below(5) },
                },
            };
            Call {
                index,
                sandbox: rng.below(sandboxes as u64) as usize,
                ask,
            }
        })
        .collect();
    for (count, ask) in [(deadlines, Ask::Deadline), (traps, Ask::Trap)] {
        let mut placed = 0;
        // At most half the calls each, so that there is room for both.
        while placed < count.min(calls / 2) {
            let at = rng.below(calls as u64) as usize;
            if !matches!(plan[at].ask, Ask::Deadline | Ask::Trap) {
                plan[at].ask = ask;
                placed += 1;
            }
        }
    }
    plan
}

/// The answer a call got, and when it was asked and answered.
pub struct Answer {
    asked: Instant,
    answered: Instant,
    result: marionette::Result<Json>,
}

/// What a round produced: an answer per call, `None` for a call that got
/// none within [`GIVE_UP`]; and how many calls were answered twice.
pub struct Round {
    answers: Vec<Option<Answer>>,
    answered_twice: usize,
}

/// Runs `calls` from [`CALLERS`] callers at once on `sandboxes`. Never
/// fails: a call still unanswered after [`GIVE_UP`] is left without an
/// answer (its caller is aborted) for [`Tally::add`] to count as lost.
pub async fn round(sandboxes: &[Sandbox], calls: &[Call]) -> Round {
    let slots: Arc<Vec<Mutex<Option<Answer>>>> =
        Arc::new((0..calls.len()).map(|_| Mutex::new(None)).collect());
    let twice = Arc::new(AtomicUsize::new(0));
    let plan: Arc<Vec<Call>> = Arc::new(calls.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (sandboxes, plan, next, slots, twice) = (
                sandboxes.to_vec(),
                plan.clone(),
                next.clone(),
                slots.clone(),
                twice.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let at = next.fetch_add(1, Ordering::Relaxed);
                    let Some(call) = plan.get(at) else { break };
                    let asked = Instant::now();
                    let result = perform(&sandboxes[call.sandbox], call).await;
                    let answer = Answer {
                        asked,
                        answered: Instant::now(),
                        result,
                    };
                    let mut slot = slots[at].lock().unwrap_or_else(|p| p.into_inner());
                    if slot.is_some() {
                        twice.fetch_add(1, Ordering::Relaxed);
                    }
                    *slot = Some(answer);
                }
            })
        })
        .collect();
    let aborts: Vec<_> = callers.iter().map(|c| c.abort_handle()).collect();
    let all = async {
        for caller in callers {
            // A caller that panicked leaves its call unanswered: lost.
            let _ = caller.await;
        }
    };
    if tokio::time::timeout(GIVE_UP, all).await.is_err() {
        for abort in aborts {
            abort.abort();
        }
    }
    let answers = slots
        .iter()
        .map(|slot| slot.lock().unwrap_or_else(|p| p.into_inner()).take())
        .collect();
    Round {
        answers,
        answered_twice: twice.load(Ordering::Relaxed),
    }
}

/// Makes one call as its plan says.
async fn perform(sandbox: &Sandbox, call: &Call) -> marionette::Result<Json> {
    let i = json!(call.index);
    let plain = TaskOptions::default;
    match call.ask {
        Ask::Quick => sandbox.call(SCRIPT, "quick", &[i], plain()).await,
        Ask::Main => sandbox.run_main(SCRIPT, &json!({ "i": i }), plain()).await,
        Ask::Timer { ms } => {
            sandbox
                .call(SCRIPT, "timer", &[i, ms.into()], plain())
                .await
        }
        Ask::Cancel { ms, after_ms } => {
            let token = CancellationToken::new();
            let canceller = {
                let token = token.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(after_ms)).await;
                    token.cancel();
                })
            };
            let options = TaskOptions {
                cancel: Some(token),
                ..TaskOptions::default()
            };
            let result = sandbox
                .call(SCRIPT, "timer", &[i, ms.into()], options)
                .await;
            canceller.abort();
            result
        }
        Ask::Timeout { after_ms } => {
            let options = TaskOptions::timeout(Duration::from_millis(after_ms));
            sandbox
                .call(SCRIPT, "timer", &[i, NEVER_MS.into()], options)
                .await
        }
        Ask::Throw { ms } => {
            sandbox
                .call(SCRIPT, "throws", &[i, ms.into()], plain())
                .await
        }
        Ask::Deadline => sandbox.call(SCRIPT, "spin", &[], plain()).await,
        Ask::Trap => sandbox.call(SCRIPT, "recurse", &[], plain()).await,
    }
}

/// The kind of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A value.
    Ok,
    /// [`Error::Canceled`].
    Canceled,
    /// [`Error::Timeout`].
    Timeout,
    /// [`Error::Script`].
    Script,
    /// [`Error::Limit`].
    Limit,
    /// [`Error::Trapped`].
    Trapped,
    /// Any other error (none is expected).
    Other,
}

impl Kind {
    /// Every kind, in the report's column order.
    pub const ALL: [Kind; 7] = [
        Kind::Ok,
        Kind::Canceled,
        Kind::Timeout,
        Kind::Script,
        Kind::Limit,
        Kind::Trapped,
        Kind::Other,
    ];

    fn of(result: &marionette::Result<Json>) -> Kind {
        match result {
            Ok(_) => Kind::Ok,
            Err(Error::Canceled { .. }) => Kind::Canceled,
            Err(Error::Timeout { .. }) => Kind::Timeout,
            Err(Error::Script { .. }) => Kind::Script,
            Err(Error::Limit { .. }) => Kind::Limit,
            Err(Error::Trapped { .. }) => Kind::Trapped,
            Err(_) => Kind::Other,
        }
    }
}

/// Answers of a measure's rounds, counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// The measure, `group/function`.
    pub measure: String,
    /// Rounds counted (criterion's warm-up included).
    pub rounds: usize,
    /// Calls made.
    pub calls: usize,
    /// Answers by kind.
    pub answers: BTreeMap<Kind, usize>,
    /// Answers of a kind their call cannot legitimately get (a quick call
    /// that timed out, a value that is wrong): must be 0.
    pub unexpected: usize,
    /// Calls without exactly one answer (none within [`GIVE_UP`], or two):
    /// must be 0.
    pub lost: usize,
    /// The first few unexpected or lost calls, described, with the seed of
    /// their round (to replay it).
    pub examples: Vec<String>,
}

impl Tally {
    /// An empty tally of `measure`.
    pub fn new(measure: String) -> Tally {
        Tally {
            measure,
            ..Tally::default()
        }
    }

    /// Counts `round`, which ran `calls` (made from `seed`).
    pub fn add(&mut self, seed: u64, calls: &[Call], round: &Round) {
        const EXAMPLES: usize = 10;
        self.rounds += 1;
        self.calls += calls.len();
        self.lost += round.answered_twice;
        if round.answered_twice > 0 && self.examples.len() < EXAMPLES {
            self.examples.push(format!(
                "seed {seed}: {} calls answered twice",
                round.answered_twice
            ));
        }
        // When each trap call was asked and answered: the instance trapped
        // in between, failing every task waiting in it.
        let traps: Vec<(usize, Instant, Instant)> = calls
            .iter()
            .zip(&round.answers)
            .filter(|(c, _)| c.ask == Ask::Trap)
            .filter_map(|(c, a)| a.as_ref().map(|a| (c.sandbox, a.asked, a.answered)))
            .collect();
        for (call, answer) in calls.iter().zip(&round.answers) {
            let Some(answer) = answer else {
                self.lost += 1;
                if self.examples.len() < EXAMPLES {
                    self.examples
                        .push(format!("seed {seed}: call {call:?} got no answer"));
                }
                continue;
            };
            let kind = Kind::of(&answer.result);
            *self.answers.entry(kind).or_insert(0) += 1;
            let caught_by_a_trap = kind == Kind::Trapped
                && call.ask.awaits_the_host()
                && traps.iter().any(|&(s, from, to)| {
                    s == call.sandbox && answer.asked < to && from < answer.answered
                });
            if !caught_by_a_trap && !expected(call, &answer.result) {
                self.unexpected += 1;
                if self.examples.len() < EXAMPLES {
                    self.examples.push(format!(
                        "seed {seed}: call {call:?} got {:?}",
                        answer.result
                    ));
                }
            }
        }
    }

    /// Answers of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        self.answers.get(&kind).copied().unwrap_or(0)
    }
}

/// Whether `result` is a right answer to `call` (a trap of another call
/// aside).
fn expected(call: &Call, result: &marionette::Result<Json>) -> bool {
    let value = json!(2 * call.index + 1);
    match (call.ask, result) {
        (Ask::Quick | Ask::Timer { .. } | Ask::Cancel { .. }, Ok(v)) => *v == value,
        (Ask::Main, Ok(v)) => *v == json!({"ok": true, "echo": {"i": call.index}}),
        (Ask::Cancel { .. }, Err(Error::Canceled { .. })) => true,
        (Ask::Timeout { .. }, Err(Error::Timeout { .. })) => true,
        (Ask::Throw { .. }, Err(Error::Script { error, .. })) => {
            error.name == "TypeError" && error.message == format!("bad {}", call.index)
        }
        (
            Ask::Deadline,
            Err(Error::Limit {
                limit: Limit::Deadline,
                ..
            }),
        ) => true,
        (
            Ask::Trap,
            Err(Error::Trapped {
                limit: Some(Limit::Stack),
                ..
            }),
        ) => true,
        _ => false,
    }
}

/// The module `recovery/*` traps in and calls again.
pub const RECOVERY_SCRIPT: &str = "recovery.js";

/// Its source: a function that recurses until the stack is exhausted, and
/// the call that must succeed on the rebuilt instance.
pub const RECOVERY_JS: &str = r#"
export function recurse() { const f = (n) => f(n + 1) + 1; return f(0); }
export function add(a, b) { return a + b; }
"#;

/// xorshift64*: small, seeded, the same mix on every machine.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        // Odd, so never zero: the one state xorshift cannot leave.
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_seeded_and_place_their_deadlines_and_traps() {
        let a = plan(7, 500, 3, 2, 3);
        let b = plan(7, 500, 3, 2, 3);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_ne!(format!("{a:?}"), format!("{:?}", plan(8, 500, 3, 2, 3)));
        let count = |ask: Ask| a.iter().filter(|c| c.ask == ask).count();
        assert_eq!((count(Ask::Deadline), count(Ask::Trap)), (2, 3));
        assert!(a.iter().all(|c| c.sandbox < 3));
        assert!(a.iter().any(|c| matches!(c.ask, Ask::Cancel { .. })));
    }
}

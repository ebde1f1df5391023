//! The load test: many callers at once, a seeded random mix of quick calls,
//! calls awaiting timers, calls cancelled at a random moment, calls with
//! tiny timeouts, calls that throw, a few that run past the CPU deadline
//! and a couple that trap (deep recursion rebuilds the instance), against
//! one sandbox and against three sandboxes sharing one `Runtime`.
//!
//! Asserted: every call gets exactly one answer and it is of the kind asked
//! for (a cancelled call may have finished first; a call waiting for a
//! timer in an instance that trapped meanwhile fails with `Trapped`, and
//! only such a call); nothing deadlocks (the whole run has a generous
//! timeout that fails the test and names the calls still waiting); every
//! sandbox serves a normal call afterwards and holds no task and no host
//! operation any more ([`Sandbox::stats`]). The leak check runs apart, in a
//! round of the same mix without traps: a trap resets an instance's memory,
//! so a trap late in the run would hide any growth before it. Its guests'
//! linear memory after that round is within a bound of what it was before,
//! and no instance was rebuilt in between (the memory sampled after is that
//! of the instance sampled before). Nothing is timed: the machine is shared
//! and noisy.
//!
//! The soak: `MARIONETTE_SOAK=200000 cargo test --release --test integration
//! load:: -- --nocapture` makes each test run that many calls instead of
//! the default 3000 (the CPU-deadline and trap calls scale with it).
//! `MARIONETTE_LOAD_SEED=<u64>` replays another mix; the seed in use is
//! printed with the figures.
//!
//! The process's resident memory is printed too, for the soak; it is not
//! asserted, since tests running beside these in the same binary (a full
//! `cargo test` run) add their own.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use marionette::{Error, Limit, Policy, Runtime, Sandbox, TaskOptions};
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

/// Calls per test unless `MARIONETTE_SOAK` says otherwise.
const DEFAULT_CALLS: usize = 3000;
/// Calls of the warm-up round, before the first memory sample.
const WARM_UP_CALLS: usize = 600;
/// Callers at once, each making its calls one after another.
const CALLERS: usize = 64;
/// The mix's seed unless `MARIONETTE_LOAD_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x5EED_10AD;
/// How much the guests' linear memory may grow over the leak check's round
/// (it never shrinks, so a leak only adds): without a leak it grows by a
/// page or two (64 KiB each); over the round's 3000 calls, a leak of more
/// than about 350 bytes per call fails the test (shown by a guest that kept
/// 1 KiB per finished task).
const GUEST_GROWTH_BOUND: u64 = 1 << 20;
/// The per-entry CPU deadline: small, so the calls that spin end quickly,
/// and far above what any other call of the mix needs.
const ENTRY_DEADLINE: Duration = Duration::from_millis(250);
/// How long a call that must time out would otherwise wait for its timer.
const NEVER_MS: u64 = 10_000;

/// The script every call runs. Stateless: a trap reloads it into a fresh
/// instance, and answers must not depend on which instance served them.
const SCRIPT: &str = "load.js";
const SOURCE: &str = r#"
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

/// Serializes the load tests: each reads the memory of the whole process.
static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_mix_of_calls_each_gets_its_one_answer_from_one_sandbox() {
    let _turn = TURNS.lock().await;
    let sandbox = Sandbox::new(policy()).await.expect("sandbox");
    load_test(vec![sandbox]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_mix_of_calls_each_gets_its_one_answer_from_three_sandboxes_on_one_runtime() {
    let _turn = TURNS.lock().await;
    let runtime = tokio::task::spawn_blocking(Runtime::shared)
        .await
        .unwrap()
        .expect("runtime");
    let mut sandboxes = Vec::new();
    for _ in 0..3 {
        let sandbox = Sandbox::with_runtime(runtime.clone(), policy())
            .await
            .expect("sandbox");
        sandboxes.push(sandbox);
    }
    load_test(sandboxes).await;
}

fn policy() -> Policy {
    Policy {
        entry_deadline: ENTRY_DEADLINE,
        ..Policy::default()
    }
}

async fn load_test(sandboxes: Vec<Sandbox>) {
    for sandbox in &sandboxes {
        sandbox.load(SCRIPT, SOURCE).await.expect("load");
    }
    let calls = std::env::var("MARIONETTE_SOAK")
        .ok()
        .map(|v| v.parse().expect("MARIONETTE_SOAK: a number of calls"))
        .unwrap_or(DEFAULT_CALLS);
    let seed = std::env::var("MARIONETTE_LOAD_SEED")
        .ok()
        .map(|v| v.parse().expect("MARIONETTE_LOAD_SEED: a u64"))
        .unwrap_or(DEFAULT_SEED);
    let n = sandboxes.len();

    // The warm-up round: the same kind of mix, so the allocator, tokio and
    // every instance (rebuilt at least once) have reached their working size.
    let warm_up = plan(seed ^ 0xFFFF, WARM_UP_CALLS, n);
    let answers = run(&sandboxes, &warm_up, slots(warm_up.len())).await;
    check(&warm_up, &answers, n, "warm-up");
    drop(answers);

    let calls = plan(seed, calls, n);
    // The test's own record of the answers is made, and its memory
    // touched, before the first sample: it is not the sandboxes' growth.
    let answer_slots = slots(calls.len());
    let before = rss_bytes().await;
    let answers = run(&sandboxes, &calls, answer_slots).await;
    for sandbox in &sandboxes {
        assert_serves(sandbox).await;
    }
    let after = rss_bytes().await;
    let mut rebuilds = 0;
    for (i, sandbox) in sandboxes.iter().enumerate() {
        let stats = sandbox.stats().await.expect("stats");
        assert_eq!(
            (stats.tasks, stats.pending_ops),
            (0, 0),
            "sandbox {i} still holds tasks or host operations after every call was answered: {stats:?}"
        );
        rebuilds += stats.rebuilds;
    }
    let counts = check(&calls, &answers, n, "run");
    drop(answers);

    // The leak check: a warm-up and a round of the same mix without traps.
    let warm_up = without_traps(plan(seed ^ 0xA11A, WARM_UP_CALLS, n));
    let answers = run(&sandboxes, &warm_up, slots(warm_up.len())).await;
    check(&warm_up, &answers, n, "leak check warm-up");
    drop(answers);
    let round = without_traps(plan(seed ^ 0x1EAC, calls.len(), n));
    let answer_slots = slots(round.len());
    let rebuilds_before = total_rebuilds(&sandboxes).await;
    let guest_before = guest_memory(&sandboxes).await;
    let answers = run(&sandboxes, &round, answer_slots).await;
    let guest_after = guest_memory(&sandboxes).await;
    assert_eq!(
        total_rebuilds(&sandboxes).await,
        rebuilds_before,
        "an instance was rebuilt during the leak check: its memory says nothing"
    );
    check(&round, &answers, n, "leak check");

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "load: {n} sandbox(es), {CALLERS} callers, {} calls, seed {seed}",
        calls.len()
    );
    for ((ask, answer), count) in &counts {
        println!("  {ask:<9} -> {answer:<9} {count}");
    }
    println!(
        "  resident memory: {:.1} MiB after the warm-up, {:.1} MiB after the run ({:+.1} MiB); {rebuilds} instance(s) rebuilt",
        mib(before),
        mib(after),
        mib(after) - mib(before)
    );
    println!(
        "  guest memory, leak check ({} calls, no trap): {:.1} MiB before, {:.1} MiB after",
        round.len(),
        mib(guest_before),
        mib(guest_after),
    );
    assert!(
        guest_after < guest_before + GUEST_GROWTH_BOUND,
        "the guests' linear memory grew from {:.1} MiB to {:.1} MiB over {} calls",
        mib(guest_before),
        mib(guest_after),
        round.len()
    );
}

/// `plan` with every trap replaced by a quick call.
fn without_traps(mut plan: Vec<Call>) -> Vec<Call> {
    for call in &mut plan {
        if call.ask == Ask::Trap {
            call.ask = Ask::Quick;
        }
    }
    plan
}

/// Instances rebuilt so far, over every sandbox.
async fn total_rebuilds(sandboxes: &[Sandbox]) -> u64 {
    let mut total = 0;
    for sandbox in sandboxes {
        total += sandbox.stats().await.expect("stats").rebuilds;
    }
    total
}

/// The linear memory of every sandbox's instance, summed.
async fn guest_memory(sandboxes: &[Sandbox]) -> u64 {
    let mut total = 0;
    for sandbox in sandboxes {
        total += sandbox.stats().await.expect("stats").memory;
    }
    total
}

/// What a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// `quick(i)`: answers at once.
    Quick,
    /// `main({i})` through `run_main`.
    Main,
    /// `timer(i, ms)`: answers after a host timer.
    Timer { ms: u64 },
    /// `timer(i, ms)`, its token cancelled after `after_ms`.
    Cancel { ms: u64, after_ms: u64 },
    /// `timer(i, NEVER_MS)` with a timeout of `after_ms`.
    Timeout { after_ms: u64 },
    /// `throws(i, ms)`: a `TypeError`, at once or after a timer.
    Throw { ms: u64 },
    /// `spin()`: runs until the CPU deadline stops it.
    Deadline,
    /// `recurse()`: exhausts the stack; the instance is rebuilt.
    Trap,
}

impl Ask {
    /// Whether the call's task waits in the instance for a host timer, where
    /// a trap of another call can catch it. The others run to their end in
    /// one entry and cannot meet another call's trap.
    fn awaits_the_host(self) -> bool {
        match self {
            Ask::Timer { .. } | Ask::Cancel { .. } | Ask::Timeout { .. } => true,
            Ask::Throw { ms } => ms > 0,
            Ask::Quick | Ask::Main | Ask::Deadline | Ask::Trap => false,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Ask::Quick => "quick",
            Ask::Main => "main",
            Ask::Timer { .. } => "timer",
            Ask::Cancel { .. } => "cancel",
            Ask::Timeout { .. } => "timeout",
            Ask::Throw { .. } => "throw",
            Ask::Deadline => "deadline",
            Ask::Trap => "trap",
        }
    }
}

/// One call of the plan.
#[derive(Debug, Clone, Copy)]
struct Call {
    index: usize,
    sandbox: usize,
    ask: Ask,
}

/// A seeded mix of `calls` calls over `sandboxes` sandboxes: mostly quick
/// calls and timers, a share of cancellations, timeouts and throws, and a
/// few calls past the deadline and traps at random places.
fn plan(seed: u64, calls: usize, sandboxes: usize) -> Vec<Call> {
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
    // At most half the calls each, so that there is room for both.
    let deadlines = (calls / 1000).max(2).min(calls / 2);
    let traps = (calls / 1500).max(2).min(calls / 2);
    for (count, ask) in [(deadlines, Ask::Deadline), (traps, Ask::Trap)] {
        let mut placed = 0;
        while placed < count {
            let at = rng.below(calls as u64) as usize;
            if !matches!(plan[at].ask, Ask::Deadline | Ask::Trap) {
                plan[at].ask = ask;
                placed += 1;
            }
        }
    }
    plan
}

/// What is kept of the answer a call got: when it was asked and answered,
/// its kind, whether it is right for the call, and what it was only when
/// it is not (a soak keeps hundreds of thousands).
struct Answer {
    asked: Instant,
    answered: Instant,
    kind: Kind,
    right: bool,
    /// The answer, when it is wrong and not an ordinary stack trap (which
    /// a trap of another call may explain).
    wrong: Option<String>,
}

impl Answer {
    fn new(call: &Call, asked: Instant, result: &marionette::Result<Json>) -> Answer {
        let right = expected(call, result);
        let stack_trap = matches!(
            result,
            Err(Error::Trapped {
                limit: Some(Limit::Stack),
                ..
            })
        );
        Answer {
            asked,
            answered: Instant::now(),
            kind: kind(result),
            right,
            wrong: (!right && !stack_trap).then(|| format!("{result:?}")),
        }
    }
}

/// One place per call for its answer.
type Slots = Vec<Mutex<Option<Answer>>>;

fn slots(calls: usize) -> Slots {
    (0..calls).map(|_| Mutex::new(None)).collect()
}

/// Runs `calls` from `CALLERS` callers at once (each takes the next call of
/// the plan when it is done with one); the answers go to `slots`. Fails the
/// test, naming the calls still unanswered, if the run does not end within
/// a generous time.
async fn run(sandboxes: &[Sandbox], calls: &[Call], slots: Slots) -> Slots {
    assert_eq!(slots.len(), calls.len());
    let slots = Arc::new(slots);
    let plan = Arc::new(calls.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (sandboxes, plan, next, slots) = (
                sandboxes.to_vec(),
                plan.clone(),
                next.clone(),
                slots.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let at = next.fetch_add(1, Ordering::Relaxed);
                    let Some(call) = plan.get(at) else { break };
                    let asked = Instant::now();
                    let result = perform(&sandboxes[call.sandbox], call).await;
                    let answer = Answer::new(call, asked, &result);
                    let mut slot = slots[at].lock().unwrap();
                    assert!(slot.is_none(), "call {at} answered twice");
                    *slot = Some(answer);
                }
            })
        })
        .collect();
    // Generous: the default run takes seconds; a stuck call waits forever.
    let limit = Duration::from_secs(120).max(Duration::from_millis(5) * calls.len() as u32);
    let all = async {
        for caller in callers {
            caller.await.expect("a caller panicked");
        }
    };
    if tokio::time::timeout(limit, all).await.is_err() {
        let waiting: Vec<String> = slots
            .iter()
            .zip(calls)
            .filter(|(slot, _)| slot.lock().unwrap().is_none())
            .map(|(_, call)| format!("{call:?}"))
            .collect();
        // Whether each sandbox's owner still answers tells a stuck owner
        // from an answer lost inside it.
        let mut states = Vec::new();
        for (i, sandbox) in sandboxes.iter().enumerate() {
            let stats = tokio::time::timeout(Duration::from_secs(5), sandbox.stats()).await;
            states.push(format!("sandbox {i}: {stats:?}"));
        }
        panic!(
            "no answer after {limit:?} for {} of {} calls (a deadlock or a lost answer): {}; {}",
            waiting.len(),
            calls.len(),
            waiting.join(", "),
            states.join("; ")
        );
    }
    Arc::try_unwrap(slots).unwrap_or_else(|_| unreachable!("every caller has ended"))
}

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

/// The kind of an answer, for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Ok,
    Canceled,
    Timeout,
    Script,
    Limit,
    Trapped,
    Other,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Pads as asked: `{:<9}` in the summary.
        f.pad(&format!("{self:?}").to_lowercase())
    }
}

fn kind(result: &marionette::Result<Json>) -> Kind {
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

/// Checks every answer against what its call asked for; returns the counts
/// of (what was asked, what was answered).
fn check(
    calls: &[Call],
    slots: &Slots,
    sandboxes: usize,
    round: &str,
) -> BTreeMap<(&'static str, Kind), usize> {
    let answers: Vec<_> = slots.iter().map(|slot| slot.lock().unwrap()).collect();
    let answers: Vec<&Answer> = answers
        .iter()
        .zip(calls)
        .map(|(answer, call)| {
            answer
                .as_ref()
                .unwrap_or_else(|| panic!("{round}: call {call:?} got no answer"))
        })
        .collect();
    // When each trap call was asked and answered, per sandbox: the instance
    // trapped in between, failing every task waiting in it.
    let traps: Vec<Vec<(Instant, Instant)>> = (0..sandboxes)
        .map(|s| {
            calls
                .iter()
                .zip(&answers)
                .filter(|(c, _)| c.ask == Ask::Trap && c.sandbox == s)
                .map(|(_, a)| (a.asked, a.answered))
                .collect()
        })
        .collect();
    let mut counts = BTreeMap::new();
    let mut wrong = Vec::new();
    for (call, answer) in calls.iter().zip(&answers) {
        *counts.entry((call.ask.name(), answer.kind)).or_insert(0) += 1;
        if answer.right {
            continue;
        }
        let caught_by_a_trap = answer.kind == Kind::Trapped
            && call.ask.awaits_the_host()
            && traps[call.sandbox]
                .iter()
                .any(|&(from, to)| answer.asked < to && from < answer.answered);
        if !caught_by_a_trap {
            let got = answer.wrong.as_deref().unwrap_or(STRAY_TRAP);
            wrong.push(format!("call {} {:?}: got {got}", call.index, call.ask));
        }
    }
    assert!(
        wrong.is_empty(),
        "{round}: {} of {} calls got a wrong answer:\n{}",
        wrong.len(),
        calls.len(),
        wrong.join("\n")
    );
    counts
}

/// What a stack trap no trap call explains is called in a failure.
const STRAY_TRAP: &str = "a stack trap it cannot have met (it never waits for the host, \
                          or no trap call was in flight on its sandbox)";

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

/// The sandbox answers a normal call correctly.
async fn assert_serves(sandbox: &Sandbox) {
    let out = sandbox
        .run_main(SCRIPT, &json!({"after": "load"}), TaskOptions::default())
        .await
        .expect("a normal call after the load");
    assert_eq!(out, json!({"ok": true, "echo": {"after": "load"}}));
}

/// The process's resident memory in bytes (`/proc/self/statm`): the lowest
/// of a few samples a little apart, so a short spike elsewhere in the
/// process does not count.
async fn rss_bytes() -> u64 {
    let mut lowest = u64::MAX;
    for _ in 0..5 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("resident pages in /proc/self/statm");
        lowest = lowest.min(pages * page_size());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lowest
}

/// The page size `/proc/self/statm` counts in, from the auxiliary vector
/// (`AT_PAGESZ`); 4 KiB if it cannot be read.
fn page_size() -> u64 {
    const AT_PAGESZ: u64 = 6;
    let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
    auxv.chunks_exact(16)
        .map(|pair| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes"));
            (word(&pair[..8]), word(&pair[8..]))
        })
        .find(|&(key, _)| key == AT_PAGESZ)
        .map_or(4096, |(_, value)| value)
}

/// xorshift64*: small, seeded, the same mix on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Odd, so never zero: the one state xorshift cannot leave.
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

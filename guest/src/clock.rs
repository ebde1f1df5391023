//! Time and randomness of the guest, as scripts see them: `Date`,
//! `performance.now`, `Math.random`, `crypto.getRandomValues` and
//! `crypto.randomUUID` all read from here (`js/clock.js`, `js/web.js`).
//!
//! By default they are the host's: WASI's wall and monotonic clocks and its
//! randomness. In a deterministic run (`vm-config.determinism`) they are a
//! generator seeded by the host and a virtual clock that starts at the
//! time the host gives and moves only when a `sleep` the script asked for
//! is resumed, to the time it was due (the way a Temporal workflow's time
//! moves). Nothing else then reaches the script from outside but the
//! entries and the answers to its operations, so two runs given the same
//! ones produce the same effects, byte for byte: what record and replay
//! (docs/cassette.md) rests on.

use std::cell::{Cell, RefCell};

use rustc_hash::FxHashMap;

use crate::exports::marionette::runtime::vm::Determinism;
use crate::marionette::runtime::types::HostOp;

/// The state of a deterministic run.
struct Virtual {
    rng: fastrand::Rng,
    /// What `Date.now()` says: milliseconds since the Unix epoch.
    now_ms: f64,
    /// Where `performance.now()` counts from.
    start_ms: f64,
    /// The virtual time each pending `sleep` is due at, by op.
    due: FxHashMap<u64, f64>,
}

thread_local! {
    static VIRTUAL: RefCell<Option<Virtual>> = const { RefCell::new(None) };
    /// The generator of `Math.random` outside a deterministic run, seeded
    /// once from the host's randomness.
    static HOST_RNG: RefCell<Option<fastrand::Rng>> = const { RefCell::new(None) };
    /// Where `performance.now()` counts from outside a deterministic run:
    /// the first time it is asked in this instance (not at boot: a VM
    /// snapshot made at boot must not carry a clock reading of the machine
    /// that made it).
    static ORIGIN: Cell<Option<std::time::Instant>> = const { Cell::new(None) };
}

/// Applies `vm-config.determinism`: a deterministic run starts afresh (its
/// clock at `start-ms`, its generator at `seed`); none gives the host's
/// clocks and randomness back.
pub fn configure(determinism: Option<Determinism>) {
    let state = determinism.map(|d| Virtual {
        rng: fastrand::Rng::with_seed(d.seed),
        now_ms: d.start_ms as f64,
        start_ms: d.start_ms as f64,
        due: FxHashMap::default(),
    });
    VIRTUAL.with(|v| *v.borrow_mut() = state);
    // Whatever a boot drew is forgotten: an instance made from the build's
    // snapshot seeds `Math.random` from its own host's randomness, at its
    // first draw, never from the build machine's stubs.
    HOST_RNG.with(|r| *r.borrow_mut() = None);
}

/// `Date.now()`: whole milliseconds since the Unix epoch.
pub fn now_ms() -> f64 {
    if let Some(now) = VIRTUAL.with(|v| v.borrow().as_ref().map(|v| v.now_ms)) {
        return now;
    }
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as f64,
        Err(_) => 0.0,
    }
}

/// `performance.now()`: milliseconds since the origin, in whole microseconds.
pub fn monotonic_ms() -> f64 {
    if let Some(ms) = VIRTUAL.with(|v| v.borrow().as_ref().map(|v| v.now_ms - v.start_ms)) {
        return ms;
    }
    let now = std::time::Instant::now();
    let origin = ORIGIN.with(|o| {
        let origin = o.get().unwrap_or(now);
        o.set(Some(origin));
        origin
    });
    now.duration_since(origin).as_micros() as f64 / 1000.0
}

/// `Math.random()`: a number in [0, 1).
pub fn random() -> f64 {
    with_rng(fastrand::Rng::f64)
}

/// Runs `draw` on the generator `Math.random` draws from: the seeded one of
/// a deterministic run, else the instance's own.
fn with_rng<R>(draw: impl FnOnce(&mut fastrand::Rng) -> R) -> R {
    VIRTUAL.with(|v| {
        if let Some(v) = v.borrow_mut().as_mut() {
            return draw(&mut v.rng);
        }
        HOST_RNG.with(|r| {
            let mut r = r.borrow_mut();
            let rng = r.get_or_insert_with(|| {
                let mut seed = [0u8; 8];
                // Without the host's randomness, a fixed seed: `Math.random`
                // promises no unpredictability, `crypto` (below) fails
                // instead.
                let _ = getrandom::fill(&mut seed);
                fastrand::Rng::with_seed(u64::from_le_bytes(seed))
            });
            draw(rng)
        })
    })
}

/// The runtime's ids (sessions, turns, blocks, inferences): a version 4
/// UUID drawn from [`random`]'s generator, one draw per random hex digit,
/// exactly as the runtime's JavaScript drew them before this was native (so
/// a deterministic run's ids, and every draw after them, stay the same). In
/// Rust because 31 calls into a native and 36 string concatenations per id
/// were a visible part of a session's time in the guest; the generator is
/// looked up once per id, not once per digit.
pub fn uuid() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    with_rng(|rng| {
        let mut s = String::with_capacity(36);
        for i in 0..36 {
            let c = match i {
                8 | 13 | 18 | 23 => '-',
                14 => '4',
                // `Math.floor(Math.random() * 16)`: 0..=15 (f64 in [0, 1)).
                19 => HEX[((rng.f64() * 16.0) as usize & 0x3) | 0x8] as char,
                _ => HEX[(rng.f64() * 16.0) as usize & 0xf] as char,
            };
            s.push(c);
        }
        s
    })
}

/// `crypto.getRandomValues`: fills `bytes`.
///
/// # Errors
/// The host's randomness failed (outside a deterministic run).
pub fn fill(bytes: &mut [u8]) -> Result<(), String> {
    let seeded = VIRTUAL.with(|v| v.borrow_mut().as_mut().map(|v| v.rng.fill(bytes)).is_some());
    if seeded {
        return Ok(());
    }
    getrandom::fill(bytes).map_err(|e| e.to_string())
}

/// The script asked the host for `what` as `op`: a `sleep` is due at the
/// virtual time now plus its duration.
pub fn requested(op: u64, what: &HostOp) {
    if let HostOp::Sleep(ms) = what {
        VIRTUAL.with(|v| {
            if let Some(v) = v.borrow_mut().as_mut() {
                let due = v.now_ms + *ms as f64;
                v.due.insert(op, due);
            }
        });
    }
}

/// `op` was resumed: if it is a `sleep`, the virtual clock moves to the
/// time it was due (never back: a shorter sleep resumed after a longer
/// one leaves the clock where it is).
pub fn resumed(op: u64) {
    VIRTUAL.with(|v| {
        if let Some(v) = v.borrow_mut().as_mut()
            && let Some(due) = v.due.remove(&op)
            && due > v.now_ms
        {
            v.now_ms = due;
        }
    });
}

/// `op` was released or answered: it is no longer due.
pub fn settled(op: u64) {
    VIRTUAL.with(|v| {
        if let Some(v) = v.borrow_mut().as_mut() {
            v.due.remove(&op);
        }
    });
}

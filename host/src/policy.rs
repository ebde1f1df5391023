//! Limits and capabilities of a sandbox, as plain data.
//!
//! Deny by default: a [`Policy`] grants no filesystem, environment or stdio
//! (there is nothing to switch on), no network unless [`Policy::net`]
//! allows origins for `fetch`, and bounds memory and CPU. It holds no
//! wasmtime types; the sandbox turns it into store limits, epoch deadlines
//! and the guest's configuration in one place.

use std::time::Duration;

use serde::{Deserialize, Serialize};

mod net;

pub use net::{
    FORBIDDEN_REQUEST_HEADERS, FORBIDDEN_REQUEST_PREFIXES, HIDDEN_RESPONSE_HEADERS, NetAllow,
    NetPolicy, REFUSED, classify, readable_response_header,
};

/// The limits a sandbox enforces on the scripts it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Linear memory of the guest, in bytes: everything the script and the
    /// VM hold. QuickJS's own heap limit is set a little below it
    /// ([`Policy::QUICKJS_RESERVE`]), so a script that allocates too much
    /// usually meets a catchable `InternalError: out of memory` and the task
    /// fails with [`Limit::Memory`](crate::Limit::Memory); when the guest's
    /// own code cannot get memory, the instance traps and is rebuilt
    /// ([`Error::Trapped`](crate::Error::Trapped) with the same limit).
    pub memory_limit: u64,
    /// CPU time one entry into the guest may take (running a script's code
    /// until it awaits the host). At the deadline JavaScript is interrupted
    /// (an uncatchable error, the VM stays usable) and the task fails with
    /// [`Limit::Deadline`](crate::Limit::Deadline). If the script is stuck
    /// where it cannot be interrupted, an epoch trap stops it at twice the
    /// deadline and the instance is rebuilt.
    #[serde(with = "millis")]
    pub entry_deadline: Duration,
    /// CPU time in the guest one task may take over all its entries (a
    /// session's many turns, a script that computes between timers); `None`
    /// for no cap. Past it, JavaScript is interrupted as at the entry
    /// deadline and the task fails with
    /// [`Limit::Deadline`](crate::Limit::Deadline). Time the task spends
    /// waiting for the host (timers, inference, tools) does not count; the
    /// caller's [`TaskOptions::timeout`](crate::TaskOptions::timeout) bounds
    /// that.
    #[serde(with = "millis_opt")]
    pub run_deadline: Option<Duration>,
    /// Fuel (wasm instructions, roughly) one entry may burn: a limit that
    /// does not depend on the machine's speed or load, for deterministic
    /// runs. Running out traps ([`Error::Trapped`](crate::Error::Trapped)
    /// with [`Limit::Fuel`](crate::Limit::Fuel)) and the instance is
    /// rebuilt. `None` (the default) leaves fuel off; setting it needs a
    /// runtime built with [`RuntimeOptions::fuel`](crate::RuntimeOptions),
    /// which [`Sandbox::new`](crate::Sandbox::new) picks by itself. Fuel
    /// metering makes the guest slower (see the bench report).
    pub entry_fuel: Option<u64>,
    /// Jobs that may wait for the owner; past it, calls fail with
    /// [`Error::Rejected`](crate::Error::Rejected).
    pub queue_capacity: usize,
    /// Lines of console output one task may write (0: no cap). The line
    /// past it throws a `RangeError` in the script and the task fails with
    /// [`Limit::Output`](crate::Limit::Output).
    pub max_console_lines: u32,
    /// Bytes of console output one task may write (0: no cap); as
    /// `max_console_lines`.
    pub max_console_bytes: u64,
    /// Host operations (timers, inferences, tool calls, `next()`) one task
    /// may have pending at once (0: no cap). The one past it throws a
    /// `RangeError` where the script asked, and the task fails with
    /// [`Limit::Operations`](crate::Limit::Operations).
    pub max_pending_ops: u32,
    /// Bytes of JSON a task may return (0: no cap); past it the task fails
    /// with [`Limit::Output`](crate::Limit::Output).
    pub max_result_bytes: u64,
    /// What a script's `fetch` may reach: nothing by default. See
    /// [`NetPolicy`] and SECURITY.md's network rules.
    pub net: NetPolicy,
    /// A deterministic run: the scripts' clocks and randomness come from a
    /// seed and a virtual clock instead of the machine (see
    /// [`Determinism`]). `None` (the default): the machine's. A sandbox
    /// that records a cassette settles one when this is `None`.
    pub determinism: Option<Determinism>,
}

/// The time and randomness of a deterministic run (`vm-config.determinism`,
/// docs/cassette.md).
///
/// `Math.random`, `crypto.getRandomValues` and `crypto.randomUUID` draw from
/// one generator seeded with `seed`. `Date` and `performance.now` read a
/// virtual clock that starts at `start_ms` and moves only when a timer the
/// script set (`setTimeout`, a tool timeout, a retry's backoff) fires, to
/// the time it was due, as a Temporal workflow's time does: time spent
/// waiting for a model or a tool does not show. Two runs with the same
/// determinism, the same scripts and the same answers to their operations
/// produce the same effects, byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Determinism {
    /// Seeds the generator.
    pub seed: u64,
    /// What `Date.now()` says first: milliseconds since the Unix epoch.
    pub start_ms: u64,
}

impl Determinism {
    /// Where [`seeded`](Self::seeded) starts the clock: 2025-01-01T00:00:00Z.
    pub const EPOCH_MS: u64 = 1_735_689_600_000;

    /// A run seeded with `seed` whose clock starts at [`Self::EPOCH_MS`]:
    /// the same on every machine, whenever it runs.
    pub fn seeded(seed: u64) -> Self {
        Determinism {
            seed,
            start_ms: Self::EPOCH_MS,
        }
    }

    /// A run with a fresh seed (below 2^53, so that every JSON reader keeps
    /// it whole) whose clock starts now: what a recording uses when its
    /// policy names none.
    pub fn fresh() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // The standard library's per-process random keys: enough to tell
        // runs apart, which is all a recording's seed is for.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(now.as_nanos());
        Determinism {
            seed: hasher.finish() >> 11,
            start_ms: now.as_millis() as u64,
        }
    }
}

impl Policy {
    /// Bytes of linear memory kept free of QuickJS's heap for the rest of the
    /// guest (its Rust code, effects, the shadow stack).
    pub const QUICKJS_RESERVE: u64 = 8 << 20;

    /// QuickJS's heap limit under this policy.
    pub fn quickjs_memory_limit(&self) -> u64 {
        self.memory_limit
            .saturating_sub(Self::QUICKJS_RESERVE)
            .max(Self::QUICKJS_RESERVE)
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            memory_limit: 256 << 20,
            entry_deadline: Duration::from_secs(5),
            run_deadline: Some(Duration::from_secs(60)),
            entry_fuel: None,
            queue_capacity: 1024,
            max_console_lines: 10_000,
            max_console_bytes: 1 << 20,
            max_pending_ops: 1_000,
            max_result_bytes: 16 << 20,
            net: NetPolicy::default(),
            determinism: None,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

mod millis_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

//! Limits and capabilities of a sandbox, as plain data.
//!
//! Deny by default: a [`Policy`] grants no filesystem, network, environment
//! or stdio (there is nothing to switch on yet), and bounds memory and CPU.
//! It holds no wasmtime types; the sandbox turns it into store limits, epoch
//! deadlines and the guest's configuration in one place.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The limits a sandbox enforces on the scripts it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Linear memory of the guest, in bytes: everything the script and the
    /// VM hold. When QuickJS cannot get more, the allocation fails inside
    /// JavaScript and the task fails with
    /// [`Limit::Memory`](crate::Limit::Memory) (the script can catch the
    /// `InternalError: out of memory` when QuickJS had room to make it); when
    /// the guest's own code cannot, the instance traps and is rebuilt
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
    /// Jobs that may wait for the owner; past it, calls fail with
    /// [`Error::Rejected`](crate::Error::Rejected).
    pub queue_capacity: usize,
}

impl Policy {
    /// Bytes of linear memory kept free of QuickJS's heap for the rest of the
    /// guest (its Rust code, effects, the shadow stack).
    pub const QUICKJS_RESERVE: u64 = 8 << 20;

    /// QuickJS's heap limit under this policy, as QuickJS counts its heap.
    ///
    /// Natively that is bytes. In the guest (WASI) QuickJS cannot measure
    /// an allocation and counts each as 8 bytes, so this limit never binds
    /// before the linear memory limit does; the guest uses it to pace its
    /// collections of reference cycles.
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
            queue_capacity: 1024,
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

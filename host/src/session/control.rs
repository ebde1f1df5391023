//! Stopping runs: the cancel signal a session keeps for its active run, and
//! the handle of a run started in the background.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::events::SessionEvent;
use crate::error::{Error, Op, Result};
use crate::model::Turn;

#[cfg(doc)]
use super::handle::Session;

/// Cancels a run with a reason.
#[derive(Clone, Default)]
pub(crate) struct Stop {
    pub(crate) token: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl Stop {
    pub(crate) fn cancel(&self, reason: String) {
        if let Ok(mut slot) = self.reason.lock() {
            slot.get_or_insert(reason);
        }
        self.token.cancel();
    }

    pub(crate) fn reason(&self) -> Option<String> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }
}

/// A run going on in the background ([`Session::start`]).
#[derive(Debug)]
pub struct RunHandle {
    pub(crate) op: Op,
    pub(crate) events: Option<UnboundedReceiver<SessionEvent>>,
    pub(crate) stop: Stop,
    pub(crate) join: tokio::task::JoinHandle<Result<Turn>>,
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop")
            .field("canceled", &self.token.is_cancelled())
            .finish()
    }
}

impl RunHandle {
    /// Every event of the run, from its first, in order: they are buffered
    /// from the start, so taking the receiver late loses nothing. The first
    /// call takes the receiver; later calls return `None`.
    pub fn events(&mut self) -> Option<UnboundedReceiver<SessionEvent>> {
        self.events.take()
    }

    /// Stops the run: what it awaits is dropped and it fails with
    /// [`Error::Canceled`] carrying `reason`.
    pub fn cancel(&self, reason: impl Into<String>) {
        self.stop.cancel(reason.into());
    }

    /// Whether the run has ended.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Waits for the run's final turn.
    ///
    /// # Errors
    /// As [`Session::run`]; [`Error::Panicked`] when code the run called
    /// panicked.
    pub async fn result(self) -> Result<Turn> {
        match self.join.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic".into());
                Err(Error::Panicked {
                    op: self.op,
                    message,
                })
            }
            Err(_) => Err(Error::Canceled {
                op: self.op,
                reason: Some("the runtime shut down".into()),
            }),
        }
    }
}

//! The session: its history, its one active run, and the handle of a run
//! started in the background.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::builder::SessionBuilder;
use super::control::{RunHandle, Stop};
use super::events::{EventEmitter, EventSink};
use super::run::{LoopParts, RunError, RunSpec, ended};
use crate::error::{Error, Op, Result};
use crate::model::{Event, Turn};
use crate::policy::Policy;
use crate::sandbox::Sandbox;

/// How one run goes.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// How long the whole run may take; past it the run stops (everything
    /// it awaited is dropped) and fails with [`Error::Timeout`]. Engines,
    /// middleware and tools see the deadline as `deadline_ms`.
    pub timeout: Option<Duration>,
    /// Passed to every engine, middleware and tool context of the run.
    pub tags: Map<String, Value>,
    /// Cancelling it stops the run with [`Error::Canceled`].
    pub cancel: Option<CancellationToken>,
    /// Receives the run's events, in order, beside the session's sinks.
    pub events: Option<EventSink>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("timeout", &self.timeout)
            .field("tags", &self.tags)
            .field("cancel", &self.cancel.is_some())
            .field("events", &self.events.is_some())
            .finish()
    }
}

/// A conversation: a history of turn snapshots and at most one run going.
///
/// Cheap to clone; clones share the history. Snapshots handed out
/// ([`latest`](Self::latest), [`turns`](Self::turns)) are copies: changing
/// them changes nothing in the session.
///
/// # History
///
/// A run works on a copy of the latest turn. `run(Some(seed), ..)` first
/// appends the seed (so a failed run can be retried with `run(None, ..)`).
/// Only a run that succeeds appends its final turn; a failed, cancelled or
/// timed-out run appends nothing (its partial turn, where there is one, is
/// in the [`RunError`]).
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub id: String,
    pub parts: LoopParts,
    pub sinks: Vec<EventSink>,
    pub state: Mutex<State>,
    /// The sandbox whose guest runs the loop: the builder's, or one of the
    /// session's own, made by the first run.
    pub sandbox: tokio::sync::OnceCell<Sandbox>,
}

#[derive(Default)]
pub(crate) struct State {
    pub history: Vec<Turn>,
    pub active: Option<Active>,
    pub serial: u64,
}

/// The run going on: what stops it.
pub(crate) struct Active {
    serial: u64,
    stop: Stop,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("engine", &self.inner.parts.engine.name())
            .field("turns", &self.turn_count())
            .field("running", &self.is_running())
            .finish()
    }
}

impl Session {
    /// A builder: engine, middleware, tools, settings, hooks.
    pub fn builder() -> SessionBuilder {
        SessionBuilder::default()
    }

    /// The session's id (events and contexts carry it).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Appends a turn to the history (allowed while a run is going; the
    /// run's final turn then comes after it).
    pub fn append(&self, turn: Turn) {
        self.state().history.push(turn);
    }

    /// A copy of the latest turn.
    pub fn latest(&self) -> Option<Turn> {
        self.state().history.last().cloned()
    }

    /// A copy of turn `index` (0 is the oldest).
    pub fn turn(&self, index: usize) -> Option<Turn> {
        self.state().history.get(index).cloned()
    }

    /// Copies of every turn, oldest first.
    pub fn turns(&self) -> Vec<Turn> {
        self.state().history.clone()
    }

    /// How many turns the history holds.
    pub fn turn_count(&self) -> usize {
        self.state().history.len()
    }

    /// Whether a run is going.
    pub fn is_running(&self) -> bool {
        self.state().active.is_some()
    }

    /// Cancels the run going on, if any; returns whether there was one.
    pub fn cancel_active(&self) -> bool {
        match &self.state().active {
            Some(active) => {
                active.stop.cancel("canceled by cancel_active".into());
                true
            }
            None => false,
        }
    }

    /// Runs the tool loop to its end in the caller's task; see the type's
    /// docs for what it does to the history. Dropping the future stops the
    /// run like a cancellation.
    ///
    /// # Errors
    /// [`Error::Host`] with a [`RunError`] source (another run is going, no
    /// turn, max iterations, an aborting tool); [`Error::Timeout`],
    /// [`Error::Canceled`]; an engine's or middleware's own error.
    pub async fn run(&self, seed: Option<Turn>, options: RunOptions) -> Result<Turn> {
        self.begin(seed, options, None)?.execute().await
    }

    /// Starts a run in a background tokio task and returns its handle at
    /// once. The run goes on if the handle is dropped (it only detaches).
    ///
    /// # Errors
    /// As [`run`](Self::run) for what is checked before starting (another
    /// run going, no turn); [`Error::Host`] outside a tokio runtime.
    pub fn start(&self, seed: Option<Turn>, options: RunOptions) -> Result<RunHandle> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::host(
                self.op(),
                anyhow::anyhow!("starting a run needs a tokio runtime: {e}"),
            )
        })?;
        let (sink, events) = tokio::sync::mpsc::unbounded_channel();
        let run = self.begin(seed, options, Some(sink))?;
        let stop = run.stop.clone();
        let op = run.op.clone();
        let join = runtime.spawn(run.execute());
        Ok(RunHandle {
            op,
            events: Some(events),
            stop,
            join,
        })
    }

    fn op(&self) -> Op {
        format!("session {}: run", self.inner.id).into()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; tolerate poisoning anyway.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims the run slot and prepares the run, synchronously, so a second
    /// run fails at once and `start` never returns a doomed handle.
    fn begin(
        &self,
        seed: Option<Turn>,
        options: RunOptions,
        sink: Option<EventSink>,
    ) -> Result<Prepared> {
        let op = self.op();
        let stop = Stop::default();
        let (serial, turn) = {
            let mut state = self.state();
            if state.active.is_some() {
                return Err(Error::host(op, RunError::AlreadyRunning));
            }
            if let Some(seed) = seed {
                state.history.push(seed);
            }
            let Some(turn) = state.history.last().cloned() else {
                return Err(Error::host(op, RunError::NoTurn));
            };
            state.serial += 1;
            let serial = state.serial;
            state.active = Some(Active {
                serial,
                stop: stop.clone(),
            });
            (serial, turn)
        };
        let mut sinks = self.inner.sinks.clone();
        sinks.extend(options.events);
        sinks.extend(sink);
        Ok(Prepared {
            slot: Slot {
                session: self.clone(),
                serial,
            },
            op,
            turn,
            tags: options.tags,
            sinks,
            timeout: options.timeout,
            cancel: options.cancel,
            stop,
        })
    }

    /// The sandbox that runs the loop (made on first use when the builder
    /// was given none).
    async fn sandbox(&self, op: &Op) -> Result<&Sandbox> {
        self.inner
            .sandbox
            .get_or_try_init(|| Sandbox::new(Policy::default()))
            .await
            .map_err(|e| match e {
                Error::Host { source, .. } => Error::host(
                    op.clone(),
                    source.context("making the sandbox that runs the session's loop"),
                ),
                other => other,
            })
    }
}

/// Releases the run slot when the run ends, however it ends (a dropped
/// future or a panic included).
struct Slot {
    session: Session,
    serial: u64,
}

impl Slot {
    /// Ends the run: appends the final turn on success, in the same step as
    /// freeing the slot, so no one sees a finished run without its turn.
    fn finish(self, turn: Option<&Turn>) {
        let mut state = self.session.state();
        if let Some(turn) = turn {
            state.history.push(turn.clone());
        }
        if state
            .active
            .as_ref()
            .is_some_and(|a| a.serial == self.serial)
        {
            state.active = None;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.session.state();
        if state
            .active
            .as_ref()
            .is_some_and(|a| a.serial == self.serial)
        {
            state.active = None;
        }
    }
}

/// A run with its slot claimed, ready to go.
struct Prepared {
    slot: Slot,
    op: Op,
    turn: Turn,
    tags: Map<String, Value>,
    sinks: Vec<EventSink>,
    timeout: Option<Duration>,
    cancel: Option<CancellationToken>,
    stop: Stop,
}

impl Prepared {
    async fn execute(self) -> Result<Turn> {
        let Prepared {
            slot,
            op,
            turn,
            tags,
            sinks,
            timeout,
            cancel,
            stop,
        } = self;
        let session = &slot.session.clone();
        let events = EventEmitter::new(session.inner.id.clone(), sinks);
        let span = tracing::debug_span!("session.run", session = %session.inner.id);
        let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
        // Cancelling the run's task: the guest stops it, and the run ends
        // once it has (what the run awaited is dropped by then).
        let stopping = CancellationToken::new();
        let work = async {
            let sandbox = session.sandbox(&op).await?;
            let mut registration = sandbox.provide();
            let spec = session.inner.parts.spec(
                &op,
                &RunSpec {
                    session_id: &session.inner.id,
                    tags: &tags,
                    timeout_ms: timeout.map(|t| t.as_millis() as u64),
                },
                &mut registration,
            )?;
            let outcome = sandbox
                .run_session(op.clone(), spec, &turn, sender, timeout, stopping.clone())
                .instrument(span)
                .await;
            match outcome {
                Ok(value) => ended(&op, value),
                // A Rust part's error that went through the script unchanged
                // comes back as itself.
                Err(Error::Script { op, error }) => Err(registration
                    .raised
                    .take(&error.name, &error.message)
                    .unwrap_or(Error::Script { op, error })),
                Err(e) => Err(e),
            }
        };
        tokio::pin!(work);
        let canceled = async {
            match &cancel {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(canceled);
        // The run's events reach its sinks as they come, and all of them
        // before its end: the guest sends a task's events before its done.
        let mut why: Option<Error> = None;
        let result = loop {
            tokio::select! {
                biased;
                Some(event) = received.recv() => forward(&events, event),
                result = &mut work => break result,
                () = stop.token.cancelled(), if why.is_none() => {
                    why = Some(Error::Canceled { op: op.clone(), reason: stop.reason() });
                    stopping.cancel();
                }
                () = &mut canceled, if why.is_none() => {
                    why = Some(Error::Canceled { op: op.clone(), reason: Some("canceled by the caller".into()) });
                    stopping.cancel();
                }
            }
        };
        let result = match why {
            Some(error) => Err(error),
            None => result,
        };
        while let Ok(event) = received.try_recv() {
            forward(&events, event);
        }
        match &result {
            Ok(turn) => slot.finish(Some(turn)),
            Err(error) => {
                tracing::debug!(session = %session.inner.id, %error, "run failed");
                events.error(error.to_string());
                slot.finish(None);
            }
        }
        result
    }
}

/// Hands a session event of the run's task to the run's sinks; console
/// lines were logged by the sandbox already.
fn forward(events: &EventEmitter, event: Event) {
    if let Event::Session(event) = event {
        events.forward(event);
    }
}

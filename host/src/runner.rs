//! The runner: one owner holds a state and runs jobs on it, in order.
//!
//! A [`Runner<S>`] is a cheap, `Clone` handle to an *owner*: a thread of its
//! own ([`Runner::spawn`]) or turns on the threads of an [`OwnerPool`]
//! ([`Runner::spawn_on`], for many runners on few threads; see the pool's
//! module for how turns are taken). The owner
//! builds its state `S` itself (so `S` need not be `Send`: later it is a
//! wasmtime `Store` and a component instance) and then runs the jobs that the
//! handles send it, one at a time, in the order they were queued. A job is a
//! synchronous closure `FnOnce(&mut S) -> R`; it never awaits.
//!
//! # Why a dedicated thread
//!
//! Each job is one synchronous, CPU-bound entry into the guest: it may run
//! JavaScript for as long as its deadline allows. On a tokio worker that would
//! stall every other task scheduled there, and `spawn_blocking` would hand the
//! state to a different thread for each job. One OS thread that owns the state
//! for its whole life keeps the async side responsive, keeps `S` on one thread
//! (no `Send` needed) and makes "never touched from two places at once" a
//! property of the design rather than of a lock. The runner knows nothing of
//! JavaScript or wasm; it is the generic primitive the sandbox is built on.
//!
//! A thread per runner costs a thread's stack and a scheduler entry per
//! sandbox, which ten thousand sandboxes cannot afford. On a pool, a runner
//! is still served by one thread at a time and its state is still never
//! touched from two places at once (a turn holds it), but the state moves
//! from one pool thread to another between jobs, so it must be `Send`.
//!
//! # Design
//!
//! - A private `Message` enum travels over a bounded tokio `mpsc` channel;
//!   the owner receives with `blocking_recv`, so the runner needs no tokio
//!   runtime of its own and [`Runner::spawn`] can be called anywhere.
//! - Each [`Runner::call`] carries a `oneshot` for its reply. Before running
//!   a job the owner checks that somebody still waits for it (the reply is
//!   open, the caller's [`CancellationToken`] is not cancelled): a job whose
//!   caller left before it started never runs.
//! - Jobs run under `catch_unwind`: a panicking job fails its own call with
//!   [`Error::Panicked`], and the owner keeps serving.
//! - The owner stops after [`Runner::shutdown`] (once what was queued has
//!   run) or when the last handle is dropped; the state is dropped on the
//!   owner thread, before shutdown reports that the owner has stopped.
//! - The queue's bound is a semaphore of `queue_capacity` slots, the
//!   channel having one place more, so the single shutdown message always
//!   fits and [`Runner::shutdown`] never waits for room.
//! - The owner thread logs to the `tracing` subscriber that was the default
//!   where [`Runner::spawn`] was called (or to the global one, if there was
//!   none yet), inside a `runner` span whose parent
//!   is the span current there; each job runs in a `job` span (runner name
//!   and `op`) whose parent is the span current where it was queued.
//!
//! # Example
//!
//! ```
//! use marionette::runner::{Runner, RunnerOptions};
//!
//! # #[tokio::main] async fn main() -> marionette::Result<()> {
//! // The state is built on the owner thread; it need not be `Send`.
//! let runner = Runner::spawn(RunnerOptions::default(), || std::rc::Rc::new(Vec::<u32>::new()))?;
//! runner.call("push", |v| std::rc::Rc::make_mut(v).push(7)).await?;
//! let len = runner.call("len", |v| v.len()).await?;
//! assert_eq!(len, 1);
//! runner.shutdown().await;
//! # Ok(()) }
//! ```

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Span;

use crate::error::{Error, Op, Result};

mod pool;
#[cfg(test)]
mod tests;

pub use pool::{OwnerPool, OwnerPoolOptions};

/// How a [`Runner`] is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerOptions {
    /// The runner's name: the owner thread's name and a field of every log
    /// line and span of this runner, so several runners can be told apart.
    pub name: String,
    /// How many jobs may wait in the queue (the running job not counted)
    /// before [`Runner::call`] and [`Runner::post`] answer
    /// [`Error::Rejected`]. A bound keeps a flood of work from turning into
    /// unbounded memory. `0` is treated as `1`, and values past tokio's
    /// limit ([`Semaphore::MAX_PERMITS`]) as that limit.
    pub queue_capacity: usize,
    /// How long a [`Runner::call`] waits for its result when its
    /// [`CallOptions`] name no timeout (like the original's `MaxWait`).
    /// `None`: callers wait as long as it takes.
    pub default_timeout: Option<Duration>,
}

impl RunnerOptions {
    /// The default [`queue_capacity`](Self::queue_capacity): deep enough for
    /// bursts of concurrent callers, small enough to refuse a runaway loop.
    pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
}

impl Default for RunnerOptions {
    /// Named `"runner"`, a queue of [`Self::DEFAULT_QUEUE_CAPACITY`] jobs, no
    /// default timeout.
    fn default() -> Self {
        Self {
            name: "runner".to_owned(),
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            default_timeout: None,
        }
    }
}

/// Per-call options of [`Runner::call_with`].
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// How long to wait for the result; `None` uses the runner's
    /// [`default_timeout`](RunnerOptions::default_timeout).
    pub timeout: Option<Duration>,
    /// Cancels the call: the caller gets [`Error::Canceled`] at once, and the
    /// job never runs if it had not started.
    pub cancel: Option<CancellationToken>,
}

impl CallOptions {
    /// Options that wait at most `timeout` for the result.
    pub fn timeout(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            cancel: None,
        }
    }

    /// Options cancelled by `token`.
    pub fn cancel(token: CancellationToken) -> Self {
        Self {
            timeout: None,
            cancel: Some(token),
        }
    }
}

/// What travels to the owner.
enum Message<S> {
    /// Run a job.
    Run(Task<S>),
    /// Stop accepting work, run what is queued, then stop. Sent once, by the
    /// first [`Runner::shutdown`]; it mostly wakes an idle owner.
    Shutdown,
}

/// A queued job, its type erased: the closure replies to its caller (or
/// logs, for a post) by itself.
struct Task<S> {
    op: Op,
    /// The `job` span, child of the span current where the job was queued.
    span: Span,
    /// This job's place in the queue, given back when the owner takes it out.
    slot: OwnedSemaphorePermit,
    run: Box<dyn FnOnce(&mut S) + Send>,
}

impl<S> Task<S> {
    fn run(self, state: &mut S) {
        let Task {
            op,
            span,
            slot,
            run,
        } = self;
        // Out of the queue: no longer counts against its capacity.
        drop(slot);
        let _entered = span.enter();
        tracing::trace!(%op, "job starts");
        run(state);
    }
}

/// What every handle shares with the others and with the owner.
struct Shared {
    name: String,
    capacity: usize,
    default_timeout: Option<Duration>,
    /// Set by the first shutdown, and by the owner when it stops.
    closed: AtomicBool,
    /// Free places in the queue. The channel itself holds one more message
    /// than this, so the single [`Message::Shutdown`] always fits and
    /// shutdown never waits for room.
    slots: Arc<Semaphore>,
    /// Never written: the owner drops the sender when it has stopped, which
    /// is what [`Runner::shutdown`] waits for.
    stopped: watch::Receiver<()>,
    /// How long a caller looks for its reply before it sleeps on it: the
    /// pool's spin (zero for a runner with a thread of its own). See
    /// [`SpinThenWait`].
    reply_spin: Duration,
}

/// A handle to a thread that owns a state `S` and runs jobs on it, one at a
/// time, in order.
///
/// Cloning is cheap; every clone talks to the same owner. The owner stops
/// after [`shutdown`](Self::shutdown) or when the last handle is dropped,
/// and drops the state on its own thread. `Runner<S>` is `Send + Sync`
/// whatever `S` is, since `S` never leaves the owner thread.
///
/// # Backpressure
///
/// The queue holds at most
/// [`queue_capacity`](RunnerOptions::queue_capacity) waiting jobs. When it is
/// full, [`call`](Self::call) and [`post`](Self::post) fail at once with
/// [`Error::Rejected`] instead of waiting for room: the caller decides
/// whether to retry later, shed the work or report overload, and memory stays
/// bounded. A call that stops waiting (dropped, cancelled, timed out) before
/// its job started keeps its place in the queue until the owner reaches it
/// and skips it.
pub struct Runner<S> {
    handle: Arc<Handle<S>>,
    shared: Arc<Shared>,
}

impl<S> Clone for Runner<S> {
    fn clone(&self) -> Self {
        Self {
            handle: Arc::clone(&self.handle),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// What the strong handles of one runner share: the sending side of its
/// queue and, for a runner on an [`OwnerPool`], how to get it a turn. When
/// the last strong handle goes, the queue closes and the owner is woken to
/// see it (a pooled owner has no thread blocked on the queue).
struct Handle<S> {
    /// `Some` until dropped.
    tx: Option<mpsc::Sender<Message<S>>>,
    /// `None` for a runner with a thread of its own.
    wake: Option<Arc<dyn pool::Schedule>>,
}

impl<S> Handle<S> {
    fn tx(&self) -> &mpsc::Sender<Message<S>> {
        self.tx
            .as_ref()
            .expect("the sender lives as long as the handle")
    }

    /// Gets the owner a turn, when it is on a pool.
    fn wake(&self) {
        if let Some(wake) = &self.wake {
            Arc::clone(wake).schedule();
        }
    }
}

impl<S> Drop for Handle<S> {
    fn drop(&mut self) {
        // The queue closes first, so the turn this asks for sees it closed.
        drop(self.tx.take());
        self.wake();
    }
}

thread_local! {
    /// The runner whose job or `init` this thread is running, if any (the
    /// address of its `Shared`): what [`Runner::is_owner`] compares.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as running `shared`'s owner until dropped.
struct Current(usize);

impl Current {
    fn enter(shared: &Arc<Shared>) -> Current {
        Current(CURRENT.replace(Arc::as_ptr(shared) as usize))
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        CURRENT.set(self.0);
    }
}

impl<S> fmt::Debug for Runner<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("name", &self.shared.name)
            .field("queue_capacity", &self.shared.capacity)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<S> Runner<S> {
    /// Stops the runner: refuses new work at once, lets the jobs already
    /// queued run, then stops the owner thread and drops the state.
    ///
    /// Resolves when the owner has stopped and the state is dropped.
    /// Idempotent: every caller, concurrent or later, resolves once the
    /// owner has stopped. Every job accepted before the shutdown still runs
    /// (a call whose caller stopped waiting is skipped as usual) and its
    /// caller gets its answer; work offered afterwards gets
    /// [`Error::Closed`].
    ///
    /// Called from inside a job (on the owner thread), it cannot wait for
    /// its own thread to stop: it starts the shutdown and resolves at once;
    /// the owner stops after that job and the ones queued.
    ///
    /// Needs no tokio runtime.
    pub async fn shutdown(&self) {
        if !self.shared.closed.swap(true, Ordering::SeqCst) {
            tracing::debug!(runner = %self.shared.name, "shutdown requested");
            // The channel keeps a place for this message (see
            // `Shared::slots`), so it is never Full; Closed means the owner
            // has already stopped, which is what we want.
            let _ = self.handle.tx().try_send(Message::Shutdown);
            self.handle.wake();
        }
        if self.is_owner() {
            return;
        }
        let mut stopped = self.shared.stopped.clone();
        // Nothing is ever sent: this resolves (with an Err) when the owner
        // drops the sender, right after it dropped the state.
        let _ = stopped.changed().await;
    }

    /// Whether new work is refused: after [`shutdown`](Self::shutdown) was
    /// called, or when the owner has stopped.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst) || self.handle.tx().is_closed()
    }

    /// Whether the current thread is this runner's owner thread, i.e. the
    /// caller is inside one of its jobs (or its `init`).
    pub fn is_owner(&self) -> bool {
        CURRENT.get() == Arc::as_ptr(&self.shared) as usize
    }

    /// The runner's name, from [`RunnerOptions::name`].
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

impl<S: 'static> Runner<S> {
    /// Starts the owner thread; `init` builds the state on it.
    ///
    /// Returns at once, without waiting for `init`: jobs sent meanwhile
    /// queue up and run once the state exists. No tokio runtime is needed.
    /// If `init` panics, the panic is logged and the runner is closed: calls
    /// get [`Error::Closed`].
    ///
    /// # Errors
    ///
    /// [`Error::Host`] (op `"spawn"`) when the OS refuses a new thread.
    pub fn spawn(
        options: RunnerOptions,
        init: impl FnOnce() -> S + Send + 'static,
    ) -> Result<Self> {
        let Parts {
            shared,
            tx,
            rx,
            stopped,
            dispatch,
            span,
        } = Parts::new(options, Duration::ZERO);
        let owner_shared = Arc::clone(&shared);
        thread::Builder::new()
            // A NUL would make std panic; a thread name is only cosmetic.
            .name(shared.name.replace('\0', ""))
            .spawn(move || {
                let shared = owner_shared;
                // Before `init` and any job, the only code that could ask.
                let _current = Current::enter(&shared);
                let _dispatch = dispatch.as_ref().map(tracing::dispatcher::set_default);
                let _entered = span.enter();
                // Declared before the state, so dropped after it: shutdown
                // resolves once the state is gone, even if its Drop panics.
                let _exit = OwnerExit {
                    shared,
                    _stopped: stopped,
                };
                serve(init, rx);
            })
            // The thread is detached: the channel and `shutdown` are how it
            // is reached and stopped, so its join handle is dropped.
            .map_err(|e| {
                let context = format!("starting the owner thread of runner {:?}", shared.name);
                Error::host("spawn", anyhow::Error::new(e).context(context))
            })?;
        let handle = Arc::new(Handle {
            tx: Some(tx),
            wake: None,
        });
        Ok(Self { handle, shared })
    }

    /// Runs `job` on the owner and waits for its result, as long as the
    /// runner's default timeout allows.
    ///
    /// Same as [`call_with`](Self::call_with) with default [`CallOptions`].
    ///
    /// # Errors
    ///
    /// As [`call_with`](Self::call_with).
    pub async fn call<R, F>(&self, op: impl Into<Op>, job: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut S) -> R + Send + 'static,
    {
        self.call_with(op, CallOptions::default(), job).await
    }

    /// Runs `job` on the owner and waits for its result, with a timeout and
    /// a cancellation token of this call's own.
    ///
    /// The job is queued when the returned future is first polled. If the
    /// caller stops waiting before the job starts (the future is dropped,
    /// the token is cancelled, the timeout runs out) the job never runs. A
    /// job that has started is not interrupted: it runs to its end and its
    /// result is dropped.
    ///
    /// The wait needs no tokio runtime unless a timeout applies, which
    /// needs one with time enabled (it panics otherwise).
    ///
    /// # Errors
    ///
    /// Every error names `op`:
    /// - [`Error::Reentrant`]: called from the owner thread itself (from
    ///   inside a job), where waiting could never end;
    /// - [`Error::Closed`]: the runner was shut down or its owner stopped;
    /// - [`Error::Rejected`]: the queue is full (see *Backpressure* on
    ///   [`Runner`]);
    /// - [`Error::Canceled`]: the token was cancelled (`reason` is `None`);
    /// - [`Error::Timeout`]: the timeout ran out;
    /// - [`Error::Panicked`]: the job panicked (the owner keeps serving).
    pub async fn call_with<R, F>(
        &self,
        op: impl Into<Op>,
        options: CallOptions,
        job: F,
    ) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut S) -> R + Send + 'static,
    {
        let op = op.into();
        if self.is_owner() {
            tracing::warn!(runner = %self.shared.name, %op, "re-entrant call refused");
            return Err(Error::Reentrant { op });
        }
        let CallOptions { timeout, cancel } = options;
        if cancel.as_ref().is_some_and(CancellationToken::is_cancelled) {
            return Err(Error::Canceled { op, reason: None });
        }

        let (reply_tx, mut reply_rx) = oneshot::channel::<Result<R>>();
        let job_op = op.clone();
        let job_cancel = cancel.clone();
        self.enqueue(op.clone(), move |state: &mut S| {
            if reply_tx.is_closed() {
                tracing::debug!("skipped: the caller stopped waiting before the job started");
                return;
            }
            if job_cancel
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
            {
                tracing::debug!("skipped: the call was cancelled before the job started");
                // The caller may still be choosing between its reply and its
                // token: answer Canceled on both roads.
                let _ = reply_tx.send(Err(Error::Canceled {
                    op: job_op,
                    reason: None,
                }));
                return;
            }
            let result = catch_unwind(AssertUnwindSafe(|| job(state))).map_err(|payload| {
                let message = panic_message(&*payload);
                tracing::debug!(%message, "job panicked");
                Error::Panicked {
                    op: job_op,
                    message,
                }
            });
            // An Err means the caller stopped waiting while the job ran; it
            // already has its answer (Canceled, Timeout, or nobody to tell),
            // so the result has nowhere to go and is dropped here.
            let _ = reply_tx.send(result);
        })?;

        let reply = async {
            // The sender is only dropped unsent when the owner stopped
            // before reaching this job.
            SpinThenWait::new(&mut reply_rx, self.shared.reply_spin)
                .await
                .unwrap_or_else(|_| Err(Error::Closed { op: op.clone() }))
        };
        let wait = async {
            match &cancel {
                None => reply.await,
                Some(token) => tokio::select! {
                    // A result that is already there wins over a late cancel.
                    biased;
                    result = reply => result,
                    () = token.cancelled() => Err(Error::Canceled { op: op.clone(), reason: None }),
                },
            }
        };
        match timeout.or(self.shared.default_timeout) {
            None => wait.await,
            Some(after) => tokio::time::timeout(after, wait).await.unwrap_or_else(|_| {
                Err(Error::Timeout {
                    op: op.clone(),
                    after,
                })
            }),
        }
        // `reply_rx` is dropped on return: the owner sees a closed reply
        // and skips the job if it has not started.
    }

    /// Queues `job` without waiting for it: fire and forget.
    ///
    /// The job's failure cannot reach the poster, so it is logged: an `Err`
    /// or a panic becomes a `tracing::error!` event with the runner's name,
    /// `op` and the error. Allowed from inside a job (it queues behind it).
    ///
    /// # Errors
    ///
    /// - [`Error::Closed`]: the runner was shut down or its owner stopped;
    /// - [`Error::Rejected`]: the queue is full (see *Backpressure* on
    ///   [`Runner`]).
    pub fn post<F>(&self, op: impl Into<Op>, job: F) -> Result<()>
    where
        F: FnOnce(&mut S) -> anyhow::Result<()> + Send + 'static,
    {
        let op = op.into();
        let run = logged(self.shared.name.clone(), op.clone(), job);
        self.enqueue(op, run)
    }

    /// Like [`post`](Self::post), but waits for room in the queue instead of
    /// failing with [`Error::Rejected`].
    ///
    /// For continuations the owner's own work depends on, such as the result
    /// of a host operation a guest task awaits: shedding one would leave that
    /// task waiting forever. Callers that are not such continuations should
    /// use [`post`](Self::post) or [`call`](Self::call) and take the
    /// backpressure.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the runner is or becomes closed, or
    /// [`Error::Reentrant`] from inside a job when the queue is full (the
    /// owner could never make room while its job waits).
    pub async fn post_wait<F>(&self, op: impl Into<Op>, job: F) -> Result<()>
    where
        F: FnOnce(&mut S) -> anyhow::Result<()> + Send + 'static,
    {
        let op = op.into();
        if self.is_closed() {
            return Err(Error::Closed { op });
        }
        let slot = match Arc::clone(&self.shared.slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) if self.is_owner() => return Err(Error::Reentrant { op }),
            Err(_) => match Arc::clone(&self.shared.slots).acquire_owned().await {
                Ok(slot) => slot,
                Err(_) => return Err(Error::Closed { op }),
            },
        };
        let run = logged(self.shared.name.clone(), op.clone(), job);
        self.enqueue_with(op, slot, run)
    }

    /// A handle that does not keep the owner alive: for state that must be
    /// able to queue work on its own owner (a reference from the state to a
    /// strong handle would keep the runner from ever stopping).
    pub fn downgrade(&self) -> WeakRunner<S> {
        WeakRunner {
            handle: Arc::downgrade(&self.handle),
            shared: Arc::clone(&self.shared),
        }
    }

    /// Queues a type-erased job, enforcing the queue's capacity.
    fn enqueue(&self, op: Op, run: impl FnOnce(&mut S) + Send + 'static) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed { op });
        }
        let Ok(slot) = Arc::clone(&self.shared.slots).try_acquire_owned() else {
            tracing::warn!(runner = %self.shared.name, %op, capacity = self.shared.capacity, "job queue full: rejected");
            return Err(Error::Rejected {
                op,
                capacity: self.shared.capacity,
            });
        };
        self.enqueue_with(op, slot, run)
    }

    /// Queues a type-erased job that already holds its place in the queue.
    fn enqueue_with(
        &self,
        op: Op,
        slot: OwnedSemaphorePermit,
        run: impl FnOnce(&mut S) + Send + 'static,
    ) -> Result<()> {
        let span = tracing::debug_span!("job", runner = %self.shared.name, %op);
        let task = Task {
            op: op.clone(),
            span,
            slot,
            run: Box::new(run),
        };
        self.handle
            .tx()
            .try_send(Message::Run(task))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Closed(_) => Error::Closed { op },
                // Cannot happen while every job holds a slot; kept apart from
                // Closed so that a bug here reads as overload, not as death.
                mpsc::error::TrySendError::Full(_) => Error::Rejected {
                    op,
                    capacity: self.shared.capacity,
                },
            })?;
        self.handle.wake();
        Ok(())
    }
}

/// What a new runner is made of, whichever way its owner runs.
struct Parts<S> {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Message<S>>,
    rx: mpsc::Receiver<Message<S>>,
    stopped: watch::Sender<()>,
    dispatch: Option<tracing::Dispatch>,
    /// The `runner` span, child of the span current at the spawn.
    span: Span,
}

impl<S> Parts<S> {
    fn new(options: RunnerOptions, reply_spin: Duration) -> Parts<S> {
        let RunnerOptions {
            name,
            queue_capacity,
            default_timeout,
        } = options;
        // The channel needs one place more, and tokio caps both.
        let capacity = queue_capacity.clamp(1, Semaphore::MAX_PERMITS - 1);
        // One place more than the jobs may take: see `Shared::slots`.
        let (tx, rx) = mpsc::channel(capacity + 1);
        let (stopped, stopped_rx) = watch::channel(());
        let span = tracing::info_span!("runner", name = %name);
        let shared = Arc::new(Shared {
            name,
            capacity,
            default_timeout,
            closed: AtomicBool::new(false),
            slots: Arc::new(Semaphore::new(capacity)),
            stopped: stopped_rx,
            reply_spin,
        });
        // The subscriber in force here, unless there is none yet: then the
        // owner uses the global default, which may be installed later.
        let dispatch = tracing::dispatcher::get_default(|d| {
            (!d.is::<tracing::subscriber::NoSubscriber>()).then(|| d.clone())
        });
        Parts {
            shared,
            tx,
            rx,
            stopped,
            dispatch,
            span,
        }
    }
}

impl<S: Send + 'static> Runner<S> {
    /// Starts an owner on `pool`: `init` builds the state, and the jobs
    /// run, on the pool's threads, one at a time and in order as on a
    /// thread of its own (see [`OwnerPool`]).
    ///
    /// Everything [`spawn`](Self::spawn) says holds, except that the state
    /// moves between the pool's threads (so it must be `Send`) and the job
    /// runs on a thread named after the pool, not the runner. Never fails:
    /// the pool's threads already exist.
    pub fn spawn_on(
        pool: &OwnerPool,
        options: RunnerOptions,
        init: impl FnOnce() -> S + Send + 'static,
    ) -> Self {
        let Parts {
            shared,
            tx,
            rx,
            stopped,
            dispatch,
            span,
        } = Parts::new(options, pool.spin());
        let exit = OwnerExit {
            shared: Arc::clone(&shared),
            _stopped: stopped,
        };
        let owner = pool::Pooled::new(
            pool,
            Arc::clone(&shared),
            dispatch,
            span,
            Box::new(init),
            rx,
            exit,
        );
        let handle = Arc::new(Handle {
            tx: Some(tx),
            wake: Some(owner),
        });
        // The first turn runs `init`.
        handle.wake();
        Self { handle, shared }
    }
}

/// Waits for a reply, first by looking for it again and again for up to
/// `spin`, then by sleeping until it is sent.
///
/// A short job's reply comes back within microseconds, while a sleeping
/// caller is woken by the kernel (a futex, or tokio's driver), which on a
/// virtual machine with idle CPUs costs about as much as the job again. So
/// for `spin` the future wakes itself instead of sleeping: tokio polls it
/// again after whatever else is ready on its thread, which therefore still
/// runs (this is `yield_now` in a loop, not a busy wait that holds the
/// thread). After `spin` it waits on the channel alone. It is the caller's
/// half of the pool's spin (see [`OwnerPoolOptions::spin`]), and costs the
/// same: a CPU kept busy for at most `spin` per call that takes longer.
struct SpinThenWait<'a, T> {
    rx: &'a mut oneshot::Receiver<T>,
    spin: Duration,
    until: Option<std::time::Instant>,
}

impl<'a, T> SpinThenWait<'a, T> {
    fn new(rx: &'a mut oneshot::Receiver<T>, spin: Duration) -> Self {
        SpinThenWait {
            rx,
            spin,
            until: None,
        }
    }
}

impl<T> std::future::Future for SpinThenWait<'_, T> {
    type Output = std::result::Result<T, oneshot::error::RecvError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        // The receiver keeps the waker: the reply wakes this task whether
        // or not it is still spinning.
        if let Poll::Ready(reply) = std::pin::Pin::new(&mut *self.rx).poll(cx) {
            return Poll::Ready(reply);
        }
        if self.spin.is_zero() {
            return Poll::Pending;
        }
        let now = std::time::Instant::now();
        let spin = self.spin;
        if now < *self.until.get_or_insert(now + spin) {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

/// Wraps a posted job so that its failure or panic is logged, never lost.
fn logged<S, F>(runner: String, op: Op, job: F) -> impl FnOnce(&mut S) + Send + 'static
where
    F: FnOnce(&mut S) -> anyhow::Result<()> + Send + 'static,
{
    move |state: &mut S| match catch_unwind(AssertUnwindSafe(|| job(state))) {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::error!(%runner, %op, error = format_args!("{error:#}"), "posted job failed");
        }
        Err(payload) => {
            let message = panic_message(&*payload);
            tracing::error!(%runner, %op, panic = %message, "posted job panicked");
        }
    }
}

/// A [`Runner`] handle that does not keep the owner alive; see
/// [`Runner::downgrade`].
pub struct WeakRunner<S> {
    handle: Weak<Handle<S>>,
    shared: Arc<Shared>,
}

impl<S> Clone for WeakRunner<S> {
    fn clone(&self) -> Self {
        Self {
            handle: Weak::clone(&self.handle),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> fmt::Debug for WeakRunner<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakRunner")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S> WeakRunner<S> {
    /// A strong handle, unless every strong handle is gone.
    pub fn upgrade(&self) -> Option<Runner<S>> {
        Some(Runner {
            handle: self.handle.upgrade()?,
            shared: Arc::clone(&self.shared),
        })
    }
}

/// A runner's `init` panicked: there is no state to run jobs on, so the
/// runner closes and every job queued is dropped (its caller gets
/// [`Error::Closed`]), each logged.
fn init_panicked<S>(payload: &(dyn std::any::Any + Send), rx: &mut mpsc::Receiver<Message<S>>) {
    let message = panic_message(payload);
    tracing::error!(panic = %message, "the runner's init panicked; the runner is closed");
    rx.close();
    while let Ok(message) = rx.try_recv() {
        if let Message::Run(task) = message {
            tracing::error!(op = %task.op, "job dropped: the runner has no state");
        }
    }
}

/// The owner thread's life: build the state, serve jobs until shutdown or
/// until every handle is gone, drop the state.
fn serve<S>(init: impl FnOnce() -> S, mut rx: mpsc::Receiver<Message<S>>) {
    let mut state = match catch_unwind(AssertUnwindSafe(init)) {
        Ok(state) => state,
        Err(payload) => {
            init_panicked(&*payload, &mut rx);
            return;
        }
    };
    tracing::debug!("runner started");
    // `None` once every handle is dropped and the queue is empty.
    while let Some(message) = rx.blocking_recv() {
        match message {
            Message::Run(task) => task.run(&mut state),
            Message::Shutdown => {
                tracing::debug!("shutting down: running the jobs already queued");
                // Refuse new sends, but keep what is already buffered.
                rx.close();
                while let Ok(message) = rx.try_recv() {
                    if let Message::Run(task) = message {
                        task.run(&mut state);
                    }
                }
                break;
            }
        }
    }
    drop(rx);
    // On this thread, and before `OwnerExit` tells shutdown we stopped.
    drop(state);
    tracing::debug!("runner stopped");
}

/// Marks the runner closed and wakes every `shutdown` when the owner thread
/// ends, however it ends.
struct OwnerExit {
    shared: Arc<Shared>,
    /// Dropped after `drop` below: this is the "stopped" signal.
    _stopped: watch::Sender<()>,
}

impl Drop for OwnerExit {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
    }
}

/// The text of a panic payload: `panic!` gives a `&'static str` or a
/// `String`; anything else (`panic_any`) has no text to show.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

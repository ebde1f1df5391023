//! A fixed set of threads that serve many runners: M owners on N threads.
//!
//! A runner on a pool has no thread of its own. When a job is queued for
//! it (or its last strong handle goes, or it is shut down) it is *scheduled*:
//! put once at the back of the pool's run queue. A pool thread takes the
//! runner at the front, runs **one** of its jobs (the first turn runs its
//! `init`), and puts it at the back again if more jobs wait. So:
//!
//! - a runner is never served by two threads at once: it is in the run
//!   queue at most once (its `scheduled` flag) and its state sits behind a
//!   mutex that a turn holds;
//! - its jobs still run one at a time and in the order they were queued;
//! - runners take turns a job each: a runner whose jobs each run for long
//!   (JavaScript spinning to its deadline) delays a runner queued behind it
//!   by one of those jobs, never by all of them.
//!
//! Before a thread parks for want of work it looks for more for a short while
//! ([`OwnerPoolOptions::spin`]): a caller that queues its next job within
//! that time does not pay for waking a parked thread.
//!
//! A parked thread is woken only for a runner that no looking thread will
//! take: when a runner is queued, the threads looking for work (spinning, or
//! just done with a turn) are counted, and a parked one is woken only when
//! the runners waiting outnumber them. So a runner with one job after another
//! (a caller's calls in a row, or a sandbox's many sessions) stays on the
//! thread that served its last job, which takes it again at once, instead
//! of waking the other threads at every job to find nothing, or to take the
//! runner's state (and what the CPU caches of it) to another CPU.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::Span;

use super::{Current, Message, OwnerExit, Shared, panic_message};

/// How an [`OwnerPool`] is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerPoolOptions {
    /// How many threads serve the pool's runners; `0` is treated as `1`.
    pub threads: usize,
    /// The threads' name (each gets its number after it).
    pub name: String,
    /// How long a thread out of work looks for more before it parks; a
    /// caller of a runner on the pool looks as long for its reply before it
    /// sleeps on it. Either side of a short job's hand-off then finds the
    /// other awake; `0` makes both sleep at once, which is what a process
    /// with one CPU wants (the default there).
    pub spin: Duration,
}

impl Default for OwnerPoolOptions {
    /// One thread per CPU the process may use (its affinity and cgroup
    /// quota counted, as [`thread::available_parallelism`] counts them),
    /// spinning 50 µs when there are several.
    fn default() -> Self {
        Self::for_cpus(thread::available_parallelism().map_or(1, usize::from))
    }
}

impl OwnerPoolOptions {
    /// The defaults for a process that may use `cpus` CPUs.
    ///
    /// With one CPU nothing spins: a spin waits for work that another CPU
    /// does, and with none the spinning side only delays it. A caller
    /// looking for its reply keeps the CPU from the pool thread that would
    /// make it until the spin ends, so each call through the `Sandbox` API
    /// took the whole spin: `add(1, 2)` about 60 µs with a spin of 50 µs
    /// against 7.7 µs with none, on one CPU (`taskset -c 0 entries spins`;
    /// docs/architecture.md §2).
    pub(crate) fn for_cpus(cpus: usize) -> Self {
        OwnerPoolOptions {
            threads: cpus.max(1),
            name: "marionette-owner".into(),
            spin: if cpus > 1 {
                Duration::from_micros(50)
            } else {
                Duration::ZERO
            },
        }
    }
}

/// A fixed set of threads that run the jobs of many [`Runner`](super::Runner)s
/// (see [`Runner::spawn_on`](super::Runner::spawn_on)).
///
/// Cloning is cheap. The threads stop once every clone and every runner
/// made on the pool is gone. A job that blocks its thread (a runner's job
/// should not, beyond its own CPU time) holds up the runners queued behind
/// it on a pool of one thread; on a pool of N, N such jobs do.
#[derive(Clone)]
pub struct OwnerPool {
    keep: Arc<Keep>,
}

impl std::fmt::Debug for OwnerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerPool")
            .field("threads", &self.keep.inner.threads)
            .finish_non_exhaustive()
    }
}

/// Stops the threads when the last pool handle or runner goes.
struct Keep {
    inner: Arc<Inner>,
}

impl Drop for Keep {
    fn drop(&mut self) {
        let mut queue = self.inner.lock();
        queue.stop = true;
        self.inner.stopping.store(true, Ordering::SeqCst);
        drop(queue);
        self.inner.ready.notify_all();
    }
}

struct Queue {
    runnable: VecDeque<Arc<dyn Schedule>>,
    /// Threads waiting on `ready`.
    sleeping: usize,
    stop: bool,
}

struct Inner {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// `queue.runnable.len()`, readable without the lock (for spinning).
    queued: AtomicUsize,
    /// `queue.stop`, readable without the lock: a spinning thread stops
    /// looking when the pool goes.
    stopping: AtomicBool,
    /// Threads looking for a runner: in `next` and not parked, or done with
    /// a turn and on their way there. Lowered only under the queue's lock
    /// (a thread that takes a runner or parks), so that `push` sees every
    /// thread that will still look at the queue before it parks; raised
    /// without it, which at worst wakes a thread for nothing.
    looking: AtomicUsize,
    /// Parked threads woken for a runner (tests).
    #[cfg(test)]
    wakes: AtomicUsize,
    spin: Duration,
    threads: usize,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A turn never panics while holding this lock; poisoning is ignored.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, runner: Arc<dyn Schedule>) {
        let mut queue = self.lock();
        queue.runnable.push_back(runner);
        self.queued.fetch_add(1, Ordering::SeqCst);
        // Each looking thread takes one runner before it can park, and looks
        // at the queue under this lock before it does: a parked thread is
        // needed only for the runners beyond them.
        let wake = queue.sleeping > 0 && queue.runnable.len() > self.looking.load(Ordering::SeqCst);
        drop(queue);
        if wake {
            #[cfg(test)]
            self.wakes.fetch_add(1, Ordering::SeqCst);
            self.ready.notify_one();
        }
    }

    /// The next runner to serve; `None` when the pool stops. The calling
    /// thread is counted in `looking`, and is not once this returns.
    fn next(&self) -> Option<Arc<dyn Schedule>> {
        let until = Instant::now() + self.spin;
        loop {
            if self.queued.load(Ordering::SeqCst) > 0 {
                let mut queue = self.lock();
                if let Some(runner) = self.take(&mut queue) {
                    return Some(runner);
                }
            }
            if Instant::now() >= until || self.stopping.load(Ordering::SeqCst) {
                break;
            }
            // Yields rather than spins: on a busy machine the CPU goes to
            // whatever else is runnable (the caller whose job this thread
            // waits for, among others); on an idle one nothing is, and the
            // thread keeps looking.
            thread::yield_now();
        }
        let mut queue = self.lock();
        loop {
            if let Some(runner) = self.take(&mut queue) {
                return Some(runner);
            }
            if queue.stop {
                self.looking.fetch_sub(1, Ordering::SeqCst);
                return None;
            }
            queue.sleeping += 1;
            self.looking.fetch_sub(1, Ordering::SeqCst);
            queue = self.ready.wait(queue).unwrap_or_else(|p| p.into_inner());
            queue.sleeping -= 1;
            self.looking.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The runner at the front, taken by a looking thread, which stops
    /// looking.
    fn take(&self, queue: &mut Queue) -> Option<Arc<dyn Schedule>> {
        let runner = queue.runnable.pop_front()?;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        self.looking.fetch_sub(1, Ordering::SeqCst);
        Some(runner)
    }
}

impl OwnerPool {
    /// Starts the pool's threads.
    ///
    /// # Errors
    /// [`Error::Host`](crate::Error::Host) (op `"spawn"`) when the OS refuses
    /// a thread.
    pub fn new(options: OwnerPoolOptions) -> crate::Result<OwnerPool> {
        let threads = options.threads.max(1);
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue {
                runnable: VecDeque::new(),
                sleeping: 0,
                stop: false,
            }),
            ready: Condvar::new(),
            queued: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            looking: AtomicUsize::new(0),
            #[cfg(test)]
            wakes: AtomicUsize::new(0),
            spin: options.spin,
            threads,
        });
        let keep = Arc::new(Keep {
            inner: Arc::clone(&inner),
        });
        for n in 0..threads {
            let inner = Arc::clone(&inner);
            thread::Builder::new()
                .name(format!("{}-{n}", options.name.replace('\0', "")))
                .spawn(move || work(&inner))
                .map_err(|e| {
                    crate::Error::host(
                        "spawn",
                        anyhow::Error::new(e).context("starting a thread of an owner pool"),
                    )
                })?;
        }
        Ok(OwnerPool { keep })
    }

    /// The process-wide pool with default options, started on first use.
    ///
    /// # Errors
    /// As [`OwnerPool::new`]; a failure is not cached.
    pub fn shared() -> crate::Result<OwnerPool> {
        static SHARED: OnceLock<OwnerPool> = OnceLock::new();
        if let Some(pool) = SHARED.get() {
            return Ok(pool.clone());
        }
        let pool = OwnerPool::new(OwnerPoolOptions::default())?;
        Ok(SHARED.get_or_init(|| pool).clone())
    }

    /// How many threads serve the pool.
    pub fn threads(&self) -> usize {
        self.keep.inner.threads
    }

    /// How many times a parked thread was woken for a runner.
    #[cfg(test)]
    pub(crate) fn wakes(&self) -> usize {
        self.keep.inner.wakes.load(Ordering::SeqCst)
    }

    /// How long a thread out of work looks for more before it parks, and a
    /// caller for its reply before it sleeps ([`OwnerPoolOptions::spin`]).
    pub fn spin(&self) -> Duration {
        self.keep.inner.spin
    }
}

/// A pool thread's life: serve runners until the pool stops.
fn work(inner: &Inner) {
    inner.looking.fetch_add(1, Ordering::SeqCst);
    while let Some(runner) = inner.next() {
        // A turn catches its jobs' panics; this is for the rest (a state's
        // Drop): the thread must outlive any one runner.
        let more = match catch_unwind(AssertUnwindSafe(|| Arc::clone(&runner).turn())) {
            Ok(more) => more,
            Err(payload) => {
                let message = panic_message(&*payload);
                tracing::error!(panic = %message, "a runner's turn panicked; the runner is stopped");
                false
            }
        };
        // Looking again from here: a runner with more to do, this one
        // included, is taken by this thread without waking another.
        inner.looking.fetch_add(1, Ordering::SeqCst);
        if more {
            runner.schedule();
        }
    }
}

/// A runner that can be put in a pool's run queue.
pub(super) trait Schedule: Send + Sync {
    /// Puts the runner at the back of the run queue, unless it is there or
    /// being served.
    fn schedule(self: Arc<Self>);
    /// Serves one job (or the `init`, or the stop); whether the runner has
    /// more, for the pool thread to schedule it again.
    fn turn(self: Arc<Self>) -> bool;
}

type Init<S> = Box<dyn FnOnce() -> S + Send>;

enum Cell<S> {
    Init {
        init: Init<S>,
        rx: mpsc::Receiver<Message<S>>,
        exit: OwnerExit,
    },
    Ready {
        state: S,
        rx: mpsc::Receiver<Message<S>>,
        exit: OwnerExit,
    },
    Done,
}

/// The owner of a runner on a pool.
pub(super) struct Pooled<S> {
    keep: Arc<Keep>,
    /// In the run queue or being served.
    scheduled: AtomicBool,
    shared: Arc<Shared>,
    dispatch: Option<tracing::Dispatch>,
    span: Span,
    cell: Mutex<Cell<S>>,
}

impl<S: Send + 'static> Pooled<S> {
    pub(super) fn new(
        pool: &OwnerPool,
        shared: Arc<Shared>,
        dispatch: Option<tracing::Dispatch>,
        span: Span,
        init: Init<S>,
        rx: mpsc::Receiver<Message<S>>,
        exit: OwnerExit,
    ) -> Arc<Pooled<S>> {
        Arc::new(Pooled {
            keep: Arc::clone(&pool.keep),
            scheduled: AtomicBool::new(false),
            shared,
            dispatch,
            span,
            cell: Mutex::new(Cell::Init { init, rx, exit }),
        })
    }

    /// One step of the owner's life, as `serve` does on a thread of its own.
    fn step(cell: Cell<S>) -> Cell<S> {
        match cell {
            Cell::Init { init, mut rx, exit } => match catch_unwind(AssertUnwindSafe(init)) {
                Ok(state) => {
                    tracing::debug!("runner started");
                    Cell::Ready { state, rx, exit }
                }
                Err(payload) => {
                    super::init_panicked(&*payload, &mut rx);
                    drop(exit);
                    Cell::Done
                }
            },
            Cell::Ready {
                mut state,
                mut rx,
                exit,
            } => match rx.try_recv() {
                Ok(Message::Run(task)) => {
                    task.run(&mut state);
                    Cell::Ready { state, rx, exit }
                }
                Ok(Message::Shutdown) => {
                    tracing::debug!("shutting down: running the jobs already queued");
                    rx.close();
                    while let Ok(message) = rx.try_recv() {
                        if let Message::Run(task) = message {
                            task.run(&mut state);
                        }
                    }
                    Self::stop(state, rx, exit)
                }
                Err(mpsc::error::TryRecvError::Empty) => Cell::Ready { state, rx, exit },
                Err(mpsc::error::TryRecvError::Disconnected) => Self::stop(state, rx, exit),
            },
            Cell::Done => Cell::Done,
        }
    }

    fn stop(state: S, rx: mpsc::Receiver<Message<S>>, exit: OwnerExit) -> Cell<S> {
        drop(rx);
        // Before `exit` tells shutdown the owner stopped.
        drop(state);
        tracing::debug!("runner stopped");
        drop(exit);
        Cell::Done
    }
}

impl<S: Send + 'static> Schedule for Pooled<S> {
    fn schedule(self: Arc<Self>) {
        if !self.scheduled.swap(true, Ordering::SeqCst) {
            let inner = Arc::clone(&self.keep.inner);
            inner.push(self);
        }
    }

    fn turn(self: Arc<Self>) -> bool {
        {
            let _current = Current::enter(&self.shared);
            let _dispatch = self.dispatch.as_ref().map(tracing::dispatcher::set_default);
            let _entered = self.span.enter();
            let mut cell = self.cell.lock().unwrap_or_else(|p| p.into_inner());
            let taken = std::mem::replace(&mut *cell, Cell::Done);
            *cell = Self::step(taken);
            // Cleared before looking for more: a job queued after the look
            // sees the flag clear and schedules the runner itself.
            self.scheduled.store(false, Ordering::SeqCst);
            match &*cell {
                Cell::Init { .. } => true,
                Cell::Ready { rx, .. } => !rx.is_empty() || rx.is_closed(),
                Cell::Done => false,
            }
        }
    }
}

//! The owner side of a sandbox: the state its runner thread holds, and the
//! effect protocol driven from it.
//!
//! Each job on the owner makes one or more *entries* into the guest. An
//! entry returns effects; [`Owner::process`] turns them into host work
//! (requests run as tokio tasks whose results come back as `resume` jobs),
//! events for the task's listener, and answers to the callers waiting for
//! their tasks. Every entry runs under the policy's CPU deadline; a trap
//! fails the tasks that lived in the instance, and the next entry finds a
//! fresh instance with the scripts reloaded.

mod replay;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use wasmtime::Store;

use super::WeakSandbox;
use super::bytecode::Unit;
use super::convert;
use super::exports::Exports;
use super::host_ops::{self, error_for_script};
use super::provided::Provided;
use super::runtime::{EntryState, HostState, Late, Runtime, deadline_ticks, vm_config};
use super::services::HostServices;
use crate::bindings::exports::marionette::runtime::script::CompiledModule;
use crate::bindings::marionette::runtime::types as wit;
use crate::cassette::{Answers, Call, Recorder};
use crate::error::{Error, Limit, Op, Result};
use crate::model::{Event, LogLevel, Turn};
use crate::policy::Policy;
use crate::session::SessionEvent;

/// A boxed future, as host operations are.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The host side of a middleware chain: what a JS middleware's `next(turn)`
/// calls.
pub type NextFn = Arc<dyn Fn(Turn) -> BoxFuture<Result<Turn>> + Send + Sync>;

/// Where a task's events go.
pub type EventSink = tokio::sync::mpsc::UnboundedSender<Event>;

/// The longest sleep a script may ask for; a longer `setTimeout` waits this long.
const MAX_SLEEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// The tasks whose running JavaScript a caller asked to stop. Shared by the
/// sandbox's handles (which add) and its store (`should-interrupt` reads).
#[derive(Default)]
pub(crate) struct Interrupts {
    any: AtomicBool,
    tasks: Mutex<HashSet<u64>>,
}

impl Interrupts {
    pub(crate) fn request(&self, task: u64) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task);
        self.any.store(true, Ordering::SeqCst);
    }

    pub(crate) fn clear(&self, task: u64) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.remove(&task);
        self.any.store(!tasks.is_empty(), Ordering::SeqCst);
    }

    /// Polled by the interrupt handler: a relaxed load when nothing is asked.
    pub(crate) fn asked(&self, task: u64) -> bool {
        self.any.load(Ordering::Relaxed)
            && self
                .tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&task)
    }
}

/// What finishing a task does besides answering its caller.
pub(crate) enum TaskKind {
    /// Any task.
    Plain,
    /// `script.load` or `script.load-modules`: on success the script joins
    /// those reloaded after a trap.
    Load { name: String, source: Source },
    /// A reload after a trap: on failure the script is dropped.
    Reload { name: String },
}

/// A task started in the guest and not yet done.
pub(crate) struct Task {
    pub(crate) op: Op,
    /// `None` for tasks nobody waits for (reloads).
    pub(crate) reply: Option<oneshot::Sender<Result<wit::Value>>>,
    pub(crate) events: Option<EventSink>,
    pub(crate) next: Option<NextFn>,
    pub(crate) kind: TaskKind,
    /// Time spent in the guest on this task's behalf, for
    /// [`Policy::run_deadline`].
    pub(crate) cpu: Duration,
}

struct PendingOp {
    task: u64,
    handle: AbortHandle,
    /// When the op is a timer (`sleep`): when it is due.
    due: Option<Due>,
}

/// When a timer is due, as timers are ordered: by the machine's clock, or
/// in a deterministic run by the guest's virtual clock, which the owner
/// keeps in step with the guest's (`guest/src/clock.rs`: it starts with the
/// instance and moves only when a sleep is resumed, to the time that sleep
/// was due). One owner's timers are all of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Real(Instant),
    /// Milliseconds of virtual time since the instance started.
    Virtual(u64),
}

#[derive(Clone)]
struct Script {
    name: String,
    source: Source,
}

/// What a script was loaded from, as the guest got it (TypeScript
/// stripped): what a rebuilt instance loads again, every module of a graph.
#[derive(Clone)]
pub(crate) enum Source {
    /// One module (`script.load`).
    One(String),
    /// A module graph (`script.load-modules`): paths and sources.
    Graph(Arc<[(String, String)]>),
}

impl Source {
    /// What loading the script `name` from this source compiles (the key
    /// of the runtime's bytecode cache).
    pub(crate) fn unit<'a>(&'a self, name: &'a str) -> Unit<'a> {
        match self {
            Source::One(source) => Unit::One { name, source },
            Source::Graph(modules) => Unit::Graph {
                entry: name,
                modules,
            },
        }
    }

    /// The entry that loads the script `name` from this source.
    pub(crate) fn call(&self, name: String) -> Call {
        match self {
            Source::One(source) => Call::Load {
                name,
                source: source.clone(),
            },
            Source::Graph(modules) => Call::LoadModules {
                name,
                modules: modules.to_vec(),
            },
        }
    }
}

struct Vm {
    store: Store<HostState>,
    bindings: Exports,
}

/// The state of a sandbox's owner thread.
pub(crate) struct Owner {
    runtime: Arc<Runtime>,
    policy: Policy,
    services: Arc<HostServices>,
    /// The parts of the sessions the host started, while they run.
    provided: Arc<Provided>,
    interrupts: Arc<Interrupts>,
    next_task: Arc<AtomicU64>,
    tokio: tokio::runtime::Handle,
    /// Set by the boot job; weak so the owner does not keep itself alive.
    pub(crate) sandbox: Option<WeakSandbox>,
    vm: Option<Vm>,
    /// Bumped by every trap: results of host operations started for an
    /// older instance are dropped.
    generation: u64,
    scripts: Vec<Script>,
    /// Bytecode for the load the next entry makes (see `script.offer-bytecode`).
    offer: Option<Arc<[CompiledModule]>>,
    tasks: HashMap<u64, Task>,
    ops: HashMap<u64, PendingOp>,
    /// Whether the guest was refused memory during the entry whose effects
    /// are being processed: a task that failed then with QuickJS's
    /// out-of-memory signs failed for the memory limit.
    memory_refused: bool,
    /// The HTTP client of scripts' `fetch`, built on the first one.
    #[cfg(feature = "fetch")]
    fetcher: Option<Arc<super::fetch::Fetcher>>,
    /// Takes every entry, when the sandbox records a cassette.
    recorder: Option<Recorder>,
    /// The operations a partial replay answers from its cassette.
    answers: Option<Arc<Answers>>,
    /// In a deterministic run, the guest's virtual clock, in milliseconds
    /// since its instance started: what the instance's timers are
    /// ordered by.
    virtual_ms: u64,
}

impl Drop for Owner {
    fn drop(&mut self) {
        for op in self.ops.values() {
            op.handle.abort();
        }
    }
}

impl Owner {
    // Each is a part of the sandbox the owner serves; a struct of them
    // would only be taken apart here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        runtime: Arc<Runtime>,
        policy: Policy,
        services: Arc<HostServices>,
        provided: Arc<Provided>,
        interrupts: Arc<Interrupts>,
        next_task: Arc<AtomicU64>,
        tokio: tokio::runtime::Handle,
        recorder: Option<Recorder>,
        answers: Option<Arc<Answers>>,
    ) -> Self {
        Owner {
            runtime,
            policy,
            services,
            provided,
            interrupts,
            next_task,
            tokio,
            sandbox: None,
            vm: None,
            generation: 0,
            scripts: Vec::new(),
            offer: None,
            tasks: HashMap::new(),
            ops: HashMap::new(),
            memory_refused: false,
            #[cfg(feature = "fetch")]
            fetcher: None,
            recorder,
            answers,
            virtual_ms: 0,
        }
    }

    /// Makes sure an instance exists: after a trap, builds a new one and
    /// reloads the scripts (a script whose reload fails is dropped).
    pub(crate) fn ensure_vm(&mut self) -> anyhow::Result<()> {
        while self.vm.is_none() {
            let config = vm_config(&self.policy, &self.services.provides());
            let (mut store, bindings) = self.runtime.instantiate_with(&self.policy, &config)?;
            store.data_mut().interrupt = Some(self.interrupts.clone());
            // A recording keeps every session event; otherwise the guest
            // makes them only for tasks whose callers listen.
            store.data_mut().all_session_events = self.recorder.is_some();
            store.data_mut().listening = self
                .tasks
                .iter()
                .filter(|(_, t)| t.events.is_some())
                .map(|(id, _)| *id)
                .collect();
            self.vm = Some(Vm { store, bindings });
            if let Some(recorder) = &self.recorder {
                recorder.entry(0, &Call::Configure(config), Ok(&[]));
            }
            let generation = self.generation;
            for script in self.scripts.clone() {
                let id = self.next_task.fetch_add(1, Ordering::Relaxed);
                self.tasks.insert(
                    id,
                    Task {
                        op: format!("reload {}", script.name).into(),
                        reply: None,
                        events: None,
                        next: None,
                        kind: TaskKind::Reload {
                            name: script.name.clone(),
                        },
                        cpu: Duration::ZERO,
                    },
                );
                self.offer = self
                    .runtime
                    .bytecode_for(&self.policy, &script.source.unit(&script.name));
                self.enter(id, script.source.call(script.name.clone()));
                if self.generation != generation {
                    // Reloading it trapped: drop it, start over without it.
                    tracing::error!(script = %script.name, "reloading the script trapped; it is dropped from the sandbox");
                    self.scripts.retain(|s| s.name != script.name);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Starts a task: registers it and makes its first entry.
    pub(crate) fn start(&mut self, id: u64, task: Task, start: Call) {
        if let Err(e) = self.ensure_vm() {
            if let Some(reply) = task.reply {
                let _ = reply.send(Err(Error::host(task.op, e)));
            }
            return;
        }
        if let TaskKind::Load { name, source } = &task.kind {
            self.offer = self.runtime.bytecode_for(&self.policy, &source.unit(name));
        }
        if task.events.is_some()
            && let Some(vm) = &mut self.vm
        {
            vm.store.data_mut().listening.insert(id);
        }
        self.tasks.insert(id, task);
        self.enter(id, start);
    }

    /// A synchronous call into the guest that starts no task.
    pub(crate) fn query<R>(
        &mut self,
        op: Op,
        f: impl FnOnce(&mut Store<HostState>, &Exports) -> wasmtime::Result<R>,
    ) -> Result<R> {
        self.ensure_vm().map_err(|e| Error::host(op.clone(), e))?;
        match self.call_guest(0, f) {
            Ok((r, _)) => Ok(r),
            Err(failure) => Err(Error::Trapped {
                op,
                message: failure.message,
                limit: failure.limit,
            }),
        }
    }

    /// One entry for `task`: makes the call, records it when the sandbox
    /// records, then runs what it produced.
    fn enter(&mut self, task: u64, call: Call) {
        // On a trap, call_guest has already failed the tasks and dropped the
        // instance. A task the host stopped through `should-interrupt` is
        // done among the effects: the guest fails it itself.
        let offer = self.offer.take();
        let result = self.call_guest(task, |store, b| {
            if let Some(modules) = &offer {
                b.marionette_runtime_script(&mut *store)?
                    .call_offer_bytecode(&mut *store, modules)?;
            }
            call.invoke(store, b, task)
        });
        if let Some(recorder) = &self.recorder {
            match &result {
                Ok((effects, _)) => recorder.entry(task, &call, Ok(effects)),
                Err(trap) => recorder.entry(task, &call, Err(&trap.message)),
            }
        }
        if let Ok((effects, _interrupted)) = result {
            self.process(effects);
        }
    }

    /// Calls into the guest under the CPU deadline. On a trap, fails every
    /// task of the instance and drops it (the next entry rebuilds).
    fn call_guest<R>(
        &mut self,
        task: u64,
        f: impl FnOnce(&mut Store<HostState>, &Exports) -> wasmtime::Result<R>,
    ) -> std::result::Result<(R, bool), TrapFailure> {
        let spent = self.tasks.get(&task).map_or(Duration::ZERO, |t| t.cpu);
        let entry_deadline = self.policy.entry_deadline;
        let (soft, late) = match self.policy.run_deadline {
            Some(run) if run.saturating_sub(spent) < entry_deadline => {
                (run.saturating_sub(spent), Late::Run(run))
            }
            _ => (entry_deadline, Late::Entry(entry_deadline)),
        };
        let vm = self.vm.as_mut().expect("ensure_vm ran before any entry");
        if let Some(fuel) = self.policy.entry_fuel
            && let Err(e) = vm.store.set_fuel(fuel)
        {
            tracing::error!("setting the fuel of an entry: {e:#}");
        }
        {
            let data = vm.store.data_mut();
            data.entry = EntryState {
                deadline: Some(Instant::now() + soft),
                late,
                interrupted: false,
            };
            data.limits.denied = false;
        }
        // The hard stop: if JavaScript cannot be interrupted (stuck in native
        // code), the epoch deadline traps at twice the entry deadline (not
        // the soft one, which a nearly spent run budget makes tiny).
        let hard = self.policy.entry_deadline * 2;
        vm.store.set_epoch_deadline(deadline_ticks(hard));
        let started = Instant::now();
        let result = f(&mut vm.store, &vm.bindings);
        if let Some(t) = self.tasks.get_mut(&task) {
            t.cpu += started.elapsed();
        }
        let vm = self.vm.as_mut().expect("the entry's instance");
        let data = vm.store.data_mut();
        let entry = std::mem::take(&mut data.entry);
        match result {
            Ok(r) => {
                self.memory_refused = data.limits.denied;
                Ok((r, entry.interrupted))
            }
            Err(e) => {
                let failure =
                    TrapFailure::classify(&e, data.limits.denied, entry.interrupted, hard);
                tracing::warn!(task, error = %failure.message, "the guest trapped; its instance is rebuilt");
                tracing::debug!(task, detail = format_args!("{e:?}"), "trap details");
                self.lose_instance(&failure);
                Err(failure)
            }
        }
    }

    /// Everything in the instance is gone: its tasks fail, its operations stop.
    fn lose_instance(&mut self, failure: &TrapFailure) {
        self.vm = None;
        self.generation += 1;
        self.virtual_ms = 0; // the next instance's clock starts again
        for (_, op) in self.ops.drain() {
            op.handle.abort();
        }
        for (_, task) in self.tasks.drain() {
            if let Some(reply) = task.reply {
                let _ = reply.send(Err(Error::Trapped {
                    op: task.op,
                    message: failure.message.clone(),
                    limit: failure.limit,
                }));
            }
        }
    }

    pub(crate) fn stats(&self) -> super::SandboxStats {
        super::SandboxStats {
            memory: self
                .vm
                .as_ref()
                .map_or(0, |vm| vm.store.data().limits.size as u64),
            tasks: self.tasks.len(),
            pending_ops: self.ops.len(),
            scripts: self.scripts.len(),
            rebuilds: self.generation,
        }
    }

    /// Cancels a task a caller stopped waiting for.
    pub(crate) fn cancel(&mut self, task: u64, reason: &str) {
        // The caller has its answer already; this only unwinds the guest side.
        let known = self.tasks.remove(&task).is_some();
        self.stop_listening(task);
        if known && self.vm.is_some() {
            self.cancel_in_guest(task, reason);
        } else {
            self.interrupts.clear(task);
        }
    }

    /// Tells the guest: pending operations of `task` reject with an
    /// `AbortError`, what it asks next is refused.
    fn cancel_in_guest(&mut self, task: u64, reason: &str) {
        if self.vm.is_none() {
            self.interrupts.clear(task);
            return;
        }
        // The request to interrupt was for JavaScript that ran before; the
        // unwinding must run. It does so under a fresh deadline; if it is
        // interrupted again, nothing more is done for it.
        self.interrupts.clear(task);
        let call = Call::Cancel {
            reason: reason.to_string(),
        };
        let unwound = self.call_guest(task, |store, b| call.invoke(store, b, task));
        if let Some(recorder) = &self.recorder {
            match &unwound {
                Ok((effects, _)) => recorder.entry(task, &call, Ok(effects)),
                Err(trap) => recorder.entry(task, &call, Err(&trap.message)),
            }
        }
        if let Ok((effects, interrupted)) = unwound {
            self.process(effects);
            if interrupted {
                tracing::warn!(
                    task,
                    "a cancelled task was interrupted again while unwinding"
                );
            }
        }
    }

    fn process(&mut self, effects: Vec<wit::Effect>) {
        for effect in effects {
            match effect {
                wit::Effect::Request(r) => self.perform(r),
                wit::Effect::Release(op) => {
                    if let Some(p) = self.ops.remove(&op) {
                        p.handle.abort();
                    }
                }
                wit::Effect::Event(e) => {
                    // A session event is JSON text: read only when someone
                    // reads it, the task's listener or the debug log.
                    if matches!(e.event, wit::Event::Session(_))
                        && !self.listens(e.task)
                        && !tracing::enabled!(tracing::Level::DEBUG)
                    {
                        continue;
                    }
                    if let Some(event) = convert::event(e.event) {
                        self.deliver(e.task, event);
                    }
                }
                wit::Effect::Done(d) => self.complete(d.task, d.outcome),
            }
        }
    }

    /// Runs a request of the guest as a tokio task; its outcome comes back
    /// to the owner as a `resume` job.
    fn perform(&mut self, request: wit::Request) {
        let wit::Request { op, task, what } = request;
        let mut due = None;
        let replayed = match &self.answers {
            Some(answers) => answers.answer(task, &what),
            None => None,
        };
        let work: BoxFuture<wit::Outcome> = match what {
            // A partial replay answers this kind from its cassette.
            _ if replayed.is_some() => {
                let Some(answer) = replayed else {
                    unreachable!("matched on is_some")
                };
                let notifier = self.sandbox.as_ref().map(|s| s.runner.clone());
                let generation = self.generation;
                Box::pin(async move {
                    let answer = answer?;
                    for events in answer.notifies {
                        let Some(runner) = notifier.as_ref().and_then(|n| n.upgrade()) else {
                            break;
                        };
                        let _ = runner
                            .post_wait("notify", move |owner: &mut Owner| {
                                owner.notify_json(generation, op, events);
                                Ok(())
                            })
                            .await;
                    }
                    answer.outcome
                })
            }
            wit::HostOp::Sleep(ms) => {
                let wait = Duration::from_millis(ms).min(MAX_SLEEP);
                // For the order of answers only: the sleep itself runs on the
                // caller's runtime and clock (tokio's, which a test may pause).
                // A deterministic run orders them as its virtual clock
                // does, whatever the machine's load did to when each was
                // asked for.
                due = Some(match self.policy.determinism {
                    Some(_) => Due::Virtual(self.virtual_ms.saturating_add(ms)),
                    None => Due::Real(Instant::now() + wait),
                });
                Box::pin(async move {
                    tokio::time::sleep(wait).await;
                    Ok(wit::Value::Json("null".into()))
                })
            }
            wit::HostOp::Next(turn) => match self.tasks.get(&task).and_then(|t| t.next.clone()) {
                Some(next) => Box::pin(async move {
                    let turn = convert::turn_from_wit(turn)
                        .map_err(|e| convert::host_error("TypeError", format!("next(): {e:#}")))?;
                    match next(turn).await {
                        Ok(turn) => Ok(wit::Value::Turn(convert::turn_to_wit(&turn))),
                        Err(e) => Err(error_for_script(&e)),
                    }
                }),
                None => Box::pin(std::future::ready(Err(convert::host_error(
                    "Error",
                    "next(): no host middleware chain is waiting for this middleware",
                )))),
            },
            wit::HostOp::Infer(request) => {
                let Some(sandbox) = self.sandbox.clone() else {
                    return;
                };
                let (services, provided, generation) = (
                    self.services.clone(),
                    self.provided.clone(),
                    self.generation,
                );
                Box::pin(async move {
                    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
                    let notifier = sandbox.runner.clone();
                    // Stream events become `notify` jobs, in order and before
                    // the result; the events ready together travel in one job.
                    let forward = move |events: Vec<SessionEvent>| {
                        let notifier = notifier.clone();
                        async move {
                            if let Some(runner) = notifier.upgrade() {
                                let _ = runner
                                    .post_wait("notify", move |owner: &mut Owner| {
                                        owner.notify(generation, op, events);
                                        Ok(())
                                    })
                                    .await;
                            }
                        }
                    };
                    let run = host_ops::infer(services, provided, request, events);
                    tokio::pin!(run);
                    loop {
                        tokio::select! {
                            biased;
                            Some(event) = received.recv() => {
                                let mut batch = vec![event];
                                while let Ok(event) = received.try_recv() {
                                    batch.push(event);
                                }
                                forward(batch).await;
                            }
                            outcome = &mut run => {
                                let mut rest = Vec::new();
                                while let Ok(event) = received.try_recv() {
                                    rest.push(event);
                                }
                                if !rest.is_empty() {
                                    forward(rest).await;
                                }
                                break outcome;
                            }
                        }
                    }
                })
            }
            wit::HostOp::CallTool(call) => Box::pin(host_ops::call_tool(
                self.services.clone(),
                self.provided.clone(),
                call,
            )),
            wit::HostOp::Hook(call) => Box::pin(host_ops::hook(self.provided.clone(), call)),
            wit::HostOp::Fetch(request) => self.fetch(request),
            wit::HostOp::Middleware(call) => {
                let Some(sandbox) = self.sandbox.clone() else {
                    return;
                };
                // The chain's `next` runs as new tasks whose console lines
                // belong with the session's task.
                let events = self.tasks.get(&task).and_then(|t| t.events.clone());
                Box::pin(host_ops::middleware(
                    self.services.clone(),
                    self.provided.clone(),
                    sandbox,
                    call,
                    op,
                    events,
                ))
            }
        };
        let Some(weak) = self.sandbox.as_ref().map(|s| s.runner.clone()) else {
            return;
        };
        let generation = self.generation;
        let handle = self.tokio.spawn(async move {
            // A host part that panics fails the operation (the script sees
            // an error) instead of leaving the guest waiting for ever.
            let outcome = match std::panic::AssertUnwindSafe(work).catch_unwind().await {
                Ok(outcome) => outcome,
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a non-string panic".into());
                    tracing::error!(op, %message, "a host operation panicked");
                    Err(convert::host_error(
                        "Error",
                        format!("the host operation panicked: {message}"),
                    ))
                }
            };
            let Some(runner) = weak.upgrade() else {
                return; // the sandbox is gone
            };
            // Waits for room in the queue: the guest awaits this result, so it
            // must not be shed. Closed means the sandbox shut down meanwhile.
            let _ = runner
                .post_wait("resume", move |owner: &mut Owner| {
                    owner.resume(generation, op, outcome);
                    Ok(())
                })
                .await;
        });
        self.ops.insert(
            op,
            PendingOp {
                task,
                handle: handle.abort_handle(),
                due,
            },
        );
    }

    /// A script's `fetch`, under the policy's network rules.
    #[cfg(feature = "fetch")]
    fn fetch(&mut self, request: wit::HttpRequest) -> BoxFuture<wit::Outcome> {
        let fetcher = match &self.fetcher {
            Some(fetcher) => fetcher.clone(),
            None => match super::fetch::Fetcher::new(self.policy.net.clone()) {
                Ok(fetcher) => self.fetcher.insert(Arc::new(fetcher)).clone(),
                Err(e) => {
                    return Box::pin(std::future::ready(Err(convert::host_error("TypeError", e))));
                }
            },
        };
        Box::pin(fetcher.fetch(request))
    }

    /// Without the `fetch` feature there is no HTTP client: every fetch is
    /// refused.
    #[cfg(not(feature = "fetch"))]
    fn fetch(&mut self, _request: wit::HttpRequest) -> BoxFuture<wit::Outcome> {
        Box::pin(std::future::ready(Err(convert::host_error(
            "TypeError",
            "fetch is not available from this host: it was built without an HTTP client (the marionette crate's `fetch` feature)",
        ))))
    }

    fn resume(&mut self, generation: u64, op: u64, outcome: wit::Outcome) {
        if generation != self.generation {
            return; // for an instance that trapped since
        }
        let Some(pending) = self.ops.remove(&op) else {
            return; // released by the guest meanwhile, or fired in order below
        };
        if self.vm.is_none() {
            return;
        }
        if let Some(due) = pending.due {
            self.fire_timers_due_before(due, op);
            if self.vm.is_none() {
                return; // one of them trapped: this op went with the instance
            }
            self.timer_fired(due);
        }
        self.enter(pending.task, Call::Resume { op, outcome });
    }

    /// Timers fire in the order of their deadlines (ties: in the order they
    /// were asked for), as `setTimeout`'s do in browsers. Each sleep is a
    /// tokio task of its own, and two that expire together on a busy
    /// machine may post their answers in either order; so before a timer is
    /// answered, the pending timers due before it are answered first (their
    /// own answers, arriving later, find them gone).
    fn fire_timers_due_before(&mut self, due: Due, op: u64) {
        let mut earlier: Vec<(Due, u64)> = self
            .ops
            .iter()
            .filter_map(|(&other, p)| p.due.map(|d| (d, other)))
            .filter(|&key| key < (due, op))
            .collect();
        earlier.sort_unstable();
        for (other_due, other) in earlier {
            let Some(pending) = self.ops.remove(&other) else {
                continue; // released by what an earlier timer ran
            };
            pending.handle.abort();
            if self.vm.is_none() {
                return;
            }
            self.timer_fired(other_due);
            let outcome: wit::Outcome = Ok(wit::Value::Json("null".into()));
            self.enter(pending.task, Call::Resume { op: other, outcome });
        }
    }

    /// A timer is answered: a virtual clock moves to when it was due, as
    /// the guest's does (never back).
    fn timer_fired(&mut self, due: Due) {
        if let Due::Virtual(ms) = due {
            self.virtual_ms = self.virtual_ms.max(ms);
        }
    }

    /// Stream events of a host engine's inference: to the guest, as
    /// progress of the op (the guest makes them the run's `partial` events).
    fn notify(&mut self, generation: u64, op: u64, events: Vec<SessionEvent>) {
        if generation != self.generation || self.vm.is_none() {
            return;
        }
        if !self.ops.contains_key(&op) {
            return; // the script stopped waiting for the inference
        }
        let mut json = Vec::with_capacity(events.len());
        for event in events {
            // What an engine streamed may nest deeper than the guest's
            // JSON.parse can follow: such an event is not delivered.
            let op: Op = "inference event".into();
            match serde_json::to_value(&event.kind) {
                Ok(value) => match super::check_nesting(&op, "an inference event", &value) {
                    Ok(()) => json.push(value.to_string()),
                    Err(e) => {
                        tracing::warn!(error = %e, "an inference event is not delivered to the script")
                    }
                },
                Err(e) => tracing::error!(error = %e, "an inference event could not be encoded"),
            }
        }
        self.notify_json(generation, op, json);
    }

    /// Stream events, as the JSON the guest takes, of op `op`.
    fn notify_json(&mut self, generation: u64, op: u64, events: Vec<String>) {
        if generation != self.generation || self.vm.is_none() {
            return;
        }
        let Some(task) = self.ops.get(&op).map(|p| p.task) else {
            return; // the script stopped waiting for the inference
        };
        self.enter(task, Call::Notify { op, events });
    }

    /// Task `task` no longer has a listener for the guest to make session
    /// events for.
    fn stop_listening(&mut self, task: u64) {
        if let Some(vm) = &mut self.vm {
            vm.store.data_mut().listening.remove(&task);
        }
    }

    /// Whether task `task` has a listener for its events.
    fn listens(&self, task: u64) -> bool {
        self.tasks.get(&task).is_some_and(|t| t.events.is_some())
    }

    fn deliver(&mut self, task: u64, event: Event) {
        match &event {
            Event::Console { level, message } => match level {
                LogLevel::Debug => {
                    tracing::debug!(target: "marionette::console", task, "{message}")
                }
                LogLevel::Info => tracing::info!(target: "marionette::console", task, "{message}"),
                LogLevel::Warn => tracing::warn!(target: "marionette::console", task, "{message}"),
                LogLevel::Error => {
                    tracing::error!(target: "marionette::console", task, "{message}")
                }
            },
            Event::Session(e) => tracing::debug!(task, event = e.kind.name(), "session event"),
        }

        if let Some(sink) = self.tasks.get(&task).and_then(|t| t.events.as_ref()) {
            // A listener that went away does not stop the task.
            let _ = sink.send(event);
        }
    }

    fn complete(&mut self, id: u64, outcome: wit::TaskOutcome) {
        // Nothing about the task comes after its done: no interrupt is due.
        self.interrupts.clear(id);
        self.stop_listening(id);
        let Some(task) = self.tasks.remove(&id) else {
            return; // cancelled, timed out or failed already
        };
        let memory_refused = self.memory_refused;
        // A load's value is the runtime's export list, not a script's
        // result: the cap on results is not for it.
        let loads = matches!(task.kind, TaskKind::Load { .. } | TaskKind::Reload { .. });
        let max = if loads {
            0
        } else {
            self.policy.max_result_bytes
        };
        let result = match outcome {
            Ok(wit::Value::Json(text)) if max > 0 && text.len() as u64 > max => Err(Error::Limit {
                op: task.op.clone(),
                limit: Limit::Output,
                detail: format!(
                    "the result is {} bytes of JSON; the policy allows {max}",
                    text.len()
                ),
            }),
            Ok(value) => Ok(value),
            Err(e) => Err(failure(task.op.clone(), e, memory_refused)),
        };
        match (&task.kind, &result) {
            (TaskKind::Load { name, source }, Ok(_)) => {
                self.scripts.retain(|s| &s.name != name);
                self.scripts.push(Script {
                    name: name.clone(),
                    source: source.clone(),
                });
            }
            (TaskKind::Reload { name }, Err(e)) => {
                tracing::error!(script = %name, error = %e, "reloading the script failed; it is dropped from the sandbox");
                self.scripts.retain(|s| &s.name != name);
            }
            _ => {}
        }
        if let Some(reply) = task.reply {
            // The caller may have stopped waiting; its loss.
            let _ = reply.send(result);
        }
    }
}

/// A task's failure as the caller sees it.
///
/// A script error that QuickJS's `null` for out of memory became
/// (`uncaught null`) counts as the memory limit only when the guest was
/// refused memory in the same entry: a script may throw `null` too.
fn failure(op: Op, failure: wit::Failure, memory_refused: bool) -> Error {
    let limit = |limit: Limit, detail: String| Error::Limit {
        op: op.clone(),
        limit,
        detail,
    };
    match failure {
        wit::Failure::Cancelled(reason) => Error::Canceled {
            op,
            reason: Some(reason),
        },
        wit::Failure::Deadline(detail) => {
            tracing::warn!(op = %op, "cpu deadline reached; the script was interrupted");
            limit(Limit::Deadline, detail)
        }
        wit::Failure::OverCap(hit) => {
            let kind = match hit.cap {
                wit::Cap::Output => Limit::Output,
                wit::Cap::Operations => Limit::Operations,
            };
            tracing::warn!(op = %op, limit = %kind, "{}", hit.detail);
            limit(kind, hit.detail)
        }
        wit::Failure::OutOfMemory(detail) => limit(Limit::Memory, detail),
        wit::Failure::Script(e) if memory_refused && e.name == "Error" && e.message == "uncaught null" => limit(
            Limit::Memory,
            "the script's memory reached the policy's limit (QuickJS could not allocate its error and threw null)".into(),
        ),
        wit::Failure::Script(e) => Error::Script {
            op,
            error: Box::new(convert::script_error(e)),
        },
    }
}

/// Why an entry trapped, in words and as a limit.
pub(crate) struct TrapFailure {
    pub(crate) message: String,
    pub(crate) limit: Option<Limit>,
}

impl TrapFailure {
    fn classify(
        e: &wasmtime::Error,
        memory_denied: bool,
        interrupted: bool,
        hard_deadline: Duration,
    ) -> Self {
        let trap = e.downcast_ref::<wasmtime::Trap>().copied();
        match trap {
            // The guest gives up on purpose when JavaScript it was told to
            // stop keeps scheduling itself (see the guest's `entry`).
            Some(wasmtime::Trap::UnreachableCodeReached) if interrupted && !memory_denied => TrapFailure {
                message: "cpu deadline: promise jobs kept scheduling themselves past the deadline; the instance was rebuilt"
                    .into(),
                limit: Some(Limit::Deadline),
            },
            Some(wasmtime::Trap::Interrupt) => TrapFailure {
                message: format!(
                    "cpu deadline: the script could not be interrupted and was stopped after {}ms",
                    hard_deadline.as_millis()
                ),
                limit: Some(Limit::Deadline),
            },
            Some(wasmtime::Trap::StackOverflow) => TrapFailure {
                message: "stack exhausted: the script recursed too deeply".into(),
                limit: Some(Limit::Stack),
            },
            Some(wasmtime::Trap::OutOfFuel) => TrapFailure {
                message: "fuel exhausted".into(),
                limit: Some(Limit::Fuel),
            },
            _ if memory_denied => TrapFailure {
                message: "memory limit: the guest could not grow its memory".into(),
                limit: Some(Limit::Memory),
            },
            // QuickJS's own stack check does not work on WASI: a deep
            // recursion can run the shadow stack (in linear memory, below the
            // data) out of bounds before the wasm stack is exhausted.
            Some(wasmtime::Trap::MemoryOutOfBounds) => TrapFailure {
                message:
                    "stack exhausted: the script recursed too deeply (out-of-bounds memory access)"
                        .into(),
                limit: Some(Limit::Stack),
            },
            Some(trap) => TrapFailure {
                message: format!("wasm trap: {trap}"),
                limit: None,
            },
            None => TrapFailure {
                message: format!("{e:#}"),
                limit: None,
            },
        }
    }
}

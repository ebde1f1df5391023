//! Replaying a cassette: strict (every entry again, every effect compared)
//! or partial (the scripts run live; the operations of the kinds chosen are
//! answered from the cassette, matched by request in order per kind).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::Value as Json;

use super::diff::{diff_lines, op_kind, pretty};
use super::{Call, Cassette, CassetteError, Divergence, component_sha256};
use crate::bindings::marionette::runtime::types as wit;
use crate::error::Error;
use crate::sandbox::{EventSink, HostServices, Runtime, Sandbox, SandboxOptions, TaskOptions};

/// How a replay answers the guest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Every recorded entry is made again, in its order, into a fresh
    /// instance, and every effect it returns must be the recorded one: the
    /// run is the recorded run, byte for byte, with no I/O at all.
    #[default]
    Strict,
    /// The scripts run live in a sandbox with the replay's services: the
    /// operations of these kinds (`infer`, `call-tool`, `middleware`,
    /// `hook`, `sleep`) are answered from the cassette, each matched with
    /// the next recorded operation of its kind, whose request must be the
    /// same; the others are performed for real. The recorded run's `main`
    /// is called again with its recorded input.
    Partial(Vec<String>),
}

/// What a replay runs, and where its events go.
#[derive(Default)]
#[non_exhaustive]
pub struct ReplayOptions {
    /// Strict, or partial.
    pub mode: Mode,
    /// Script sources to use instead of the recorded ones, by name: the
    /// script as it is now, to see whether it still does what it did.
    pub sources: HashMap<String, String>,
    /// Receives the events of the run's tasks (console lines, session
    /// events) as they happen; those of loading the scripts are left out,
    /// as a live run leaves them out.
    pub events: Option<EventSink>,
    /// A partial replay's host services (the tools, middleware and engines
    /// that are performed for real).
    pub services: HostServices,
}

impl ReplayOptions {
    /// Options for `mode`.
    pub fn new(mode: Mode) -> Self {
        ReplayOptions {
            mode,
            ..ReplayOptions::default()
        }
    }
}

/// What a replay that matched its cassette produced.
#[derive(Debug)]
#[non_exhaustive]
pub struct Replayed {
    /// Entries made (strict) or operations answered from the cassette
    /// (partial).
    pub entries: usize,
    /// The outcome of the run's last `main`, as the live run's caller got
    /// it; `None` when the run called no `main`.
    pub result: Option<Result<Json, Error>>,
}

/// Why a replay did not reproduce its cassette.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The cassette cannot be replayed here.
    #[error(transparent)]
    Cassette(#[from] CassetteError),
    /// The guest did or asked something else than what was recorded.
    #[error("{0}")]
    Diverged(Box<Divergence>),
    /// The sandbox failed (building the instance, a partial replay's run).
    #[error(transparent)]
    Sandbox(#[from] Error),
}

/// Replays `cassette` on `runtime`.
///
/// # Errors
/// [`ReplayError::Cassette`] with [`CassetteError::Component`] when the
/// cassette was recorded by another build of the guest;
/// [`ReplayError::Diverged`] at the first difference;
/// [`ReplayError::Sandbox`] when the sandbox could not run it.
pub async fn replay(
    runtime: Arc<Runtime>,
    cassette: &Cassette,
    options: ReplayOptions,
) -> Result<Replayed, ReplayError> {
    let running = component_sha256();
    if cassette.header.component != running {
        return Err(CassetteError::Component {
            recorded: cassette.header.component.clone(),
            running,
        }
        .into());
    }
    match &options.mode {
        Mode::Strict => strict(runtime, cassette, options).await,
        Mode::Partial(kinds) => {
            let kinds = kinds.clone();
            partial(runtime, cassette, options, kinds).await
        }
    }
}

async fn strict(
    runtime: Arc<Runtime>,
    cassette: &Cassette,
    options: ReplayOptions,
) -> Result<Replayed, ReplayError> {
    let sandbox = Sandbox::with_options(
        runtime,
        cassette.header.policy.clone(),
        HostServices::default(),
        SandboxOptions::default(),
    )
    .await?;
    let entries = cassette.entries.clone();
    let ReplayOptions {
        sources, events, ..
    } = options;
    let outcome = sandbox
        .replay_entries(entries, sources, events)
        .await
        .map_err(ReplayError::Sandbox)
        .and_then(|r| r);
    sandbox.shutdown().await;
    outcome
}

async fn partial(
    runtime: Arc<Runtime>,
    cassette: &Cassette,
    options: ReplayOptions,
    kinds: Vec<String>,
) -> Result<Replayed, ReplayError> {
    let answers = Arc::new(Answers::new(cassette, &kinds));
    let sandbox_options = SandboxOptions {
        answers: Some(answers.clone()),
        ..SandboxOptions::default()
    };
    let sandbox = Sandbox::with_options(
        runtime,
        cassette.header.policy.clone(),
        options.services,
        sandbox_options,
    )
    .await?;
    let run = async {
        // The scripts as they were loaded (a script or a graph), with the
        // sources given in their place.
        let current = |path: &str, recorded: &str| {
            options
                .sources
                .get(path)
                .cloned()
                .unwrap_or_else(|| recorded.to_string())
        };
        // Each once: a rebuilt instance's reloads are entries too.
        let mut loaded = std::collections::HashSet::new();
        for entry in &cassette.entries {
            match &entry.call {
                Call::Load { name, .. } | Call::LoadModules { name, .. }
                    if !loaded.insert(name.clone()) => {}
                Call::Load { name, source } => {
                    sandbox.load(name.clone(), current(name, source)).await?;
                }
                Call::LoadModules { name, modules } => {
                    let mut graph = crate::Modules::new();
                    for (path, source) in modules {
                        graph.insert(path.clone(), current(path, source));
                    }
                    sandbox.load_modules(name.clone(), graph).await?;
                }
                _ => {}
            }
        }
        let Some((name, input)) = cassette.main_call() else {
            return Ok(None);
        };
        let input: Json = serde_json::from_str(input)
            .map_err(|e| Error::host("replay", anyhow::anyhow!("the recorded input: {e}")))?;
        let task = TaskOptions {
            events: options.events.clone(),
            ..TaskOptions::default()
        };
        Ok::<_, Error>(Some(sandbox.run_main(name, &input, task).await))
    };
    let result = run.await;
    sandbox.shutdown().await;
    if let Some(divergence) = answers.divergence() {
        return Err(ReplayError::Diverged(Box::new(divergence)));
    }
    let result = result?;
    if let Some(divergence) = answers.unused() {
        return Err(ReplayError::Diverged(Box::new(divergence)));
    }
    Ok(Replayed {
        entries: answers.used(),
        result,
    })
}

/// `op` with the ids of its turn's blocks emptied: a partial replay runs
/// host parts live, and they name the blocks they add at random (the
/// Rust host's `systemPrompt` does), so ids are not what is compared.
fn without_block_ids(op: &wit::HostOp) -> wit::HostOp {
    let mut op = op.clone();
    let turn = match &mut op {
        wit::HostOp::Infer(request) => Some(&mut request.input),
        wit::HostOp::Middleware(call) => Some(&mut call.input),
        wit::HostOp::Next(turn) => Some(turn),
        _ => None,
    };
    for block in turn.into_iter().flat_map(|t| t.blocks.iter_mut()) {
        block.id.clear();
    }
    op
}

/// A recorded operation: its request and the answer it got.
#[derive(Debug, Clone)]
struct Recorded {
    task: u64,
    what: wit::HostOp,
    notifies: Vec<Vec<String>>,
    outcome: Option<wit::Outcome>,
}

/// What a partial replay answers an operation with.
pub(crate) struct RecordedAnswer {
    /// The progress events, batch by batch, as they were delivered.
    pub(crate) notifies: Vec<Vec<String>>,
    pub(crate) outcome: wit::Outcome,
}

/// The operations a partial replay answers from its cassette, queued by
/// kind in the order they were asked.
pub(crate) struct Answers {
    kinds: Vec<String>,
    state: Mutex<AnswerState>,
}

struct AnswerState {
    queues: HashMap<&'static str, VecDeque<Recorded>>,
    /// Taken so far, by kind.
    taken: HashMap<&'static str, usize>,
    divergence: Option<Divergence>,
}

impl Answers {
    pub(crate) fn new(cassette: &Cassette, kinds: &[String]) -> Answers {
        let mut queues: HashMap<&'static str, VecDeque<Recorded>> = HashMap::new();
        // Where each op of the replayed kinds sits in its queue.
        let mut place: HashMap<u64, (&'static str, usize)> = HashMap::new();
        for entry in &cassette.entries {
            match &entry.call {
                // A new instance numbers its ops from 1 again.
                Call::Configure(_) => place.clear(),
                Call::Notify { op, events } => {
                    if let Some((kind, i)) = place.get(op)
                        && let Some(r) = queues.get_mut(kind).and_then(|q| q.get_mut(*i))
                    {
                        r.notifies.push(events.clone());
                    }
                }
                Call::Resume { op, outcome } => {
                    if let Some((kind, i)) = place.remove(op)
                        && let Some(r) = queues.get_mut(kind).and_then(|q| q.get_mut(i))
                    {
                        r.outcome = Some(outcome.clone());
                    }
                }
                _ => {}
            }
            for effect in entry.effects.iter().flatten() {
                if let wit::Effect::Request(r) = effect {
                    let kind = op_kind(&r.what);
                    if !kinds.iter().any(|k| k == kind) {
                        continue;
                    }
                    let queue = queues.entry(kind).or_default();
                    place.insert(r.op, (kind, queue.len()));
                    queue.push_back(Recorded {
                        task: r.task,
                        what: r.what.clone(),
                        notifies: Vec::new(),
                        outcome: None,
                    });
                }
            }
        }
        Answers {
            kinds: kinds.to_vec(),
            state: Mutex::new(AnswerState {
                queues,
                taken: HashMap::new(),
                divergence: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AnswerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer to `what` when its kind is replayed: the next recorded
    /// one of its kind, if it asked the same; otherwise the divergence is
    /// kept and the script gets an error (`ReplayDivergence`).
    pub(crate) fn answer(
        &self,
        task: u64,
        what: &wit::HostOp,
    ) -> Option<Result<RecordedAnswer, wit::ScriptError>> {
        let kind = op_kind(what);
        if !self.kinds.iter().any(|k| k == kind) {
            return None;
        }
        let mut state = self.lock();
        let place = *state.taken.get(kind).unwrap_or(&0);
        let next = state.queues.get_mut(kind).and_then(VecDeque::pop_front);
        *state.taken.entry(kind).or_default() += 1;
        let refuse = |state: &mut AnswerState, divergence: Divergence| {
            let message = divergence.to_string();
            state.divergence.get_or_insert(divergence);
            Some(Err(wit::ScriptError {
                name: "ReplayDivergence".into(),
                message,
                stack: None,
                file: None,
                line: None,
                column: None,
            }))
        };
        let Some(recorded) = next else {
            let asked = pretty(Some(what));
            let divergence = Divergence {
                entry: place,
                export: kind.into(),
                task,
                what: format!("{kind} operation {} (one more than recorded)", place + 1),
                recorded: "(nothing)".into(),
                diff: diff_lines("(nothing)", &asked),
                asked,
            };
            return refuse(&mut state, divergence);
        };
        if without_block_ids(&recorded.what) != without_block_ids(what) {
            let (r, a) = (pretty(Some(&recorded.what)), pretty(Some(what)));
            let divergence = Divergence {
                entry: place,
                export: kind.into(),
                task,
                what: format!("the request of {kind} operation {}", place + 1),
                diff: diff_lines(&r, &a),
                recorded: r,
                asked: a,
            };
            return refuse(&mut state, divergence);
        }
        let outcome = recorded.outcome.unwrap_or_else(|| {
            Err(wit::ScriptError {
                name: "ReplayDivergence".into(),
                message: format!(
                    "the recorded run never got an answer to {kind} operation {}",
                    place + 1
                ),
                stack: None,
                file: None,
                line: None,
                column: None,
            })
        });
        Some(Ok(RecordedAnswer {
            notifies: recorded.notifies,
            outcome,
        }))
    }

    /// The first divergence met, if any.
    pub(crate) fn divergence(&self) -> Option<Divergence> {
        self.lock().divergence.clone()
    }

    /// Operations answered from the cassette.
    pub(crate) fn used(&self) -> usize {
        self.lock().taken.values().sum()
    }

    /// A divergence for the first recorded operation the run never asked
    /// for: the script now asks for fewer.
    pub(crate) fn unused(&self) -> Option<Divergence> {
        let state = self.lock();
        let mut kinds: Vec<_> = state.queues.iter().filter(|(_, q)| !q.is_empty()).collect();
        kinds.sort_by_key(|(k, _)| **k);
        let (kind, queue) = kinds.first()?;
        let recorded = queue.front()?;
        let place = *state.taken.get(**kind).unwrap_or(&0);
        let r = pretty(Some(&recorded.what));
        Some(Divergence {
            entry: place,
            export: (**kind).into(),
            task: recorded.task,
            what: format!(
                "the end of the run ({} recorded {kind} operations were never asked for)",
                queue.len()
            ),
            diff: diff_lines(&r, "(nothing)"),
            recorded: r,
            asked: "(nothing)".into(),
        })
    }
}

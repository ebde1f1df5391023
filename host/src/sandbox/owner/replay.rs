//! A strict replay on the owner: the recorded entries made again into
//! fresh instances, each one's effects compared with the recorded ones.

use std::collections::{HashMap, HashSet};

use super::{Owner, Vm, failure};
use crate::bindings::marionette::runtime::types as wit;
use crate::cassette::{Call, Divergence, Entry, ReplayError, Replayed, compare};
use crate::error::Error;
use crate::sandbox::{EventSink, convert, json_value};

impl Owner {
    /// Makes `entries` again, in order: a `configure` builds a fresh
    /// instance with the recorded configuration, every other entry is
    /// made into it (a `load` with the source in `sources` when there is
    /// one), and what it returns (or its trap) must be what was recorded.
    /// Events of the tasks that are not loads go to `events`.
    pub(crate) fn replay(
        &mut self,
        entries: &[Entry],
        sources: &HashMap<String, String>,
        events: Option<EventSink>,
    ) -> Result<Replayed, ReplayError> {
        let mut main: Option<u64> = None;
        let mut loads: HashSet<u64> = HashSet::new();
        let mut result = None;
        for entry in entries {
            let replaced;
            // `changed`: a load of a source given in `sources`.
            let (call, changed) = match &entry.call {
                Call::Load { name, .. } if sources.contains_key(name) => {
                    replaced = Call::Load {
                        name: name.clone(),
                        source: sources[name].clone(),
                    };
                    (&replaced, true)
                }
                // A graph's modules by path.
                Call::LoadModules { name, modules }
                    if modules.iter().any(|(path, _)| sources.contains_key(path)) =>
                {
                    replaced = Call::LoadModules {
                        name: name.clone(),
                        modules: modules
                            .iter()
                            .map(|(path, source)| {
                                (path.clone(), sources.get(path).unwrap_or(source).clone())
                            })
                            .collect(),
                    };
                    (&replaced, true)
                }
                call => (call, false),
            };
            match call {
                Call::Load { .. } | Call::LoadModules { .. } => {
                    loads.insert(entry.task);
                }
                Call::RunMain { .. } => main = Some(entry.task),
                _ => {}
            }
            let got: Result<Vec<wit::Effect>, String> = match call {
                Call::Configure(config) => {
                    let (mut store, bindings) = self
                        .runtime
                        .instantiate_with(&self.policy, config)
                        .map_err(|e| Error::host("replay: configure", e))?;
                    store.data_mut().interrupt = Some(self.interrupts.clone());
                    self.vm = Some(Vm { store, bindings });
                    Ok(Vec::new())
                }
                _ if self.vm.is_none() => Err("no instance: an earlier entry trapped".into()),
                call => self
                    .call_guest(entry.task, |store, b| call.invoke(store, b, entry.task))
                    .map(|(effects, _)| effects)
                    .map_err(|trap| trap.message),
            };
            let diverged = |what: String, recorded: String, asked: String, diff: String| {
                ReplayError::Diverged(Box::new(Divergence {
                    entry: entry.n,
                    export: call.export().into(),
                    task: entry.task,
                    what,
                    recorded,
                    asked,
                    diff,
                }))
            };
            let effects = match (&entry.effects, got) {
                (Some(recorded), Ok(effects)) => {
                    // A load's value is its script's export list: a script
                    // replayed as it is now (`sources`) may describe its
                    // exports differently. That is no effect; what the
                    // changed script then asks for is compared.
                    let found = if changed {
                        let unread = |effects| exports_unread(effects, entry.task);
                        compare(&unread(recorded), &unread(&effects))
                    } else {
                        compare(recorded, &effects)
                    };
                    if let Some((what, r, a, diff)) = found {
                        return Err(diverged(what, r, a, diff));
                    }
                    effects
                }
                (None, Err(_)) => Vec::new(),
                (Some(_), Err(trap)) => {
                    return Err(diverged(
                        "the entry".into(),
                        "(its effects)".into(),
                        format!("a trap: {trap}"),
                        format!("+ the entry trapped: {trap}"),
                    ));
                }
                (None, Ok(_)) => {
                    let trap = entry.trap.clone().unwrap_or_default();
                    return Err(diverged(
                        "the entry".into(),
                        format!("a trap: {trap}"),
                        "(its effects)".into(),
                        format!("- the entry trapped: {trap}\n+ the entry returned"),
                    ));
                }
            };
            for effect in effects {
                match effect {
                    wit::Effect::Event(e) if !loads.contains(&e.task) => {
                        if let (Some(sink), Some(event)) = (&events, convert::event(e.event)) {
                            let _ = sink.send(event);
                        }
                    }
                    wit::Effect::Done(d) if Some(d.task) == main => {
                        let op = "main (replayed)";
                        result = Some(match d.outcome {
                            Ok(value) => json_value(op.into(), value),
                            Err(e) => Err(failure(op.into(), e, false)),
                        });
                    }
                    _ => {}
                }
            }
        }
        Ok(Replayed {
            entries: entries.len(),
            result,
        })
    }
}

/// A load's `effects` with the value of its task's successful `done`
/// emptied: what they say apart from the script's export list.
fn exports_unread(effects: &[wit::Effect], load: u64) -> Vec<wit::Effect> {
    effects
        .iter()
        .map(|effect| match effect {
            wit::Effect::Done(d) if d.task == load && d.outcome.is_ok() => {
                wit::Effect::Done(wit::TaskDone {
                    task: d.task,
                    outcome: Ok(wit::Value::Json(String::new())),
                })
            }
            other => other.clone(),
        })
        .collect()
}

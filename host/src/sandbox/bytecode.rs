//! A runtime's bytecode cache: QuickJS bytecode of the scripts its
//! sandboxes load, so that a script loaded again (into a new sandbox of the
//! runtime, or into the instance rebuilt after a trap) is read instead of
//! parsed and compiled again.
//!
//! QuickJS trusts bytecode as it trusts its own memory: reading hostile
//! bytes corrupts the VM. So the cache holds only bytecode the runtime's
//! own guest wrote in this process, and only from an instance made for that
//! purpose and thrown away after: a fresh instance of the snapshot in which
//! nothing but the compile ran (no script's code, no input), so that a
//! script that subverted its VM cannot hand another sandbox its bytes
//! (`script.compile` in the WIT). Nothing is read from or written to a file,
//! and nothing a user, a cassette or a guest hands over is ever put in.
//!
//! A unit is what one `load` or `load-modules` compiles; its key is the
//! whole unit (the entry's name, and every module's path and source, as the
//! guest gets them: TypeScript already erased), compared in full on a hit,
//! so a changed source is never served stale and no hash collision can
//! serve another's bytecode. A cache belongs to one runtime, and so to one
//! compiled guest: it never crosses guest builds. It is bounded in bytes;
//! the least recently used unit goes first.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex};

use crate::bindings::exports::marionette::runtime::script::CompiledModule;

/// What one load compiles, borrowed: the unit's key.
#[derive(Clone, Copy)]
pub(crate) enum Unit<'a> {
    /// `script.load`: one module, named by the script's name.
    One { name: &'a str, source: &'a str },
    /// `script.load-modules`: the entry and every module.
    Graph {
        entry: &'a str,
        modules: &'a [(String, String)],
    },
}

impl Unit<'_> {
    /// The entry's name (the script's name).
    pub(crate) fn entry(&self) -> &str {
        match self {
            Unit::One { name, .. } => name,
            Unit::Graph { entry, .. } => entry,
        }
    }

    /// Whether the guest checks the paths (`load-modules`) or not (`load`).
    pub(crate) fn checked(&self) -> bool {
        matches!(self, Unit::Graph { .. })
    }

    /// Every module's path and source, in order.
    pub(crate) fn modules(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let (one, graph) = match self {
            Unit::One { name, source } => (Some((*name, *source)), [].as_slice()),
            Unit::Graph { modules, .. } => (None, *modules),
        };
        one.into_iter()
            .chain(graph.iter().map(|(p, s)| (p.as_str(), s.as_str())))
    }

    fn size(&self) -> usize {
        self.entry().len()
            + self
                .modules()
                .map(|(p, s)| p.len() + s.len())
                .sum::<usize>()
    }

    fn hash(&self, state: &RandomState) -> u64 {
        let mut h = state.build_hasher();
        self.checked().hash(&mut h);
        self.entry().hash(&mut h);
        for (path, source) in self.modules() {
            path.hash(&mut h);
            source.hash(&mut h);
        }
        h.finish()
    }

    fn owned(&self) -> OwnedUnit {
        OwnedUnit {
            checked: self.checked(),
            entry: self.entry().to_string(),
            modules: self
                .modules()
                .map(|(p, s)| (p.to_string(), s.to_string()))
                .collect(),
        }
    }
}

struct OwnedUnit {
    checked: bool,
    entry: String,
    modules: Vec<(String, String)>,
}

impl OwnedUnit {
    fn is(&self, unit: &Unit<'_>) -> bool {
        self.checked == unit.checked()
            && self.entry == unit.entry()
            && self
                .modules
                .iter()
                .map(|(p, s)| (p.as_str(), s.as_str()))
                .eq(unit.modules())
    }
}

struct Entry {
    unit: OwnedUnit,
    /// The modules' bytecode; empty when none could be made (a syntax
    /// error, an instance that trapped compiling): then the unit is not
    /// compiled again on every load.
    modules: Arc<[CompiledModule]>,
    size: usize,
    used: u64,
}

/// What a runtime's bytecode cache did, for tests and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BytecodeStats {
    /// Loads that were given bytecode from the cache.
    pub hits: u64,
    /// Loads whose unit was not in the cache: compiled then, on an instance
    /// of its own.
    pub misses: u64,
    /// Units held (those without bytecode included).
    pub entries: usize,
    /// Bytes held: the bytecode, and the sources it is keyed by.
    pub bytes: usize,
}

/// The cache: see the module's docs.
pub(crate) struct BytecodeCache {
    limit: usize,
    hasher: RandomState,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    units: HashMap<u64, Vec<Entry>>,
    tick: u64,
    stats: BytecodeStats,
}

impl BytecodeCache {
    /// A cache of at most `limit` bytes (0: none, nothing is cached).
    pub(crate) fn new(limit: usize) -> Self {
        BytecodeCache {
            limit,
            hasher: RandomState::new(),
            state: Mutex::new(State::default()),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.limit > 0
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The unit's bytecode when the cache has it (`Some` of an empty list
    /// when it has the unit without bytecode); counts a hit or a miss.
    pub(crate) fn get(&self, unit: &Unit<'_>) -> Option<Arc<[CompiledModule]>> {
        let hash = unit.hash(&self.hasher);
        let mut state = self.state();
        let state = &mut *state;
        state.tick += 1;
        let found = state
            .units
            .get_mut(&hash)
            .and_then(|v| v.iter_mut().find(|e| e.unit.is(unit)));
        match found {
            Some(entry) => {
                entry.used = state.tick;
                if !entry.modules.is_empty() {
                    state.stats.hits += 1;
                }
                Some(entry.modules.clone())
            }
            None => {
                state.stats.misses += 1;
                None
            }
        }
    }

    /// Keeps `modules`, the bytecode `compile` returned for `unit`; the
    /// least recently used units go when the cache is over its size.
    pub(crate) fn insert(
        &self,
        unit: &Unit<'_>,
        modules: Vec<CompiledModule>,
    ) -> Arc<[CompiledModule]> {
        let modules: Arc<[CompiledModule]> = modules.into();
        let size = unit.size()
            + modules
                .iter()
                .map(|m| m.path.len() + m.bytecode.len())
                .sum::<usize>();
        if size > self.limit {
            return modules;
        }
        let hash = unit.hash(&self.hasher);
        let mut state = self.state();
        let state = &mut *state;
        state.tick += 1;
        let list = state.units.entry(hash).or_default();
        if list.iter().any(|e| e.unit.is(unit)) {
            return modules; // another sandbox compiled it meanwhile
        }
        list.push(Entry {
            unit: unit.owned(),
            modules: modules.clone(),
            size,
            used: state.tick,
        });
        state.stats.entries += 1;
        state.stats.bytes += size;
        while state.stats.bytes > self.limit {
            let Some((hash, at)) = state
                .units
                .iter()
                .flat_map(|(h, v)| v.iter().enumerate().map(move |(i, e)| (*h, i, e.used)))
                .min_by_key(|(_, _, used)| *used)
                .map(|(h, i, _)| (h, i))
            else {
                break;
            };
            let list = state.units.get_mut(&hash).expect("the unit just found");
            let gone = list.remove(at);
            if list.is_empty() {
                state.units.remove(&hash);
            }
            state.stats.entries -= 1;
            state.stats.bytes -= gone.size;
        }
        modules
    }

    pub(crate) fn stats(&self) -> BytecodeStats {
        self.state().stats
    }

    /// Replaces what the cache holds for `unit` (tests: bytecode of
    /// another source, to show that a load reads what it is given).
    #[cfg(test)]
    pub(crate) fn replace(&self, unit: &Unit<'_>, modules: Vec<CompiledModule>) {
        let hash = unit.hash(&self.hasher);
        let mut guard = self.state();
        let state = &mut *guard;
        if let Some(list) = state.units.get_mut(&hash)
            && let Some(at) = list.iter().position(|e| e.unit.is(unit))
        {
            let gone = list.remove(at);
            state.stats.entries -= 1;
            state.stats.bytes -= gone.size;
        }
        drop(guard);
        self.insert(unit, modules);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Unit;
    use crate::policy::Policy;
    use crate::sandbox::{Runtime, RuntimeOptions, Sandbox, TaskOptions};

    /// The guest reads what it is offered: with the bytecode of another
    /// source put under this one's key, a load runs the other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_reads_the_bytecode_it_is_offered() {
        let runtime = Runtime::new(&RuntimeOptions {
            disk_cache: false,
            ..RuntimeOptions::default()
        })
        .unwrap();
        let policy = Policy::default();
        let this = "export default () => 'compiled from its source';";
        let other = "export default () => 'read from the bytecode offered';";
        let compiled = runtime
            .bytecode_for(
                &policy,
                &Unit::One {
                    name: "s.js",
                    source: other,
                },
            )
            .expect("bytecode of the other source");
        runtime.bytecode_cache().replace(
            &Unit::One {
                name: "s.js",
                source: this,
            },
            compiled.to_vec(),
        );
        let sb = Sandbox::with_runtime(runtime.clone(), policy)
            .await
            .unwrap();
        sb.load("s.js", this).await.unwrap();
        let out = sb
            .run_main("s.js", &json!({}), TaskOptions::default())
            .await
            .unwrap();
        assert_eq!(out, json!("read from the bytecode offered"));
        assert_eq!(runtime.bytecode_stats().hits, 1);
    }
}

//! The parts a session started by the host brings with it (the Rust
//! [`Session`](crate::session::Session) API): its Rust engine, middleware,
//! tool sets and hooks, which the guest's session loop asks for by name
//! while the run lasts (`infer`, `middleware`, `call-tool` with a
//! `provider`, `hook`).
//!
//! A run registers its parts under names no one else uses (`rust-session/
//! SERIAL/...`) and removes them when it ends, however it ends. The
//! guest's scripts never see these names: `engines.host(name)` reaches
//! only what the sandbox was configured with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::bindings::marionette::runtime::types as wit;
use crate::error::Error;
use crate::session::{Engine, Middleware, ToolHooks, Tools};

/// One part a session provides.
#[derive(Clone)]
pub(crate) enum Part {
    Engine(Arc<dyn Engine>),
    Middleware(Arc<dyn Middleware>),
    Tools(Tools),
    Hooks(Arc<dyn ToolHooks>),
}

/// A part, with where its errors are kept for the run that registered it.
#[derive(Clone)]
pub(crate) struct Entry {
    pub part: Part,
    pub raised: Arc<Raised>,
}

/// The errors a run's Rust parts raised, as the script saw them: when the
/// run then fails with one of them, unchanged, the caller gets the Rust
/// error itself back ([`Error::Provider`] stays a provider error), not its
/// JavaScript rendering.
#[derive(Default)]
pub(crate) struct Raised {
    errors: Mutex<Vec<(wit::ScriptError, Error)>>,
}

/// How many raised errors a run keeps: a tool that fails on every retry of
/// a long run must not grow this without bound (tool errors go to the
/// model; only engine and middleware errors end a run, and those are the
/// latest).
const MAX_RAISED: usize = 16;

impl Raised {
    pub(crate) fn record(&self, seen: &wit::ScriptError, error: Error) {
        let mut errors = lock(&self.errors);
        if errors.len() == MAX_RAISED {
            errors.remove(0);
        }
        errors.push((seen.clone(), error));
    }

    /// The Rust error a script error is the unchanged rendering of.
    pub(crate) fn take(&self, name: &str, message: &str) -> Option<Error> {
        let mut errors = lock(&self.errors);
        let at = errors
            .iter()
            .rposition(|(seen, _)| seen.name == name && seen.message == message)?;
        Some(errors.remove(at).1)
    }
}

/// The parts of the runs going on, by name.
#[derive(Default)]
pub(crate) struct Provided {
    parts: Mutex<HashMap<String, Entry>>,
    serial: AtomicU64,
}

impl Provided {
    pub(crate) fn get(&self, name: &str) -> Option<Entry> {
        lock(&self.parts).get(name).cloned()
    }

    /// Registers a run's parts; they go when the registration is dropped.
    pub(crate) fn register(self: &Arc<Self>) -> Registration {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        Registration {
            provided: self.clone(),
            prefix: format!("rust-session/{serial}"),
            names: Vec::new(),
            raised: Arc::new(Raised::default()),
        }
    }
}

/// The parts one run registered.
pub(crate) struct Registration {
    provided: Arc<Provided>,
    prefix: String,
    names: Vec<String>,
    pub raised: Arc<Raised>,
}

impl Registration {
    /// Adds `part` as `PREFIX/what`; returns that name.
    pub(crate) fn add(&mut self, what: &str, part: Part) -> String {
        let name = format!("{}/{what}", self.prefix);
        let entry = Entry {
            part,
            raised: self.raised.clone(),
        };
        lock(&self.provided.parts).insert(name.clone(), entry);
        self.names.push(name.clone());
        name
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut parts = lock(&self.provided.parts);
        for name in &self.names {
            parts.remove(name);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code panics while holding these locks; tolerate poisoning anyway.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

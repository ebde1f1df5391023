//! Cassettes: a run recorded at the guest's boundary, and replayed.
//!
//! The guest is sans-IO: what it does depends only on the entries the host
//! makes (each export call with its arguments) and, in a deterministic run
//! ([`Policy::determinism`]), on nothing else. A cassette is that list of
//! entries, each with the effects it returned, so that a replay can make
//! the same entries into a fresh instance and check, effect by effect, that
//! the guest asks for the same things. The format (JSON lines, versioned,
//! with a header and an integrity trailer) is `docs/cassette.md`.
//!
//! - [`Recorder`]: given to a sandbox ([`SandboxOptions::recorder`]), it
//!   takes every entry; [`Recorder::finish`] makes the [`Cassette`].
//! - [`Cassette::read`]: refuses what is not a whole, unedited cassette of
//!   this format with a typed [`CassetteError`].
//! - [`replay`](crate::cassette::replay()): strict (every entry again, every
//!   effect compared) or partial (the script runs live; the models'
//!   answers come from the cassette, matched by request in order); the
//!   first difference is a [`Divergence`] naming the entry, the task, the
//!   operation, with a diff.
//!
//! Nothing secret is written: a cassette holds only what crosses the
//! guest's boundary, and the host's keys, headers and endpoints never do.
//!
//! [`SandboxOptions::recorder`]: crate::sandbox::SandboxOptions::recorder
//! [`Policy::determinism`]: crate::Policy::determinism

mod call;
mod diff;
mod replay;
#[cfg(test)]
mod tests;

use std::io::{BufRead, Read, Write};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) use call::Call;
pub use diff::Divergence;
pub(crate) use diff::compare;
pub(crate) use replay::Answers;
pub use replay::{Mode, ReplayError, ReplayOptions, Replayed, replay};

use crate::bindings::marionette::runtime::types as wit;
use crate::policy::Policy;

/// What a cassette's header says it is.
pub const FORMAT: &str = "marionette-cassette";

/// The version of the format this crate writes and reads.
pub const VERSION: u32 = 1;

/// What [`Cassette::read`] accepts at most, against hostile or mistaken
/// files.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// The whole file, in bytes.
    pub max_bytes: u64,
    /// Entries.
    pub max_entries: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_bytes: 256 << 20,
            max_entries: 1_000_000,
        }
    }
}

/// Why a cassette was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CassetteError {
    /// Reading or writing it failed.
    #[error("cassette: {0}")]
    Io(#[from] std::io::Error),
    /// It is larger than [`ReadLimits`] allow.
    #[error("cassette: too large: {detail}")]
    TooLarge {
        /// What is too large, and the limit.
        detail: String,
    },
    /// Its first line is not a cassette header.
    #[error("cassette: not a marionette cassette: {detail}")]
    NotACassette {
        /// What the first line is instead.
        detail: String,
    },
    /// A format version this crate does not read.
    #[error("cassette: format version {found}; this marionette reads version {VERSION}")]
    Version {
        /// The version the header names.
        found: u32,
    },
    /// A line is not what the format says.
    #[error("cassette: line {line}: {detail}")]
    Malformed {
        /// 1-based.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// It ends before its trailer: the recording was cut short, or the
    /// file was.
    #[error("cassette: truncated: {detail}")]
    Truncated {
        /// Where it ends.
        detail: String,
    },
    /// Its lines are not those the trailer's checksum was made of.
    #[error("cassette: edited: {detail}")]
    Edited {
        /// What does not match.
        detail: String,
    },
    /// Recorded with another build of the guest component: its entries
    /// would not mean the same.
    #[error(
        "cassette: recorded with another guest component (sha256 {recorded}); this marionette's is {running}: record it again"
    )]
    Component {
        /// The recorded component's hash.
        recorded: String,
        /// This build's.
        running: String,
    },
}

/// A script a cassette's run loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScriptInfo {
    /// The name it was loaded as (the CLI: the path it was given).
    pub name: String,
    /// The SHA-256 of its source, in hex.
    pub sha256: String,
    /// Its length in bytes.
    pub bytes: u64,
}

/// The first line of a cassette: what a replay must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Header {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The SHA-256 of the guest component that recorded it, in hex.
    pub component: String,
    /// The version of the marionette crate that recorded it.
    pub marionette: String,
    /// The sandbox's policy, its determinism (seed, start time) included.
    pub policy: Policy,
    /// The scripts loaded, in order.
    pub scripts: Vec<ScriptInfo>,
    /// What the recording host says of the run (the CLI: the command).
    #[serde(default)]
    pub note: serde_json::Value,
}

/// One recorded entry into the guest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Its place, from 0.
    pub(crate) n: usize,
    /// The task it starts or is for (0: none).
    pub(crate) task: u64,
    pub(crate) call: Call,
    /// What it returned, unless it trapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) effects: Option<Vec<wit::Effect>>,
    /// The trap, in words, if it trapped (the next entry is a `configure`
    /// of a fresh instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) trap: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderLine {
    cassette: Header,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndLine {
    end: End,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    entries: usize,
    /// Of every byte before this line.
    sha256: String,
}

/// A recorded run: its header and its entries.
#[derive(Debug, Clone)]
pub struct Cassette {
    header: Header,
    pub(crate) entries: Vec<Entry>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `bytes`, in hex.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The SHA-256 of the guest component this crate embeds, in hex.
pub fn component_sha256() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| sha256(crate::guest_component()))
        .clone()
}

impl Cassette {
    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The source a script (or a module of a graph, by path) was loaded
    /// with, the last time it was.
    pub fn script_source(&self, name: &str) -> Option<&str> {
        self.entries.iter().rev().find_map(|e| match &e.call {
            Call::Load { name: n, source } if n == name => Some(source.as_str()),
            Call::LoadModules { modules, .. } => modules
                .iter()
                .find(|(path, _)| path == name)
                .map(|(_, source)| source.as_str()),
            _ => None,
        })
    }

    /// The script and input of the last `main` the run called, if any.
    pub fn main_call(&self) -> Option<(&str, &str)> {
        self.entries.iter().rev().find_map(|e| match &e.call {
            Call::RunMain { name, input } => Some((name.as_str(), input.as_str())),
            _ => None,
        })
    }

    /// Writes it as JSON lines.
    ///
    /// # Errors
    /// [`CassetteError::Io`].
    pub fn write(&self, out: &mut impl Write) -> Result<(), CassetteError> {
        let mut hasher = Sha256::new();
        let mut line = |text: String, out: &mut dyn Write| -> std::io::Result<()> {
            hasher.update(text.as_bytes());
            hasher.update(b"\n");
            out.write_all(text.as_bytes())?;
            out.write_all(b"\n")
        };
        let header = HeaderLine {
            cassette: self.header.clone(),
        };
        line(to_json(&header)?, out)?;
        for entry in &self.entries {
            line(to_json(entry)?, out)?;
        }
        let end = EndLine {
            end: End {
                entries: self.entries.len(),
                sha256: hex(&hasher.finalize()),
            },
        };
        out.write_all(to_json(&end)?.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(())
    }

    /// Writes it to `path`.
    ///
    /// # Errors
    /// [`CassetteError::Io`].
    pub fn save(&self, path: &std::path::Path) -> Result<(), CassetteError> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        self.write(&mut out)
    }

    /// Reads a cassette from `path`, within `limits`.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub fn load(path: &std::path::Path, limits: ReadLimits) -> Result<Cassette, CassetteError> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        if size > limits.max_bytes {
            return Err(CassetteError::TooLarge {
                detail: format!(
                    "{size} bytes; at most {} are read (ReadLimits::max_bytes)",
                    limits.max_bytes
                ),
            });
        }
        Cassette::read(std::io::BufReader::new(file), limits)
    }

    /// Reads a cassette: its header, its entries, its trailer, each checked.
    /// Whether it was recorded by this build of the guest is checked by
    /// [`replay`](crate::cassette::replay()), not here.
    ///
    /// # Errors
    /// [`CassetteError::TooLarge`], [`NotACassette`](CassetteError::NotACassette),
    /// [`Version`](CassetteError::Version), [`Malformed`](CassetteError::Malformed),
    /// [`Truncated`](CassetteError::Truncated), [`Edited`](CassetteError::Edited),
    /// [`Io`](CassetteError::Io).
    pub fn read(input: impl BufRead, limits: ReadLimits) -> Result<Cassette, CassetteError> {
        // Never more than the limit in memory, whatever the reader holds.
        let mut input = input.take(limits.max_bytes.saturating_add(1));
        let mut hasher = Sha256::new();
        let mut header: Option<Header> = None;
        let mut entries = Vec::new();
        let mut read = 0u64;
        let mut number = 0usize;
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            let n = input.read_until(b'\n', &mut buffer)?;
            if n == 0 {
                break;
            }
            read += n as u64;
            if read > limits.max_bytes {
                return Err(CassetteError::TooLarge {
                    detail: format!(
                        "more than {} bytes (ReadLimits::max_bytes)",
                        limits.max_bytes
                    ),
                });
            }
            number += 1;
            if buffer.last() != Some(&b'\n') {
                return Err(CassetteError::Truncated {
                    detail: format!("line {number} ends without its newline"),
                });
            }
            let text = std::str::from_utf8(&buffer[..buffer.len() - 1]).map_err(|e| {
                CassetteError::Malformed {
                    line: number,
                    detail: format!("not UTF-8: {e}"),
                }
            })?;
            let Some(_) = &header else {
                let line: HeaderLine =
                    serde_json::from_str(text).map_err(|e| not_a_cassette(text, e))?;
                if line.cassette.format != FORMAT {
                    return Err(CassetteError::NotACassette {
                        detail: format!("its format is {:?}", line.cassette.format),
                    });
                }
                if line.cassette.version != VERSION {
                    return Err(CassetteError::Version {
                        found: line.cassette.version,
                    });
                }
                hasher.update(&buffer);
                header = Some(line.cassette);
                continue;
            };
            if text.starts_with(r#"{"end":"#) {
                let end: EndLine =
                    serde_json::from_str(text).map_err(|e| CassetteError::Malformed {
                        line: number,
                        detail: format!("not a trailer: {e}"),
                    })?;
                let mut rest = Vec::new();
                input.read_to_end(&mut rest)?;
                if !rest.is_empty() {
                    return Err(CassetteError::Edited {
                        detail: format!("{} bytes follow the trailer (line {number})", rest.len()),
                    });
                }
                let sha = hex(&hasher.finalize());
                if end.end.sha256 != sha || end.end.entries != entries.len() {
                    return Err(CassetteError::Edited {
                        detail: format!(
                            "the trailer says {} entries with sha256 {}; the file has {} with sha256 {sha}",
                            end.end.entries,
                            end.end.sha256,
                            entries.len()
                        ),
                    });
                }
                let header = header.expect("read before the entries");
                return Ok(Cassette { header, entries });
            }
            if entries.len() >= limits.max_entries {
                return Err(CassetteError::TooLarge {
                    detail: format!(
                        "more than {} entries (ReadLimits::max_entries)",
                        limits.max_entries
                    ),
                });
            }
            let entry: Entry =
                serde_json::from_str(text).map_err(|e| CassetteError::Malformed {
                    line: number,
                    detail: format!("not an entry: {e}"),
                })?;
            if entry.n != entries.len() {
                return Err(CassetteError::Edited {
                    detail: format!(
                        "line {number} is entry {}, where entry {} belongs",
                        entry.n,
                        entries.len()
                    ),
                });
            }
            if entry.effects.is_some() == entry.trap.is_some() {
                return Err(CassetteError::Malformed {
                    line: number,
                    detail: "an entry has either its effects or its trap".into(),
                });
            }
            hasher.update(&buffer);
            entries.push(entry);
        }
        match header {
            None => Err(CassetteError::NotACassette {
                detail: "the file is empty".into(),
            }),
            Some(_) => Err(CassetteError::Truncated {
                detail: format!(
                    "no trailer after {} entries (line {number} is the last)",
                    entries.len()
                ),
            }),
        }
    }
}

fn not_a_cassette(text: &str, e: serde_json::Error) -> CassetteError {
    let start: String = text.chars().take(60).collect();
    CassetteError::NotACassette {
        detail: format!("its first line ({start:?}...) is no header: {e}"),
    }
}

fn to_json(value: &impl Serialize) -> Result<String, CassetteError> {
    serde_json::to_string(value).map_err(|e| CassetteError::Io(std::io::Error::other(e)))
}

/// Takes the entries of a sandbox's run; [`finish`](Self::finish) makes
/// the cassette. Cloning is cheap: clones share the recording.
///
/// Give it to one sandbox ([`SandboxOptions::recorder`]) before the sandbox
/// is built: a cassette starts at the instance's `configure`.
///
/// [`SandboxOptions::recorder`]: crate::sandbox::SandboxOptions::recorder
#[derive(Clone, Default)]
pub struct Recorder {
    inner: Arc<Mutex<Recording>>,
}

#[derive(Default)]
struct Recording {
    policy: Option<Policy>,
    note: serde_json::Value,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.lock();
        f.debug_struct("Recorder")
            .field("entries", &r.entries.len())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// An empty recording.
    pub fn new() -> Self {
        Recorder::default()
    }

    /// What the header's `note` says (the CLI: the command it ran).
    pub fn note(&self, note: serde_json::Value) {
        self.lock().note = note;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recording> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sandbox's policy, as it runs (its determinism settled).
    pub(crate) fn start(&self, policy: &Policy) {
        self.lock().policy = Some(policy.clone());
    }

    /// One entry and what it returned (`Err`: it trapped, in words).
    pub(crate) fn entry(&self, task: u64, call: &Call, result: Result<&[wit::Effect], &str>) {
        let mut r = self.lock();
        let entry = Entry {
            n: r.entries.len(),
            task,
            call: call.clone(),
            effects: result.ok().map(<[wit::Effect]>::to_vec),
            trap: result.err().map(str::to_string),
        };
        r.entries.push(entry);
    }

    /// Entries taken so far.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no entry was taken yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cassette of what was recorded so far (the recording goes on).
    pub fn finish(&self) -> Cassette {
        let r = self.lock();
        let mut scripts: Vec<ScriptInfo> = Vec::new();
        for entry in &r.entries {
            // A module graph lists each of its modules, by path.
            let loaded: Vec<(&String, &String)> = match &entry.call {
                Call::Load { name, source } => vec![(name, source)],
                Call::LoadModules { modules, .. } => modules.iter().map(|(p, s)| (p, s)).collect(),
                _ => continue,
            };
            for (name, source) in loaded {
                let info = ScriptInfo {
                    name: name.clone(),
                    sha256: sha256(source.as_bytes()),
                    bytes: source.len() as u64,
                };
                if !scripts.contains(&info) {
                    scripts.push(info);
                }
            }
        }
        Cassette {
            header: Header {
                format: FORMAT.into(),
                version: VERSION,
                component: component_sha256(),
                marionette: env!("CARGO_PKG_VERSION").into(),
                policy: r.policy.clone().unwrap_or_default(),
                scripts,
                note: r.note.clone(),
            },
            entries: r.entries.clone(),
        }
    }
}

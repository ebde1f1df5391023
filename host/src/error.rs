//! The one error type of the public API.
//!
//! Every failure a caller of [`Runner`](crate::runner::Runner) or
//! [`Sandbox`](crate::Sandbox) can meet is a variant here, labelled with the
//! `op` that failed, so callers match on variants instead of strings.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// The label of an operation, carried by every [`Error`] so a log line or a
/// failed call says which job it was ("run_main", "load app.js", ...).
pub type Op = Cow<'static, str>;

/// `Result` with [`Error`] as its default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an operation did not produce its result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The owner no longer accepts work (it was shut down, or it stopped).
    #[error("{op}: closed: the owner no longer accepts work")]
    Closed {
        /// The operation that was refused.
        op: Op,
    },
    /// The job queue is full: backpressure instead of unbounded memory.
    #[error("{op}: rejected: the job queue is full ({capacity} jobs waiting)")]
    Rejected {
        /// The operation that was refused.
        op: Op,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The caller cancelled, or the work was cancelled on its behalf. A job
    /// that had not started when this happened never runs.
    #[error("{op}: canceled{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Canceled {
        /// The operation that was cancelled.
        op: Op,
        /// Why, when a reason was given.
        reason: Option<String>,
    },
    /// The caller's wait ran out (the per-call or the default timeout).
    #[error("{op}: timed out after {}ms", after.as_millis())]
    Timeout {
        /// The operation that timed out.
        op: Op,
        /// How long the caller waited.
        after: Duration,
    },
    /// The guest trapped (stack exhausted, out of memory, hard deadline, a
    /// guest panic). The instance was rebuilt; only work in flight failed.
    #[error("{op}: the guest trapped: {message}")]
    Trapped {
        /// The operation that was in flight.
        op: Op,
        /// What happened, in words (the limit, or what wasmtime reported).
        message: String,
        /// The limit that caused the trap, when one did.
        limit: Option<Limit>,
    },
    /// A host job panicked; the owner survived and keeps serving.
    #[error("{op}: the job panicked: {message}")]
    Panicked {
        /// The operation whose job panicked.
        op: Op,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// The script threw (or rejected) with a JavaScript error.
    #[error("{op}: {error}")]
    Script {
        /// The operation that ran the script.
        op: Op,
        /// The JavaScript error, with its location.
        error: Box<ScriptError>,
    },
    /// A budget of the [`Policy`](crate::Policy) was exhausted.
    #[error("{op}: limit exceeded: {limit}: {detail}")]
    Limit {
        /// The operation that hit the limit.
        op: Op,
        /// Which limit.
        limit: Limit,
        /// What happened, in words.
        detail: String,
    },
    /// A job running on the owner tried to wait for another job on the same
    /// owner, which could never run while it waits: refused at once.
    #[error("{op}: re-entrant call: a job on the owner cannot wait for the same owner")]
    Reentrant {
        /// The operation that was refused.
        op: Op,
    },
    /// An inference provider (an HTTP engine of `engines`)
    /// failed: a rejected key, a rate limit that outlasted the retries, a
    /// server error, a broken or malformed stream, a timeout. The message
    /// never contains the API key.
    #[error("{op}: {provider}: {kind}: {message}")]
    Provider {
        /// The operation that failed (`openai.infer`, `anthropic.infer`).
        op: Op,
        /// The provider's name (`openai`, `anthropic`).
        provider: String,
        /// What kind of failure, to match on.
        kind: ProviderErrorKind,
        /// What happened, in words, with the provider's own message.
        message: String,
    },
    /// The host failed for a reason of its own (bad input from the caller,
    /// an instantiation failure, a guest that broke the protocol).
    #[error("{op}: {source:#}")]
    Host {
        /// The operation that failed.
        op: Op,
        /// The cause, with its context chain.
        source: anyhow::Error,
    },
}

impl Error {
    /// The label of the operation that failed.
    pub fn op(&self) -> &str {
        match self {
            Error::Closed { op }
            | Error::Rejected { op, .. }
            | Error::Canceled { op, .. }
            | Error::Timeout { op, .. }
            | Error::Trapped { op, .. }
            | Error::Panicked { op, .. }
            | Error::Script { op, .. }
            | Error::Limit { op, .. }
            | Error::Reentrant { op }
            | Error::Provider { op, .. }
            | Error::Host { op, .. } => op,
        }
    }

    /// Builds an [`Error::Host`] from any cause.
    pub fn host(op: impl Into<Op>, source: impl Into<anyhow::Error>) -> Self {
        Error::Host {
            op: op.into(),
            source: source.into(),
        }
    }
}

/// Which budget an [`Error::Limit`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// The per-entry or per-run CPU deadline.
    Deadline,
    /// The guest's memory (linear memory or QuickJS's heap).
    Memory,
    /// The wasm stack (deep recursion).
    Stack,
    /// The fuel budget.
    Fuel,
    /// The volume or shape of what crosses between host and script: a
    /// result too large or nested too deeply, too much console output, an
    /// input nested too deeply to hand to a script.
    Output,
    /// Host operations (timers included) a task has pending at once.
    Operations,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Deadline => "cpu deadline",
            Limit::Memory => "memory",
            Limit::Stack => "stack",
            Limit::Fuel => "fuel",
            Limit::Output => "output",
            Limit::Operations => "pending operations",
        })
    }
}

/// What kind of failure an [`Error::Provider`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProviderErrorKind {
    /// The API key is missing or was rejected (HTTP 401/403).
    Unauthorized,
    /// HTTP 429 still, after the retries the engine's config allows.
    RateLimited,
    /// The provider failed (HTTP 5xx, 529 "Overloaded" among them, after
    /// the retries; or an error event in the stream).
    Server,
    /// The answer broke the protocol: malformed data, a stream that broke
    /// off before its end, or a body that is neither an event stream nor
    /// the provider's JSON completion (the message names its type).
    Protocol,
    /// No (complete) answer within the engine's request timeout, no event
    /// within its idle timeout (the message names which), or HTTP 408.
    Timeout,
    /// The request failed otherwise: unreachable host, a connection closed
    /// before the answer (after the retries), HTTP 4xx.
    Request,
}

impl fmt::Display for ProviderErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderErrorKind::Unauthorized => "unauthorized",
            ProviderErrorKind::RateLimited => "rate limited",
            ProviderErrorKind::Server => "server error",
            ProviderErrorKind::Protocol => "protocol error",
            ProviderErrorKind::Timeout => "timed out",
            ProviderErrorKind::Request => "request failed",
        })
    }
}

/// A JavaScript error as the script threw it, with where it was thrown.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScriptError {
    /// The error's `name` (`TypeError`, `SyntaxError`, ...).
    pub name: String,
    /// The error's `message`.
    pub message: String,
    /// The JavaScript stack, when there was one.
    pub stack: Option<String>,
    /// The script file the error points at.
    pub file: Option<String>,
    /// 1-based line in `file`.
    pub line: Option<u32>,
    /// 1-based column in `file`.
    pub column: Option<u32>,
}

impl fmt::Display for ScriptError {
    /// `FILE:LINE:COLUMN: Name: message`, or `Name: message` without a location.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}")?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(column) = self.column {
                    write!(f, ":{column}")?;
                }
            }
            f.write_str(": ")?;
        }
        write!(f, "{}: {}", self.name, self.message)
    }
}

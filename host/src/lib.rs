//! marionette: sandboxed JavaScript for LLM applications.
//!
//! A QuickJS VM compiled to WebAssembly (the guest component, embedded in
//! this crate) holds every piece of user script; this crate is the wasmtime
//! host that owns it. One owner thread per [`Sandbox`] serializes every entry
//! into the guest; the guest never blocks: what a script awaits from the
//! host comes back as a later entry (the effect protocol, see `wit/`).
//!
//! - [`runner`]: the generic owner thread (`call`, `post`, `shutdown`), knows
//!   nothing of JavaScript.
//! - [`Sandbox`]: one guest instance behind a runner; loads scripts, runs
//!   their `main`, engines, middleware and tools; contains traps.
//! - [`Modules`]: a script's modules by path, loaded together so that
//!   their relative imports resolve among them; TypeScript among them has
//!   its types erased (feature `typescript`, on by default).
//! - [`session`]: sessions built in Rust from Rust and JavaScript parts,
//!   run by the guest's session loop (the one loop, which scripts'
//!   `createSession` runs too); the traits those parts implement.
//! - `engines` (feature `providers`, on by default): inference providers
//!   (OpenAI-compatible, Anthropic) as session engines.
//!
//! The `marionette` command is the `marionette-cli` crate (`cli/`): an
//! embedder compiles neither its argument parser nor its config file, and
//! without default features no HTTP client either.
//! - [`Policy`]: limits, as plain data; its [`Determinism`] makes a run's
//!   time and randomness seeded.
//! - [`cassette`]: a run recorded at the guest's boundary, replayed offline
//!   (strict, or partial), with the first divergence as a diff.
//! - [`model`]: turns, blocks, tools, exports.
//! - [`Error`]: the one error type, labelled with the failed operation.
#![deny(missing_docs)]

mod bindings;
pub mod cassette;
#[cfg(feature = "providers")]
pub mod engines;
pub mod error;
pub mod model;
pub mod modules;
pub mod policy;
pub mod runner;
pub mod sandbox;
mod schema;
pub mod session;
#[cfg(feature = "typescript")]
mod typescript;

pub use error::{Error, Limit, Op, ProviderErrorKind, Result, ScriptError};
pub use modules::Modules;
pub use policy::{Determinism, Policy};
pub use runner::{OwnerPool, OwnerPoolOptions};
pub use sandbox::{
    BytecodeStats, DEFAULT_POOLED_INSTANCES, GuestOrigin, HeapUsage, HostServices, LockdownReport,
    PoolFull, Runtime, RuntimeOptions, Sandbox, SandboxOptions, SandboxStats, TaskOptions,
};
pub use session::{Session, SessionBuilder};

/// The guest component this crate embeds (`marionette:runtime/marionette`,
/// a wasm32-wasip2 component), for other hosts and tools.
pub fn guest_component() -> &'static [u8] {
    sandbox::GUEST_WASM
}

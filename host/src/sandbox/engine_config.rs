//! The wasmtime settings the guest's compiled code depends on, in one
//! place. The runtime's engine and the build script's (which precompiles
//! the guest, see `host/build.rs`) both take them from here, so that the
//! precompiled guest the binary embeds fits the engine that loads it.
//! Settings that change nothing in compiled code (the wasm stack, the
//! profiler, the compilation cache, how instances are allocated) are the
//! runtime's alone.

/// An engine configuration for the guest; `fuel` meters fuel.
///
/// wasmtime refuses code compiled under settings that differ in anything
/// that shapes it (fuel, epoch interruption, memory reservations, wasm
/// features, the CPU's features): the runtime then compiles the component
/// itself, and says why.
pub(crate) fn engine_config(fuel: bool) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    // The hard CPU stop of every entry (see `Runtime`).
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    config
}

//! Builds the guest component (`guest/`, wasm32-wasip2, release), boots it
//! once and snapshots it (Wizer, see `build/snapshot.rs`), compiles the
//! snapshot for this machine (wasmtime's precompiled form), and hands both
//! to the host crate, which embeds them: `target/release/marionette` is one
//! self-contained binary that neither boots QuickJS nor runs Cranelift when
//! it starts.
//!
//! Outputs, beside the guest as built in `target/guest/.../release/`:
//! `marionette_guest.snapshot.wasm`, the component every host loads
//! (Python's and Node's packages too), and in `OUT_DIR`
//! `marionette_guest.cwasm`, precompiled for the engine settings of
//! `src/sandbox/engine_config.rs` (empty when cross-compiling: the runtime
//! then compiles the snapshot itself). `MARIONETTE_NO_SNAPSHOT=1` embeds the
//! guest as built instead, with nothing precompiled (for comparing).
//!
//! The guest is built by a nested cargo with its own target directory, so
//! the outer build's lock and flags stay out of it. It always builds in
//! release: QuickJS's speed is the guest's speed, whatever the host profile.
//!
//! QuickJS's C code needs a WASI C toolchain: `$WASI_SDK`, or the layout
//! `scripts/bootstrap.sh` arranges from Debian's packages in
//! `target/wasi-sdk`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/sandbox/engine_config.rs"]
#[allow(dead_code)]
mod engine_config;
#[path = "build/snapshot.rs"]
mod snapshot;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("the host crate lives in the workspace")
        .to_path_buf();
    for path in [
        "guest/src",
        "guest/Cargo.toml",
        "wit",
        "Cargo.toml",
        "Cargo.lock",
        "host/build",
        "host/src/sandbox/engine_config.rs",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=WASI_SDK");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    println!("cargo:rerun-if-env-changed=MARIONETTE_NO_SNAPSHOT");

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"));
    let guest_target = target_dir.join("guest");
    let sdk = wasi_sdk(&target_dir);
    // The compiler wrapper scripts/bootstrap.sh writes decides how QuickJS
    // is built (and bootstrap drops the built QuickJS when it changes it).
    println!("cargo:rerun-if-changed={}", sdk.join("bin/clang").display());

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "marionette-guest",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&guest_target)
        // The outer build's flags are for the host, not for wasm.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        // Under `cargo clippy` the outer build compiles the workspace with
        // clippy-driver, which made a guest different from rustc's (another
        // snapshot, another hash in every cassette) and rebuilt the guest
        // each time a clippy run and a plain build took turns. The guest is
        // linted by its own clippy run (Makefile, `lint`).
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env("WASI_SDK", &sdk)
        // Shipped inside the host binary: no debug info, symbols stripped.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        // The guest's Rust (its natives, the call path, wit-bindgen's glue)
        // optimised as one unit: `add(1, 2)` straight into the guest does
        // 16% less work and takes 15% less time (docs/architecture.md §11,
        // "The guest's Rust as one unit"). Only the guest's build: the
        // host's wasmtime built so would take many minutes more.
        .env("CARGO_PROFILE_RELEASE_LTO", "fat")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .status()
        .expect("running cargo to build the guest");
    if !status.success() {
        panic!(
            "building the guest component failed (see above). Run `scripts/bootstrap.sh` to install the wasm32-wasip2 target and the WASI C toolchain"
        );
    }
    let wasm = guest_target.join("wasm32-wasip2/release/marionette_guest.wasm");
    assert!(
        wasm.exists(),
        "the guest build produced no {}",
        wasm.display()
    );
    // For the tests and the benchmarks, which compare a boot with a
    // snapshot's start.
    println!("cargo:as_built={}", wasm.display());
    println!(
        "cargo:rustc-env=MARIONETTE_GUEST_AS_BUILT={}",
        wasm.display()
    );
    prepare(&wasm);
}

/// Snapshots and precompiles the guest (see the file's docs) and tells the
/// host crate where both are.
fn prepare(wasm: &Path) {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let cwasm = out.join("marionette_guest.cwasm");
    if env::var_os("MARIONETTE_NO_SNAPSHOT").is_some_and(|v| v != "0") {
        fs::write(&cwasm, b"").expect("writing OUT_DIR");
        println!("cargo:rustc-env=MARIONETTE_GUEST_WASM={}", wasm.display());
        println!("cargo:rustc-env=MARIONETTE_GUEST_CWASM={}", cwasm.display());
        return;
    }
    let guest = fs::read(wasm).expect("reading the guest component");
    let engine = wasmtime::Engine::new(&engine_config::engine_config(false))
        .expect("configuring wasmtime for the build");
    let snapshot = snapshot::snapshot(&engine, &guest)
        .unwrap_or_else(|e| panic!("pre-initialising the guest failed: {e:?}"));
    let snapshot_path = wasm.with_file_name("marionette_guest.snapshot.wasm");
    fs::write(&snapshot_path, &snapshot).expect("writing the guest's snapshot");
    // Code for this machine only: a cross-compiled host compiles at start.
    let precompiled = if env::var("TARGET").ok() == env::var("HOST").ok() {
        engine
            .precompile_component(&snapshot)
            .unwrap_or_else(|e| panic!("precompiling the guest's snapshot failed: {e:?}"))
    } else {
        Vec::new()
    };
    fs::write(&cwasm, precompiled).expect("writing the precompiled guest");
    println!(
        "cargo:rustc-env=MARIONETTE_GUEST_WASM={}",
        snapshot_path.display()
    );
    println!("cargo:rustc-env=MARIONETTE_GUEST_CWASM={}", cwasm.display());
}

/// The WASI C toolchain for QuickJS: `$WASI_SDK`, else the bootstrap's layout.
fn wasi_sdk(target_dir: &Path) -> PathBuf {
    if let Some(sdk) = env::var_os("WASI_SDK") {
        return PathBuf::from(sdk);
    }
    let arranged = target_dir.join("wasi-sdk");
    if arranged.join("bin/clang").exists() {
        return arranged;
    }
    panic!(
        "no WASI C toolchain: run `scripts/bootstrap.sh` (it arranges Debian's clang-19 and wasi-libc in {}), or set WASI_SDK to a WASI SDK folder",
        arranged.display()
    );
}

//! Builds the guest component (`guest/`, wasm32-wasip2, release) and hands
//! its path to the host crate, which embeds it: `target/release/marionette`
//! is one self-contained binary.
//!
//! The guest is built by a nested cargo with its own target directory, so
//! the outer build's lock and flags stay out of it. It always builds in
//! release: QuickJS's speed is the guest's speed, whatever the host profile.
//!
//! QuickJS's C code needs a WASI C toolchain: `$WASI_SDK`, or the layout
//! `scripts/bootstrap.sh` arranges from Debian's packages in
//! `target/wasi-sdk`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=WASI_SDK");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"));
    let guest_target = target_dir.join("guest");
    let sdk = wasi_sdk(&target_dir);

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
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env("WASI_SDK", &sdk)
        // Shipped inside the host binary: no debug info, symbols stripped.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
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
    println!("cargo:rustc-env=MARIONETTE_GUEST_WASM={}", wasm.display());
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

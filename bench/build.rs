//! Records the compiler that builds the benchmarks, for the report, and
//! where the guest as built (before its snapshot) is.

use std::process::Command;

fn main() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MARIONETTE_BENCH_RUSTC={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
    // The guest as built, before its snapshot (from marionette's build
    // script): `cold/guest_direct_booting` boots it.
    let as_built = std::env::var("DEP_MARIONETTE_GUEST_AS_BUILT")
        .expect("marionette's build script names the guest as built");
    println!("cargo:rustc-env=MARIONETTE_GUEST_AS_BUILT={as_built}");
}

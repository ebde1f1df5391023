//! The peer, side by side in the same run: QuickJS compiled to Wasm by
//! Emscripten (npm `quickjs-emscripten`) under Node, when `node` and `npm`
//! are there. The package is installed into `target/bench-peer/` (never
//! committed) the first time; `peer/peer.mjs` says what it measures.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// The version measured: the one issue 11's first figures came from.
pub const VERSION: &str = "0.31.0";

/// The peer's script (written beside the installed package).
const SCRIPT: &str = include_str!("../peer/peer.mjs");

/// What the peer measured (see `peer/peer.mjs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerResult {
    /// The package version.
    pub version: String,
    /// Node's version.
    pub node: String,
    /// `add(1, 2)` called from the host, ns.
    pub add_ns: f64,
    /// `fib(25)`, ns.
    pub fib25_ns: f64,
    /// A new context to the first `add(1, 2)`, ns.
    pub cold_ns: f64,
}

/// Runs the peer: its figures, or why there are none.
pub fn run() -> Result<PeerResult, String> {
    run_in(&dir()).map_err(|e| format!("{e:#}"))
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-peer")
}

fn run_in(dir: &Path) -> anyhow::Result<PeerResult> {
    let has = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has("node") || !has("npm") {
        bail!("no node or npm on this machine");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let package = dir.join("package.json");
    if !package.exists() {
        std::fs::write(&package, "{\"private\": true, \"type\": \"module\"}\n")?;
    }
    let installed = dir.join("node_modules/quickjs-emscripten/package.json");
    let want = format!("\"version\": \"{VERSION}\"");
    if !std::fs::read_to_string(&installed).is_ok_and(|p| p.contains(&want)) {
        eprintln!(
            "installing quickjs-emscripten@{VERSION} into {}...",
            dir.display()
        );
        let status = Command::new("npm")
            .current_dir(dir)
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .arg(format!("quickjs-emscripten@{VERSION}"))
            .status()
            .context("running npm")?;
        if !status.success() {
            bail!("npm install quickjs-emscripten@{VERSION} failed");
        }
    }
    std::fs::write(dir.join("peer.mjs"), SCRIPT)?;
    let out = Command::new("node")
        .current_dir(dir)
        .arg("peer.mjs")
        .output()
        .context("running node")?;
    if !out.status.success() {
        bail!(
            "node peer.mjs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the peer's figures")
}

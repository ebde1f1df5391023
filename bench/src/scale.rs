//! Many sandboxes in one process: how fast they are made, and what an idle
//! one holds (resident memory and OS threads), read from `/proc/self`.
//!
//! Each sandbox gets a script and answers a call before it counts as idle,
//! and answers another after the figures are read: a sandbox that would
//! fail its next call does not count. The figures are differences over
//! the process, divided by the number of sandboxes: what the process holds
//! before (the runtime, tokio, the allocator's pools) is not counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use marionette::{Policy, Runtime, Sandbox, TaskOptions};
use serde::Serialize;

use crate::fixture;

/// What [`measure`] found for one number of sandboxes.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleResult {
    /// Sandboxes made.
    pub sandboxes: usize,
    /// Sandboxes made per second, counting `Sandbox::with_runtime` only.
    pub created_per_second: f64,
    /// Each sandbox's `load` and first call, per second.
    pub loaded_per_second: f64,
    /// Resident memory (`VmRSS`) per idle sandbox, bytes. It counts the
    /// pages of the snapshot's copy-on-write image once per instance that
    /// has read them (`RssShmem`), though they are one copy in RAM.
    pub rss_per_sandbox: f64,
    /// Private resident memory (`RssAnon`) per idle sandbox, bytes: what
    /// each sandbox holds that no other shares (its written pages, its
    /// store, its owner's state).
    pub private_per_sandbox: f64,
    /// OS threads per idle sandbox.
    pub threads_per_sandbox: f64,
    /// Resident memory of the process with every sandbox idle, bytes.
    pub rss_total: u64,
}

/// A count of sandboxes not made, and why.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleSkipped {
    /// Sandboxes that were not made.
    pub sandboxes: usize,
    /// Why.
    pub reason: String,
}

/// The script each sandbox holds.
const SCRIPT: &str = "idle.js";
const SOURCE: &str = "export function add(a, b) { return a + b; }";

/// Makes `count` sandboxes on `runtime`, each with a script loaded and
/// answering a call; reads the figures; checks each answers again; shuts
/// them down.
///
/// # Errors
/// When a sandbox cannot be made, or answers wrong.
pub async fn measure(runtime: &Arc<Runtime>, count: usize) -> anyhow::Result<ScaleResult> {
    let mut sandboxes = Vec::with_capacity(count);
    let result = fill(runtime, count, &mut sandboxes).await;
    // Whatever happened, every sandbox made is shut down.
    for sandbox in &sandboxes {
        sandbox.shutdown().await;
    }
    result.with_context(|| format!("after {} sandboxes", sandboxes.len()))
}

async fn fill(
    runtime: &Arc<Runtime>,
    count: usize,
    sandboxes: &mut Vec<Sandbox>,
) -> anyhow::Result<ScaleResult> {
    let (rss_before, anon_before, threads_before) = process()?;
    let args = fixture::add_args_json();
    let mut creating = Duration::ZERO;
    let mut loading = Duration::ZERO;
    for _ in 0..count {
        let start = Instant::now();
        let sandbox = Sandbox::with_runtime(runtime.clone(), Policy::default())
            .await
            .context("a new sandbox")?;
        let made = Instant::now();
        sandboxes.push(sandbox.clone());
        sandbox.load(SCRIPT, SOURCE).await?;
        let out = sandbox
            .call(SCRIPT, "add", &args, TaskOptions::default())
            .await?;
        loading += made.elapsed();
        creating += made - start;
        ensure!(out == fixture::ADD_RESULT, "add: {out}");
    }
    let (rss_after, anon_after, threads_after) = process()?;
    for sandbox in sandboxes.iter() {
        let out = sandbox
            .call(SCRIPT, "add", &args, TaskOptions::default())
            .await?;
        ensure!(out == fixture::ADD_RESULT, "add, once idle: {out}");
    }
    let n = count as f64;
    Ok(ScaleResult {
        sandboxes: count,
        created_per_second: n / creating.as_secs_f64(),
        loaded_per_second: n / loading.as_secs_f64(),
        rss_per_sandbox: rss_after.saturating_sub(rss_before) as f64 / n,
        private_per_sandbox: anon_after.saturating_sub(anon_before) as f64 / n,
        threads_per_sandbox: threads_after.saturating_sub(threads_before) as f64 / n,
        rss_total: rss_after,
    })
}

/// Whether `count` sandboxes of `per_sandbox` resident bytes fit in a third
/// of the memory the machine has available now; the reason when not.
pub fn fits(count: usize, per_sandbox: f64) -> Result<(), String> {
    let available = meminfo("MemAvailable:").unwrap_or(0);
    let needed = per_sandbox * count as f64;
    if needed < available as f64 / 3.0 {
        Ok(())
    } else {
        Err(format!(
            "would need about {:.1} GiB at {:.0} KiB each; {:.1} GiB available, and the run takes at most a third",
            needed / (1u64 << 30) as f64,
            per_sandbox / 1024.0,
            available as f64 / (1u64 << 30) as f64
        ))
    }
}

/// The process's resident bytes, its private (anonymous) resident bytes
/// and its threads (`/proc/self/status`).
fn process() -> anyhow::Result<(u64, u64, u64)> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .with_context(|| format!("{name} in /proc/self/status"))
    };
    Ok((
        field("VmRSS:")? * 1024,
        field("RssAnon:")? * 1024,
        field("Threads:")?,
    ))
}

/// A field of `/proc/meminfo`, bytes.
fn meminfo(name: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

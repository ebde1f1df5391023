//! A driver for profiling and comparing the `sessions/*` workload by hand:
//! rounds of one session and of many at once on one sandbox (or on K), each
//! timed.
//!
//! ```text
//! cargo build --release --locked -p marionette -p marionette-cli -p marionette-bench --examples
//! target/release/examples/sessions [--rounds R] [--count N] [--model-ms M] [--bare] [--sandboxes K] [GUEST.wasm ...]
//! ```
//!
//! With no component given it runs the embedded guest. With several, it
//! makes a runtime of each (compiled here, or read from wasmtime's disk
//! cache) and alternates between them round by round, so that old and new
//! guests meet the same machine: the way the changes of docs/architecture.md
//! §11 were compared. Under `perf`, run it with `MARIONETTE_PROFILE=perfmap`
//! (README, "Profiling the guest").
//!
//! It prints each round and then, per guest, the best and the median of
//! one session, of `N` at once, and their ratio, and the median of the
//! time the process's threads spent on a CPU while the `N` ran (read from
//! the kernel: on a shared machine, steadier than the wall time).
//!
//! `--bare` runs the fixture's `bareOfMany` instead of `oneOfMany`: the same
//! script parts (the registry of three tools, the model, the tool, the
//! turns, the timers) driven by a loop of a few lines in the script itself,
//! without the runtime's session loop (middleware chain, hooks, events,
//! copies, scopes, timeouts). It answers the same; what it costs is the
//! floor under any session loop, however cheap (docs/architecture.md §11,
//! "The floor under any loop, session 19").
//!
//! `--sandboxes K` spreads the `N` sessions over `K` sandboxes of the same
//! runtime (session `i` on sandbox `i % K`), which the shared pool of owner
//! threads serves on every CPU; the single session runs on the first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use marionette::{Policy, Runtime, RuntimeOptions, Sandbox, TaskOptions};
use marionette_bench::fixture;
use serde_json::Value as Json;

struct Args {
    rounds: usize,
    count: usize,
    model_ms: u64,
    function: &'static str,
    sandboxes: usize,
    guests: Vec<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args {
        rounds: 5,
        count: fixture::CONCURRENT_SESSIONS,
        model_ms: fixture::MODEL_MS[0],
        function: fixture::SESSION_FUNCTION,
        sandboxes: 1,
        guests: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |name: &str| -> anyhow::Result<u64> {
            let v = it
                .next()
                .with_context(|| format!("{name} needs a number"))?;
            v.parse()
                .with_context(|| format!("{name} {v}: not a number"))
        };
        match a.as_str() {
            "--rounds" => out.rounds = number("--rounds")? as usize,
            "--count" => out.count = number("--count")? as usize,
            "--model-ms" => out.model_ms = number("--model-ms")?,
            "--bare" => out.function = fixture::BARE_SESSION_FUNCTION,
            "--sandboxes" => out.sandboxes = (number("--sandboxes")? as usize).max(1),
            _ if a.starts_with("--") => anyhow::bail!("unknown option {a}"),
            _ => out.guests.push(a),
        }
    }
    Ok(out)
}

async fn one(sandbox: &Sandbox, function: &str, i: usize, model_ms: u64) -> anyhow::Result<Json> {
    Ok(sandbox
        .call(
            fixture::SESSIONS_SCRIPT,
            function,
            &fixture::session_args_json(i, model_ms),
            TaskOptions::default(),
        )
        .await?)
}

/// Sessions `0..count` at once, session `i` on `sandboxes[i % len]`;
/// checks every answer.
async fn many(
    sandboxes: &[Sandbox],
    function: &'static str,
    count: usize,
    model_ms: u64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let runs: Vec<_> = (0..count)
        .map(|i| {
            let sandbox = sandboxes[i % sandboxes.len()].clone();
            tokio::spawn(async move { one(&sandbox, function, i, model_ms).await })
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let answer = run.await??;
        ensure!(
            answer == fixture::session_result(i),
            "session {i}: {answer}"
        );
    }
    Ok(started.elapsed())
}

/// Nanoseconds the process's threads have spent on a CPU (the kernel's
/// accounting, `/proc/self/task/*/schedstat`): beside the wall time, what a
/// round cost whatever else the machine ran meanwhile.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut runtimes: Vec<(String, Arc<Runtime>)> = Vec::new();
    if args.guests.is_empty() {
        runtimes.push(("embedded".into(), Runtime::new(&RuntimeOptions::default())?));
    }
    for path in &args.guests {
        let wasm = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        runtimes.push((
            path.clone(),
            Runtime::from_component(&wasm, &RuntimeOptions::default())?,
        ));
    }
    tokio.block_on(async {
        let mut sandboxes = Vec::new();
        for (name, runtime) in &runtimes {
            // The guest's sandboxes: one, or `--sandboxes K`.
            let mut group = Vec::new();
            for _ in 0..args.sandboxes {
                let one = Sandbox::with_runtime(runtime.clone(), Policy::default()).await?;
                one.load(fixture::SESSIONS_SCRIPT, fixture::SESSIONS_JS)
                    .await?;
                group.push(one);
            }
            // A first pass, not timed: the VM's heap and the host's tables
            // grow to their working size.
            many(&group, args.function, args.count, args.model_ms).await?;
            sandboxes.push((name.clone(), group, Vec::new(), Vec::new(), Vec::new()));
        }
        for round in 0..args.rounds {
            for (name, group, ones, alls, cpus) in &mut sandboxes {
                let started = Instant::now();
                let answer = one(&group[0], args.function, 0, args.model_ms).await?;
                ensure!(answer == fixture::session_result(0), "one session: {answer}");
                let single = started.elapsed();
                let cpu = cpu_ns();
                let all = many(group, args.function, args.count, args.model_ms).await?;
                let cpu = Duration::from_nanos(cpu_ns().saturating_sub(cpu));
                println!(
                    "round {round} {name}: one {:.1} ms, {} at once {:.1} ms ({:.2}x), on a CPU {:.1} ms",
                    ms(single),
                    args.count,
                    ms(all),
                    ms(all) / ms(single),
                    ms(cpu)
                );
                ones.push(single);
                alls.push(all);
                cpus.push(cpu);
            }
        }
        for (name, group, mut ones, mut alls, mut cpus) in sandboxes {
            ones.sort();
            alls.sort();
            cpus.sort();
            let (one_med, all_med) = (ones[ones.len() / 2], alls[alls.len() / 2]);
            println!(
                "{name}: one best {:.1} median {:.1} ms; {} at once best {:.1} median {:.1} ms; median ratio {:.2}x; on a CPU {:.1} ms median",
                ms(ones[0]),
                ms(one_med),
                args.count,
                ms(alls[0]),
                ms(all_med),
                ms(all_med) / ms(one_med),
                ms(cpus[cpus.len() / 2])
            );
            for one in group {
                one.shutdown().await;
            }
        }
        anyhow::Ok(())
    })
}

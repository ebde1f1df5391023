//! A probe for new instances, for profiling and comparing allocators by
//! hand (the numbers `make bench` reports come from its own rows).
//!
//! ```text
//! instance time N    # rounds of N new instances on each allocator, by turns
//! instance cold N    # the same, each instance to its first result
//! instance sandboxes N  # the same, each a sandbox to its first result
//!                    # through the API (its shutdown as the drop)
//! instance memory N # N instances held at once, to their first result, on
//!                    # each allocator: private memory each, twice (the
//!                    # second time on the slots the first left)
//! instance stages N [SPIN_US] # the default runtime: median of each stage
//!                    # of N sandboxes to their first result (new, load,
//!                    # call, shutdown), one at a time; on a pool of two
//!                    # threads spinning SPIN_US µs when given
//! instance loop N [on-demand]  # N new instances, dropped, nothing printed:
//!                    # for `perf record -e cpu-clock -g`
//! ```
//!
//! `time` and `cold` print, for each allocator, the time per instance of
//! the best and the median of five rounds: made (what `instantiate/*`
//! times) and made and dropped (a pooled memory is reset when it is
//! dropped, so what pooling saves in the one may cost in the other).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use marionette::{Runtime, RuntimeOptions};
use marionette_bench::direct::DirectRuntime;
use marionette_bench::fixture;

/// Rounds of each allocator, taken by turns.
const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("");
    let n: usize = match args.get(1) {
        Some(n) => n.parse().context("N must be a number")?,
        None => 2_000,
    };
    match mode {
        "time" => compare(n, false),
        "cold" => compare(n, true),
        "sandboxes" => sandboxes(n),
        "stages" => {
            let spin = match args.get(2) {
                Some(us) => Some(Duration::from_micros(
                    us.parse().context("SPIN_US must be a number")?,
                )),
                None => None,
            };
            stages(n, spin)
        }
        "memory" => memory(n),
        "loop" => {
            let on_demand = args.get(2).is_some_and(|a| a == "on-demand");
            let runtime = if on_demand {
                DirectRuntime::on_demand()?
            } else {
                DirectRuntime::new()?
            };
            for _ in 0..n {
                drop(std::hint::black_box(runtime.instantiate()?));
            }
            Ok(())
        }
        _ => bail!(
            "usage: instance time|cold|sandboxes|memory N, instance stages N [SPIN_US], or instance loop N [on-demand]"
        ),
    }
}

/// The allocators compared: a name and the runtime's options.
fn allocators() -> Vec<(&'static str, RuntimeOptions)> {
    vec![
        (
            "on demand",
            RuntimeOptions {
                pooled_instances: None,
                ..RuntimeOptions::default()
            },
        ),
        ("pooled", RuntimeOptions::default()),
    ]
}

fn compare(n: usize, cold: bool) -> anyhow::Result<()> {
    let runtimes = allocators()
        .into_iter()
        .map(|(name, options)| Ok((name, DirectRuntime::on(Runtime::new(&options)?)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let args = fixture::add_args_json();
    // Per allocator: (made, made and dropped) per round.
    let mut times = vec![Vec::new(); runtimes.len()];
    for _ in 0..ROUNDS {
        for ((_, runtime), times) in runtimes.iter().zip(&mut times) {
            let mut made = Duration::ZERO;
            let start = Instant::now();
            for _ in 0..n {
                let one = Instant::now();
                let mut guest = runtime.instantiate()?;
                if cold {
                    guest.load(fixture::SCRIPT, fixture::BENCH_JS)?;
                    let out = guest.call(fixture::SCRIPT, "add", &args)?;
                    ensure!(out == fixture::ADD_RESULT, "add: {out}");
                }
                made += one.elapsed();
                drop(guest);
            }
            times.push((made, start.elapsed()));
        }
    }
    let names: Vec<&str> = runtimes.iter().map(|(name, _)| *name).collect();
    let what = if cold { "to the first result" } else { "new" };
    print(what, n, &names, &times);
    Ok(())
}

/// A sandbox to its first result (`load`, `add(1, 2)`) through the API,
/// on each allocator by turns; its shutdown counts as the drop.
fn sandboxes(n: usize) -> anyhow::Result<()> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let runtimes = allocators()
        .into_iter()
        .map(|(name, options)| Ok((name, Runtime::new(&options)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let args = fixture::add_args_json();
    let mut times = vec![Vec::new(); runtimes.len()];
    tokio.block_on(async {
        for _ in 0..ROUNDS {
            for ((_, runtime), times) in runtimes.iter().zip(&mut times) {
                let mut made = Duration::ZERO;
                let start = Instant::now();
                for _ in 0..n {
                    let one = Instant::now();
                    let sandbox = marionette::Sandbox::with_runtime(
                        runtime.clone(),
                        marionette::Policy::default(),
                    )
                    .await?;
                    sandbox.load(fixture::SCRIPT, fixture::BENCH_JS).await?;
                    let out = sandbox
                        .call(
                            fixture::SCRIPT,
                            "add",
                            &args,
                            marionette::TaskOptions::default(),
                        )
                        .await?;
                    ensure!(out == fixture::ADD_RESULT, "add: {out}");
                    made += one.elapsed();
                    sandbox.shutdown().await;
                }
                times.push((made, start.elapsed()));
            }
        }
        anyhow::Ok(())
    })?;
    let names: Vec<&str> = runtimes.iter().map(|(name, _)| *name).collect();
    print("a sandbox to its first result", n, &names, &times);
    Ok(())
}

/// Each stage of a sandbox's way to its first result on the default
/// runtime, timed apart: where the cold start's time goes.
fn stages(n: usize, spin: Option<Duration>) -> anyhow::Result<()> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let runtime = Runtime::new(&RuntimeOptions::default())?;
    let pool = spin
        .map(|spin| {
            marionette::OwnerPool::new(marionette::OwnerPoolOptions {
                threads: 2,
                name: "stages".into(),
                spin,
            })
        })
        .transpose()?;
    let args = fixture::add_args_json();
    const STAGES: [&str; 4] = ["new sandbox", "load", "first call", "shutdown"];
    let mut times: [Vec<f64>; 4] = Default::default();
    tokio.block_on(async {
        for _ in 0..n {
            let mut lap = Instant::now();
            let mut stage = |i: usize| {
                times[i].push(lap.elapsed().as_secs_f64() * 1e6);
                lap = Instant::now();
            };
            let sandbox = match &pool {
                None => {
                    marionette::Sandbox::with_runtime(
                        runtime.clone(),
                        marionette::Policy::default(),
                    )
                    .await?
                }
                Some(pool) => {
                    marionette::Sandbox::with_options(
                        runtime.clone(),
                        marionette::Policy::default(),
                        marionette::HostServices::default(),
                        marionette::SandboxOptions::default().on_pool(pool.clone()),
                    )
                    .await?
                }
            };
            stage(0);
            sandbox.load(fixture::SCRIPT, fixture::BENCH_JS).await?;
            stage(1);
            let out = sandbox
                .call(
                    fixture::SCRIPT,
                    "add",
                    &args,
                    marionette::TaskOptions::default(),
                )
                .await?;
            stage(2);
            ensure!(out == fixture::ADD_RESULT, "add: {out}");
            sandbox.shutdown().await;
            stage(3);
        }
        anyhow::Ok(())
    })?;
    println!(
        "median us per stage ({n} sandboxes, pooled: {}, spin: {})",
        runtime.pooled(),
        spin.map_or_else(
            || "the shared pool's".into(),
            |s| format!("{} us", s.as_micros())
        )
    );
    for (name, mut t) in STAGES.into_iter().zip(times) {
        t.sort_by(f64::total_cmp);
        println!("{name:12} {:8.1}", t[t.len() / 2]);
    }
    Ok(())
}

/// Prints the best and median of each allocator's rounds, per instance.
fn print(what: &str, n: usize, names: &[&str], times: &[Vec<(Duration, Duration)>]) {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "{} per instance, us: made best/median, made and dropped best/median ({ROUNDS} rounds of {n})",
        what
    );
    for (name, times) in names.iter().zip(times) {
        let mut made: Vec<f64> = times.iter().map(|t| per(t.0)).collect();
        let mut whole: Vec<f64> = times.iter().map(|t| per(t.1)).collect();
        made.sort_by(f64::total_cmp);
        whole.sort_by(f64::total_cmp);
        println!(
            "{name:12} {:8.1} {:8.1}   {:8.1} {:8.1}",
            made[0],
            made[ROUNDS / 2],
            whole[0],
            whole[ROUNDS / 2]
        );
    }
}

/// Private resident memory (`RssAnon`: the pages an instance wrote, copied
/// from the image, count there) added per instance while `n` instances are held, for each
/// allocator, twice: the pooled ones the second time on slots already used.
fn memory(n: usize) -> anyhow::Result<()> {
    let args = fixture::add_args_json();
    for (name, mut options) in allocators() {
        if options.pooled_instances.is_some() {
            options.pooled_instances = Some(n as u32);
        }
        let runtime = DirectRuntime::on(Runtime::new(&options)?)?;
        for pass in 1..=2 {
            let before = rss_anon_kib()?;
            let mut held = Vec::new();
            for _ in 0..n {
                let mut guest = runtime.instantiate()?;
                guest.load(fixture::SCRIPT, fixture::BENCH_JS)?;
                guest.call(fixture::SCRIPT, "add", &args)?;
                held.push(guest);
            }
            let during = rss_anon_kib()?;
            drop(held);
            let after = rss_anon_kib()?;
            println!(
                "{name:12} pass {pass}: {:7.1} KiB private per instance held, {:7.1} KiB each left after the drop",
                (during - before) as f64 / n as f64,
                (after - before) as f64 / n as f64,
            );
        }
    }
    Ok(())
}

/// This process's `RssAnon`, in KiB.
fn rss_anon_kib() -> anyhow::Result<i64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no RssAnon in /proc/self/status")
}

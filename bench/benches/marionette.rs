//! marionette's benchmarks: `cargo bench -p marionette-bench --bench marionette`.
//!
//! Each workload runs on three paths, side by side: the public sandbox API, the guest component
//! driven directly, and native QuickJS, after the `wake/*` calibration of
//! what crossing threads costs right now (the crate docs of
//! `marionette_bench` and its `measures` module say what each measure
//! means). Then `sessions/*`: one session with a tool call and a slow
//! model, against two hundred at once in the same sandbox; `cost/*`: the
//! two hundred again, plain, deterministic and recording, and a replay of
//! a cassette of two hundred inferences. Then `load/*`:
//! rounds of a mixed, partly hostile load from many callers against one
//! sandbox and against three (every answer checked and counted), and
//! `recovery/*`: from a trap to the next success on the rebuilt instance.
//! Then `scale` and, outside criterion, the component's compile time,
//! taken a few times (each about a second, on every CPU: last, so that no
//! row is measured in the slower minutes such a burst leaves behind on
//! this machine). Last, the report is written to `bench/report/` and printed; a load
//! call that got no answer, or a wrong one, fails the run after that.
//!
//! Arguments after `--` go to criterion (`-- call` runs only the `call`
//! group; the report then marks the others as from an earlier run, and
//! leaves out the one-off timings, the peer and `scale`). Under
//! `cargo test --benches` criterion runs each benchmark once as a test, and
//! no report is written.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, ensure};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use marionette::cassette::{self, Cassette, Mode, Recorder, ReplayOptions};
use marionette::runner::{Runner, RunnerOptions};
use marionette::{
    Determinism, Error, HostServices, Limit, Policy, Runtime, RuntimeOptions, Sandbox,
    SandboxOptions, TaskOptions,
};
use marionette_bench::cost;
use marionette_bench::direct::{DirectGuest, DirectRuntime};
use marionette_bench::fixture::{self, CONCURRENT_SESSIONS, SCRIPT};
use marionette_bench::load::{self, Tally};
use marionette_bench::machine::Machine;
use marionette_bench::measures::{self as m, Measure};
use marionette_bench::native::NativeQuickJs;
use marionette_bench::report::{self, GroupSettings, OneOffResult};
use marionette_bench::scale;
use marionette_bench::wake::PingPong;
use serde_json::Value as Json;

/// How a group is sampled. Short, so that the whole run takes a couple of
/// minutes on two cores.
#[derive(Clone, Copy)]
struct Timing {
    warm_up: Duration,
    measurement: Duration,
    sample_size: usize,
    /// For iterations of milliseconds: criterion's linear sampling would
    /// need far more time than `measurement` for its sample size.
    flat: bool,
}

/// Micro- and sub-millisecond iterations.
const FAST: Timing = Timing {
    warm_up: Duration::from_secs(1),
    measurement: Duration::from_secs(3),
    sample_size: 50,
    flat: false,
};

/// Iterations of about a millisecond and more.
const SLOW: Timing = Timing {
    warm_up: Duration::from_secs(1),
    measurement: Duration::from_secs(4),
    sample_size: 20,
    flat: true,
};

/// Iterations of tens to hundreds of milliseconds (a session waits 41 ms
/// at least): criterion's minimum of ten samples, flat.
const SESSIONS: Timing = Timing {
    warm_up: Duration::from_secs(1),
    measurement: Duration::from_secs(4),
    sample_size: 10,
    flat: true,
};

/// Sessions whose model answers in 500 ms: an iteration takes a second
/// or more, so ten samples need a longer window.
const SESSIONS_LLM: Timing = Timing {
    warm_up: Duration::from_secs(1),
    measurement: Duration::from_secs(13),
    sample_size: 10,
    flat: true,
};

/// Rounds of the mixed load take a few hundred milliseconds (one call in
/// each spins for 100 ms): criterion's minimum of ten samples, flat, a few
/// rounds each.
const LOAD: Timing = Timing {
    warm_up: Duration::from_secs(2),
    measurement: Duration::from_secs(8),
    sample_size: 10,
    flat: true,
};

/// Runs of each one-off timing: a cold compile takes seconds.
const COMPILE_RUNS: usize = 3;
const CACHED_COMPILE_RUNS: usize = 5;

fn main() -> anyhow::Result<()> {
    let started = SystemTime::now();
    let machine = Machine::now();
    let measuring = benchmarking(std::env::args().skip(1));
    // A filter runs some criterion rows only: the one-off timings, the
    // peer and `scale` (minutes on a busy machine) are left out too.
    let whole = measuring && !filtered(std::env::args().skip(1));
    let mut criterion = Criterion::default().configure_from_args();

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;

    // Made once, outside every measurement.
    let runtime = Runtime::new(&RuntimeOptions::default())?;
    let direct = DirectRuntime::new()?;
    let on_demand = DirectRuntime::on_demand()?;
    let booting = DirectRuntime::as_built()?;
    let sandbox = tokio.block_on(async {
        let sandbox = Sandbox::with_runtime(runtime.clone(), Policy::default()).await?;
        sandbox.load(SCRIPT, fixture::BENCH_JS).await?;
        anyhow::Ok(sandbox)
    })?;
    let mut guest = direct.instantiate()?;
    guest.load(SCRIPT, fixture::BENCH_JS)?;
    let native = NativeQuickJs::new(SCRIPT, fixture::BENCH_JS)?;
    same_answers(&tokio, &sandbox, &mut guest, &native)?;
    // A sandbox of its own: the sessions' garbage stays out of `bench.js`'s VM.
    let sessions = tokio.block_on(async {
        let sandbox = Sandbox::with_runtime(runtime.clone(), Policy::default()).await?;
        sandbox
            .load(fixture::SESSIONS_SCRIPT, fixture::SESSIONS_JS)
            .await?;
        anyhow::Ok(sandbox)
    })?;
    sessions_answer(&tokio, &sessions)?;
    // Fuel metering is a property of the compiled code: its own runtime.
    let fueled = tokio.block_on(async {
        let runtime = Runtime::new(&RuntimeOptions {
            fuel: true,
            ..RuntimeOptions::default()
        })?;
        let policy = Policy {
            entry_fuel: Some(u64::MAX / 4),
            ..Policy::default()
        };
        let sandbox = Sandbox::with_runtime(runtime, policy).await?;
        sandbox.load(SCRIPT, fixture::BENCH_JS).await?;
        anyhow::Ok(sandbox)
    })?;

    let mut settings = Vec::new();
    bench_wake(&mut criterion, &mut settings, &tokio)?;
    bench_call(
        &mut criterion,
        &mut settings,
        &tokio,
        &sandbox,
        &mut guest,
        &native,
    )?;
    bench_fib(
        &mut criterion,
        &mut settings,
        &tokio,
        [&sandbox, &fueled],
        &mut guest,
        &native,
    )?;
    tokio.block_on(fueled.shutdown());
    // Right after `call/*` and `fib25/*`, so that the machine is in the
    // same state for both.
    let peer = whole.then(|| {
        eprintln!("running the peer (quickjs-emscripten under Node)...");
        marionette_bench::peer::run()
    });
    bench_instantiate(
        &mut criterion,
        &mut settings,
        &tokio,
        &runtime,
        [&direct, &on_demand],
    );
    bench_cold(
        &mut criterion,
        &mut settings,
        &tokio,
        &runtime,
        [&direct, &on_demand, &booting],
    );
    bench_sessions(&mut criterion, &mut settings, &tokio, &sessions);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let paired = measuring
        && (!filtered(args.iter().cloned()) || args.iter().any(|a| a.starts_with("cost")));
    let cost_paired = bench_cost(&mut criterion, &mut settings, &tokio, &runtime, paired)?;
    tokio.block_on(sandbox.shutdown());
    tokio.block_on(sessions.shutdown());
    let tallies = bench_load(&mut criterion, &mut settings, &tokio, &runtime)?;
    bench_recovery(&mut criterion, &mut settings, &tokio, &runtime)?;
    criterion.final_summary();
    let (scale, scale_skipped) = if whole {
        scale_rows(&tokio, &runtime)?
    } else {
        (Vec::new(), Vec::new())
    };
    // Last, outside criterion: the component's compile time, taken a few
    // times (each about a second, on every CPU). Taken first, as it was
    // until session 17, it put `call/*` and `fib25/*` right after seconds
    // of both CPUs busy, which leave this virtual machine slower for a
    // while (`call/guest_direct` 1.49 µs idle, 1.64 µs after a minute of
    // both CPUs busy, 1.67 and 2.07 µs in two whole runs).
    let one_off = if whole {
        compile_timings()?
    } else {
        Vec::new()
    };

    if measuring {
        let mut report = report::build(
            &report::criterion_dir(),
            started,
            machine,
            settings,
            one_off,
            tallies.clone(),
        );
        report.scale = scale;
        report.scale_skipped = scale_skipped;
        report.peer = peer;
        if let Some(cost) = &mut report.cost {
            cost.paired = cost_paired;
        }
        let dir = report::report_dir();
        let md = report::write(&report, &dir)?;
        println!("\n{md}");
        println!(
            "written: {} and report.md",
            dir.join("report.json").display()
        );
    }
    for t in &tallies {
        ensure!(
            t.lost == 0 && t.unexpected == 0,
            "{}: {} of {} calls lost, {} answered wrong; first cases: {}",
            t.measure,
            t.lost,
            t.calls,
            t.unexpected,
            t.examples.join("; ")
        );
    }
    Ok(())
}

/// Whether criterion will measure (`cargo bench`), as opposed to running
/// each benchmark once (`cargo test --benches`, `-- --test`) or listing
/// them: the same rule as criterion's `configure_from_args`.
fn benchmarking(args: impl Iterator<Item = String>) -> bool {
    let args: Vec<String> = args.collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list") && !has("--profile-time")
}

/// Whether criterion was given a filter: an argument that is no flag and
/// follows no flag but those that take no value.
fn filtered(args: impl Iterator<Item = String>) -> bool {
    let mut previous: Option<String> = None;
    for arg in args {
        let after_value_flag = previous.as_deref().is_some_and(|p| {
            p.starts_with('-') && !matches!(p, "--bench" | "--exact" | "--quiet" | "--verbose")
        });
        if !arg.starts_with('-') && !after_value_flag {
            return true;
        }
        previous = Some(arg);
    }
    false
}

/// A benchmark group named after `group`, sampled as `timing` says; the
/// settings are recorded for the report.
fn group<'a>(
    c: &'a mut Criterion,
    settings: &mut Vec<GroupSettings>,
    group: &'static str,
    timing: Timing,
) -> BenchmarkGroup<'a, WallTime> {
    settings.push(GroupSettings {
        group,
        warm_up_ms: timing.warm_up.as_millis(),
        measurement_ms: timing.measurement.as_millis(),
        sample_size: timing.sample_size,
        flat_sampling: timing.flat,
    });
    let mut g = c.benchmark_group(group);
    g.warm_up_time(timing.warm_up)
        .measurement_time(timing.measurement)
        .sample_size(timing.sample_size)
        .sampling_mode(if timing.flat {
            SamplingMode::Flat
        } else {
            SamplingMode::Auto
        });
    g
}

/// Every path answers the same before anything is timed: a path that
/// measures an error would be a fast lie.
fn same_answers(
    tokio: &tokio::runtime::Runtime,
    sandbox: &Sandbox,
    guest: &mut DirectGuest,
    native: &NativeQuickJs,
) -> anyhow::Result<()> {
    let add_args = fixture::add_args_json();
    let fib_args = fixture::fib_args_json();
    let (add, fib) = tokio.block_on(async {
        let add = sandbox
            .call(SCRIPT, "add", &add_args, TaskOptions::default())
            .await?;
        let fib = sandbox
            .call(SCRIPT, "fib", &fib_args, TaskOptions::default())
            .await?;
        anyhow::Ok((add, fib))
    })?;
    ensure!(add == fixture::ADD_RESULT, "sandbox add: {add}");
    ensure!(fib == fixture::FIB_RESULT, "sandbox fib: {fib}");
    let add = guest.call(SCRIPT, "add", &add_args)?;
    let fib = guest.call(SCRIPT, "fib", &fib_args)?;
    ensure!(add == fixture::ADD_RESULT, "direct add: {add}");
    ensure!(fib == fixture::FIB_RESULT, "direct fib: {fib}");
    let add = native.with_function("add", |_, f| f.call::<_, i32>(fixture::ADD_ARGS))??;
    let fib = native.with_function("fib", |_, f| f.call::<_, i32>((fixture::FIB_N,)))??;
    ensure!(add == fixture::ADD_RESULT, "native add: {add}");
    ensure!(fib == fixture::FIB_RESULT, "native fib: {fib}");
    Ok(())
}

/// One session, `oneOfMany(i, modelMs)`, through the sandbox: its answer.
async fn one_session(sandbox: &Sandbox, i: usize, model_ms: u64) -> marionette::Result<Json> {
    sandbox
        .call(
            fixture::SESSIONS_SCRIPT,
            fixture::SESSION_FUNCTION,
            &fixture::session_args_json(i, model_ms),
            TaskOptions::default(),
        )
        .await
}

/// Sessions `0..count` spawned at once as tokio tasks on one sandbox, all
/// awaited: their answers, in order.
async fn sessions_at_once(
    sandbox: &Sandbox,
    count: usize,
    model_ms: u64,
) -> anyhow::Result<Vec<Json>> {
    let runs: Vec<_> = (0..count)
        .map(|i| {
            let sandbox = sandbox.clone();
            tokio::spawn(async move { one_session(&sandbox, i, model_ms).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(count);
    for run in runs {
        answers.push(run.await.context("a session's task")??);
    }
    Ok(answers)
}

/// One session and two hundred at once answer right before they are timed.
fn sessions_answer(tokio: &tokio::runtime::Runtime, sessions: &Sandbox) -> anyhow::Result<()> {
    tokio.block_on(async {
        let one = one_session(sessions, 0, fixture::MODEL_MS[0]).await?;
        ensure!(one == fixture::session_result(0), "one session: {one}");
        let all = sessions_at_once(sessions, CONCURRENT_SESSIONS, fixture::MODEL_MS[0]).await?;
        ensure!(all.len() == CONCURRENT_SESSIONS, "{} answers", all.len());
        for (i, answer) in all.iter().enumerate() {
            ensure!(
                *answer == fixture::session_result(i),
                "session {i} of {CONCURRENT_SESSIONS}: {answer}"
            );
        }
        Ok(())
    })
}

/// `wake/*`: crossing threads without JavaScript, right before `call/*`
/// so both see the machine in the same state.
fn bench_wake(
    c: &mut Criterion,
    settings: &mut Vec<GroupSettings>,
    tokio: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let pingpong = PingPong::new();
    // On the pool sandboxes use, so that it is the floor under their calls
    // (its threads and the callers spin for a short job's hand-off).
    let pool = marionette::OwnerPool::shared()?;
    let runner = Runner::spawn_on(&pool, RunnerOptions::default(), || ());
    let mut g = group(c, settings, m::WAKE_PINGPONG.group, FAST);
    g.bench_function(m::WAKE_PINGPONG.function, |b| {
        b.iter(|| pingpong.round_trip(black_box(1)))
    });
    let r = &runner;
    g.bench_function(m::WAKE_RUNNER.function, |b| {
        b.to_async(tokio).iter(move || async move {
            r.call("noop", |_: &mut ()| ()).await.expect("runner call")
        })
    });
    g.finish();
    tokio.block_on(runner.shutdown());
    Ok(())
}

/// `call/*`: the `add(1, 2)` round trip on each path.
fn bench_call(
    c: &mut Criterion,
    settings: &mut Vec<GroupSettings>,
    tokio: &tokio::runtime::Runtime,
    sandbox: &Sandbox,
    guest: &mut DirectGuest,
    native: &NativeQuickJs,
) -> anyhow::Result<()> {
    let args = &fixture::add_args_json();
    let mut g = group(c, settings, m::CALL_API.group, FAST);
    bench_three(
        &mut g,
        tokio,
        sandbox,
        guest,
        native,
        "add",
        args,
        [m::CALL_API, m::CALL_DIRECT, m::CALL_NATIVE],
    )?;
    g.finish();
    Ok(())
}

/// `fib25/*`: `fib(25)` on each path.
fn bench_fib(
    c: &mut Criterion,
    settings: &mut Vec<GroupSettings>,
    tokio: &tokio::runtime::Runtime,
    [sandbox, fueled]: [&Sandbox; 2],
    guest: &mut DirectGuest,
    native: &NativeQuickJs,
) -> anyhow::Result<()> {
    let args = &fixture::fib_args_json();
    let mut g = group(c, settings, m::FIB_API.group, SLOW);
    bench_three(
        &mut g,
        tokio,
        sandbox,
        guest,
        native,
        "fib",
        args,
        [m::FIB_API, m::FIB_DIRECT, m::FIB_NATIVE],
    )?;
    g.bench_function(m::FIB_FUEL.function, |b| {
        b.to_async(tokio).iter(move || async move {
            fueled
                .call(SCRIPT, "fib", black_box(args), TaskOptions::default())
                .await
                .expect("fueled call")
        })
    });
    g.finish();
    Ok(())
}

/// One exported function called on the three paths with the same
/// arguments: JSON for the guest, the same numbers as `i32`s natively.
#[allow(clippy::too_many_arguments)]
fn bench_three(
    g: &mut BenchmarkGroup<'_, WallTime>,
    tokio: &tokio::runtime::Runtime,
    sandbox: &Sandbox,
    guest: &mut DirectGuest,
    native: &NativeQuickJs,
    function: &'static str,
    args: &[Json],
    [api, direct, on_native]: [Measure; 3],
) -> anyhow::Result<()> {
    g.bench_function(api.function, |b| {
        b.to_async(tokio).iter(move || async move {
            sandbox
                .call(SCRIPT, function, black_box(args), TaskOptions::default())
                .await
                .expect("sandbox call")
        })
    });
    g.bench_function(direct.function, |b| {
        b.iter(|| {
            guest
                .call(SCRIPT, function, black_box(args))
                .expect("direct call")
        })
    });
    let numbers: Vec<i32> = args
        .iter()
        .map(|a| a.as_i64().and_then(|n| i32::try_from(n).ok()))
        .collect::<Option<_>>()
        .context("native calls take i32 arguments")?;
    native.with_function(function, |_, f| {
        g.bench_function(on_native.function, |b| {
            b.iter(|| {
                let result = match numbers.as_slice() {
                    [a] => f.call::<_, i32>((black_box(*a),)),
                    [a, b] => f.call::<_, i32>((black_box(*a), black_box(*b))),
                    _ => unreachable!("the fixture's functions take one or two numbers"),
                };
                result.expect("native call")
            })
        });
    })?;
    Ok(())
}

/// `instantiate/*`: a fresh sandbox, and a fresh instance (allocated on
/// demand, and from a pool), each on a compiled component; teardown not
/// timed.
fn bench_instantiate(
    c: &mut Criterion,
    settings: &mut Vec<GroupSettings>,
    tokio: &tokio::runtime::Runtime,
    runtime: &Arc<Runtime>,
    [direct, on_demand]: [&DirectRuntime; 2],
) {
    let mut g = group(c, settings, m::INSTANTIATE_API.group, FAST);
    g.bench_function(m::INSTANTIATE_API.function, |b| {
        b.to_async(tokio).iter_custom(move |iters| async move {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let sandbox = Sandbox::with_runtime(runtime.clone(), Policy::default())
                    .await
                    .expect("new sandbox");
                timed += start.elapsed();
                sandbox.shutdown().await;
            }
            timed
        })
    });
    for (measure, direct) in [
        (m::INSTANTIATE_DIRECT, direct),
        (m::INSTANTIATE_DIRECT_ON_DEMAND, on_demand),
    ] {
        g.bench_function(measure.function, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let guest = direct.instantiate().expect("instantiate");
                    timed += start.elapsed();
                    drop(black_box(guest));
                }
                timed
            })
        });
    }
    g.finish();
}

/// `cold/*`: from nothing (but a compiled component) to the first result.
fn bench_cold(
    c: &mut Criterion,
    settings: &mut Vec<GroupSettings>,
    tokio: &tokio::runtime::Runtime,
    runtime: &Arc<Runtime>,
    [direct, on_demand, booting]: [&DirectRuntime; 3],
) {
    let args = &fixture::add_args_json();
    let mut g = group(c, settings, m::COLD_API.group, SLOW);
    g.bench_function(m::COLD_API.function, |b| {
        b.to_async(tokio).iter_custom(move |iters| async move {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let sandbox = Sandbox::with_runtime(runtime.clone(), Policy::default())
                    .await
                    .expect("new sandbox");
                sandbox.load(SCRIPT, fixture::BENCH_JS).await.expect("load");
                let out = sandbox
                    .call(SCRIPT, "add", args, TaskOptions::default())
                    .await
                    .expect("add");
                timed += start.elapsed();
                black_box(out);
                sandbox.shutdown().await;
            }
            timed
        })
    });
    for (measure, direct) in [
        (m::COLD_DIRECT, direct),
        (m::COLD_DIRECT_ON_DEMAND, on_demand),
        (m::COLD_DIRECT_BOOTING, booting),
    ] {
        g.bench_function(measure.function, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut guest = direct.instantiate().expect("instantiate");
                    guest.load(SCRIPT, fixture::BENCH_JS).expect("load");
                    let out = guest.call(SCRIPT, "add", args).expect("add");
                    timed += start.elapsed();
                    black_box(out);
                    drop(guest);
                }
                timed
            })
        });
    }
    g.bench_function(m::COLD_NATIVE.function, |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let native = NativeQuickJs::new(SCRIPT, fixture::BENCH_JS).expect("quickjs");
                let out = native
                    .with_function("add", |_, f| f.call::<_, i32>(fixture::ADD_ARGS))
                    .expect("add")
                    .expect("add");
                timed += start.elapsed();
                black_box(out);
                drop(native);
            }
            timed
        })
    });
    g.finish();
}

/// `sessions/*`: one session alone, then two hundred at once on the same
/// sandbox. Answers are checked in the loop too (a comparison of strings,
/// nothing next to 41 ms of sleeping): a session that failed fast would
/// flatter the ratio.
fn bench_sessions(
    c: &mut Criterion,
    settings: &mut Vec<GroupSettings>,
    tokio: &tokio::runtime::Runtime,
    sessions: &Sandbox,
) {
    let one = &fixture::session_result(0);
    let all: &[Json] = &(0..CONCURRENT_SESSIONS)
        .map(fixture::session_result)
        .collect::<Vec<_>>();
    for (model_ms, (one_measure, many_measure, timing)) in fixture::MODEL_MS.into_iter().zip([
        (m::SESSIONS_ONE, m::SESSIONS_TWO_HUNDRED, SESSIONS),
        (
            m::SESSIONS_LLM_ONE,
            m::SESSIONS_LLM_TWO_HUNDRED,
            SESSIONS_LLM,
        ),
    ]) {
        let mut g = group(c, settings, one_measure.group, timing);
        g.bench_function(one_measure.function, |b| {
            b.to_async(tokio).iter(move || async move {
                let answer = one_session(sessions, black_box(0), model_ms)
                    .await
                    .expect("session");
                assert_eq!(answer, *one, "session 0");
            })
        });
        g.bench_function(many_measure.function, |b| {
            b.to_async(tokio).iter(move || async move {
                let answers = sessions_at_once(sessions, black_box(CONCURRENT_SESSIONS), model_ms)
                    .await
                    .expect("sessions");
                assert!(answers == all, "a session answered wrong");
            })
        });
        g.finish();
    }
}

/// How a `cost/sessions_*` iteration's sandbox runs.
#[derive(Clone, Copy, PartialEq)]
enum CostRun {
    Plain,
    Deterministic,
    Recording,
}

/// A strict replay of `cassette`, checked: the agent's answer.
async fn replay_agent(runtime: &Arc<Runtime>, cassette: &Cassette) -> anyhow::Result<()> {
    let replayed =
        cassette::replay(runtime.clone(), cassette, ReplayOptions::new(Mode::Strict)).await?;
    ensure!(
        replayed.entries == cassette.len(),
        "{} of {} entries replayed",
        replayed.entries,
        cassette.len()
    );
    let answer = replayed.result.context("the replay called no main")??;
    ensure!(
        answer == cost::agent_result(cost::INFERENCES / 2),
        "the replay answered {answer}"
    );
    Ok(())
}

/// One run of the two hundred sessions of `cost/*` in a fresh sandbox
/// run as `how` says: its wall time and the process's CPU time, the
/// sandbox's making, loading and shutdown left out. Its answers checked.
async fn cost_run(runtime: &Arc<Runtime>, how: CostRun, all: &[Json]) -> anyhow::Result<cost::Run> {
    let recorder = Recorder::new();
    let mut policy = Policy::default();
    let mut options = SandboxOptions::default();
    match how {
        CostRun::Plain => {}
        CostRun::Deterministic => {
            policy.determinism = Some(Determinism::fresh());
        }
        CostRun::Recording => {
            options = SandboxOptions::record(recorder.clone());
        }
    }
    let sandbox =
        Sandbox::with_options(runtime.clone(), policy, HostServices::default(), options).await?;
    sandbox
        .load(fixture::SESSIONS_SCRIPT, fixture::SESSIONS_JS)
        .await?;
    let cpu = cost::process_cpu_ns();
    let start = Instant::now();
    let answers = sessions_at_once(
        &sandbox,
        black_box(CONCURRENT_SESSIONS),
        fixture::MODEL_MS[0],
    )
    .await?;
    let wall = start.elapsed();
    let cpu = cost::process_cpu_ns()
        .zip(cpu)
        .map(|(after, before)| after.saturating_sub(before) as f64);
    ensure!(answers == all, "a session answered wrong");
    sandbox.shutdown().await;
    ensure!(
        recorder.is_empty() == (how != CostRun::Recording),
        "{} entries recorded",
        recorder.len()
    );
    Ok(cost::Run {
        wall_ns: wall.as_nanos() as f64,
        cpu_ns: cpu,
    })
}

/// Pairs of `cost/*` runs for the report: plain and recording.
const COST_PAIRS: usize = 8;

/// `cost/*` ([`cost`]): the two hundred sessions of `sessions/two_hundred`
/// in a fresh sandbox each iteration, plain, deterministic and recording,
/// one after the other; then a strict replay of a cassette of 200
/// inferences recorded here. Every answer is checked, untimed. With
/// `paired`, then [`COST_PAIRS`] pairs of plain and recording runs, for
/// the report.
fn bench_cost(
    c: &mut Criterion,
    settings: &mut Vec<GroupSettings>,
    tokio: &tokio::runtime::Runtime,
    runtime: &Arc<Runtime>,
    paired: bool,
) -> anyhow::Result<Option<cost::Paired>> {
    let cassette = &tokio.block_on(cost::record_agent_cassette(runtime.clone()))?;
    tokio.block_on(replay_agent(runtime, cassette))?;
    let all: &[Json] = &(0..CONCURRENT_SESSIONS)
        .map(fixture::session_result)
        .collect::<Vec<_>>();
    let mut g = group(c, settings, cost::SESSIONS_PLAIN.group, SESSIONS);
    for (measure, how) in [
        (cost::SESSIONS_PLAIN, CostRun::Plain),
        (cost::SESSIONS_DETERMINISTIC, CostRun::Deterministic),
        (cost::SESSIONS_RECORDING, CostRun::Recording),
    ] {
        g.bench_function(measure.function, |b| {
            b.to_async(tokio).iter_custom(move |iters| async move {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let run = cost_run(runtime, how, all).await.expect("sessions");
                    timed += Duration::from_nanos(run.wall_ns as u64);
                }
                timed
            })
        });
    }
    g.bench_function(cost::REPLAY.function, |b| {
        b.to_async(tokio).iter(move || async move {
            replay_agent(runtime, black_box(cassette))
                .await
                .expect("replay")
        })
    });
    g.finish();
    if !paired {
        return Ok(None);
    }
    eprintln!("running {COST_PAIRS} pairs of the 200 sessions, plain and recording...");
    let mut pairs = Vec::with_capacity(COST_PAIRS);
    for k in 0..COST_PAIRS {
        let pair = tokio.block_on(async {
            if k % 2 == 0 {
                let plain = cost_run(runtime, CostRun::Plain, all).await?;
                let recording = cost_run(runtime, CostRun::Recording, all).await?;
                anyhow::Ok((plain, recording))
            } else {
                let recording = cost_run(runtime, CostRun::Recording, all).await?;
                let plain = cost_run(runtime, CostRun::Plain, all).await?;
                anyhow::Ok((plain, recording))
            }
        })?;
        pairs.push(pair);
    }
    Ok(Some(cost::Paired::new(pairs)))
}

/// `load/*`: rounds of the mixed load ([`load`]) against one sandbox and
/// against three on the same runtime; each round a new seed. Returns the
/// answers of every round that ran, counted per measure (criterion's
/// warm-up included); a measure a filter skipped has none.
fn bench_load(
    c: &mut Criterion,
    settings: &mut Vec<GroupSettings>,
    tokio: &tokio::runtime::Runtime,
    runtime: &Arc<Runtime>,
) -> anyhow::Result<Vec<Tally>> {
    let rows = m::LOADS;
    let sandboxes: Vec<Vec<Sandbox>> = tokio.block_on(async {
        let mut all = Vec::new();
        for row in rows {
            let mut these = Vec::new();
            for _ in 0..row.sandboxes {
                let sandbox = Sandbox::with_runtime(runtime.clone(), load::policy()).await?;
                sandbox.load(load::SCRIPT, load::LOAD_JS).await?;
                these.push(sandbox);
            }
            all.push(these);
        }
        anyhow::Ok(all)
    })?;
    let mut tallies = Vec::new();
    let mut g = group(c, settings, m::LOAD_ONE.group, LOAD);
    for (row, sandboxes) in rows.iter().zip(&sandboxes) {
        let tally = &Mutex::new(Tally::new(row.measure.id()));
        let seeds = &AtomicU64::new(0);
        g.bench_function(row.measure.function, |b| {
            b.to_async(tokio).iter_custom(move |iters| async move {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let seed = seeds.fetch_add(1, Ordering::Relaxed);
                    let plan = load::plan(
                        seed,
                        row.calls,
                        row.sandboxes,
                        load::DEADLINES_PER_ROUND,
                        load::TRAPS_PER_ROUND,
                    );
                    let start = Instant::now();
                    let round = load::round(sandboxes, black_box(&plan)).await;
                    timed += start.elapsed();
                    tally
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .add(seed, &plan, &round);
                }
                timed
            })
        });
        let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
        if tally.rounds > 0 {
            tallies.push(tally);
        }
    }
    g.finish();
    tokio.block_on(async {
        for sandbox in sandboxes.iter().flatten() {
            sandbox.shutdown().await;
        }
    });
    Ok(tallies)
}

/// A deep recursion in `recovery.js`, which must trap on the stack.
async fn trap(sandbox: &Sandbox) -> anyhow::Result<()> {
    match sandbox
        .call(
            load::RECOVERY_SCRIPT,
            "recurse",
            &[],
            TaskOptions::default(),
        )
        .await
    {
        Err(Error::Trapped {
            limit: Some(Limit::Stack),
            ..
        }) => Ok(()),
        other => anyhow::bail!("recurse() should trap on the stack, got {other:?}"),
    }
}

/// `add(1, 2)` in `recovery.js`.
async fn add_after(sandbox: &Sandbox) -> anyhow::Result<()> {
    let out = sandbox
        .call(
            load::RECOVERY_SCRIPT,
            "add",
            &fixture::add_args_json(),
            TaskOptions::default(),
        )
        .await?;
    ensure!(out == fixture::ADD_RESULT, "add after the trap: {out}");
    Ok(())
}

/// `recovery/*`: a trap (not timed), then the time to the next success on
/// the rebuilt instance, in a sandbox holding one script and in one
/// holding ten.
fn bench_recovery(
    c: &mut Criterion,
    settings: &mut Vec<GroupSettings>,
    tokio: &tokio::runtime::Runtime,
    runtime: &Arc<Runtime>,
) -> anyhow::Result<()> {
    let rows = m::RECOVERIES;
    let uncached = Runtime::new(&RuntimeOptions {
        bytecode_cache: 0,
        ..RuntimeOptions::default()
    })?;
    let sandboxes: Vec<Sandbox> = tokio.block_on(async {
        let mut all = Vec::new();
        for row in rows {
            let runtime = if row.cached { runtime } else { &uncached };
            let sandbox = Sandbox::with_runtime(runtime.clone(), Policy::default()).await?;
            sandbox
                .load(load::RECOVERY_SCRIPT, load::RECOVERY_JS)
                .await?;
            for k in 1..row.scripts {
                sandbox
                    .load(format!("filler_{k}.js"), fixture::SESSIONS_JS)
                    .await?;
            }
            // Right before the timing: a trap, then a success on the
            // rebuilt instance, which holds every script again.
            trap(&sandbox).await?;
            add_after(&sandbox).await?;
            for k in 1..row.scripts {
                sandbox
                    .exports(&format!("filler_{k}.js"))
                    .await
                    .with_context(|| format!("filler_{k}.js after the trap"))?;
            }
            all.push(sandbox);
        }
        anyhow::Ok(all)
    })?;
    let mut g = group(c, settings, m::RECOVERY_ONE.group, SLOW);
    for (row, sandbox) in rows.iter().zip(&sandboxes) {
        g.bench_function(row.measure.function, |b| {
            b.to_async(tokio).iter_custom(move |iters| async move {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    trap(sandbox).await.expect("trap");
                    let start = Instant::now();
                    add_after(black_box(sandbox))
                        .await
                        .expect("the call after the trap");
                    timed += start.elapsed();
                }
                timed
            })
        });
    }
    g.finish();
    tokio.block_on(async {
        for sandbox in &sandboxes {
            sandbox.shutdown().await;
        }
    });
    Ok(())
}

/// `scale`: 1 000 sandboxes, then 10 000 when a third of the memory
/// available holds them at the first count's size each.
#[allow(clippy::type_complexity)]
fn scale_rows(
    tokio: &tokio::runtime::Runtime,
    runtime: &Arc<Runtime>,
) -> anyhow::Result<(Vec<scale::ScaleResult>, Vec<scale::ScaleSkipped>)> {
    let mut done: Vec<scale::ScaleResult> = Vec::new();
    let mut skipped = Vec::new();
    for count in SCALE_COUNTS {
        if let Some(before) = done.last()
            // What RAM holds: the snapshot's image once, private memory
            // per sandbox (resident memory counts the image per sandbox).
            && let Err(reason) = scale::fits(count, before.private_per_sandbox)
        {
            skipped.push(scale::ScaleSkipped {
                sandboxes: count,
                reason,
            });
            continue;
        }
        eprintln!("making {count} sandboxes...");
        match tokio.block_on(scale::measure(runtime, count)) {
            Ok(result) => done.push(result),
            Err(e) => skipped.push(scale::ScaleSkipped {
                sandboxes: count,
                reason: format!("{e:#}"),
            }),
        }
    }
    Ok((done, skipped))
}

/// The counts of sandboxes `scale` makes.
const SCALE_COUNTS: [usize; 2] = [1_000, 10_000];

/// The component's compile time: cold (no cache), then from wasmtime's
/// disk cache (filled first, untimed, if it was empty).
fn compile_timings() -> anyhow::Result<Vec<OneOffResult>> {
    eprintln!(
        "timing {COMPILE_RUNS} uncached and {CACHED_COMPILE_RUNS} cached compiles of the guest component, and {CACHED_COMPILE_RUNS} loads of the precompiled one..."
    );
    let uncached = RuntimeOptions {
        disk_cache: false,
        ..RuntimeOptions::default()
    };
    let mut cold = Vec::new();
    for _ in 0..COMPILE_RUNS {
        let start = Instant::now();
        let runtime = Runtime::from_component(marionette::guest_component(), &uncached)?;
        cold.push(start.elapsed());
        drop(runtime);
    }
    let cache = RuntimeOptions::default();
    drop(Runtime::from_component(
        marionette::guest_component(),
        &cache,
    )?);
    let mut cached = Vec::new();
    for _ in 0..CACHED_COMPILE_RUNS {
        let start = Instant::now();
        let runtime = Runtime::from_component(marionette::guest_component(), &cache)?;
        cached.push(start.elapsed());
        drop(runtime);
    }
    let mut precompiled = Vec::new();
    for _ in 0..CACHED_COMPILE_RUNS {
        let start = Instant::now();
        let runtime = Runtime::new(&RuntimeOptions::default())?;
        precompiled.push(start.elapsed());
        ensure!(
            *runtime.origin() == marionette::GuestOrigin::Precompiled,
            "the default runtime compiled: {:?}",
            runtime.origin()
        );
        drop(runtime);
    }
    Ok(vec![
        OneOffResult::new(m::COMPILE_UNCACHED, &cold),
        OneOffResult::new(m::COMPILE_CACHED, &cached),
        OneOffResult::new(m::COMPILE_PRECOMPILED, &precompiled),
    ])
}

//! The report: criterion's estimates of every measure, side by side, as
//! `report.json` (for tools, and for comparing runs) and `report.md` (for
//! people).
//!
//! Criterion keeps each benchmark's latest estimates in
//! `<criterion dir>/<group>/<function>/new/estimates.json` (nanoseconds per
//! iteration, with bootstrap confidence intervals). The report takes the
//! median, the figure least moved by the stray slow iterations a shared
//! machine produces, and its interval; ratios are of medians, their range
//! the widest the two intervals allow.
//!
//! Besides the side-by-side table of the three paths, the report has a
//! concurrency table: a task alone against many at once on one sandbox
//! (`sessions/*`), whose ratio says how far the tasks overlap; a load
//! table: the calls per second a mixed, partly hostile load holds
//! (`load/*`), with its answers counted by kind and the calls lost (which
//! must be none); and a recovery table: from a trap to the next success on
//! the rebuilt instance (`recovery/*`).

use std::path::{Path as FsPath, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

pub use markdown::{markdown, ns};

use crate::load::Tally;
use crate::machine::Machine;
use crate::measures::{
    CALL_API, CALL_DIRECT, CONCURRENCY, Concurrency, LOADS, LoadRow, MEASURES, Measure, OneOff,
    Path, RECOVERIES, RecoveryRow, WAKE_RUNNER, WORKLOADS,
};

mod markdown;
mod targets;

pub use targets::{TargetResult, Verdict, evaluate as targets};

/// Version of `report.json`'s layout; bumped when a field changes meaning.
pub const SCHEMA: u32 = 1;

/// How a group of benchmarks was sampled.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSettings {
    /// Criterion's group.
    pub group: &'static str,
    /// Warm-up before sampling, milliseconds.
    pub warm_up_ms: u128,
    /// Target sampling time, milliseconds.
    pub measurement_ms: u128,
    /// Samples taken.
    pub sample_size: usize,
    /// Flat sampling (the same iteration count in every sample), used for
    /// slow iterations; otherwise criterion's linear sampling.
    pub flat_sampling: bool,
}

/// An estimate and its confidence interval, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// The point estimate.
    pub estimate_ns: f64,
    /// Lower bound of the interval.
    pub lower_ns: f64,
    /// Upper bound of the interval.
    pub upper_ns: f64,
    /// The interval's confidence level (0.95 by default).
    pub confidence_level: f64,
}

/// One measure's figures.
#[derive(Debug, Clone, Serialize)]
pub struct MeasureResult {
    /// `group/function`.
    pub id: String,
    /// The path it takes.
    pub path: Path,
    /// What it means.
    pub meaning: &'static str,
    /// Median time of one iteration.
    pub median: Interval,
    /// Mean time of one iteration.
    pub mean: Interval,
    /// Standard deviation of the samples, nanoseconds.
    pub std_dev_ns: f64,
    /// Whether criterion wrote these figures during this run (`false`: they
    /// are left over from an earlier run, e.g. when a filter skipped it).
    pub this_run: bool,
}

/// A ratio of two medians.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// `numerator/denominator`, as path names.
    pub name: String,
    /// The ratio of the medians.
    pub value: f64,
    /// The smallest ratio the two confidence intervals allow.
    pub lower: f64,
    /// The largest ratio the two confidence intervals allow.
    pub upper: f64,
}

/// A row of the side-by-side table.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadResult {
    /// The workload.
    pub workload: &'static str,
    /// Median per path (`None`: no such path, or not measured).
    pub sandbox_api_ns: Option<f64>,
    /// See `sandbox_api_ns`.
    pub guest_direct_ns: Option<f64>,
    /// See `sandbox_api_ns`.
    pub native_quickjs_ns: Option<f64>,
    /// What the sandbox adds to the direct call, nanoseconds.
    pub api_minus_direct_ns: Option<f64>,
    /// `sandbox_api/guest_direct`, `guest_direct/native_quickjs`,
    /// `sandbox_api/native_quickjs`, as far as measured.
    pub ratios: Vec<Ratio>,
    /// Whether a figure of the row is left over from an earlier run (its
    /// ratios then compare two states of the machine).
    pub mixes_runs: bool,
}

/// A row of the concurrency table: one task alone against many at once.
#[derive(Debug, Clone, Serialize)]
pub struct ConcurrencyResult {
    /// The workload.
    pub workload: &'static str,
    /// How many tasks ran at once.
    pub tasks: usize,
    /// The measure of one task alone, `group/function`.
    pub one_id: String,
    /// The measure of all the tasks at once.
    pub many_id: String,
    /// Median of one task alone.
    pub one_ns: f64,
    /// Median of all the tasks at once, until the last is done.
    pub many_ns: f64,
    /// `many/one`: 1 when the tasks overlap completely, `tasks` when they
    /// take turns from start to end.
    pub ratio: Ratio,
    /// `many_ns / tasks`: what each task costs when they share the sandbox.
    pub per_task_ns: f64,
    /// `(many_ns - one_ns) / (tasks - 1)`: what each task beyond the first
    /// adds to the whole, the part of a task that does not overlap with
    /// the others (in one sandbox: its JavaScript, on the owner thread).
    pub added_per_task_ns: f64,
    /// Whether one of the two figures is left over from an earlier run.
    pub mixes_runs: bool,
}

/// A row of the load table: the calls per second a round of the mixed load
/// holds, and how its calls were answered.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// The measure, `group/function`.
    pub id: String,
    /// Sandboxes the calls went to.
    pub sandboxes: usize,
    /// Callers at once.
    pub callers: usize,
    /// Calls per round.
    pub calls_per_round: usize,
    /// One round's time.
    pub round: Interval,
    /// `calls_per_round` over the median round.
    pub calls_per_second: f64,
    /// Over the upper bound of the median's interval.
    pub calls_per_second_lower: f64,
    /// Over the lower bound of the median's interval.
    pub calls_per_second_upper: f64,
    /// The answers of this run's rounds, counted; `None` when the figures
    /// are an earlier run's.
    pub answers: Option<Tally>,
    /// Whether the figures are from this run.
    pub this_run: bool,
}

/// A row of the recovery table: from a trap to the next success.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryResult {
    /// The measure, `group/function`.
    pub id: String,
    /// Scripts the sandbox holds (each reloaded after the trap).
    pub scripts: usize,
    /// Whether the runtime kept the scripts' bytecode (their reloads read
    /// it) or compiled them again.
    pub cached: bool,
    /// From the trap's answer to the next call's.
    pub median: Interval,
    /// Whether the figures are from this run.
    pub this_run: bool,
}

/// Where the API's `add(1, 2)` round trip goes, from the medians.
#[derive(Debug, Clone, Serialize)]
pub struct CallBreakdown {
    /// `call/sandbox_api`.
    pub sandbox_api_ns: f64,
    /// `wake/runner_noop`: the runner's thread round trip with an empty job.
    pub runner_ns: f64,
    /// `call/guest_direct`: the guest entry itself.
    pub guest_direct_ns: f64,
    /// What is left: the sandbox's own work (task table, effect
    /// processing, the task's oneshot, `select!` over timeout and
    /// cancellation). Noisy: a difference of differences, and meaningless
    /// when the machine changed state between the `wake` and `call` groups
    /// (the thread round trip differs by ten times between an idle and a
    /// busy second CPU).
    pub rest_ns: f64,
}

/// A timing measured outside criterion, a few runs.
#[derive(Debug, Clone, Serialize)]
pub struct OneOffResult {
    /// Its id.
    pub id: &'static str,
    /// What it means.
    pub meaning: &'static str,
    /// Each run, nanoseconds, in order.
    pub runs_ns: Vec<f64>,
    /// The median run.
    pub median_ns: f64,
}

impl OneOffResult {
    /// The result of `runs` (at least one).
    pub fn new(what: OneOff, runs: &[Duration]) -> OneOffResult {
        let runs_ns: Vec<f64> = runs.iter().map(|d| d.as_nanos() as f64).collect();
        OneOffResult {
            id: what.id,
            meaning: what.meaning,
            median_ns: median(&runs_ns),
            runs_ns,
        }
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The machine and the run.
    pub machine: Machine,
    /// How each group was sampled.
    pub settings: Vec<GroupSettings>,
    /// The side-by-side rows.
    pub side_by_side: Vec<WorkloadResult>,
    /// The API round trip taken apart, when its parts were measured.
    pub call_breakdown: Option<CallBreakdown>,
    /// One task alone against many at once, as far as measured.
    pub concurrency: Vec<ConcurrencyResult>,
    /// The mixed load, as far as measured.
    pub load: Vec<LoadResult>,
    /// From a trap to the next success, as far as measured.
    pub recovery: Vec<RecoveryResult>,
    /// What record and replay cost, as far as measured.
    pub cost: Option<crate::cost::CostResult>,
    /// Every measure criterion has figures for.
    pub measures: Vec<MeasureResult>,
    /// Measures with no figures at all.
    pub missing: Vec<String>,
    /// Timings outside criterion.
    pub one_off: Vec<OneOffResult>,
    /// Many sandboxes in one process, as far as measured.
    pub scale: Vec<crate::scale::ScaleResult>,
    /// Counts of sandboxes not made, and why.
    pub scale_skipped: Vec<crate::scale::ScaleSkipped>,
    /// The peer's figures from this run, or why there are none.
    pub peer: Option<Result<crate::peer::PeerResult, String>>,
    /// What to keep in mind reading the figures.
    pub notes: Vec<String>,
}

/// Where criterion keeps its results, found the way criterion finds it:
/// `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else the target
/// folder `cargo metadata` names, else `target/criterion`.
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    #[derive(Deserialize)]
    struct Metadata {
        target_directory: PathBuf,
    }
    let from_cargo = std::env::var_os("CARGO").and_then(|cargo| {
        let out = std::process::Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .ok()?;
        serde_json::from_slice::<Metadata>(&out.stdout).ok()
    });
    match from_cargo {
        Some(m) => m.target_directory.join("criterion"),
        None => PathBuf::from("target/criterion"),
    }
}

/// Where the report goes: `bench/report/` (ignored by git).
pub fn report_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("report")
}

/// Reads the figures of every measure from `criterion_dir`; figures
/// written before `since` count as an earlier run's. `tallies` are the
/// answers of this run's load rounds, one per load measure that ran.
pub fn build(
    criterion_dir: &FsPath,
    since: SystemTime,
    mut machine: Machine,
    settings: Vec<GroupSettings>,
    one_off: Vec<OneOffResult>,
    tallies: Vec<Tally>,
) -> Report {
    machine.finish();
    let mut measures = Vec::new();
    let mut missing = Vec::new();
    for m in MEASURES.iter().chain(&crate::cost::MEASURES) {
        match read_measure(criterion_dir, m, since) {
            Ok(r) => measures.push(r),
            // Never run (a filter, a failed benchmark): listed as such.
            Err(_) => missing.push(m.id()),
        }
    }
    let side_by_side = WORKLOADS
        .iter()
        .map(|w| {
            let result =
                |m: &Option<Measure>| m.and_then(|m| measures.iter().find(|r| r.id == m.id()));
            let mixes_runs = w
                .paths
                .iter()
                .any(|m| result(m).is_some_and(|r| !r.this_run));
            let find = |m: &Option<Measure>| result(m).map(|r| r.median);
            let [api, direct, native] = [find(&w.paths[0]), find(&w.paths[1]), find(&w.paths[2])];
            let ratios = [
                ("sandbox_api/guest_direct", api, direct),
                ("guest_direct/native_quickjs", direct, native),
                ("sandbox_api/native_quickjs", api, native),
            ]
            .into_iter()
            .filter_map(|(name, a, b)| Some(ratio(name, a?, b?)))
            .collect();
            WorkloadResult {
                workload: w.name,
                sandbox_api_ns: api.map(|i| i.estimate_ns),
                guest_direct_ns: direct.map(|i| i.estimate_ns),
                native_quickjs_ns: native.map(|i| i.estimate_ns),
                api_minus_direct_ns: api.zip(direct).map(|(a, d)| a.estimate_ns - d.estimate_ns),
                ratios,
                mixes_runs,
            }
        })
        .collect();
    // Only from this run: the parts are differences of one state of the machine.
    let median_of = |m: Measure| {
        measures
            .iter()
            .find(|r| r.id == m.id() && r.this_run)
            .map(|r| r.median.estimate_ns)
    };
    let call_breakdown = match (
        median_of(CALL_API),
        median_of(WAKE_RUNNER),
        median_of(CALL_DIRECT),
    ) {
        (Some(api), Some(runner), Some(direct)) => Some(CallBreakdown {
            sandbox_api_ns: api,
            runner_ns: runner,
            guest_direct_ns: direct,
            rest_ns: api - runner - direct,
        }),
        _ => None,
    };
    let concurrency = CONCURRENCY
        .iter()
        .filter_map(|c| concurrency(c, &measures))
        .collect();
    let load: Vec<LoadResult> = LOADS
        .iter()
        .filter_map(|row| load(row, &measures, &tallies))
        .collect();
    let recovery = RECOVERIES
        .iter()
        .filter_map(|row| recovery(row, &measures))
        .collect();
    let cost = crate::cost::build(&measures);
    let notes = notes(&machine, &measures, &missing, &load);
    Report {
        schema: SCHEMA,
        machine,
        settings,
        side_by_side,
        call_breakdown,
        concurrency,
        load,
        recovery,
        cost,
        measures,
        missing,
        one_off,
        scale: Vec::new(),
        scale_skipped: Vec::new(),
        peer: None,
        notes,
    }
}

/// The row of `c`, when both of its measures have figures.
fn concurrency(c: &Concurrency, measures: &[MeasureResult]) -> Option<ConcurrencyResult> {
    let find = |m: Measure| measures.iter().find(|r| r.id == m.id());
    let (one, many) = (find(c.one)?, find(c.many)?);
    Some(ConcurrencyResult {
        workload: c.name,
        tasks: c.tasks,
        one_id: one.id.clone(),
        many_id: many.id.clone(),
        one_ns: one.median.estimate_ns,
        many_ns: many.median.estimate_ns,
        ratio: ratio(
            &format!("{}/{}", c.many.function, c.one.function),
            many.median,
            one.median,
        ),
        per_task_ns: many.median.estimate_ns / c.tasks as f64,
        added_per_task_ns: (many.median.estimate_ns - one.median.estimate_ns)
            / (c.tasks - 1) as f64,
        mixes_runs: !one.this_run || !many.this_run,
    })
}

/// The row of `row`, when its measure has figures; this run's answers
/// when one of `tallies` is its measure's and the figures are this run's.
fn load(row: &LoadRow, measures: &[MeasureResult], tallies: &[Tally]) -> Option<LoadResult> {
    let id = row.measure.id();
    let m = measures.iter().find(|r| r.id == id)?;
    let per_second = |ns: f64| row.calls as f64 / (ns / 1e9);
    Some(LoadResult {
        sandboxes: row.sandboxes,
        callers: row.callers,
        calls_per_round: row.calls,
        round: m.median,
        calls_per_second: per_second(m.median.estimate_ns),
        calls_per_second_lower: per_second(m.median.upper_ns),
        calls_per_second_upper: per_second(m.median.lower_ns),
        answers: tallies
            .iter()
            .find(|t| t.measure == id && m.this_run)
            .cloned(),
        this_run: m.this_run,
        id,
    })
}

/// The row of `row`, when its measure has figures.
fn recovery(row: &RecoveryRow, measures: &[MeasureResult]) -> Option<RecoveryResult> {
    let m = measures.iter().find(|r| r.id == row.measure.id())?;
    Some(RecoveryResult {
        id: m.id.clone(),
        scripts: row.scripts,
        cached: row.cached,
        median: m.median,
        this_run: m.this_run,
    })
}

/// Writes `report.json` and `report.md` into `dir`; returns the Markdown.
///
/// # Errors
/// When the folder or a file cannot be written.
pub fn write(report: &Report, dir: &FsPath) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    /// `report.json`: the report and how each target came out.
    #[derive(Serialize)]
    struct WithTargets<'a> {
        #[serde(flatten)]
        report: &'a Report,
        targets: Vec<TargetResult>,
    }
    let json = serde_json::to_string_pretty(&WithTargets {
        report,
        targets: targets(report),
    })?;
    std::fs::write(dir.join("report.json"), json + "\n").context("writing report.json")?;
    let md = markdown(report);
    std::fs::write(dir.join("report.md"), &md).context("writing report.md")?;
    Ok(md)
}

fn read_measure(dir: &FsPath, m: &Measure, since: SystemTime) -> anyhow::Result<MeasureResult> {
    let path = dir
        .join(m.group)
        .join(m.function)
        .join("new")
        .join("estimates.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let est: Estimates =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let this_run = std::fs::metadata(&path)
        .and_then(|md| md.modified())
        .is_ok_and(|t| t >= since);
    Ok(MeasureResult {
        id: m.id(),
        path: m.path,
        meaning: m.meaning,
        median: est.median.into(),
        mean: est.mean.into(),
        std_dev_ns: est.std_dev.point_estimate,
        this_run,
    })
}

/// The part of criterion's `estimates.json` the report uses.
#[derive(Debug, Deserialize)]
struct Estimates {
    mean: Estimate,
    median: Estimate,
    std_dev: Estimate,
}

#[derive(Debug, Deserialize)]
struct Estimate {
    confidence_interval: ConfidenceInterval,
    point_estimate: f64,
}

#[derive(Debug, Deserialize)]
struct ConfidenceInterval {
    confidence_level: f64,
    lower_bound: f64,
    upper_bound: f64,
}

impl From<Estimate> for Interval {
    fn from(e: Estimate) -> Self {
        Interval {
            estimate_ns: e.point_estimate,
            lower_ns: e.confidence_interval.lower_bound,
            upper_ns: e.confidence_interval.upper_bound,
            confidence_level: e.confidence_interval.confidence_level,
        }
    }
}

fn ratio(name: &str, a: Interval, b: Interval) -> Ratio {
    Ratio {
        name: name.into(),
        value: a.estimate_ns / b.estimate_ns,
        lower: a.lower_ns / b.upper_ns,
        upper: a.upper_ns / b.lower_ns,
    }
}

fn notes(
    machine: &Machine,
    measures: &[MeasureResult],
    missing: &[String],
    load: &[LoadResult],
) -> Vec<String> {
    let mut notes = Vec::new();
    for (id, t) in load
        .iter()
        .filter_map(|l| Some((&l.id, l.answers.as_ref()?)))
    {
        if t.lost > 0 || t.unexpected > 0 {
            notes.push(format!(
                "**`{id}`: {} calls LOST and {} unexpected answers in {} calls: a bug, not noise.** \
                 First cases (replay a round with `marionette_bench::load::plan(seed, ...)`): {}.",
                t.lost,
                t.unexpected,
                t.calls,
                t.examples.join("; ")
            ));
        }
    }
    notes.extend([
        format!(
            "The machine has {} CPUs, shared with other work (builds, another engineer's runs): \
             figures move between runs by more than their intervals suggest; the load averages \
             above say how busy it was.",
            machine.nproc
        ),
        "The sandbox API path crosses threads (caller -> owner thread -> caller): each call pays \
         two thread wake-ups. On this virtual machine a thread round trip costs a few µs while the \
         other CPU is busy and tens of µs while it idles (the hypervisor wakes an idle virtual CPU \
         slowly), so the API round trip can read several times higher on a quiet machine than on \
         a loaded one; `wake/*`, measured in the same run, says which it was."
            .into(),
        "Guest and native QuickJS are the same C sources built by different compilers: clang for \
         wasm32 (the guest) and the host's C compiler (rquickjs-sys via cc). The guest also polls \
         its interrupt handler while JavaScript runs, and its code carries wasmtime's epoch checks."
            .into(),
        "Where `fib25/guest_direct` goes (perf with wasmtime's jitdump; docs/architecture.md \
         section 11): all of it in QuickJS's interpreter loop, a third in the one block every \
         bytecode is dispatched from (Wasm has no indirect jump: a label-table load and a \
         `br_table` per bytecode, plus the epoch check). Measured on a stand-alone build of the \
         same sources: V8 runs that module as fast as wasmtime (20.3 against 20.8 ms), the epoch \
         check costs 17%, QuickJS's direct dispatch gains 18%, clang's -O3 beats -O2/-Os/-Oz, \
         wasm-opt -O3 gains nothing; wasmtime's defaults leave no bounds checks to remove."
            .into(),
        "Entries into the guest (`call/*`, `sessions/*`): a function whose result is a plain \
         value ends its task without a promise job when none waits; the runtime's Map and Set \
         helpers allocate no argument arrays; a task's end releases only its own pending \
         operations (they were found by walking every task's); the runtime's ids are made in \
         Rust (31 calls into a native and 36 concatenations each before). Since session 7: \
         `script.call` runs its body inline (no closure per call), a plain number, boolean or \
         null result is written without JSON.stringify (its wrapper object, property list and \
         buffer), and a task that ends with no pending operation makes no list of them; old \
         and new guest side by side (`entries file`, bench/examples/entries.rs): 16.4/11.2, \
         17.7/15.1, 27.2/19.9 µs per direct add(1, 2)."
            .into(),
        "Owner pool threads out of work look for more by yielding their CPU, not by a busy \
         loop (session 7): on a busy machine the busy loop took a CPU from the thread whose \
         job it waited for (API add(1, 2) 32-45 µs with it, 15-38 µs yielding, 17-38 µs with \
         no spin, load average 4-5). A caller spinning for its answer as well was tried and \
         taken out: 56-125 µs."
            .into(),
        "`sessions/*` (docs/architecture.md section 11, \"Many sessions\"; profiled with \
         `bench/examples/sessions.rs` under perf): a run's end no longer walks the signals of every \
         scope in the VM; the runtime's Maps and Sets of task, operation and timer ids are keyed by \
         a mixed id (QuickJS hashed small integers into one bucket, so each lookup walked every \
         pending id); 7 of a session's 22 JSON copies are gone. Side by side before and after: \
         200 sessions 442 -> 316 ms (median, load 5 on 2 CPUs). Each session's guest work is still \
         about 1.3 ms, spread over JSON copies, events and requests as JSON text, promises and \
         the cycle collector."
            .into(),
        "Snapshot start (`instantiate/*`, `cold/*`, `recovery/*`; docs/architecture.md section \
         10): `vm.configure` runs no JavaScript when the host provides nothing by name (the \
         snapshot's own configuration), and a runtime keeps its scripts' QuickJS bytecode, \
         written on a throwaway instance that runs nothing else: a script loaded again (another \
         sandbox, or after a trap) is read, not parsed. `recovery/ten_scripts_uncached` is the \
         same recovery on a runtime without that cache."
            .into(),
        "Native calls pass numbers; the guest paths pass JSON text both ways and go through the \
         guest's JavaScript dispatcher (task bookkeeping, promise handling), as every call into \
         the guest does."
            .into(),
    ]);
    let stale: Vec<&str> = measures
        .iter()
        .filter(|m| !m.this_run)
        .map(|m| m.id.as_str())
        .collect();
    if !stale.is_empty() {
        notes.push(format!(
            "Not measured in this run (figures from an earlier run): {}.",
            stale.join(", ")
        ));
    }
    if !missing.is_empty() {
        notes.push(format!("Never measured: {}.", missing.join(", ")));
    }
    notes
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_bounds_are_the_widest_the_intervals_allow() {
        let i = |e, l, u| Interval {
            estimate_ns: e,
            lower_ns: l,
            upper_ns: u,
            confidence_level: 0.95,
        };
        let r = ratio("a/b", i(10.0, 9.0, 12.0), i(2.0, 1.5, 3.0));
        assert_eq!((r.value, r.lower, r.upper), (5.0, 3.0, 8.0));
    }

    #[test]
    fn concurrency_rows_compare_many_with_one() {
        let result = |m: Measure, median: f64, this_run: bool| {
            let i = Interval {
                estimate_ns: median,
                lower_ns: median * 0.9,
                upper_ns: median * 1.1,
                confidence_level: 0.95,
            };
            MeasureResult {
                id: m.id(),
                path: m.path,
                meaning: m.meaning,
                median: i,
                mean: i,
                std_dev_ns: 0.0,
                this_run,
            }
        };
        let c = &CONCURRENCY[0];
        assert_eq!(
            concurrency(c, &[result(c.one, 40e6, true)]).map(|r| r.tasks),
            None
        );
        let row =
            concurrency(c, &[result(c.one, 40e6, true), result(c.many, 60e6, false)]).unwrap();
        assert_eq!(row.ratio.name, "two_hundred/one");
        assert_eq!(row.ratio.value, 1.5);
        assert_eq!(row.per_task_ns, 60e6 / c.tasks as f64);
        assert_eq!(row.added_per_task_ns, 20e6 / (c.tasks - 1) as f64);
        assert!(row.mixes_runs);
    }

    #[test]
    fn load_rows_give_calls_per_second_and_say_when_calls_are_lost() {
        let row = &LOADS[0];
        let i = |e: f64| Interval {
            estimate_ns: e,
            lower_ns: e * 0.5,
            upper_ns: e * 2.0,
            confidence_level: 0.95,
        };
        let measure = |this_run| MeasureResult {
            id: row.measure.id(),
            path: row.measure.path,
            meaning: row.measure.meaning,
            median: i(0.5e9),
            mean: i(0.5e9),
            std_dev_ns: 0.0,
            this_run,
        };
        let mut tally = Tally::new(row.measure.id());
        tally.rounds = 3;
        tally.calls = 3 * row.calls;
        tally.lost = 2;
        tally.examples.push("seed 1: call 7 got no answer".into());
        let tallies = [tally];

        let l = load(row, &[measure(true)], &tallies).unwrap();
        assert_eq!(l.calls_per_second, row.calls as f64 * 2.0);
        assert_eq!(
            (l.calls_per_second_lower, l.calls_per_second_upper),
            (row.calls as f64, row.calls as f64 * 4.0)
        );
        assert_eq!(l.answers.as_ref().map(|t| t.lost), Some(2));
        // Figures of an earlier run: this run's answers are not theirs.
        assert!(
            load(row, &[measure(false)], &tallies)
                .unwrap()
                .answers
                .is_none()
        );
        assert!(load(row, &[], &tallies).is_none());

        let notes = notes(&Machine::now(), &[], &[], &[l]);
        assert!(notes[0].contains("2 calls LOST"), "{}", notes[0]);
        assert!(notes[0].contains("call 7 got no answer"), "{}", notes[0]);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn reads_criterion_estimates() {
        let dir =
            std::env::temp_dir().join(format!("marionette-bench-test-{}", std::process::id()));
        let m = CALL_API;
        let at = dir.join(m.group).join(m.function).join("new");
        std::fs::create_dir_all(&at).unwrap();
        let est = |p: f64| {
            serde_json::json!({
                "confidence_interval": {"confidence_level": 0.95, "lower_bound": p - 1.0, "upper_bound": p + 1.0},
                "point_estimate": p,
                "standard_error": 0.5
            })
        };
        let json = serde_json::json!({
            "mean": est(3100.0), "median": est(3000.0), "median_abs_dev": est(40.0),
            "slope": null, "std_dev": est(80.0)
        });
        std::fs::write(at.join("estimates.json"), json.to_string()).unwrap();
        let since = SystemTime::UNIX_EPOCH;
        let report = build(
            &dir,
            since,
            Machine::now(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let got = &report.measures[0];
        assert_eq!(got.id, m.id());
        assert_eq!(got.median.estimate_ns, 3000.0);
        assert_eq!(got.median.lower_ns, 2999.0);
        assert_eq!(got.std_dev_ns, 80.0);
        assert!(got.this_run);
        assert_eq!(
            report.missing.len(),
            MEASURES.len() + crate::cost::MEASURES.len() - 1
        );
        let md = markdown(&report);
        assert!(md.contains("| `call/sandbox_api` | 3.00 µs |"), "{md}");
    }
}

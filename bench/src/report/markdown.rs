//! `report.md`: the report for people. The side-by-side table first (what
//! a reader compares), then the concurrency table (one task alone against
//! many at once), the load table (calls per second held under a mixed
//! load, its answers by kind, the calls lost), the recovery table (a trap
//! to the next success), every measure with its interval, the one-off
//! timings, what each measure means, how it was sampled, the caveats.

use std::fmt::Write as _;

use super::Report;
use crate::load::Kind;
use crate::measures::Path;

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(s, "# marionette benchmarks\n");
    let _ = writeln!(
        s,
        "{} · {} CPUs ({}) · {} · {} · guest component {} KiB · load average {} at the start, {} at the end\n",
        m.date,
        m.nproc,
        m.cpu.as_deref().unwrap_or("unknown CPU"),
        m.rustc,
        m.os,
        m.guest_component_bytes / 1024,
        m.loadavg_start.as_deref().unwrap_or("?"),
        m.loadavg_end.as_deref().unwrap_or("?"),
    );
    let _ = writeln!(
        s,
        "> Shared, noisy machine: compare medians of runs made close together, and read \
         differences inside the confidence intervals as no difference.\n"
    );

    targets(&mut s, r);

    let _ = writeln!(s, "## Side by side (medians)\n");
    let _ = writeln!(
        s,
        "| workload | {} | {} | {} | API − direct | API / direct | direct / native | API / native |",
        Path::SandboxApi.label(),
        Path::GuestDirect.label(),
        Path::NativeQuickjs.label()
    );
    let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|--:|");
    for w in &r.side_by_side {
        let ratio = |name: &str| {
            w.ratios
                .iter()
                .find(|x| x.name == name)
                .map_or("–".into(), |x| {
                    format!("{} ({}–{})", times(x.value), sig3(x.lower), sig3(x.upper))
                })
        };
        let _ = writeln!(
            s,
            "| {}{} | {} | {} | {} | {} | {} | {} | {} |",
            w.workload,
            if w.mixes_runs { " (mixes runs)" } else { "" },
            opt_ns(w.sandbox_api_ns),
            opt_ns(w.guest_direct_ns),
            opt_ns(w.native_quickjs_ns),
            opt_ns(w.api_minus_direct_ns),
            ratio("sandbox_api/guest_direct"),
            ratio("guest_direct/native_quickjs"),
            ratio("sandbox_api/native_quickjs"),
        );
    }
    let _ = writeln!(
        s,
        "\nRatios in brackets: the range the two medians' confidence intervals allow.\n"
    );
    let host_only: Vec<String> = r
        .measures
        .iter()
        .filter(|x| x.path == Path::HostOnly)
        .map(|x| format!("`{}` {}", x.id, ns(x.median.estimate_ns)))
        .collect();
    if !host_only.is_empty() {
        let _ = writeln!(
            s,
            "Crossing threads in this run, no JavaScript: {}.\n",
            host_only.join(", ")
        );
    }
    if let Some(b) = &r.call_breakdown {
        let _ = writeln!(
            s,
            "If the machine kept one state from `wake/*` to `call/*` (a rerun tells): the API's \
             `add(1, 2)` ({}) = runner round trip ({}) + guest entry ({}) + the rest ({}: the \
             sandbox's own work, and any wake-up the runner's empty job does not pay).\n",
            ns(b.sandbox_api_ns),
            ns(b.runner_ns),
            ns(b.guest_direct_ns),
            ns(b.rest_ns),
        );
    }

    if !r.concurrency.is_empty() {
        let _ = writeln!(s, "## Concurrency (medians)\n");
        let _ = writeln!(
            s,
            "| workload | one alone | all at once | tasks | all / one | all ÷ tasks | each task beyond the first adds |"
        );
        let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|--:|");
        for c in &r.concurrency {
            let _ = writeln!(
                s,
                "| {}{} | {} | {} | {} | {} ({}–{}) | {} | {} |",
                c.workload,
                if c.mixes_runs { " (mixes runs)" } else { "" },
                ns(c.one_ns),
                ns(c.many_ns),
                c.tasks,
                times(c.ratio.value),
                sig3(c.ratio.lower),
                sig3(c.ratio.upper),
                ns(c.per_task_ns),
                ns(c.added_per_task_ns),
            );
        }
        let _ = writeln!(
            s,
            "\n`all / one` is how much longer the tasks take together than one takes alone: 1× \
             when they overlap completely, the number of tasks when they take turns. The sessions \
             interleave in one VM because every wait is a host operation: while a session's model \
             or tool sleeps (a host timer), \
             the guest is free, and the owner thread runs the other sessions' JavaScript. What is \
             above 1× is that JavaScript: every session's guest entries are made one at a time on \
             the one owner thread, so each session beyond the first adds its own share of guest \
             work (the last column, `(all − one) / (tasks − 1)`) while its waiting overlaps the \
             others'. The ratio is about 1 + tasks × that share / one: near 1× while the \
             sessions' JavaScript together stays small next to one session's waiting."
        );
        for c in &r.concurrency {
            let _ = writeln!(
                s,
                "\nIn this run, {}: {} at once took {} ({} each) against {} for one alone; one \
                 after another they would take about {}.",
                c.workload,
                c.tasks,
                ns(c.many_ns),
                ns(c.per_task_ns),
                ns(c.one_ns),
                ns(c.one_ns * c.tasks as f64),
            );
        }
        let _ = writeln!(s);
    }

    peer(&mut s, r);
    scale(&mut s, r);
    load(&mut s, r);
    recovery(&mut s, r);
    if let Some(cost) = &r.cost {
        crate::cost::markdown(&mut s, cost);
    }

    let _ = writeln!(s, "## Every measure\n");
    let _ = writeln!(
        s,
        "| measure | median | confidence interval of the median | mean ± std dev | this run |"
    );
    let _ = writeln!(s, "|---|--:|--:|--:|:-:|");
    for x in &r.measures {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} – {} ({:.0}%) | {} ± {} | {} |",
            x.id,
            ns(x.median.estimate_ns),
            ns(x.median.lower_ns),
            ns(x.median.upper_ns),
            x.median.confidence_level * 100.0,
            ns(x.mean.estimate_ns),
            ns(x.std_dev_ns),
            if x.this_run { "yes" } else { "**no**" },
        );
    }
    for id in &r.missing {
        let _ = writeln!(s, "| `{id}` | not measured | | | |");
    }

    if !r.one_off.is_empty() {
        let _ = writeln!(s, "\n## One-off timings (outside criterion)\n");
        let _ = writeln!(s, "| measure | median | runs |");
        let _ = writeln!(s, "|---|--:|---|");
        for o in &r.one_off {
            let runs: Vec<String> = o.runs_ns.iter().map(|&n| ns(n)).collect();
            let _ = writeln!(
                s,
                "| `{}` | {} | {} |",
                o.id,
                ns(o.median_ns),
                runs.join(", ")
            );
        }
    }

    let _ = writeln!(s, "\n## What each measure is\n");
    for x in &r.measures {
        let _ = writeln!(s, "- `{}` ({}): {}.", x.id, x.path.label(), x.meaning);
    }
    for o in &r.one_off {
        let _ = writeln!(s, "- `{}`: {}.", o.id, o.meaning);
    }

    let _ = writeln!(s, "\n## Sampling\n");
    for g in &r.settings {
        let _ = writeln!(
            s,
            "- `{}`: {} ms warm-up, {} ms of {} {} samples.",
            g.group,
            g.warm_up_ms,
            g.measurement_ms,
            g.sample_size,
            if g.flat_sampling { "flat" } else { "linear" },
        );
    }

    let _ = writeln!(s, "\n## Caveats\n");
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }
    reproduce(&mut s);
    s
}

/// The peer's row: the same QuickJS under Node, beside the guest's
/// figures of this run.
fn peer(s: &mut String, r: &Report) {
    let Some(peer) = &r.peer else {
        return;
    };
    let _ = writeln!(s, "## The peer: quickjs-emscripten under Node (same run)\n");
    let p = match peer {
        Ok(p) => p,
        Err(why) => {
            let _ = writeln!(s, "Not measured: {why}.\n");
            return;
        }
    };
    let find = |id: &str| {
        r.measures
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.median.estimate_ns)
    };
    let _ = writeln!(
        s,
        "quickjs-emscripten {} on Node {}: the same QuickJS, compiled to Wasm by Emscripten, run \
         by V8's Wasm engine; each figure the median of its runs (bench/peer/peer.mjs).\n",
        p.version, p.node
    );
    let _ = writeln!(
        s,
        "| workload | peer | guest direct | sandbox API | guest direct / peer | sandbox API / peer |"
    );
    let _ = writeln!(s, "|---|--:|--:|--:|--:|--:|");
    for (name, peer_ns, direct, api) in [
        (
            "round trip `add(1, 2)`",
            p.add_ns,
            "call/guest_direct",
            "call/sandbox_api",
        ),
        (
            "`fib(25)`",
            p.fib25_ns,
            "fib25/guest_direct",
            "fib25/sandbox_api",
        ),
        (
            "fresh VM to first result",
            p.cold_ns,
            "cold/guest_direct",
            "cold/sandbox_api",
        ),
    ] {
        let (direct, api) = (find(direct), find(api));
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} |",
            ns(peer_ns),
            opt_ns(direct),
            opt_ns(api),
            direct.map_or("–".into(), |d| times(d / peer_ns)),
            api.map_or("–".into(), |a| times(a / peer_ns)),
        );
    }
    let _ = writeln!(s);
}

/// Every target, with this run's figure and how it came out.
fn targets(s: &mut String, r: &Report) {
    use super::targets::{Verdict, evaluate};
    let _ = writeln!(s, "## Targets\n");
    let _ = writeln!(
        s,
        "| target | this run | bound | | from | where a miss is explained |"
    );
    let _ = writeln!(s, "|---|--:|--:|:-:|---|---|");
    for t in evaluate(r) {
        let (figure, verdict, explained) = match t.verdict {
            Verdict::Met => (t.figure.as_str(), "**met**", ""),
            Verdict::NotMet => (t.figure.as_str(), "not met", t.explained),
            Verdict::NotMeasured => ("–", "not measured", ""),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            t.what, figure, t.target, verdict, t.source, explained
        );
    }
    let _ = writeln!(
        s,
        "\nEach figure is a median (or a ratio of medians) of this run, on this machine, at the \
         load averages above; the tables below have the intervals. `add(1, 2)` through the API \
         depends on how fast an idle CPU wakes (`wake/*`).\n"
    );
}

/// Many sandboxes in one process.
fn scale(s: &mut String, r: &Report) {
    if r.scale.is_empty() && r.scale_skipped.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Many sandboxes in one process\n");
    let _ = writeln!(
        s,
        "| sandboxes | made per second | load + first call per second | resident memory each | private memory each | OS threads each | resident memory, all idle |"
    );
    let _ = writeln!(s, "|--:|--:|--:|--:|--:|--:|--:|");
    for x in &r.scale {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.0} KiB | {:.0} KiB | {:.3} | {:.0} MiB |",
            x.sandboxes,
            x.created_per_second,
            x.loaded_per_second,
            x.rss_per_sandbox / 1024.0,
            x.private_per_sandbox / 1024.0,
            x.threads_per_sandbox,
            x.rss_total as f64 / (1u64 << 20) as f64,
        );
    }
    for x in &r.scale_skipped {
        let _ = writeln!(
            s,
            "| {} | not measured: {} | | | | | |",
            x.sandboxes, x.reason
        );
    }
    let _ = writeln!(
        s,
        "\nEach sandbox is made with `Sandbox::with_runtime` (the only part counted as \"made\"), \
         loads a one-line script and answers `add(1, 2)`; the figures are read from \
         `/proc/self/status` (VmRSS, RssAnon, Threads) with all of them idle, less what the \
         process held before, and then every sandbox answers once more. Resident memory counts \
         the pages of the snapshot's copy-on-write image once per sandbox that read them, though \
         RAM holds them once; private memory (RssAnon) is what each sandbox alone holds. The \
         sandboxes share the process's owner pool (one thread per CPU).\n"
    );
}

/// How to reproduce each figure and which tools profile it.
fn reproduce(s: &mut String) {
    let _ = writeln!(s, "\n## Reproducing and profiling\n");
    for line in [
        "Everything: `make bench` (criterion groups, the one-off timings, `scale`, the peer). One \
         group: `cargo bench --locked -p marionette -p marionette-cli -p marionette-bench --bench \
         marionette -- GROUP` (for example `cold`; the report then marks the others as from an \
         earlier run; the three packages are the tests' set, so the bench reuses their build).",
        "The peer alone: `cd target/bench-peer && node peer.mjs` (installed there by the first \
         `make bench`).",
        "Where the guest spends its time: `MARIONETTE_PROFILE=perfmap perf record -g -F 999 -- \
         target/release/marionette run SCRIPT` then `perf report` (wasmtime writes \
         /tmp/perf-PID.map so the guest's functions have names; README, \"Profiling the guest\").",
        "The guest without its snapshot, for comparison: `cold/guest_direct_booting` in every \
         run; or build with `MARIONETTE_NO_SNAPSHOT=1` (the host then embeds the guest as built \
         and compiles it at start).",
    ] {
        let _ = writeln!(s, "- {line}");
    }
}

/// The load table, when a load measure has figures.
fn load(s: &mut String, r: &Report) {
    if r.load.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Load (medians)\n");
    let _ = writeln!(
        s,
        "| measure | sandboxes | callers | calls per round | round | calls per second held | rounds | ok | canceled | timeout | script | limit | trapped | other | unexpected | LOST |"
    );
    let _ = writeln!(
        s,
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    for l in &r.load {
        let counts = match &l.answers {
            Some(t) => {
                let mut cells = vec![t.rounds.to_string()];
                cells.extend(Kind::ALL.iter().map(|&k| t.count(k).to_string()));
                cells.push(t.unexpected.to_string());
                cells.push(if t.lost == 0 {
                    "0".into()
                } else {
                    format!("**{}**", t.lost)
                });
                cells.join(" | ")
            }
            None => vec!["–"; 2 + Kind::ALL.len() + 1].join(" | "),
        };
        let _ = writeln!(
            s,
            "| `{}`{} | {} | {} | {} | {} | {} ({}–{}) | {counts} |",
            l.id,
            if l.this_run { "" } else { " (earlier run)" },
            l.sandboxes,
            l.callers,
            l.calls_per_round,
            ns(l.round.estimate_ns),
            sig3(l.calls_per_second),
            sig3(l.calls_per_second_lower),
            sig3(l.calls_per_second_upper),
        );
    }
    let _ = writeln!(
        s,
        "\nCalls per second held: the calls of a round over the round's median time (in brackets: \
         what the median's confidence interval allows). A round is a seeded random mix, a new seed \
         each round, made by many callers at once: quick calls, timers, cancellations at random \
         moments, tiny timeouts, throws, one call that spins until the CPU deadline stops it and \
         one that traps (`load/*` under \"What each measure is\" has the shares). The spinning call \
         holds its sandbox's owner thread for the whole deadline, and the trap costs an instance \
         rebuild: both are part of what the figure holds up under. The round's time has a floor in \
         its own waits (the deadline, and each caller's timers one call after another), so this is \
         what the sandboxes hold under this mix, not their peak rate of quick calls (`call/*`). \
         Answers are counted over every \
         round of this run, criterion's warm-up included: `trapped` is the trap calls and the calls \
         that were awaiting a timer in the instance when it trapped, `limit` the calls stopped at \
         the CPU deadline, `canceled` and `timeout` the calls whose caller gave up first (a \
         cancelled call that finished first is `ok`). `unexpected` (an answer of a kind the call \
         cannot legitimately get) and LOST (a call without exactly one answer within 60 s) must \
         be 0.\n"
    );
}

/// The recovery table, when a recovery measure has figures.
fn recovery(s: &mut String, r: &Report) {
    if r.recovery.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Recovery from a trap (medians)\n");
    let _ = writeln!(
        s,
        "| measure | scripts loaded | trap to the next success | confidence interval of the median |"
    );
    let _ = writeln!(s, "|---|--:|--:|--:|");
    for x in &r.recovery {
        let _ = writeln!(
            s,
            "| `{}`{} | {} | {} | {} – {} |",
            x.id,
            if x.this_run { "" } else { " (earlier run)" },
            x.scripts,
            ns(x.median.estimate_ns),
            ns(x.median.lower_ns),
            ns(x.median.upper_ns),
        );
    }
    let _ = writeln!(
        s,
        "\nFrom the moment a deep recursion has answered `Trapped` to the answer of the next call: \
         that call builds a fresh instance from the `InstancePre`, reloads every script the sandbox \
         holds (QuickJS comes booted in the snapshot), then runs. Only the calls in flight in the trapped \
         instance failed; the others queue meanwhile."
    );
    let cold = r
        .measures
        .iter()
        .find(|x| x.id == crate::measures::COLD_API.id());
    if let Some(cold) = cold {
        let _ = writeln!(
            s,
            "\nA cold start, for comparison (`{}`{}: a fresh sandbox, one script loaded, the first \
             call): {}.",
            cold.id,
            if cold.this_run {
                ""
            } else {
                ", an earlier run"
            },
            ns(cold.median.estimate_ns),
        );
    }
    // What each script beyond the first adds, read from its bytecode and
    // compiled again: the row with the most scripts of each kind against
    // the row with the fewest.
    let fewest = r.recovery.iter().min_by_key(|x| x.scripts);
    for cached in [true, false] {
        let most = r
            .recovery
            .iter()
            .filter(|x| x.cached == cached)
            .max_by_key(|x| x.scripts);
        if let (Some(first), Some(last)) = (fewest, most)
            && last.scripts > first.scripts
        {
            let _ = writeln!(
                s,
                "\nEach script beyond the first adds about {} to the recovery, {} (`{}` against `{}`).",
                ns((last.median.estimate_ns - first.median.estimate_ns)
                    / (last.scripts - first.scripts) as f64),
                if cached {
                    "its bytecode read from the runtime's cache"
                } else {
                    "compiled from its source again"
                },
                last.id,
                first.id,
            );
        }
    }
    let _ = writeln!(s);
}

/// A duration in nanoseconds, three significant digits, in a fitting unit.
pub fn ns(value: f64) -> String {
    let (scaled, unit) = match value.abs() {
        v if v < 1e3 => (value, "ns"),
        v if v < 1e6 => (value / 1e3, "µs"),
        v if v < 1e9 => (value / 1e6, "ms"),
        _ => (value / 1e9, "s"),
    };
    format!("{} {unit}", sig3(scaled))
}

fn opt_ns(value: Option<f64>) -> String {
    value.map_or("–".into(), ns)
}

fn times(value: f64) -> String {
    format!("{}×", sig3(value))
}

/// Three significant digits (fewer decimals for larger numbers).
pub(super) fn sig3(value: f64) -> String {
    match value.abs() {
        v if v >= 100.0 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.1}"),
        _ => format!("{value:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations() {
        assert_eq!(ns(152.4), "152 ns");
        assert_eq!(ns(3_120.0), "3.12 µs");
        assert_eq!(ns(13_234_000.0), "13.2 ms");
        assert_eq!(ns(2_500_000_000.0), "2.50 s");
    }

    #[test]
    fn recovery_says_what_a_script_adds_read_and_compiled_apart() {
        use crate::machine::Machine;
        use crate::report::{Interval, RecoveryResult, build};
        let mut report = build(
            &std::env::temp_dir().join(format!("marionette-bench-md-{}", std::process::id())),
            std::time::SystemTime::UNIX_EPOCH,
            Machine::now(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        let row = |id: &str, scripts, cached, ns: f64| RecoveryResult {
            id: id.into(),
            scripts,
            cached,
            median: Interval {
                estimate_ns: ns,
                lower_ns: ns,
                upper_ns: ns,
                confidence_level: 0.95,
            },
            this_run: true,
        };
        report.recovery = vec![
            row("recovery/one_script", 1, true, 1e6),
            row("recovery/ten_scripts", 10, true, 10e6),
            row("recovery/ten_scripts_uncached", 10, false, 28e6),
        ];
        let md = markdown(&report);
        assert!(
            md.contains("adds about 1.00 ms to the recovery, its bytecode read from the runtime's cache (`recovery/ten_scripts` against `recovery/one_script`)"),
            "{md}"
        );
        assert!(
            md.contains("adds about 3.00 ms to the recovery, compiled from its source again (`recovery/ten_scripts_uncached` against `recovery/one_script`)"),
            "{md}"
        );
    }
}

//! What record and replay cost (`cost/*`), against the targets of the
//! cassette work: recording adds at most 5% to the two hundred concurrent
//! sessions of `sessions/two_hundred`, and a strict replay of a cassette of
//! two hundred inferences takes under a second.
//!
//! - `cost/sessions_plain`, `cost/sessions_deterministic`,
//!   `cost/sessions_recording`: the two hundred sessions at once, each
//!   iteration in a fresh sandbox (made, loaded and shut down untimed), with
//!   no recorder, with the seeded clock and randomness a recording runs
//!   under but no recorder, and recording into a fresh [`Recorder`]. Run in
//!   the same group, one after the other, so that their ratio compares one
//!   state of the machine.
//! - `cost/replay_200_inferences`: [`cassette::replay`] of a cassette
//!   recorded in the bench's setup ([`record_agent_cassette`]): an agent
//!   script that runs [`INFERENCES`]` / 2` sessions in a row, each with a
//!   host engine that streams, asks for a tool, then answers.
//!
//! [`cassette::replay`]: marionette::cassette::replay()

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{Context as _, ensure};
use marionette::cassette::{Cassette, Recorder};
use marionette::model::{Block, BlockKind, Turn};
use marionette::session::{Engine, EngineRegistry, InferenceContext, async_trait};
use marionette::{HostServices, Policy, Runtime, Sandbox, SandboxOptions, TaskOptions};
use serde::Serialize;
use serde_json::{Map, Value as Json, json};

use crate::measures::{Measure, Path};
use crate::report::{Interval, MeasureResult, Ratio};

/// The two hundred sessions, no recorder.
pub const SESSIONS_PLAIN: Measure = Measure {
    group: "cost",
    function: "sessions_plain",
    path: Path::SandboxApi,
    meaning: "as `sessions/two_hundred` (200 `oneOfMany(i)` at once, 20 ms model), in a fresh \
              sandbox each iteration with `Policy::default()`; making the sandbox, loading \
              `sessions.js` and shutting it down are not timed. The baseline of `cost/*`",
};

/// The two hundred sessions under a seeded clock and randomness.
pub const SESSIONS_DETERMINISTIC: Measure = Measure {
    group: "cost",
    function: "sessions_deterministic",
    path: Path::SandboxApi,
    meaning: "as `cost/sessions_plain`, with `Policy::determinism` set (what a recording sandbox \
              runs under: `Date`, `performance.now`, `Math.random` and `crypto` from the host's \
              seeded generator and virtual clock) and no recorder: what determinism alone costs",
};

/// The two hundred sessions, recorded.
pub const SESSIONS_RECORDING: Measure = Measure {
    group: "cost",
    function: "sessions_recording",
    path: Path::SandboxApi,
    meaning: "as `cost/sessions_plain`, the sandbox recording into a fresh `Recorder` \
              (`SandboxOptions::record`): every entry into the guest and the effects it returned \
              kept in memory, under the determinism a recording settles. Writing the cassette out \
              (`Recorder::finish`, `Cassette::write`) is not timed",
};

/// A strict replay of two hundred inferences.
pub const REPLAY: Measure = Measure {
    group: "cost",
    function: "replay_200_inferences",
    path: Path::SandboxApi,
    meaning: "`cassette::replay(runtime, &cassette, Mode::Strict)` of a cassette recorded in the \
              bench's setup: `agent.js` runs 100 sessions in a row, each with a host engine that \
              streams a chunk and asks for the `add` tool (a JavaScript tool), then answers with its \
              result: 200 inferences, 100 tool calls. A fresh sandbox, every recorded entry made \
              again into it and every effect compared with the recorded one; nothing performed",
};

/// The `cost/*` measures, in the order they run.
pub const MEASURES: [Measure; 4] = [
    SESSIONS_PLAIN,
    SESSIONS_DETERMINISTIC,
    SESSIONS_RECORDING,
    REPLAY,
];

/// Recording may make the sessions at most this much slower.
pub const RECORDING_TARGET: f64 = 1.05;

/// A replay of [`INFERENCES`] inferences must take less, in nanoseconds.
pub const REPLAY_TARGET_NS: f64 = 1e9;

/// Inferences in the replayed cassette.
pub const INFERENCES: usize = 200;

/// The replayed script's name.
pub const AGENT_SCRIPT: &str = "agent.js";

/// The replayed script: `main({ rounds })` runs `rounds` sessions one
/// after the other, each asking the host engine, which asks for `add`,
/// then answers; it returns the answers' sum.
pub const AGENT_JS: &str = r#"
import { createSession, engines, tools, turns } from "marionette";

const registry = tools.createRegistry().register({
  name: "add",
  description: "adds two numbers",
  parameters: { type: "object", properties: { a: { type: "number" }, b: { type: "number" } }, required: ["a", "b"] },
  handler: ({ a, b }) => a + b,
});

export default async function main({ rounds }) {
  let total = 0;
  for (let i = 0; i < rounds; i++) {
    const session = createSession({ engine: engines.host(), tools: registry });
    const out = await session.run(turns.newTurn({ blocks: [turns.newUserBlock(`add ${i} and 1000`)] }));
    const text = out.blocks.filter((b) => b.kind === "llm_text").at(-1).payload.text;
    total += Number(text.split(" ").at(-1));
  }
  return { rounds, total };
}
"#;

/// What `main({ rounds })` answers.
pub fn agent_result(rounds: usize) -> Json {
    let total: usize = (0..rounds).map(|i| i + 1000).sum();
    json!({ "rounds": rounds, "total": total })
}

/// The host engine of [`AGENT_JS`]: asked `add I and 1000`, it streams a
/// chunk and asks for `add {a: I, b: 1000}`; given the tool's result, it
/// streams a chunk and answers `the sum is R`.
struct Adder;

fn block(kind: BlockKind, payload: Json) -> Block {
    let Json::Object(payload) = payload else {
        unreachable!("payloads are objects")
    };
    Block {
        id: String::new(),
        kind,
        role: Some("assistant".into()),
        payload,
        metadata: Map::new(),
    }
}

#[async_trait]
impl Engine for Adder {
    fn name(&self) -> &str {
        "adder"
    }

    async fn infer(&self, mut turn: Turn, ctx: InferenceContext) -> marionette::Result<Turn> {
        let result = turn
            .blocks
            .iter()
            .find(|b| b.kind == BlockKind::ToolUse)
            .and_then(|b| b.payload.get("result").cloned());
        if let Some(result) = result {
            let text = format!("the sum is {result}");
            ctx.events.partial(text.clone(), text.clone());
            turn.blocks
                .push(block(BlockKind::LlmText, json!({ "text": text })));
        } else {
            let asked = turn
                .blocks
                .iter()
                .find(|b| b.kind == BlockKind::User)
                .and_then(|b| b.payload.get("text")?.as_str())
                .unwrap_or_default();
            let i: u64 = asked
                .split(' ')
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or_default();
            ctx.events.partial("adding", "adding");
            turn.blocks.push(block(
                BlockKind::ToolCall,
                json!({ "id": "c1", "name": "add", "args": { "a": i, "b": 1000 } }),
            ));
        }
        Ok(turn)
    }
}

fn agent_services() -> anyhow::Result<HostServices> {
    let engines = EngineRegistry::new()
        .register("adder", Arc::new(Adder))
        .set_default("adder")?;
    Ok(HostServices {
        engines,
        ..HostServices::default()
    })
}

/// Records [`AGENT_JS`]'s run of [`INFERENCES`] inferences, checks its
/// answer, and returns its cassette.
pub async fn record_agent_cassette(runtime: Arc<Runtime>) -> anyhow::Result<Cassette> {
    let recorder = Recorder::new();
    let sandbox = Sandbox::with_options(
        runtime,
        Policy::default(),
        agent_services()?,
        SandboxOptions::record(recorder.clone()),
    )
    .await?;
    sandbox.load(AGENT_SCRIPT, AGENT_JS).await?;
    let rounds = INFERENCES / 2;
    let answer = sandbox
        .run_main(
            AGENT_SCRIPT,
            &json!({ "rounds": rounds }),
            TaskOptions::default(),
        )
        .await
        .context("recording agent.js")?;
    sandbox.shutdown().await;
    ensure!(answer == agent_result(rounds), "agent.js answered {answer}");
    let cassette = recorder.finish();
    let inferences = inferences(&cassette)?;
    ensure!(
        inferences == INFERENCES,
        "the cassette holds {inferences} inferences, not {INFERENCES}"
    );
    Ok(cassette)
}

/// The inferences a cassette's run asked for, counted in its file form.
pub fn inferences(cassette: &Cassette) -> anyhow::Result<usize> {
    let mut bytes = Vec::new();
    cassette.write(&mut bytes)?;
    Ok(String::from_utf8(bytes)?
        .matches(r#""what":{"Infer""#)
        .count())
}

/// The CPU time of every thread of the process so far, in nanoseconds
/// (`/proc/self/task/*/schedstat`, Linux); `None` where it cannot be read.
/// On a shared machine a run's CPU time moves far less than its wall time.
pub fn process_cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread that ended meanwhile: its time is not counted.
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// A run of the two hundred sessions: its wall time and the process's CPU
/// time during it, in nanoseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Run {
    /// Wall time.
    pub wall_ns: f64,
    /// CPU time of every thread, when it could be read.
    pub cpu_ns: Option<f64>,
}

/// The median, least and greatest of some values.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The least.
    pub min: f64,
    /// The greatest.
    pub max: f64,
}

impl Spread {
    /// Of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// Runs without and with a recorder, in pairs made one right after the
/// other (in alternating order): each pair's ratio compares one state of
/// the machine, where criterion's rows, seconds apart, may not.
#[derive(Debug, Clone, Serialize)]
pub struct Paired {
    /// The pairs, `(plain, recording)`.
    pub pairs: Vec<(Run, Run)>,
    /// Each pair's `recording / plain` wall time.
    pub wall_ratio: Option<Spread>,
    /// Each pair's `recording / plain` CPU time.
    pub cpu_ratio: Option<Spread>,
    /// The plain runs' wall time.
    pub plain_wall_ns: Option<Spread>,
    /// The recording runs' wall time.
    pub recording_wall_ns: Option<Spread>,
}

impl Paired {
    /// The figures of `pairs`.
    pub fn new(pairs: Vec<(Run, Run)>) -> Paired {
        let wall: Vec<f64> = pairs.iter().map(|(p, r)| r.wall_ns / p.wall_ns).collect();
        let cpu: Vec<f64> = pairs
            .iter()
            .filter_map(|(p, r)| Some(r.cpu_ns? / p.cpu_ns?))
            .collect();
        let plain: Vec<f64> = pairs.iter().map(|(p, _)| p.wall_ns).collect();
        let recording: Vec<f64> = pairs.iter().map(|(_, r)| r.wall_ns).collect();
        Paired {
            wall_ratio: Spread::of(&wall),
            cpu_ratio: Spread::of(&cpu),
            plain_wall_ns: Spread::of(&plain),
            recording_wall_ns: Spread::of(&recording),
            pairs,
        }
    }
}

/// The `cost/*` rows of the report, against their targets.
#[derive(Debug, Clone, Serialize)]
pub struct CostResult {
    /// `cost/sessions_plain`, median.
    pub plain: Option<Interval>,
    /// `cost/sessions_deterministic`, median.
    pub deterministic: Option<Interval>,
    /// `cost/sessions_recording`, median.
    pub recording: Option<Interval>,
    /// `sessions_recording/sessions_plain`.
    pub recording_ratio: Option<Ratio>,
    /// `sessions_deterministic/sessions_plain`.
    pub deterministic_ratio: Option<Ratio>,
    /// [`RECORDING_TARGET`].
    pub recording_target: f64,
    /// `cost/replay_200_inferences`, median.
    pub replay: Option<Interval>,
    /// [`REPLAY_TARGET_NS`].
    pub replay_target_ns: f64,
    /// Whether a figure is left over from an earlier run.
    pub mixes_runs: bool,
    /// The paired runs of this run, when they ran.
    pub paired: Option<Paired>,
}

/// Whether a figure meets its target, from its interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The whole interval is within the target.
    Met,
    /// The estimate is within the target, not the whole interval.
    MetWithinNoise,
    /// The estimate is beyond the target, not the whole interval.
    MissedWithinNoise,
    /// The whole interval is beyond the target.
    Missed,
}

impl Verdict {
    /// `estimate`, `lower`, `upper` against a target that is a maximum.
    pub fn of(estimate: f64, lower: f64, upper: f64, max: f64) -> Verdict {
        match (estimate <= max, upper <= max, lower > max) {
            (true, true, _) => Verdict::Met,
            (true, false, _) => Verdict::MetWithinNoise,
            (false, _, true) => Verdict::Missed,
            (false, _, false) => Verdict::MissedWithinNoise,
        }
    }

    fn words(self) -> &'static str {
        match self {
            Verdict::Met => "**met**",
            Verdict::MetWithinNoise => "met (the interval reaches past the target)",
            Verdict::MissedWithinNoise => {
                "**not met** (the interval reaches back within the target)"
            }
            Verdict::Missed => "**not met**",
        }
    }
}

/// The cost rows from the measures, when one of them has figures.
pub fn build(measures: &[MeasureResult]) -> Option<CostResult> {
    let find = |m: Measure| measures.iter().find(|r| r.id == m.id());
    let found: Vec<&MeasureResult> = MEASURES.iter().filter_map(|m| find(*m)).collect();
    if found.is_empty() {
        return None;
    }
    let median = |m: Measure| find(m).map(|r| r.median);
    let ratio = |a: Measure, b: Measure| {
        let (a, b) = (median(a)?, median(b)?);
        Some(Ratio {
            name: "".into(),
            value: a.estimate_ns / b.estimate_ns,
            lower: a.lower_ns / b.upper_ns,
            upper: a.upper_ns / b.lower_ns,
        })
    };
    let named = |r: Option<Ratio>, name: &str| {
        r.map(|r| Ratio {
            name: name.into(),
            ..r
        })
    };
    Some(CostResult {
        plain: median(SESSIONS_PLAIN),
        deterministic: median(SESSIONS_DETERMINISTIC),
        recording: median(SESSIONS_RECORDING),
        recording_ratio: named(
            ratio(SESSIONS_RECORDING, SESSIONS_PLAIN),
            "sessions_recording/sessions_plain",
        ),
        deterministic_ratio: named(
            ratio(SESSIONS_DETERMINISTIC, SESSIONS_PLAIN),
            "sessions_deterministic/sessions_plain",
        ),
        recording_target: RECORDING_TARGET,
        replay: median(REPLAY),
        replay_target_ns: REPLAY_TARGET_NS,
        mixes_runs: found.iter().any(|r| !r.this_run),
        paired: None,
    })
}

impl CostResult {
    /// Whether recording meets its target.
    pub fn recording_verdict(&self) -> Option<Verdict> {
        let r = self.recording_ratio.as_ref()?;
        Some(Verdict::of(
            r.value,
            r.lower,
            r.upper,
            self.recording_target,
        ))
    }

    /// Whether the replay meets its target.
    pub fn replay_verdict(&self) -> Option<Verdict> {
        let r = self.replay?;
        Some(Verdict::of(
            r.estimate_ns,
            r.lower_ns,
            r.upper_ns,
            self.replay_target_ns,
        ))
    }
}

/// The section of `report.md`.
pub fn markdown(s: &mut String, c: &CostResult) {
    use crate::report::ns;
    let _ = writeln!(s, "## Cost of record and replay (medians)\n");
    if c.mixes_runs {
        let _ = writeln!(
            s,
            "> Some `cost/*` figures are from an earlier run: the ratios compare two states of the machine.\n"
        );
    }
    let _ = writeln!(s, "| measure | median | against the target | target | |");
    let _ = writeln!(s, "|---|--:|--:|--:|---|");
    let interval = |i: &Option<Interval>| {
        i.map_or("–".into(), |i| {
            format!(
                "{} ({} – {})",
                ns(i.estimate_ns),
                ns(i.lower_ns),
                ns(i.upper_ns)
            )
        })
    };
    let ratio = |r: &Option<Ratio>| {
        r.as_ref().map_or("–".into(), |r| {
            format!("{:.3}× ({:.3}–{:.3})", r.value, r.lower, r.upper)
        })
    };
    let _ = writeln!(
        s,
        "| 200 sessions at once, no recorder (`{}`) | {} | | | baseline |",
        SESSIONS_PLAIN.id(),
        interval(&c.plain),
    );
    let _ = writeln!(
        s,
        "| the same, deterministic (`{}`) | {} | {} | | determinism alone |",
        SESSIONS_DETERMINISTIC.id(),
        interval(&c.deterministic),
        ratio(&c.deterministic_ratio),
    );
    let _ = writeln!(
        s,
        "| the same, recording (`{}`) | {} | {} | ≤ {:.2}× | {} |",
        SESSIONS_RECORDING.id(),
        interval(&c.recording),
        ratio(&c.recording_ratio),
        c.recording_target,
        c.recording_verdict().map_or("–", Verdict::words),
    );
    let _ = writeln!(
        s,
        "| strict replay of {INFERENCES} inferences (`{}`) | {} | {} | < {} | {} |",
        REPLAY.id(),
        interval(&c.replay),
        c.replay.map_or("–".into(), |r| format!(
            "{:.3}×",
            r.estimate_ns / c.replay_target_ns
        )),
        ns(c.replay_target_ns),
        c.replay_verdict().map_or("–", Verdict::words),
    );
    let _ = writeln!(
        s,
        "\nIntervals in brackets: the median's confidence interval; a ratio's, the range the two \
         intervals allow. Recording settles a deterministic policy, so what it adds is the \
         `deterministic` row's part plus the recorder's.\n"
    );
    if let Some(p) = &c.paired {
        let spread = |x: &Option<Spread>, f: &dyn Fn(f64) -> String| {
            x.map_or("–".into(), |x| {
                format!("{} ({} – {})", f(x.median), f(x.min), f(x.max))
            })
        };
        let times = |v: f64| format!("{v:.3}×");
        let _ = writeln!(
            s,
            "Paired runs ({} pairs, plain and recording one right after the other, in alternating \
             order; median of the pairs, least – greatest): plain {}, recording {}; recording / \
             plain: wall time {}, CPU time of the process {}. Against the target of ≤ {:.2}×: {}.\n",
            p.pairs.len(),
            spread(&p.plain_wall_ns, &ns),
            spread(&p.recording_wall_ns, &ns),
            spread(&p.wall_ratio, &times),
            spread(&p.cpu_ratio, &times),
            c.recording_target,
            p.wall_ratio.map_or("–", |r| {
                Verdict::of(r.median, r.min, r.max, c.recording_target).words()
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(m: Measure, median: f64) -> MeasureResult {
        let i = Interval {
            estimate_ns: median,
            lower_ns: median * 0.99,
            upper_ns: median * 1.01,
            confidence_level: 0.95,
        };
        MeasureResult {
            id: m.id(),
            path: m.path,
            meaning: m.meaning,
            median: i,
            mean: i,
            std_dev_ns: 0.0,
            this_run: true,
        }
    }

    #[test]
    fn verdicts_read_the_interval() {
        assert_eq!(Verdict::of(1.0, 0.9, 1.04, 1.05), Verdict::Met);
        assert_eq!(Verdict::of(1.0, 0.9, 1.1, 1.05), Verdict::MetWithinNoise);
        assert_eq!(Verdict::of(1.1, 1.0, 1.2, 1.05), Verdict::MissedWithinNoise);
        assert_eq!(Verdict::of(1.1, 1.06, 1.2, 1.05), Verdict::Missed);
    }

    #[test]
    fn the_rows_compare_recording_with_plain_and_replay_with_a_second() {
        assert!(build(&[]).is_none());
        let c = build(&[
            result(SESSIONS_PLAIN, 100e6),
            result(SESSIONS_RECORDING, 110e6),
            result(REPLAY, 0.5e9),
        ])
        .unwrap();
        let r = c.recording_ratio.as_ref().unwrap();
        assert!((r.value - 1.1).abs() < 1e-9, "{r:?}");
        assert!(r.lower < r.value && r.value < r.upper);
        assert_eq!(c.recording_verdict(), Some(Verdict::Missed));
        assert_eq!(c.replay_verdict(), Some(Verdict::Met));
        assert!(c.deterministic_ratio.is_none());
        let mut md = String::new();
        markdown(&mut md, &c);
        assert!(md.contains("1.100×"), "{md}");
        assert!(md.contains("< 1.00 s"), "{md}");
        assert!(md.contains("**not met**"), "{md}");
    }

    #[test]
    fn paired_runs_give_the_ratios_of_each_pair() {
        let run = |wall_ns, cpu_ns| Run {
            wall_ns,
            cpu_ns: Some(cpu_ns),
        };
        let p = Paired::new(vec![
            (run(100.0, 50.0), run(110.0, 52.0)),
            (run(200.0, 50.0), run(180.0, 51.0)),
            (run(100.0, 50.0), run(103.0, 50.0)),
        ]);
        let wall = p.wall_ratio.unwrap();
        assert_eq!((wall.median, wall.min, wall.max), (1.03, 0.9, 1.1));
        assert_eq!(p.cpu_ratio.unwrap().median, 1.02);
        assert_eq!(p.plain_wall_ns.unwrap().max, 200.0);
        assert!(Spread::of(&[]).is_none());
        let mut c = build(&[result(SESSIONS_PLAIN, 1.0)]).unwrap();
        c.paired = Some(p);
        let mut md = String::new();
        markdown(&mut md, &c);
        assert!(md.contains("3 pairs"), "{md}");
        assert!(md.contains("wall time 1.030× (0.900× – 1.100×)"), "{md}");
    }

    #[test]
    fn the_process_cpu_time_moves_forward() {
        let before = process_cpu_ns().expect("Linux");
        let mut x = 0u64;
        for i in 0..10_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        assert!(process_cpu_ns().unwrap() > before, "{x}");
    }

    #[test]
    fn the_agent_answers_the_sum_of_its_rounds() {
        assert_eq!(agent_result(2), json!({"rounds": 2, "total": 2001}));
    }
}

//! Record and replay from the Rust API: a run with a host engine, timers,
//! parallel tools and a session, recorded; replayed strictly (the same
//! result and events, nothing performed) and partially (the engine from
//! the cassette, timers live); a changed script is a divergence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use marionette::cassette::{
    Cassette, Mode, ReadLimits, Recorder, ReplayError, ReplayOptions, replay,
};
use marionette::model::{BlockKind, Event, Turn};
use marionette::session::{Engine, EngineRegistry, InferenceContext, async_trait};
use marionette::{
    Determinism, HostServices, Policy, Runtime, Sandbox, SandboxOptions, TaskOptions,
};
use serde_json::{Value, json};

use crate::common::{assistant_block, fixture};

/// Calls the tool `stamp` twice at once, then answers with streamed text.
struct Stamper {
    calls: Mutex<u32>,
}

#[async_trait]
impl Engine for Stamper {
    fn name(&self) -> &str {
        "stamper"
    }

    async fn infer(&self, mut turn: Turn, ctx: InferenceContext) -> marionette::Result<Turn> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls
        };
        let block = assistant_block;
        if call == 1 {
            for (id, n) in [("c1", 2), ("c2", 1)] {
                turn.blocks.push(block(
                    BlockKind::ToolCall,
                    json!({"id": id, "name": "stamp", "args": {"n": n}}),
                ));
            }
        } else {
            ctx.events
                .partial(String::from("stamped"), String::from("stamped"));
            turn.blocks
                .push(block(BlockKind::LlmText, json!({"text": "stamped"})));
        }
        Ok(turn)
    }
}

fn services() -> HostServices {
    let engines = EngineRegistry::new()
        .register(
            "stamper",
            Arc::new(Stamper {
                calls: Mutex::new(0),
            }),
        )
        .set_default("stamper")
        .unwrap();
    HostServices {
        engines,
        ..HostServices::default()
    }
}

const NAME: &str = "deterministic.js";

/// Records the fixture's main; its value, its events, the cassette.
async fn record() -> (Value, Vec<Event>, Cassette) {
    let runtime = Runtime::shared().unwrap();
    let recorder = Recorder::new();
    let sandbox = Sandbox::with_options(
        runtime,
        Policy::default(),
        services(),
        SandboxOptions::record(recorder.clone()),
    )
    .await
    .unwrap();
    sandbox.load(NAME, fixture(NAME)).await.unwrap();
    let (sink, mut events) = tokio::sync::mpsc::unbounded_channel();
    let options = TaskOptions {
        events: Some(sink),
        ..TaskOptions::default()
    };
    let value = sandbox.run_main(NAME, &json!({}), options).await.unwrap();
    sandbox.shutdown().await;
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    (value, seen, recorder.finish())
}

fn events_json(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.to_json().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_run_replays_strictly_with_the_same_result_and_events() {
    let (value, events, cassette) = record().await;
    assert_eq!(value["blocks"], 6, "{value}");
    // A recording is deterministic even when its policy said nothing.
    let determinism = cassette.header().policy.determinism.expect("settled");
    assert_eq!(value["t0"], json!(determinism.start_ms));
    assert_eq!(value["elapsed"], json!(260));

    // Through its file form.
    let mut bytes = Vec::new();
    cassette.write(&mut bytes).unwrap();
    let cassette = Cassette::read(&bytes[..], ReadLimits::default()).unwrap();
    assert_eq!(cassette.header().scripts[0].name, NAME);

    let (sink, mut received) = tokio::sync::mpsc::unbounded_channel();
    let mut options = ReplayOptions::new(Mode::Strict);
    options.events = Some(sink);
    let replayed = replay(Runtime::shared().unwrap(), &cassette, options)
        .await
        .unwrap();
    assert_eq!(replayed.entries, cassette.len());
    assert_eq!(replayed.result.unwrap().unwrap(), value);
    let mut again = Vec::new();
    while let Ok(event) = received.try_recv() {
        again.push(event);
    }
    assert_eq!(events_json(&again), events_json(&events));
    assert!(events_json(&events).iter().any(|e| e.contains("stamp {")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_replay_answers_the_model_from_the_cassette_and_runs_timers_live() {
    let (value, _, cassette) = record().await;
    // No engine at all: the answers can only come from the cassette.
    let options = ReplayOptions::new(Mode::Partial(vec!["infer".into()]));
    let replayed = replay(Runtime::shared().unwrap(), &cassette, options)
        .await
        .unwrap();
    assert_eq!(replayed.entries, 2, "two inferences answered from it");
    let result = replayed.result.unwrap().unwrap();
    for key in ["t0", "elapsed", "blocks", "uuid", "bytes"] {
        assert_eq!(result[key], value[key], "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_script_diverges_at_the_operation_it_changed() {
    let (_, _, cassette) = record().await;
    // The entry that asked for the first inference: where a changed prompt
    // shows first.
    let mut bytes = Vec::new();
    cassette.write(&mut bytes).unwrap();
    let first_infer: usize = String::from_utf8(bytes)
        .unwrap()
        .lines()
        .skip(1)
        .position(|line| line.contains(r#""what":{"Infer""#))
        .expect("an inference recorded");
    let changed = fixture(NAME).replace("stamp twice", "stamp thrice");
    for mode in [Mode::Strict, Mode::Partial(vec!["infer".into()])] {
        let mut options = ReplayOptions::new(mode.clone());
        options.sources = HashMap::from([(NAME.to_string(), changed.clone())]);
        let error = replay(Runtime::shared().unwrap(), &cassette, options)
            .await
            .unwrap_err();
        let ReplayError::Diverged(divergence) = error else {
            panic!("{mode:?}: expected a divergence, got {error}");
        };
        assert!(divergence.what.contains("infer"), "{mode:?}: {divergence}");
        assert!(divergence.diff.contains("- "), "{divergence}");
        assert!(
            divergence
                .diff
                .lines()
                .any(|l| l.starts_with("+ ") && l.contains("stamp thrice")),
            "{mode:?}: {}",
            divergence.diff
        );
        assert!(divergence.recorded.contains("stamp twice"));
        if mode == Mode::Strict {
            assert_eq!(divergence.export, "tasks.resume", "{divergence}");
            assert_eq!(divergence.entry, first_infer, "{divergence}");
        } else {
            // The first of the recorded inferences.
            assert_eq!(
                (divergence.export.as_str(), divergence.entry),
                ("infer", 0),
                "{divergence}"
            );
        }
        assert!(
            divergence.to_string().starts_with(&format!(
                "the replay diverged at entry {} (",
                divergence.entry
            )),
            "{divergence}"
        );
    }
}

/// A deterministic run's ids are drawn from `Math.random`'s generator, one
/// draw per hex digit, in the order the runtime's JavaScript once drew them
/// (`clock::uuid`): a change of the draws would change every recorded id
/// and every draw after them. Two sandboxes seeded alike: one makes a
/// block's id, the other spells the old JavaScript's id from `Math.random`.
#[tokio::test]
async fn a_seeded_runs_ids_are_the_draws_math_random_makes() {
    const SCRIPT: &str = r#"
        import { turns } from "marionette";
        export const ids = () => [turns.newUserBlock("x").id, turns.newUserBlock("y").id];
        const digit = (i) => {
          if (i === 8 || i === 13 || i === 18 || i === 23) return "-";
          if (i === 14) return "4";
          const d = Math.floor(Math.random() * 16);
          return "0123456789abcdef"[i === 19 ? (d & 0x3) | 0x8 : d];
        };
        const spelled = () => { let s = ""; for (let i = 0; i < 36; i++) s += digit(i); return s; };
        export const spelledIds = () => [spelled(), spelled()];
    "#;
    let mut answers = Vec::new();
    for function in ["ids", "spelledIds"] {
        let policy = Policy {
            determinism: Some(Determinism::seeded(42)),
            ..Policy::default()
        };
        let sb = Sandbox::new(policy).await.unwrap();
        sb.load("ids.js", SCRIPT).await.unwrap();
        answers.push(
            sb.call("ids.js", function, &[], TaskOptions::default())
                .await
                .unwrap(),
        );
        sb.shutdown().await;
    }
    assert_eq!(answers[0], answers[1]);
    let first = answers[0][0].as_str().unwrap();
    assert_eq!(first.len(), 36, "{first}");
    assert_ne!(answers[0][0], answers[0][1]);
}

//! Deterministic runs, driven straight through the entries (no tokio, no
//! owner): the same seed and the same answers give the same effects.

use std::collections::VecDeque;
use std::io::Read as _;

use serde_json::{Value as Json, json};

use super::Call;
use crate::bindings::marionette::runtime::types as wit;
use crate::policy::{Determinism, Policy};
use crate::sandbox::{Provides, Runtime, vm_config};

const SCRIPT: &str = include_str!("../../../tests/fixtures/deterministic.js");

/// An answer the driver gives a request: the engine calls the tool twice
/// in parallel, then answers with text; sleeps and tools resolve.
fn answer(what: &wit::HostOp, inferences: &mut u32) -> (Vec<String>, wit::Outcome) {
    match what {
        wit::HostOp::Infer(request) => {
            *inferences += 1;
            let mut turn = request.input.clone();
            let block = |id: &str, kind, payload: Json| wit::Block {
                id: id.into(),
                kind,
                role: Some("assistant".into()),
                payload: payload.to_string(),
                metadata: "{}".into(),
            };
            if *inferences == 1 {
                for (id, n) in [("c1", 2), ("c2", 1)] {
                    turn.blocks.push(block(
                        id,
                        wit::BlockKind::ToolCall,
                        json!({"id": id, "name": "stamp", "args": {"n": n}}),
                    ));
                }
                (Vec::new(), Ok(wit::Value::Turn(turn)))
            } else {
                turn.blocks.push(block(
                    "t",
                    wit::BlockKind::LlmText,
                    json!({"text": "stamped"}),
                ));
                let partial =
                    json!({"type": "partial", "delta": "stamped", "completion": "stamped"});
                (vec![partial.to_string()], Ok(wit::Value::Turn(turn)))
            }
        }
        _ => (Vec::new(), Ok(wit::Value::Json("null".into()))),
    }
}

/// Runs the fixture's `main` to its end, answering requests first come,
/// first served; every entry's effects, as JSON, and main's value.
fn drive(determinism: Option<Determinism>) -> (Vec<String>, Json) {
    let runtime = Runtime::shared().expect("runtime");
    let policy = Policy {
        determinism,
        ..Policy::default()
    };
    let provides = Provides {
        engines: vec![String::new()],
        ..Provides::default()
    };
    let (mut store, b) = runtime
        .instantiate_with(&policy, &vm_config(&policy, &provides))
        .expect("instance");
    let mut log = Vec::new();
    let mut queue = VecDeque::new();
    let mut value = Json::Null;
    let mut enter = |call: Call, task: u64, queue: &mut VecDeque<wit::Request>| {
        let effects = call.invoke(&mut store, &b, task).expect("no trap");
        log.push(serde_json::to_string(&effects).unwrap());
        for effect in effects {
            match effect {
                wit::Effect::Request(r) => queue.push_back(r),
                wit::Effect::Done(d) if d.task == 2 => match d.outcome {
                    Ok(wit::Value::Json(text)) => value = serde_json::from_str(&text).unwrap(),
                    other => panic!("main failed: {other:?}"),
                },
                _ => {}
            }
        }
    };
    let load = Call::Load {
        name: "deterministic.js".into(),
        source: SCRIPT.into(),
    };
    enter(load, 1, &mut queue);
    let main = Call::RunMain {
        name: "deterministic.js".into(),
        input: "{}".into(),
    };
    enter(main, 2, &mut queue);
    let mut inferences = 0;
    while let Some(request) = queue.pop_front() {
        let (notifies, outcome) = answer(&request.what, &mut inferences);
        if !notifies.is_empty() {
            let notify = Call::Notify {
                op: request.op,
                events: notifies,
            };
            enter(notify, request.task, &mut queue);
        }
        let resume = Call::Resume {
            op: request.op,
            outcome,
        };
        enter(resume, request.task, &mut queue);
    }
    assert_eq!(inferences, 2, "the session ran its tool loop");
    (log, value)
}

#[test]
fn the_same_seed_and_answers_give_the_same_effects_byte_for_byte() {
    let (first, value) = drive(Some(Determinism::seeded(7)));
    let (second, _) = drive(Some(Determinism::seeded(7)));
    assert_eq!(first, second);

    // The virtual clock: it starts where the seed says and moves only by
    // the timers, to when each was due: 250 ms, then the later of the two
    // parallel tools' sleeps (10 ms; it never goes back for the 5 ms one).
    assert_eq!(value["t0"], json!(Determinism::EPOCH_MS));
    assert_eq!(value["elapsed"], json!(260));
    assert_eq!(value["performance"], json!(260));
    assert_eq!(value["date"], json!("2025-01-01T00:00:00.260Z"));
    assert!(
        value["called"].as_str().unwrap().contains("2025"),
        "{value}"
    );
    // user, two tool calls, their two results, the text.
    assert_eq!(value["blocks"], json!(6), "{value}");

    // Another seed draws other numbers, ids and bytes.
    let (other, other_value) = drive(Some(Determinism::seeded(8)));
    assert_ne!(first, other);
    for key in ["random", "bytes", "uuid"] {
        assert_ne!(value[key], other_value[key], "{key}");
    }
    assert_eq!(value["elapsed"], other_value["elapsed"]);
}

#[test]
fn without_a_seed_time_and_randomness_are_the_machines() {
    let (first, value) = drive(None);
    let (second, again) = drive(None);
    assert_ne!(first, second);
    assert_ne!(value["uuid"], again["uuid"]);
    // The machine's clock: after 2025, and no virtual 260 ms of sleeping
    // (the driver answered the timers at once).
    assert!(value["t0"].as_f64().unwrap() > Determinism::EPOCH_MS as f64);
    assert!(value["elapsed"].as_f64().unwrap() < 250.0, "{value}");
}

/// A small cassette: a `configure` and a `load`, as a recording makes them.
fn small_cassette() -> super::Cassette {
    let recorder = super::Recorder::new();
    let policy = Policy {
        determinism: Some(Determinism::seeded(1)),
        ..Policy::default()
    };
    recorder.start(&policy);
    let config = vm_config(&policy, &Provides::default());
    recorder.entry(0, &Call::Configure(config), Ok(&[]));
    let load = Call::Load {
        name: "a.js".into(),
        source: "export default () => 1;".into(),
    };
    let done = wit::Effect::Done(wit::TaskDone {
        task: 1,
        outcome: Ok(wit::Value::Json("null".into())),
    });
    recorder.entry(1, &load, Ok(&[done]));
    recorder.finish()
}

fn bytes_of(cassette: &super::Cassette) -> Vec<u8> {
    let mut bytes = Vec::new();
    cassette.write(&mut bytes).unwrap();
    bytes
}

fn read(bytes: &[u8], limits: super::ReadLimits) -> Result<super::Cassette, super::CassetteError> {
    super::Cassette::read(bytes, limits)
}

#[test]
fn a_cassette_reads_back_what_was_written() {
    let cassette = small_cassette();
    let again = read(&bytes_of(&cassette), super::ReadLimits::default()).unwrap();
    assert_eq!(again.header(), cassette.header());
    assert_eq!(again.len(), 2);
    assert_eq!(again.header().scripts[0].name, "a.js");
    assert_eq!(
        again.header().scripts[0].sha256,
        super::sha256(b"export default () => 1;")
    );
}

#[test]
fn an_enormous_cassette_is_refused_before_it_is_read_whole() {
    let bytes = bytes_of(&small_cassette());
    let limits = super::ReadLimits {
        max_bytes: 200,
        ..super::ReadLimits::default()
    };
    assert!(matches!(
        read(&bytes, limits),
        Err(super::CassetteError::TooLarge { .. })
    ));
    // One endless line: never held past the limit.
    let endless = std::io::repeat(b'x').take(u64::MAX);
    let error = super::Cassette::read(std::io::BufReader::new(endless), limits).unwrap_err();
    assert!(
        matches!(error, super::CassetteError::TooLarge { .. }),
        "{error}"
    );
    let limits = super::ReadLimits {
        max_entries: 1,
        ..super::ReadLimits::default()
    };
    assert!(matches!(
        read(&bytes, limits),
        Err(super::CassetteError::TooLarge { .. })
    ));
}

#[test]
fn deep_nesting_and_garbage_are_malformed_lines_not_crashes() {
    let bytes = bytes_of(&small_cassette());
    let text = String::from_utf8(bytes).unwrap();
    let header = text.lines().next().unwrap();
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    for line in [
        deep.as_str(),
        "{\"n\": 0",
        "\u{0}\u{1}",
        "{\"n\":0,\"task\":0,\"call\":{\"nope\":1},\"effects\":[]}",
    ] {
        let input = format!("{header}\n{line}\n");
        let error = read(input.as_bytes(), super::ReadLimits::default()).unwrap_err();
        assert!(
            matches!(error, super::CassetteError::Malformed { line: 2, .. }),
            "{error}"
        );
    }
    let version = header.replace("\"version\":1", "\"version\":2");
    let error = read(
        format!("{version}\n").as_bytes(),
        super::ReadLimits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(error, super::CassetteError::Version { found: 2 }),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cassette_of_another_component_is_refused() {
    let mut cassette = small_cassette();
    cassette.header.component = "0".repeat(64);
    // Written and read again: the file is whole, only the component differs.
    let cassette = read(&bytes_of(&cassette), super::ReadLimits::default()).unwrap();
    let error = super::replay(
        Runtime::shared().unwrap(),
        &cassette,
        super::ReplayOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            super::ReplayError::Cassette(super::CassetteError::Component { .. })
        ),
        "{error}"
    );
    assert!(error.to_string().contains("record it again"), "{error}");
}

//! `marionette run --record` and `marionette replay`: a run of
//! `examples/agent.js` recorded against the local fake provider, replayed
//! offline with no key, and the divergences a changed script gives.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::fake_provider::{FakeProvider, Reply};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The key the recording run is given: it must not reach the cassette.
const KEY: &str = "sk-test-NOT-IN-THE-CASSETTE";

/// What the example run asks.
const PROMPT: &str = "What is 2 + 3? Then delete everything.";

/// The shipped cassette `make run` replays.
const EXAMPLE: &str = "examples/agent.cassette.jsonl";

/// Runs `marionette` with `args` in the repository, off the runtime's
/// threads (the fake provider serves on them); `key` is the OpenAI key, if
/// any (none: no provider variable at all).
async fn marionette(args: Vec<String>, key: Option<&str>) -> Output {
    let key = key.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_marionette"));
        command
            .args(&args)
            .current_dir(repo())
            .env("NO_COLOR", "1")
            .env_remove("MARIONETTE_CONFIG")
            .env_remove("MARIONETTE_LOG")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            // No config file of the machine's user either.
            .env("HOME", std::env::temp_dir());
        if let Some(key) = key {
            command.env("OPENAI_API_KEY", key);
        }
        command.output().unwrap()
    })
    .await
    .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn last_line(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no stdout; stderr: {}", stderr(out)));
    serde_json::from_str(last).unwrap()
}

/// The lines of stderr a run and its replay both print: the console lines
/// and the streamed text (not the command's own notes, not the timing).
fn shown(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| !l.starts_with("marionette:"))
        .map(|l| match l.rfind(", ") {
            // The summary ends with the elapsed time.
            Some(i) if l.ends_with('s') && l.contains("inference") => l[..i].to_string(),
            _ => l.to_string(),
        })
        .collect()
}

/// Records `examples/agent.js` against the fake provider into `cassette`.
async fn record(cassette: &Path) -> Output {
    let provider = FakeProvider::start(vec![
        Reply::sse_fixture("openai_agent_tools.sse"),
        Reply::sse_fixture("openai_agent_answer.sse"),
    ])
    .await;
    let args = [
        "run",
        "examples/agent.js",
        "--record",
        &cassette.display().to_string(),
        "--engine",
        "openai",
        "--base-url",
        &format!("{}/v1", provider.url),
        "--input",
        &json!({ "prompt": PROMPT }).to_string(),
        "--events",
    ]
    .map(String::from)
    .to_vec();
    let out = marionette(args, Some(KEY)).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(provider.requests().len(), 2);
    out
}

fn replay_args(cassette: &Path, more: &[&str]) -> Vec<String> {
    let mut args = vec!["replay".to_string(), cassette.display().to_string()];
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_agent_run_replays_offline_with_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let cassette = dir.path().join("agent.jsonl");
    let live = record(&cassette).await;
    let result = last_line(&live);
    assert_eq!(
        result["answer"],
        "2 + 3 is 5. I did not delete everything: that tool is not allowed."
    );

    // Nothing secret: the key and the provider's address stay out.
    let text = std::fs::read_to_string(&cassette).unwrap();
    assert!(!text.contains(KEY));
    assert!(!text.to_lowercase().contains("authorization"));
    assert!(!text.contains("127.0.0.1"));

    // No key, no provider: the same result, console lines and stream.
    let replayed = marionette(replay_args(&cassette, &[]), None).await;
    assert_eq!(
        replayed.status.code(),
        Some(0),
        "stderr: {}",
        stderr(&replayed)
    );
    assert_eq!(last_line(&replayed), result);
    assert_eq!(shown(&replayed), shown(&live));
    let notes = stderr(&replayed);
    assert!(notes.contains("REPLAY of"), "{notes}");
    assert!(
        notes.contains("the replay matched the recording"),
        "{notes}"
    );
    let console = shown(&live).join("\n");
    assert!(console.contains("-> add({\"a\":2,\"b\":3})"), "{console}");
    assert!(
        console.contains("delete_everything is not allowed"),
        "{console}"
    );
    assert!(console.contains("2 inferences, 2 tool calls"), "{console}");
    assert!(console.contains("299 tokens in, 58 out"), "{console}");

    // With --events, as the live run had: every event, byte for byte.
    let events = marionette(replay_args(&cassette, &["--events"]), None).await;
    assert_eq!(
        String::from_utf8_lossy(&events.stdout),
        String::from_utf8_lossy(&live.stdout)
    );
    assert!(String::from_utf8_lossy(&events.stdout).contains(r#""type":"partial""#));

    // The partial mode replays the model and runs the rest live.
    let partial = marionette(replay_args(&cassette, &["--partial"]), None).await;
    assert_eq!(
        partial.status.code(),
        Some(0),
        "stderr: {}",
        stderr(&partial)
    );
    assert_eq!(last_line(&partial), result);
    assert!(stderr(&partial).contains("infer from the recording, the rest live"));
}

/// A copy of `examples/agent.js` with one replacement, in `dir`.
fn changed_agent(dir: &Path, from: &str, to: &str) -> PathBuf {
    let source = std::fs::read_to_string(repo().join("examples/agent.js")).unwrap();
    assert!(source.contains(from), "{from}");
    let path = dir.join("agent-changed.js");
    std::fs::write(&path, source.replace(from, to)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_prompt_or_tool_is_a_divergence_naming_the_operation() {
    let dir = tempfile::tempdir().unwrap();
    let cassette = dir.path().join("agent.jsonl");
    record(&cassette).await;

    // Each change, and the operation each mode names: strictly, the first
    // request that differs (the system prompt travels in the host
    // middleware's options); partially (the model replayed, the
    // middleware live), the inference it feeds.
    let cases = [
        (
            "You are a careful assistant.",
            "You are a careless assistant.",
            ["middleware", "infer"],
        ),
        // A tool's definition, as the model is offered it.
        (
            "Adds two numbers.",
            "Adds two integers.",
            ["infer", "infer"],
        ),
    ];
    for (from, to, names) in cases {
        let script = changed_agent(dir.path(), from, to);
        let script = script.display().to_string();
        for (mode, name) in [vec![], vec!["--partial"]].into_iter().zip(names) {
            let mut more = vec!["--script", script.as_str()];
            more.extend(mode.iter().copied());
            let out = marionette(replay_args(&cassette, &more), None).await;
            let text = stderr(&out);
            assert_eq!(out.status.code(), Some(5), "{mode:?}: {text}");
            assert!(text.contains("changed since the recording"), "{text}");
            assert!(text.contains("the replay diverged at entry"), "{text}");
            assert!(
                text.contains(&format!("request for {name} (op"))
                    || text.contains(&format!("request of {name} operation")),
                "{mode:?}: the divergence names the operation {name}: {text}"
            );
            // The diff: what was recorded, what was asked.
            let to_word = to.split(' ').nth(1).unwrap();
            assert!(
                text.lines()
                    .any(|l| l.starts_with("+ ") && l.contains(to_word)),
                "{mode:?}: {text}"
            );
            assert!(text.lines().any(|l| l.starts_with("- ")), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_cassettes_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cassette = dir.path().join("agent.jsonl");
    record(&cassette).await;
    let text = std::fs::read_to_string(&cassette).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    let truncated = lines[..lines.len() / 2].join("\n") + "\n";
    let cut_mid_line = &text[..text.len() / 2];
    let edited = text.replacen("\"a\\\":2", "\"a\\\":7", 1);
    assert_ne!(edited, text, "the edit applies");
    let not_one = "{\"hello\": \"world\"}\n".to_string();
    let cases = [
        ("truncated", truncated, "cassette: truncated"),
        ("cut", cut_mid_line.to_string(), "cassette: truncated"),
        ("edited", edited, "cassette: edited"),
        ("not-one", not_one, "not a marionette cassette"),
        ("empty", String::new(), "not a marionette cassette"),
    ];
    for (name, content, says) in cases {
        let path = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&path, content).unwrap();
        let out = marionette(replay_args(&path, &[]), None).await;
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {text}");
        assert!(text.contains(says), "{name}: {text}");
        assert!(!text.contains("panicked"), "{name}: {text}");
    }
}

/// Writes the cassette `make run` replays. Run by `make example-cassette`
/// (against the local fake provider, never a network); ignored otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes examples/agent.cassette.jsonl: make example-cassette"]
async fn record_the_example_cassette() {
    let out = record(&repo().join(EXAMPLE)).await;
    eprintln!("{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_example_replays_and_says_so() {
    let out = marionette(replay_args(Path::new(EXAMPLE), &[]), None).await;
    let text = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n(after a change of the guest: make example-cassette)"
    );
    assert!(
        text.contains("REPLAY of examples/agent.cassette.jsonl"),
        "{text}"
    );
    assert!(text.contains("-> add({\"a\":2,\"b\":3})"), "{text}");
    assert!(text.contains("delete_everything is not allowed"), "{text}");
    assert!(text.contains("tokens in"), "{text}");
    assert_eq!(
        last_line(&out)["answer"],
        "2 + 3 is 5. I did not delete everything: that tool is not allowed."
    );
}

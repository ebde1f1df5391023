//! The scripts in `examples/`, run through the real binary against the
//! local fake provider.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::fake_provider::{FakeProvider, Reply};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `marionette run` with `args` and an OpenAI key, off the runtime's
/// threads (the fake provider serves on them).
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_marionette"))
            .arg("run")
            .args(&args)
            .current_dir(repo())
            .env("OPENAI_API_KEY", "sk-test")
            .env("NO_COLOR", "1")
            .env_remove("MARIONETTE_CONFIG")
            .env_remove("OPENAI_BASE_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn openai(provider: &FakeProvider) -> Vec<String> {
    [
        "--engine",
        "openai",
        "--base-url",
        &format!("{}/v1", provider.url),
    ]
    .map(String::from)
    .to_vec()
}

fn result(out: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redact_keeps_personal_data_from_the_model() {
    let provider = FakeProvider::start(vec![Reply::sse_fixture("openai_text.sse")]).await;
    let mut args = vec!["examples/redact.js".to_string()];
    args.extend(openai(&provider));
    args.extend([
        "--input".into(),
        json!({"prompt": "mail ada@example.com or call +44 20 7946 0958"}).to_string(),
    ]);
    let out = result(&run(args).await);
    assert_eq!(out, json!({"answer": "Hello, world!", "redacted": 2}));
    let sent = &provider.requests()[0].body["messages"];
    let user = sent
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "user")
        .unwrap();
    assert_eq!(user["content"], "mail [email] or call [phone]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_hook_blocks_dangerous_tools_unless_approved() {
    for (approve, deleted) in [(json!([]), false), (json!(["delete_file"]), true)] {
        let provider = FakeProvider::start(vec![
            Reply::sse_fixture("openai_delete_file.sse"),
            Reply::sse_fixture("openai_text.sse"),
        ])
        .await;
        let mut args = vec!["examples/approval.js".to_string()];
        args.extend(openai(&provider));
        args.extend([
            "--input".into(),
            json!({"prompt": "clean up", "approve": approve}).to_string(),
        ]);
        let out = result(&run(args).await);
        // Results come as each call finishes: find them by call id.
        let by_id = |id: &str| {
            out["results"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["id"] == id)
                .cloned()
                .unwrap()
        };
        assert_eq!(
            by_id("call_list"),
            json!({"id": "call_list", "error": null})
        );
        let files = out["files"].as_array().unwrap();
        if deleted {
            assert_eq!(
                by_id("call_delete"),
                json!({"id": "call_delete", "error": null})
            );
            assert_eq!(files, &vec![json!("/tmp/b.txt")]);
        } else {
            let error = by_id("call_delete")["error"].as_str().unwrap().to_string();
            assert!(error.contains("delete_file needs approval"), "{error}");
            assert_eq!(files.len(), 2, "nothing was deleted");
            // The model was told, in the tool's result message.
            let second = provider.requests()[1].body["messages"].to_string();
            assert!(second.contains("needs approval"), "{second}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_picks_a_host_engine_by_prompt() {
    let provider = FakeProvider::start(vec![
        Reply::sse_fixture("openai_text.sse"),
        Reply::sse_fixture("openai_text.sse"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.toml");
    let base = format!("{}/v1", provider.url);
    std::fs::write(
        &config,
        format!(
            "default = \"fast\"\n[engines.fast]\nprovider = \"openai\"\nmodel = \"small-model\"\nbase_url = \"{base}\"\n\
             [engines.smart]\nprovider = \"openai\"\nmodel = \"large-model\"\nbase_url = \"{base}\"\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    for prompt in [
        "hi",
        "please explain the difference between a process and a thread in detail",
    ] {
        let args = [
            "examples/router.js",
            "--config",
            &config,
            "--input",
            &json!({"prompt": prompt}).to_string(),
        ]
        .map(String::from)
        .to_vec();
        let out = result(&run(args).await);
        let expect = if prompt.len() <= 40 { "fast" } else { "smart" };
        assert_eq!(out["route"], expect);
        assert_eq!(out["answer"], "Hello, world!");
    }
    let models: Vec<Value> = provider
        .requests()
        .iter()
        .map(|r| r.body["model"].clone())
        .collect();
    assert_eq!(models, [json!("small-model"), json!("large-model")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failure_reaches_the_script_as_a_named_error() {
    let provider = FakeProvider::start(vec![Reply::json_fixture(401, "openai_401.json")]).await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("catch.js");
    std::fs::write(
        &script,
        "import { engines, turns } from 'marionette';\n\
         export default async () => {\n\
           try { await engines.host().infer(turns.newTurn({ blocks: [turns.newUserBlock('hi')] })); }\n\
           catch (e) { return { name: e.name, says: e.message.includes('OPENAI_API_KEY') }; }\n\
         };",
    )
    .unwrap();
    let mut args = vec![script.display().to_string()];
    args.extend(openai(&provider));
    let out = result(&run(args).await);
    assert_eq!(out, json!({"name": "AuthenticationError", "says": true}));
}

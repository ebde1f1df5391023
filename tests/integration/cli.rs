//! The `marionette` command's contract, through the real binary.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::common::fixtures;

fn marionette(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_marionette"))
        .args(args)
        .current_dir(cwd)
        .env_remove("MARIONETTE_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("running marionette")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last line of stdout, parsed as JSON.
fn result(out: &Output) -> Value {
    let text = stdout(out);
    let last = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no stdout; stderr: {}", stderr(out)));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line {last:?} is not JSON: {e}"))
}

fn script(dir: &Path, name: &str, source: &str) -> String {
    std::fs::write(dir.join(name), source).unwrap();
    name.to_string()
}

#[test]
fn run_prints_the_result_as_the_last_line_and_console_on_stderr() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = marionette(
        &["run", "examples/hello.js", "--input", r#"{"name": "Ada"}"#],
        &repo,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        result(&out),
        json!({"greeting": "hello, Ada", "blocks": ["user", "llm_text"]})
    );
    assert!(
        stderr(&out).contains("hello, Ada"),
        "console goes to stderr: {}",
        stderr(&out)
    );
    assert!(
        !stdout(&out).contains("hello, Ada\n"),
        "console stays off stdout"
    );
}

#[test]
fn the_agent_example_runs_on_the_built_in_default_engine() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = marionette(
        &[
            "run",
            "examples/agent.js",
            "--input",
            r#"{"prompt": "mail ada@example.com"}"#,
        ],
        &repo,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    // The echo engine answers; the system prompt, the user's turn and the answer.
    assert_eq!(
        result(&out),
        json!({"answer": "READY", "blocks": 3, "turns": 2})
    );
}

#[test]
fn events_print_as_json_lines_before_the_result_and_a_summary_ends_stderr() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = marionette(&["run", "examples/agent.js", "--events"], &repo);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (result, events) = lines.split_last().unwrap();
    assert_eq!(result["answer"], "READY");
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["start", "final"]);
    assert_eq!(events[1]["text"], "READY");
    assert!(
        events
            .iter()
            .all(|e| e["sessionId"].is_string() && e["timestampMs"].is_number())
    );
    let err = stderr(&out);
    assert!(
        err.contains("engines.host() is the built-in echo engine"),
        "{err}"
    );
    let last = err.lines().last().unwrap();
    assert!(last.starts_with("1 inference, 0 tool calls, "), "{last}");
    assert!(
        !err.contains("\x1b["),
        "no colours when stderr is not a terminal"
    );
}

#[test]
fn tools_lists_each_registry_readably() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = marionette(&["tools", "examples/agent.js"], &repo);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "calculator:\n  add  Adds two numbers.\n      a: number, required\n      b: number, required\n  delete_everything  A tool the guard below never lets run.\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let name = script(dir.path(), "none.js", "export default () => 1;");
    let out = marionette(&["tools", &name], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("exports no tool registry"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_example_drives_a_provider_and_streams_its_text() {
    use crate::fake_provider::{FakeProvider, Reply};
    let provider = FakeProvider::start(vec![
        Reply::sse_fixture("openai_tool_calls.sse"),
        Reply::sse_fixture("openai_text.sse"),
    ])
    .await;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let base_url = format!("{}/v1", provider.url);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_marionette"))
            .args([
                "run",
                "examples/agent.js",
                "--engine",
                "openai",
                "--model",
                "gpt-test",
                "--base-url",
                &base_url,
            ])
            .args([
                "--input",
                r#"{"prompt": "what is 2 + 3? mail ada@example.com"}"#,
            ])
            .current_dir(&repo)
            .env("OPENAI_API_KEY", "sk-test-key")
            .env("NO_COLOR", "1")
            .env_remove("MARIONETTE_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    // The tool calls streamed in pieces were put together and run.
    assert!(err.contains(r#"-> add({"a":2,"b":3})"#), "{err}");
    assert!(err.contains("<- 5"), "{err}");
    assert!(
        err.contains("2 inferences, 2 tool calls (1 failed), "),
        "{err}"
    );
    assert!(
        err.contains(" tokens in, "),
        "the summary counts tokens: {err}"
    );
    assert!(!err.contains("built-in echo engine"), "{err}");
    assert!(!err.contains("sk-test-key"), "the key is never printed");
    let answer = result(&out)["answer"].as_str().unwrap().to_string();
    assert!(
        err.contains(&answer),
        "the answer streamed to stderr as it came: {err}"
    );
    // What the provider received: the model, the system prompt, the redacted
    // user text, the tools, and the key as a bearer token.
    let requests = provider.requests();
    assert_eq!(requests.len(), 2);
    let body = &requests[0].body;
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["stream"], true);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert!(
        messages[1]["content"].as_str().unwrap().contains("[email]"),
        "{body}"
    );
    let tools: Vec<&str> = body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["add", "delete_everything"]);
    assert!(
        requests[0]
            .headers
            .iter()
            .any(|(n, v)| n == "authorization" && v == "Bearer sk-test-key")
    );
}

#[test]
fn input_defaults_to_an_empty_object_and_the_binary_runs_from_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let name = script(dir.path(), "echo.js", "export default (input) => input;");
    let out = marionette(&["run", &name], dir.path());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(result(&out), json!({}));
    let out = marionette(&["run", &name, "--input", "[1, \"two\", null]"], dir.path());
    assert_eq!(result(&out), json!([1, "two", null]));
}

#[test]
fn a_syntax_error_prints_its_location_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let name = script(
        dir.path(),
        "broken.js",
        "export default () => {\n  return 1 +* 2;\n};\n",
    );
    let out = marionette(&["run", &name], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("broken.js:2:"), "{err}");
    assert!(err.contains("SyntaxError: unexpected token"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn a_thrown_error_prints_location_and_stack_and_exits_1() {
    let out = marionette(&["run", "errors.js"], &fixtures());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let mut lines = err.lines().skip_while(|l| l.starts_with("marionette: "));
    assert_eq!(lines.next(), Some("errors.js:3:13: TypeError: bad main"));
    assert!(err.contains("at inner (errors.js:3:13)"), "{err}");
    assert!(err.contains("at main (errors.js:"), "{err}");
    assert!(!err.contains("<marionette>"), "no runtime frames: {err}");
}

#[test]
fn a_timeout_exits_3_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let name = script(
        dir.path(),
        "slow.js",
        "export default () => new Promise((r) => setTimeout(r, 60000));",
    );
    let out = marionette(&["run", &name, "--timeout-ms", "100"], dir.path());
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("timeout"), "{}", stderr(&out));
    assert!(stderr(&out).contains("100ms"), "{}", stderr(&out));
}

#[test]
fn limits_exit_3_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let spin = script(
        dir.path(),
        "spin.js",
        "export default () => { for (;;) {} };",
    );
    let out = marionette(&["run", &spin, "--cpu-ms", "200"], dir.path());
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("limit exceeded: cpu deadline"),
        "{}",
        stderr(&out)
    );

    let hog = script(
        dir.path(),
        "hog.js",
        "export default () => { const a = []; for (;;) a.push('x'.repeat(1 << 20) + a.length); };",
    );
    let out = marionette(&["run", &hog, "--memory-mib", "48"], dir.path());
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("memory"), "{}", stderr(&out));

    let deep = script(
        dir.path(),
        "deep.js",
        "const f = (n) => f(n + 1) + 1;\nexport default () => f(0);",
    );
    let out = marionette(&["run", &deep], dir.path());
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("stack exhausted"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let name = script(dir.path(), "ok.js", "export default () => 1;");
    for (args, expect) in [
        (vec![], "Usage"),
        (vec!["run"], "SCRIPT"),
        (
            vec!["run", name.as_str(), "--input", "{not json"],
            "not valid JSON",
        ),
        (vec!["run", name.as_str(), "--frobnicate"], "--frobnicate"),
        (vec!["run", "missing.js"], "cannot read missing.js"),
        (vec!["bogus"], "bogus"),
    ] {
        let out = marionette(&args, dir.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn check_prints_the_exports_with_tool_schemas() {
    let out = marionette(&["check", "agent_parts.js"], &fixtures());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let exports: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let calculator = exports
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "calculator")
        .expect("the registry is listed");
    assert_eq!(calculator["kind"], "tool-registry");
    assert_eq!(calculator["tools"][0]["name"], "add");
    assert_eq!(calculator["tools"][0]["description"], "add two numbers");
    assert_eq!(
        calculator["tools"][0]["parameters"]["properties"]["a"],
        json!({"type": "number"})
    );
    let kinds: Vec<_> = exports
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"engine") && kinds.contains(&"middleware"),
        "{kinds:?}"
    );
}

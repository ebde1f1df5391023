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

/// Console lines of a session's JavaScript parts (an engine function, a tool
/// handler) reach stderr, and `--events` as console events, in the order
/// they happened among the session's events.
#[test]
fn console_of_a_sessions_javascript_parts_reaches_stderr_and_events() {
    let source = r#"import { createSession, engines, tools, turns } from "marionette";
const calculator = tools.createRegistry().register({
  name: "add",
  parameters: { type: "object", properties: { a: { type: "number" } } },
  handler: ({ a }) => { console.log("tool handler saw", a); return a + 1; },
});
const model = engines.fromFunction((turn) => {
  const used = turn.blocks.some((b) => b.kind === "tool_use");
  console.warn("engine ran, tool used:", used);
  turn.blocks.push(used ? turns.newAssistantBlock("done") : turns.newToolCallBlock("c1", "add", { a: 1 }));
  return turn;
});
export default async function main() {
  const out = await createSession({ engine: model, tools: calculator })
    .run(turns.newTurn({ blocks: [turns.newUserBlock("hi")] }));
  return out.blocks.at(-1).payload.text;
}
"#;
    let dir = tempfile::tempdir().unwrap();
    let name = script(dir.path(), "parts.js", source);
    let out = marionette(&["run", &name], dir.path());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    assert_eq!(result(&out), json!("done"));
    for line in [
        "warn: engine ran, tool used: false",
        "tool handler saw 1",
        "warn: engine ran, tool used: true",
    ] {
        assert!(err.contains(line), "{line:?} not on stderr: {err}");
    }

    let out = marionette(&["run", &name, "--events"], dir.path());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let events: Vec<Value> = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e.get("type").is_some())
        .collect();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e["type"].as_str().unwrap() {
            "console" => format!("console {}", e["message"].as_str().unwrap()),
            other => other.to_string(),
        })
        .collect();
    let at = |what: &str| {
        kinds
            .iter()
            .position(|k| k == what)
            .unwrap_or_else(|| panic!("no {what:?} in {kinds:?}"))
    };
    assert!(
        at("console tool handler saw 1") > at("tool-call"),
        "{kinds:?}"
    );
    assert!(
        at("console tool handler saw 1") < at("tool-result"),
        "{kinds:?}"
    );
    assert!(
        at("console engine ran, tool used: false") < at("tool-call"),
        "{kinds:?}"
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

/// A script that asks the host's default engine once and returns the text.
const ASK: &str = r#"import { createSession, engines, turns } from "marionette";
export default async function main(input) {
  const session = createSession({ engine: engines.host() });
  const out = await session.run(turns.newTurn({ blocks: [turns.newUserBlock(input.prompt ?? "hi")] }));
  return out.blocks.at(-1).payload.text;
}
"#;

/// An OpenAI stream whose text arrives in `pieces`.
fn openai_stream(pieces: &[&str]) -> String {
    let mut events: Vec<String> = pieces
        .iter()
        .map(|text| {
            format!(
                "data: {}",
                json!({"choices": [{"index": 0, "delta": {"content": text}}]})
            )
        })
        .collect();
    events
        .push(r#"data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}"#.into());
    events.push("data: [DONE]".into());
    events.join("\n\n") + "\n\n"
}

/// Runs `marionette run SCRIPT ARGS...` in `dir` on the `openai` engine
/// pointed at `provider`, off the test's runtime (the provider runs on it).
async fn run_against(
    provider: &crate::fake_provider::FakeProvider,
    dir: &Path,
    args: &[&str],
) -> Output {
    let base_url = format!("{}/v1", provider.url);
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_marionette"))
            .arg("run")
            .args(&args)
            .args(["--engine", "openai", "--model", "gpt-test", "--base-url"])
            .arg(&base_url)
            .current_dir(&dir)
            .env("OPENAI_API_KEY", "sk-test-key")
            .env("NO_COLOR", "1")
            .env_remove("MARIONETTE_CONFIG")
            .env_remove("MARIONETTE_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Whether `bytes` hold anything a terminal would act on: C0 controls
/// other than newline and tab, DEL, or a C1 control encoded in UTF-8.
fn has_terminal_controls(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    text.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_sequences_in_model_text_never_reach_the_terminal() {
    use crate::fake_provider::{FakeProvider, Reply};
    // A title change split across two pieces, colours, an 8-bit CSI that
    // clears the screen, a hyperlink, a bell and a carriage return.
    let pieces = [
        "\u{1b}]0;pw",
        "ned\u{7}Hello ",
        "\u{1b}[31mred\u{1b}[0m \u{9b}2J",
        "world \u{1b}]8;;http://evil.example\u{1b}\\link\u{1b}]8;;\u{1b}\\\r!\u{8}",
    ];
    let raw: String = pieces.concat();
    let dir = tempfile::tempdir().unwrap();
    let name = script(dir.path(), "ask.js", ASK);

    let provider = FakeProvider::start(vec![Reply::sse(&openai_stream(&pieces))]).await;
    let out = run_against(&provider, dir.path(), &[&name]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    assert!(!has_terminal_controls(&out.stderr), "{err:?}");
    assert!(err.contains("Hello red world link!\n"), "{err:?}");
    assert!(!has_terminal_controls(&out.stdout), "{:?}", stdout(&out));
    assert_eq!(result(&out), json!(raw), "the result stays exact");

    // --events: the JSON keeps every character, written so that no
    // terminal acts on it.
    let provider = FakeProvider::start(vec![Reply::sse(&openai_stream(&pieces))]).await;
    let out = run_against(&provider, dir.path(), &[&name, "--events"]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(!has_terminal_controls(&out.stdout), "{:?}", stdout(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let deltas: Vec<&str> = lines
        .iter()
        .filter(|e| e["type"] == "partial")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, pieces);
    let last = lines.iter().find(|e| e["type"] == "final").unwrap();
    assert_eq!(last["text"], raw.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_lines_are_cleaned_for_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let name = script(
        dir.path(),
        "log.js",
        "export default () => { console.log('a\\u001b]0;title\\u0007b\\rc'); console.warn('\\u009b2Jd'); return 1; };",
    );
    let out = marionette(&["run", &name], dir.path());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(!has_terminal_controls(&out.stderr), "{:?}", stderr(&out));
    assert!(
        stderr(&out).contains("abc\nwarn: d\n"),
        "{:?}",
        stderr(&out)
    );
    let out = marionette(&["run", &name, "--events"], dir.path());
    let first: Value = serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    assert_eq!(first["message"], "a\u{1b}]0;title\u{7}b\rc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_timeouts_are_set_by_flags_and_profiles() {
    use crate::fake_provider::{FakeProvider, Reply};
    let dir = tempfile::tempdir().unwrap();
    let name = script(dir.path(), "ask.js", ASK);
    let text = || Reply::sse_fixture("openai_text.sse");
    let overloaded = || {
        Reply::json(529, r#"{"error": {"message": "Overloaded"}}"#).header("retry-after-ms", "1")
    };

    // The default: two retries.
    let provider = FakeProvider::start(vec![overloaded(), overloaded(), text()]).await;
    let out = run_against(&provider, dir.path(), &[&name]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(provider.requests().len(), 3);

    // --max-retries 0: the first failure is the answer, its status named.
    let provider = FakeProvider::start(vec![overloaded(), text()]).await;
    let out = run_against(&provider, dir.path(), &[&name, "--max-retries", "0"]).await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("HTTP 529 Overloaded: Overloaded"),
        "{}",
        stderr(&out)
    );
    assert_eq!(provider.requests().len(), 1);

    // A profile's max_retries, and the flag over it.
    for (flags, status, requests) in [(&[][..], 1, 2), (&["--max-retries", "2"][..], 0, 3)] {
        let provider = FakeProvider::start(vec![overloaded(), overloaded(), text()]).await;
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[engines.openai]\nprovider = \"openai\"\nbase_url = \"{}/v1\"\nmax_retries = 1\n",
                provider.url
            ),
        )
        .unwrap();
        let mut args = vec![name.as_str(), "--config", "config.toml"];
        args.extend(flags);
        let out = run_against(&provider, dir.path(), &args).await;
        assert_eq!(
            out.status.code(),
            Some(status),
            "{flags:?}: {}",
            stderr(&out)
        );
        assert_eq!(provider.requests().len(), requests, "{flags:?}");
    }

    // --idle-timeout-secs: a stream of keep-alives only fails, unretried.
    let provider = FakeProvider::start(vec![Reply::keep_alive_only(500), text()]).await;
    let out = run_against(
        &provider,
        dir.path(),
        &[&name, "--idle-timeout-secs", "0.2"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("no event for 0.2s (the idle timeout between stream events)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(provider.requests().len(), 1);

    // --request-timeout-secs: no answer in time.
    let provider = FakeProvider::start(vec![text().delay(std::time::Duration::from_secs(5))]).await;
    let out = run_against(
        &provider,
        dir.path(),
        &[&name, "--request-timeout-secs", "0.3"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("no complete answer within 0.3s (the request timeout)"),
        "{}",
        stderr(&out)
    );

    // Nonsense is a usage error.
    let out = marionette(&["run", &name, "--idle-timeout-secs", "0"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_of_concurrent_sessions_are_labelled_line_by_line() {
    use crate::fake_provider::{FakeProvider, Reply};
    use std::sync::Arc;
    // The first session streams a piece, then waits; the second streams
    // all of its text meanwhile; then the first goes on.
    let source = r#"import { createSession, engines, turns } from "marionette";
const ask = (text) => createSession({ engine: engines.host() })
  .start(turns.newTurn({ blocks: [turns.newUserBlock(text)] }));
export default async function main() {
  const first = ask("one");
  await new Promise((resolve) => first.on("partial", resolve));
  const second = await ask("two").promise;
  const one = await first.promise;
  return [one.blocks.at(-1).payload.text, second.blocks.at(-1).payload.text];
}
"#;
    let dir = tempfile::tempdir().unwrap();
    let name = script(dir.path(), "two.js", source);
    let gate = Arc::new(tokio::sync::Notify::new());
    let provider = FakeProvider::start(vec![
        Reply::sse(&openai_stream(&["alpha1 ", "alpha2 ", "alpha3"])).hold_before(1, gate.clone()),
        Reply::sse(&openai_stream(&["beta1 ", "beta2 ", "beta3"])),
    ])
    .await;
    let args = [name.as_str()];
    let run = run_against(&provider, dir.path(), &args);
    let release = async {
        provider.wait_for_requests(2).await;
        gate.notify_one();
    };
    let (out, ()) = tokio::join!(run, release);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    assert_eq!(
        result(&out),
        json!(["alpha1 alpha2 alpha3", "beta1 beta2 beta3"])
    );
    // Lines of one session each; once the second streams, its lines are
    // labelled, and so are the first's that come after (how the two
    // interleave depends on timing, what each line holds does not).
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("alpha") || l.contains("beta"))
        .collect();
    let mut seen_beta = false;
    for line in &lines {
        assert!(
            !(line.contains("alpha") && line.contains("beta")),
            "one session per line: {err}"
        );
        if line.contains("beta") {
            seen_beta = true;
            assert!(line.starts_with("[session 2] "), "{line:?} in {err}");
        } else if seen_beta {
            assert!(line.starts_with("[session 1] "), "{line:?} in {err}");
        }
    }
    let text = |word: &str| -> String {
        lines
            .iter()
            .filter(|l| l.contains(word))
            .map(|l| {
                l.trim_start_matches("[session 1] ")
                    .trim_start_matches("[session 2] ")
            })
            .collect()
    };
    assert_eq!(text("beta"), "beta1 beta2 beta3", "{err}");
    assert_eq!(text("alpha"), "alpha1 alpha2 alpha3", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_stream_ends_its_line() {
    use crate::fake_provider::{FakeProvider, Reply};
    use std::sync::Arc;
    let source = r#"import { createSession, engines, turns } from "marionette";
export default async function main() {
  const session = createSession({ engine: engines.host() });
  const first = session.start(turns.newTurn({ blocks: [turns.newUserBlock("one")] }));
  await new Promise((resolve) => first.on("partial", resolve));
  first.cancel("enough");
  await first.promise.catch(() => {});
  const out = await session.run(turns.newTurn({ blocks: [turns.newUserBlock("two")] }));
  return out.blocks.at(-1).payload.text;
}
"#;
    let dir = tempfile::tempdir().unwrap();
    let name = script(dir.path(), "cancel.js", source);
    let never = Arc::new(tokio::sync::Notify::new());
    let provider = FakeProvider::start(vec![
        Reply::sse(&openai_stream(&["cut ", "never"])).hold_before(1, never),
        Reply::sse(&openai_stream(&["whole ", "answer"])),
    ])
    .await;
    // The request timeout only bounds the cancelled request, should the
    // host keep it open.
    let out = run_against(
        &provider,
        dir.path(),
        &[&name, "--request-timeout-secs", "20"],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    assert_eq!(result(&out), json!("whole answer"));
    assert!(err.contains("cut \nwhole answer\n"), "{err:?}");
}

/// `--allow-net` grants fetch an origin; without it fetch is refused with
/// the rule named, and a malformed origin is a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_net_grants_fetch_an_origin() {
    use crate::fake_provider::{FakeProvider, Reply};
    let server = FakeProvider::start(vec![Reply::json(200, r#"{"answer": 42}"#)]).await;
    let dir = tempfile::tempdir().unwrap();
    let name = script(
        dir.path(),
        "fetch.js",
        r#"export default async function main({ url }) {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}"#,
    );
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let input = json!({"url": format!("{}/data", server.url)}).to_string();
    let run = |extra: Vec<String>| {
        let (dir, name, input) = (dir.path().to_path_buf(), name.clone(), input.clone());
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["run".to_string(), name, "--input".into(), input];
            args.extend(extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            marionette(&args, &dir)
        })
    };
    let out = run(vec![]).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("TypeError: fetch refused by the policy")
            && stderr(&out).contains("--allow-net"),
        "{}",
        stderr(&out)
    );
    assert!(server.requests().is_empty());
    let out = run(vec!["--allow-net".into(), format!("127.0.0.1:{port}")])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(result(&out), json!({"status": 200, "body": {"answer": 42}}));
    assert_eq!(server.requests()[0].path, "/data");
    let out = run(vec!["--allow-net".into(), "http://x/path".into()])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("not an origin to allow"),
        "{}",
        stderr(&out)
    );
}

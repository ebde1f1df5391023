//! The Rust runner of the conformance suite (`tests/conformance/README.md`):
//! every case in `tests/conformance/cases/` runs against the Rust host, its
//! host services made from the case's data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use marionette::model::{BlockKind, Event, LogLevel, ToolCall, ToolDefinition, Turn};
use marionette::session::{
    Engine, EngineRegistry, HostTools, InferenceContext, MiddlewareRegistry, async_trait,
};
use marionette::{Error, HostServices, Policy, Runtime, Sandbox, ScriptError, TaskOptions};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::assistant_block;

/// A case, as the README defines it. Unknown keys are an error of the case.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[allow(dead_code)]
    description: String,
    scripts: Vec<ScriptRef>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    host: HostSpec,
    steps: Vec<Step>,
    expect: Vec<Expect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptRef {
    name: String,
    file: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Limits {
    timeout_ms: Option<u64>,
    memory_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HostSpec {
    #[serde(default)]
    engines: BTreeMap<String, Vec<Reply>>,
    #[serde(default)]
    tools: Vec<ToolSpec>,
    #[serde(default)]
    middlewares: Vec<String>,
}

/// One answer of a scripted host engine: exactly one of `text`,
/// `toolCalls`, `error`.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Reply {
    text: Option<String>,
    partials: Option<Vec<String>>,
    tool_calls: Option<Vec<CallSpec>>,
    error: Option<NamedError>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct CallSpec {
    id: String,
    name: String,
    arguments: Value,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct NamedError {
    name: String,
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolSpec {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "empty_schema")]
    parameters: Value,
    results: Vec<ToolResult>,
}

fn empty_schema() -> Value {
    json!({"type": "object"})
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct ToolResult {
    value: Option<Value>,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Step {
    run: String,
    script: String,
    input: Option<Value>,
    function: Option<String>,
    args: Option<Vec<Value>>,
    registry: Option<String>,
    call: Option<CallSpec>,
    cancel_on_console: Option<String>,
    /// A `load` step's source, relative to the case file.
    file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expect {
    /// Present (`null` included) or absent: `null` is a result to check.
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    error: Option<ExpectError>,
    console: Option<Vec<(String, String)>>,
    host_calls: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExpectError {
    kind: String,
    name: Option<String>,
    message_contains: Option<String>,
    file: Option<String>,
    line: Option<u32>,
}

/// Tells a key given as `null` from one left out.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// What the case's host services were asked, in order.
type Calls = Arc<Mutex<Vec<Value>>>;

/// A host engine that answers with the case's replies, in order.
struct CaseEngine {
    name: String,
    replies: Mutex<Vec<Reply>>,
    calls: Calls,
}

#[async_trait]
impl Engine for CaseEngine {
    fn name(&self) -> &str {
        &self.name
    }

    async fn infer(&self, mut turn: Turn, ctx: InferenceContext) -> marionette::Result<Turn> {
        let tools: Vec<&str> = ctx.tools.iter().map(|t| t.name.as_str()).collect();
        self.calls
            .lock()
            .unwrap()
            .push(json!({"engine": self.name, "tools": tools}));
        let reply = {
            let mut replies = self.replies.lock().unwrap();
            if replies.is_empty() {
                return Err(script_error(
                    "Error",
                    &format!("conformance: engine {:?} has no reply left", self.name),
                ));
            }
            replies.remove(0)
        };
        if let Some(error) = reply.error {
            return Err(script_error(&error.name, &error.message));
        }
        if let Some(text) = reply.text {
            let mut completion = String::new();
            for delta in reply.partials.unwrap_or_default() {
                completion.push_str(&delta);
                ctx.events.partial(delta, completion.clone());
            }
            turn.blocks
                .push(assistant_block(BlockKind::LlmText, json!({"text": text})));
        }
        for call in reply.tool_calls.unwrap_or_default() {
            turn.blocks.push(assistant_block(
                BlockKind::ToolCall,
                json!({"id": call.id, "name": call.name, "args": call.arguments}),
            ));
        }
        Ok(turn)
    }
}

fn script_error(name: &str, message: &str) -> Error {
    Error::Script {
        op: "conformance host".into(),
        error: Box::new(ScriptError {
            name: name.into(),
            message: message.into(),
            stack: None,
            file: None,
            line: None,
            column: None,
        }),
    }
}

fn services(host: &HostSpec, calls: &Calls) -> HostServices {
    let mut engines = EngineRegistry::new();
    let mut default = None;
    for (name, replies) in &host.engines {
        for reply in replies {
            let given = [
                reply.text.is_some(),
                reply.tool_calls.is_some(),
                reply.error.is_some(),
            ];
            assert_eq!(
                given.iter().filter(|g| **g).count(),
                1,
                "a reply of engine {name:?} must have exactly one of text, toolCalls, error"
            );
        }
        let registered = if name.is_empty() {
            "default".to_string()
        } else {
            name.clone()
        };
        let engine = CaseEngine {
            name: name.clone(),
            replies: Mutex::new(replies.clone()),
            calls: calls.clone(),
        };
        engines = engines.register(registered.clone(), Arc::new(engine));
        if name.is_empty() {
            default = Some(registered);
        }
    }
    if let Some(default) = default {
        engines = engines.set_default(&default).expect("registered");
    }
    let mut tools = HostTools::new("conformance");
    for tool in &host.tools {
        let results = Arc::new(Mutex::new(tool.results.clone()));
        let (calls, name) = (calls.clone(), tool.name.clone());
        tools = tools.register(
            ToolDefinition {
                name: tool.name.clone(),
                description: tool.description.clone(),
                parameters: tool.parameters.clone(),
            },
            move |arguments: Value, _ctx| {
                let (results, calls, name) = (results.clone(), calls.clone(), name.clone());
                async move {
                    calls
                        .lock()
                        .unwrap()
                        .push(json!({"tool": name, "arguments": arguments}));
                    let next = {
                        let mut results = results.lock().unwrap();
                        (!results.is_empty()).then(|| results.remove(0))
                    };
                    match next {
                        Some(ToolResult { error: Some(e), .. }) => Err(script_error("Error", &e)),
                        Some(ToolResult { value, .. }) => Ok(value.unwrap_or(Value::Null)),
                        None => Err(script_error(
                            "Error",
                            &format!("conformance: tool {name:?} has no result left"),
                        )),
                    }
                }
            },
        );
    }
    for m in &host.middlewares {
        assert_eq!(m, "systemPrompt", "the only host middleware a case may use");
    }
    HostServices {
        engines,
        middlewares: MiddlewareRegistry::with_builtins(),
        tools: vec![Arc::new(tools)],
    }
}

fn kind(error: &Error) -> &'static str {
    match error {
        Error::Script { .. } => "script",
        Error::Timeout { .. } => "timeout",
        Error::Canceled { .. } => "canceled",
        Error::Limit { .. } => "limit",
        Error::Trapped { .. } => "trapped",
        _ => "host",
    }
}

fn level(level: &LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

/// Runs one step; returns its result and its console lines.
async fn step(
    sb: &Sandbox,
    dir: &Path,
    step: &Step,
    limits: &Limits,
) -> (marionette::Result<Value>, Vec<(String, String)>) {
    let (sink, mut events) = tokio::sync::mpsc::unbounded_channel();
    let cancel = tokio_util::sync::CancellationToken::new();
    let options = TaskOptions {
        timeout: limits.timeout_ms.map(Duration::from_millis),
        cancel: Some(cancel.clone()),
        events: Some(sink),
    };
    let work = async {
        match step.run.as_str() {
            "main" => {
                sb.run_main(
                    &step.script,
                    step.input.as_ref().unwrap_or(&Value::Null),
                    options,
                )
                .await
            }
            "call" => {
                let function = step
                    .function
                    .as_deref()
                    .expect("a call step names a function");
                sb.call(
                    &step.script,
                    function,
                    step.args.as_deref().unwrap_or(&[]),
                    options,
                )
                .await
            }
            "tool" => {
                let registry = step
                    .registry
                    .as_deref()
                    .expect("a tool step names a registry");
                let call = step.call.clone().expect("a tool step has a call");
                let call = ToolCall {
                    id: call.id,
                    name: call.name,
                    arguments: call.arguments,
                };
                sb.call_tool(&step.script, registry, &call, options).await
            }
            "load" => {
                let file = step.file.as_deref().expect("a load step names its file");
                let source = std::fs::read_to_string(dir.join(file))
                    .unwrap_or_else(|e| panic!("script {file}: {e}"));
                sb.load_with(&step.script, source, options)
                    .await
                    .map(|_| Value::Null)
            }
            other => panic!("unknown step kind {other:?}"),
        }
    };
    tokio::pin!(work);
    let mut console = Vec::new();
    let mut open = true;
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            event = events.recv(), if open => match event {
                Some(Event::Console { level: l, message }) => {
                    if step.cancel_on_console.as_deref() == Some(message.as_str()) {
                        cancel.cancel();
                    }
                    console.push((level(&l).to_string(), message));
                }
                Some(_) => {}
                None => open = false,
            },
        }
    };
    // Lines that arrived with the result.
    while let Ok(event) = events.try_recv() {
        if let Event::Console { level: l, message } = event {
            console.push((level(&l).to_string(), message));
        }
    }
    (result, console)
}

async fn run_case(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading: {e}"))?;
    let case: Case = serde_json::from_str(&text).map_err(|e| format!("not a case: {e}"))?;
    if case.steps.len() != case.expect.len() {
        return Err("steps and expect differ in length".into());
    }
    let calls: Calls = Arc::default();
    let mut policy = Policy::default();
    if let Some(bytes) = case.limits.memory_bytes {
        policy.memory_limit = bytes;
    }
    let sb = Sandbox::with_services(
        Runtime::shared().unwrap(),
        policy,
        services(&case.host, &calls),
    )
    .await
    .map_err(|e| format!("sandbox: {e}"))?;
    let dir = path.parent().expect("a case is in a folder");
    for script in &case.scripts {
        let source = std::fs::read_to_string(dir.join(&script.file))
            .map_err(|e| format!("script {}: {e}", script.file))?;
        sb.load(&script.name, source)
            .await
            .map_err(|e| format!("loading {}: {e}", script.name))?;
    }
    for (i, (s, expect)) in case.steps.iter().zip(&case.expect).enumerate() {
        calls.lock().unwrap().clear();
        let (result, console) = step(&sb, dir, s, &case.limits).await;
        let at = |what: String| format!("step {i}: {what}");
        match (&expect.result, &expect.error, &result) {
            (Some(want), None, Ok(got)) if want == got => {}
            (Some(want), None, got) => return Err(at(format!("expected {want}, got {got:?}"))),
            (None, Some(want), Err(got)) => {
                if kind(got) != want.kind {
                    return Err(at(format!("expected a {} error, got {got}", want.kind)));
                }
                if let (Some(name), Error::Script { error, .. }) = (&want.name, got)
                    && &error.name != name
                {
                    return Err(at(format!("expected a {name}, got {got}")));
                }
                if let Some(part) = &want.message_contains
                    && !got.to_string().contains(part.as_str())
                {
                    return Err(at(format!("expected {part:?} in {got}")));
                }
                if want.file.is_some() || want.line.is_some() {
                    let Error::Script { error, .. } = got else {
                        return Err(at(format!("expected a located script error, got {got}")));
                    };
                    if want.file.is_some() && want.file != error.file {
                        return Err(at(format!(
                            "expected file {:?}, got {:?}",
                            want.file, error.file
                        )));
                    }
                    if want.line.is_some() && want.line != error.line {
                        return Err(at(format!(
                            "expected line {:?}, got {:?}",
                            want.line, error.line
                        )));
                    }
                }
            }
            (None, Some(want), Ok(got)) => {
                return Err(at(format!("expected a {} error, got {got}", want.kind)));
            }
            _ => return Err(at("expect needs exactly one of result and error".into())),
        }
        if let Some(want) = &expect.console
            && want != &console
        {
            return Err(at(format!("console: expected {want:?}, got {console:?}")));
        }
        if let Some(want) = &expect.host_calls {
            let got = calls.lock().unwrap().clone();
            if want != &got {
                return Err(at(format!("host calls: expected {want:?}, got {got:?}")));
            }
        }
    }
    sb.shutdown().await;
    Ok(())
}

fn cases() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance/cases");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    cases.sort();
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_passes() {
    let cases = cases();
    assert!(!cases.is_empty(), "no conformance cases found");
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        if let Err(e) = run_case(case).await {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

//! The provider engines against the fake provider: streaming, tool calls,
//! usage, the request they send, every error kind, and the faults a real
//! server shows: statuses worth a retry, `retry-after`, connections hung
//! up before the answer, streams cut off or only kept alive, JSON where an
//! event stream was asked for. Nothing here measures time: the tests count
//! the requests the fake provider received, and set short timeouts. The tests against
//! the real endpoints are `#[ignore]`d: `OPENAI_API_KEY=... cargo test
//! --release --test integration providers -- --ignored`.

use std::sync::Arc;
use std::time::Duration;

use marionette::engines::{
    AnthropicConfig, AnthropicEngine, OpenAiConfig, OpenAiEngine, RetryPolicy,
};
use marionette::model::{Block, BlockKind, ToolDefinition, Turn};
use marionette::session::{
    Engine, EventEmitter, EventKind, HostTools, InferenceContext, RunOptions, Session, ToolChoice,
};
use marionette::{Error, ProviderErrorKind};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::fake_provider::{FakeProvider, Reply, provider_fixture};

const KEY: &str = "sk-test-key-0123456789";

/// The default retries, with backoffs of a few milliseconds.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        ..RetryPolicy::default()
    }
}

fn openai(server: &FakeProvider) -> OpenAiEngine {
    OpenAiEngine::new(OpenAiConfig {
        base_url: format!("{}/v1", server.url),
        api_key: Some(KEY.into()),
        model: "gpt-test".into(),
        timeout: Duration::from_secs(10),
        retry: quick_retries(),
        ..OpenAiConfig::default()
    })
    .unwrap()
}

fn anthropic(server: &FakeProvider) -> AnthropicEngine {
    AnthropicEngine::new(AnthropicConfig {
        base_url: server.url.clone(),
        api_key: Some(KEY.into()),
        model: "claude-test".into(),
        max_tokens: 256,
        timeout: Duration::from_secs(10),
        retry: quick_retries(),
        ..AnthropicConfig::default()
    })
    .unwrap()
}

fn block(kind: BlockKind, text: &str) -> Block {
    let mut payload = Map::new();
    payload.insert("text".into(), json!(text));
    Block {
        id: format!("b-{text}"),
        kind,
        role: None,
        payload,
        metadata: Map::new(),
    }
}

fn question() -> Turn {
    Turn {
        id: "t1".into(),
        blocks: vec![
            block(BlockKind::System, "be brief"),
            block(BlockKind::User, "hi"),
        ],
        ..Turn::default()
    }
}

fn tools() -> Vec<ToolDefinition> {
    ["add", "weather"]
        .into_iter()
        .map(|name| ToolDefinition {
            name: name.into(),
            description: format!("the {name} tool"),
            parameters: json!({"type": "object"}),
        })
        .collect()
}

/// A context whose events the test reads.
fn context(
    tools: Vec<ToolDefinition>,
    choice: ToolChoice,
) -> (
    InferenceContext,
    UnboundedReceiver<marionette::session::SessionEvent>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = InferenceContext {
        tools: tools.into(),
        tool_choice: choice,
        events: EventEmitter::new("s", vec![tx]).for_inference("i", "t1"),
        ..InferenceContext::default()
    };
    (ctx, rx)
}

fn partial(event: Option<marionette::session::SessionEvent>) -> (String, String) {
    match event.map(|e| e.kind) {
        Some(EventKind::Partial { delta, completion }) => (delta, completion),
        other => panic!("expected a partial event, got {other:?}"),
    }
}

/// The provider error of `result`: its kind and message.
fn provider_error(result: marionette::Result<Turn>) -> (ProviderErrorKind, String) {
    match result {
        Err(Error::Provider { kind, message, .. }) => (kind, message),
        other => panic!("expected a provider error, got {other:?}"),
    }
}

#[tokio::test]
async fn openai_streams_partials_as_chunks_arrive() {
    let gate = Arc::new(Notify::new());
    let server = FakeProvider::start(vec![
        Reply::sse_fixture("openai_text.sse").hold_before(2, gate.clone()),
    ])
    .await;
    let engine = openai(&server);
    let (ctx, mut rx) = context(vec![], ToolChoice::Auto);
    let task = tokio::spawn(async move { engine.infer(question(), ctx).await });

    // The first delta arrives while the server still holds the stream open.
    assert_eq!(partial(rx.recv().await), ("Hello".into(), "Hello".into()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !task.is_finished(),
        "the inference waits for the rest of the stream"
    );
    gate.notify_one();
    let turn = task.await.unwrap().unwrap();
    assert_eq!(
        partial(rx.recv().await),
        (", world".into(), "Hello, world".into())
    );
    assert_eq!(
        partial(rx.recv().await),
        ("!".into(), "Hello, world!".into())
    );

    assert_eq!(turn.blocks.len(), 3, "the input blocks, then the answer");
    let answer = &turn.blocks[2];
    assert_eq!(
        (answer.kind, answer.payload["text"].as_str()),
        (BlockKind::LlmText, Some("Hello, world!"))
    );
    assert_eq!(answer.metadata["finish_reason"], "stop");
    assert_eq!(answer.metadata["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(answer.metadata["usage"]["total_tokens"], 23);
    assert_eq!(turn.metadata["usage"]["prompt_tokens"], 19);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(request.headers["authorization"], format!("Bearer {KEY}"));
    assert_eq!(
        request.body,
        json!({"model": "gpt-test", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]})
    );
}

#[tokio::test]
async fn openai_assembles_streamed_tool_calls() {
    let server = FakeProvider::start(vec![Reply::sse_fixture("openai_tool_calls.sse")]).await;
    let engine = OpenAiEngine::new(OpenAiConfig {
        extra_headers: vec![("openai-organization".into(), "org-test".into())],
        ..openai(&server).config().clone()
    })
    .unwrap();
    let (ctx, _rx) = context(tools(), ToolChoice::Required);
    let turn = engine.infer(question(), ctx).await.unwrap();
    let calls: Vec<&Block> = turn
        .blocks
        .iter()
        .filter(|b| b.kind == BlockKind::ToolCall)
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].payload["id"], "call_add");
    assert_eq!(calls[0].payload["args"], json!({"a": 2, "b": 3}));
    assert_eq!(calls[1].payload["name"], "weather");
    assert_eq!(calls[1].payload["args"], json!({"city": "Paris"}));
    assert_eq!(calls[1].metadata["finish_reason"], "tool_calls");
    assert_eq!(calls[1].metadata["usage"]["completion_tokens"], 38);

    let request = &server.requests()[0];
    assert_eq!(request.headers["openai-organization"], "org-test");
    let body = &request.body;
    assert_eq!(body["tool_choice"], "required");
    assert_eq!(
        body["tools"][0],
        json!({"type": "function", "function": {"name": "add", "description": "the add tool",
               "parameters": {"type": "object"}}})
    );
}

#[tokio::test]
async fn openai_keeps_invalid_arguments_as_text() {
    let server = FakeProvider::start(vec![Reply::sse_fixture("openai_bad_args.sse")]).await;
    let (ctx, _rx) = context(tools(), ToolChoice::Auto);
    let turn = openai(&server).infer(question(), ctx).await.unwrap();
    assert_eq!(turn.blocks[2].payload["args"], json!("{\"a\": 2, \"b\":"));
}

#[tokio::test]
async fn openai_runs_a_tool_loop_in_a_session() {
    let server = FakeProvider::start(vec![
        Reply::sse_fixture("openai_tool_calls.sse"),
        Reply::sse_fixture("openai_text.sse"),
    ])
    .await;
    let [add, weather]: [ToolDefinition; 2] = tools().try_into().unwrap();
    let host = HostTools::new("host")
        .register(add, |args: Value, _ctx| async move {
            Ok(json!(
                args["a"].as_i64().unwrap_or(0) + args["b"].as_i64().unwrap_or(0)
            ))
        })
        .register(
            weather,
            |_args: Value, _ctx| async move { Ok(json!("sunny")) },
        );
    let session = Session::builder()
        .engine(Arc::new(openai(&server)))
        .tools(Arc::new(host))
        .build()
        .unwrap();
    let out = session
        .run(Some(question()), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(out.blocks.last().unwrap().payload["text"], "Hello, world!");
    let second = &server.requests()[1].body["messages"];
    assert_eq!(second[2]["tool_calls"][1]["function"]["name"], "weather");
    assert_eq!(
        second[3],
        json!({"role": "tool", "tool_call_id": "call_add", "content": "5"})
    );
    assert_eq!(
        second[4],
        json!({"role": "tool", "tool_call_id": "call_weather", "content": "sunny"})
    );
}

/// A 401 body that quotes the very key the request sent, as providers do
/// when they echo what they refused.
fn echoing_key(fixture: &str, quoted: &str) -> Reply {
    let body = provider_fixture(fixture);
    assert!(body.contains(quoted), "{fixture} quotes {quoted}");
    Reply::json(401, &body.replace(quoted, KEY))
}

#[tokio::test]
async fn a_rejected_key_names_its_source_and_hides_the_key() {
    let server = FakeProvider::start(vec![echoing_key(
        "openai_401.json",
        "sk-wrong***********1234",
    )])
    .await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let result = openai(&server).infer(question(), ctx).await;
    let text = result.as_ref().unwrap_err().to_string();
    assert!(!text.contains(KEY), "{text}");
    assert!(
        text.starts_with("openai.infer: openai: unauthorized: HTTP 401"),
        "{text}"
    );
    let (kind, message) = provider_error(result);
    assert_eq!(kind, ProviderErrorKind::Unauthorized);
    assert!(
        message.contains("OPENAI_API_KEY")
            && message.contains("Incorrect API key provided: [redacted]"),
        "{message}"
    );

    let server = FakeProvider::start(vec![echoing_key("anthropic_401.json", "x-api-key")]).await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let (kind, message) = provider_error(anthropic(&server).infer(question(), ctx).await);
    assert_eq!(kind, ProviderErrorKind::Unauthorized);
    assert!(
        message.contains("ANTHROPIC_API_KEY")
            && message.contains("invalid [redacted]")
            && !message.contains(KEY),
        "{message}"
    );
}

/// The same scrubbing holds for the error a script sees when it calls the
/// host's engine: the key never enters the VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_reaching_a_script_carries_no_key() {
    let server = FakeProvider::start(vec![echoing_key(
        "openai_401.json",
        "sk-wrong***********1234",
    )])
    .await;
    let services = marionette::HostServices {
        engines: marionette::HostServices::default()
            .engines
            .register("openai", Arc::new(openai(&server))),
        ..marionette::HostServices::default()
    };
    let sb = marionette::Sandbox::with_services(
        marionette::Runtime::shared().unwrap(),
        marionette::Policy::default(),
        services,
    )
    .await
    .unwrap();
    sb.load(
        "catch.js",
        "import { engines, turns } from 'marionette';\n\
         export default async () => {\n\
           try { await engines.host('openai').infer(turns.newTurn({ blocks: [turns.newUserBlock('hi')] })); }\n\
           catch (e) { return { name: e.name, message: e.message, stack: String(e.stack) }; }\n\
         };",
    )
    .await
    .unwrap();
    let out = sb
        .run_main("catch.js", &json!({}), marionette::TaskOptions::default())
        .await
        .unwrap();
    let seen = out.to_string();
    assert_eq!(out["name"], "AuthenticationError", "{seen}");
    assert!(!seen.contains(KEY), "{seen}");
    assert!(seen.contains("[redacted]"), "{seen}");
}

#[tokio::test]
async fn a_rate_limit_is_retried_after_retry_after() {
    let server = FakeProvider::start(vec![
        Reply::json_fixture(429, "openai_429.json").header("retry-after", "0.01"),
        Reply::sse_fixture("openai_text.sse"),
    ])
    .await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let turn = openai(&server).infer(question(), ctx).await.unwrap();
    assert_eq!(turn.blocks[2].payload["text"], "Hello, world!");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_rate_limit_beyond_the_bounds_fails_typed() {
    // Retries exhausted.
    let server = FakeProvider::start(vec![
        Reply::json_fixture(429, "openai_429.json").header("retry-after", "0"),
        Reply::json_fixture(429, "openai_429.json").header("retry-after", "0"),
    ])
    .await;
    let engine = OpenAiEngine::new(OpenAiConfig {
        retry: RetryPolicy {
            max_retries: 1,
            ..quick_retries()
        },
        ..openai(&server).config().clone()
    })
    .unwrap();
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let (kind, message) = provider_error(engine.infer(question(), ctx).await);
    assert_eq!(kind, ProviderErrorKind::RateLimited);
    assert!(
        message.contains("gave up after 1 retry") && message.contains("Rate limit reached"),
        "{message}"
    );
    assert_eq!(server.requests().len(), 2);

    // A retry-after past the total wait fails at once.
    let server = FakeProvider::start(vec![
        Reply::json_fixture(429, "openai_429.json").header("retry-after", "3600"),
    ])
    .await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let (kind, message) = provider_error(openai(&server).infer(question(), ctx).await);
    assert_eq!(kind, ProviderErrorKind::RateLimited);
    assert!(
        message.contains("a retry would wait 3600.0s, beyond the 60.0s"),
        "{message}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_until_an_answer_comes() {
    let server = FakeProvider::start(vec![
        Reply::json_fixture(503, "openai_500.json"),
        Reply::json(502, "<html>bad gateway</html>"),
        Reply::sse_fixture("openai_text.sse"),
    ])
    .await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let turn = openai(&server).infer(question(), ctx).await.unwrap();
    assert_eq!(turn.blocks[2].payload["text"], "Hello, world!");
    assert_eq!(server.requests().len(), 3, "two retries by default");

    // 408 and 409 too; a 400 is not retried.
    let server = FakeProvider::start(vec![
        Reply::json(408, "{}"),
        Reply::json(409, "{}"),
        Reply::sse_fixture("anthropic_text.sse"),
    ])
    .await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    anthropic(&server).infer(question(), ctx).await.unwrap();
    assert_eq!(server.requests().len(), 3);
    let server = FakeProvider::start(vec![
        Reply::json(400, "{}"),
        Reply::sse_fixture("openai_text.sse"),
    ])
    .await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let (kind, _) = provider_error(openai(&server).infer(question(), ctx).await);
    assert_eq!(kind, ProviderErrorKind::Request);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_overloaded_anthropic_is_retried_and_named() {
    let overloaded =
        r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;
    let server = FakeProvider::start(vec![
        Reply::json(529, overloaded),
        Reply::sse_fixture("anthropic_text.sse"),
    ])
    .await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let turn = anthropic(&server).infer(question(), ctx).await.unwrap();
    assert_eq!(turn.blocks[2].payload["text"], "Hello, world!");
    assert_eq!(server.requests().len(), 2);

    let server = FakeProvider::start(vec![Reply::json(529, overloaded); 3]).await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let (kind, message) = provider_error(anthropic(&server).infer(question(), ctx).await);
    assert_eq!(kind, ProviderErrorKind::Server);
    assert!(
        message.starts_with("HTTP 529 Overloaded: Overloaded (gave up after 2 retries"),
        "{message}"
    );
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn retry_after_ms_and_dates_are_honoured() {
    // Milliseconds win over seconds: with retry-after alone the wait would
    // be beyond the bound and the call would fail at once.
    let bounded = |server: &FakeProvider| {
        OpenAiEngine::new(OpenAiConfig {
            retry: RetryPolicy {
                max_retry_wait: Duration::from_secs(1),
                ..quick_retries()
            },
            ..openai(server).config().clone()
        })
        .unwrap()
    };
    let server = FakeProvider::start(vec![
        Reply::json(503, "{}")
            .header("retry-after", "100")
            .header("retry-after-ms", "5"),
        Reply::sse_fixture("openai_text.sse"),
    ])
    .await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    bounded(&server).infer(question(), ctx).await.unwrap();
    assert_eq!(server.requests().len(), 2);

    // A wait asked for in milliseconds beyond the bound: read, and refused.
    let server = FakeProvider::start(vec![
        Reply::json(429, "{}").header("retry-after-ms", "5000"),
        Reply::sse_fixture("openai_text.sse"),
    ])
    .await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let (kind, message) = provider_error(bounded(&server).infer(question(), ctx).await);
    assert_eq!(kind, ProviderErrorKind::RateLimited);
    assert!(message.contains("a retry would wait 5.0s"), "{message}");
    assert_eq!(server.requests().len(), 1);

    // An HTTP date an hour away.
    let later = httpdate_in(Duration::from_secs(3600));
    let server = FakeProvider::start(vec![
        Reply::json(503, "{}").header("retry-after", &later),
        Reply::sse_fixture("openai_text.sse"),
    ])
    .await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let (_, message) = provider_error(bounded(&server).infer(question(), ctx).await);
    assert!(message.contains("a retry would wait 3"), "{message}");
    assert_eq!(server.requests().len(), 1);
}

/// An HTTP date `after` from now.
fn httpdate_in(after: Duration) -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now() + after)
}

#[tokio::test]
async fn connections_hung_up_before_the_answer_are_retried() {
    let server =
        FakeProvider::start_hanging_up(2, vec![Reply::sse_fixture("openai_text.sse")]).await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let turn = openai(&server).infer(question(), ctx).await.unwrap();
    assert_eq!(turn.blocks[2].payload["text"], "Hello, world!");
    assert_eq!((server.hung_up(), server.requests().len()), (2, 1));

    // Beyond the retries: a request error that says how often it tried.
    let server =
        FakeProvider::start_hanging_up(3, vec![Reply::sse_fixture("openai_text.sse")]).await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let (kind, message) = provider_error(anthropic(&server).infer(question(), ctx).await);
    assert_eq!(kind, ProviderErrorKind::Request, "{message}");
    assert!(message.contains("gave up after 2 retries"), "{message}");
    assert_eq!((server.hung_up(), server.requests().len()), (3, 0));
}

#[tokio::test]
async fn a_stream_cut_mid_way_is_never_retried() {
    for provider in ["openai", "anthropic"] {
        let (fixture, cut_after) = match provider {
            "openai" => ("openai_text.sse", 3),
            _ => ("anthropic_text.sse", 4),
        };
        let server = FakeProvider::start(vec![
            Reply::sse_fixture(fixture).abort_after(cut_after),
            Reply::sse_fixture(fixture),
        ])
        .await;
        let (ctx, mut rx) = context(vec![], ToolChoice::Auto);
        let result = match provider {
            "openai" => openai(&server).infer(question(), ctx).await,
            _ => anthropic(&server).infer(question(), ctx).await,
        };
        let (kind, message) = provider_error(result);
        assert_eq!(kind, ProviderErrorKind::Protocol, "{provider}: {message}");
        assert_eq!(server.requests().len(), 1, "{provider}: not retried");
        assert_eq!(partial(rx.recv().await).0, "Hello", "{provider}");
    }
}

#[tokio::test]
async fn a_stream_of_keep_alives_only_fails_after_the_idle_timeout() {
    for provider in ["openai", "anthropic"] {
        let server = FakeProvider::start(vec![Reply::keep_alive_only(500)]).await;
        let (ctx, _rx) = context(vec![], ToolChoice::Auto);
        let idle_timeout = Duration::from_millis(200);
        let result = match provider {
            "openai" => {
                OpenAiEngine::new(OpenAiConfig {
                    idle_timeout,
                    ..openai(&server).config().clone()
                })
                .unwrap()
                .infer(question(), ctx)
                .await
            }
            _ => {
                AnthropicEngine::new(AnthropicConfig {
                    idle_timeout,
                    ..anthropic(&server).config().clone()
                })
                .unwrap()
                .infer(question(), ctx)
                .await
            }
        };
        let (kind, message) = provider_error(result);
        assert_eq!(kind, ProviderErrorKind::Timeout, "{provider}: {message}");
        assert_eq!(
            message, "no event for 0.2s (the idle timeout between stream events)",
            "{provider}"
        );
        assert_eq!(server.requests().len(), 1, "{provider}: not retried");
    }
}

#[tokio::test]
async fn a_complete_json_answer_is_understood() {
    let completion = json!({"id": "chatcmpl-9", "object": "chat.completion", "model": "gpt-json",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "content": "Adding.", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 3}"}}]}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}});
    let server = FakeProvider::start(vec![Reply::body(
        "application/json; charset=utf-8",
        &completion.to_string(),
    )])
    .await;
    let (ctx, mut rx) = context(tools(), ToolChoice::Auto);
    let turn = openai(&server).infer(question(), ctx).await.unwrap();
    let kinds: Vec<BlockKind> = turn.blocks[2..].iter().map(|b| b.kind).collect();
    assert_eq!(kinds, [BlockKind::LlmText, BlockKind::ToolCall]);
    assert_eq!(turn.blocks[2].payload["text"], "Adding.");
    assert_eq!(turn.blocks[3].payload["args"], json!({"a": 2, "b": 3}));
    assert_eq!(turn.blocks[3].metadata["finish_reason"], "tool_calls");
    assert_eq!(turn.blocks[3].metadata["model"], "gpt-json");
    assert_eq!(turn.metadata["usage"]["total_tokens"], 13);
    assert_eq!(
        partial(rx.recv().await).0,
        "Adding.",
        "the text still streams once"
    );

    let message = json!({"id": "msg_9", "type": "message", "role": "assistant", "model": "claude-json",
        "content": [{"type": "text", "text": "Adding."},
            {"type": "tool_use", "id": "toolu_9", "name": "add", "input": {"a": 2, "b": 3}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 20, "output_tokens": 7}});
    let server =
        FakeProvider::start(vec![Reply::body("application/json", &message.to_string())]).await;
    let (ctx, _rx) = context(tools(), ToolChoice::Auto);
    let turn = anthropic(&server).infer(question(), ctx).await.unwrap();
    assert_eq!(turn.blocks[2].payload["text"], "Adding.");
    assert_eq!(turn.blocks[3].payload["id"], "toolu_9");
    assert_eq!(turn.blocks[3].payload["args"], json!({"a": 2, "b": 3}));
    assert_eq!(turn.blocks[3].metadata["finish_reason"], "tool_use");
    assert_eq!(turn.blocks[3].metadata["usage"]["output_tokens"], 7);
}

#[tokio::test]
async fn a_body_that_is_no_event_stream_names_its_content_type() {
    let cases = [
        (
            "openai",
            Reply::body("text/html", "<html>captive portal</html>"),
            "Content-Type is \"text/html\": <html>captive portal</html>",
        ),
        (
            "anthropic",
            Reply::body("text/plain", "hello"),
            "Content-Type is \"text/plain\"",
        ),
        (
            "openai",
            Reply::body("application/json", r#"{"status": "ok"}"#),
            "instead of an event stream, and it is not a chat completion",
        ),
        (
            "anthropic",
            Reply::body("application/json", r#"{"status": "ok"}"#),
            "(Content-Type application/json) instead of an event stream, and it is not a message",
        ),
        (
            "openai",
            Reply::body("application/json", "{not json"),
            "Content-Type is \"application/json\": not JSON",
        ),
    ];
    for (provider, reply, expected) in cases {
        let server = FakeProvider::start(vec![reply]).await;
        let (ctx, _rx) = context(vec![], ToolChoice::Auto);
        let result = match provider {
            "openai" => openai(&server).infer(question(), ctx).await,
            _ => anthropic(&server).infer(question(), ctx).await,
        };
        let (kind, message) = provider_error(result);
        assert_eq!(kind, ProviderErrorKind::Protocol, "{provider}: {message}");
        assert!(message.contains(expected), "{provider}: {message}");
        assert_eq!(server.requests().len(), 1);
    }
}

#[tokio::test]
async fn a_server_error_quotes_the_provider() {
    let server = FakeProvider::start(vec![Reply::json_fixture(500, "openai_500.json")]).await;
    let engine = OpenAiEngine::new(OpenAiConfig {
        retry: RetryPolicy::none(),
        ..openai(&server).config().clone()
    })
    .unwrap();
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let (kind, message) = provider_error(engine.infer(question(), ctx).await);
    assert_eq!(kind, ProviderErrorKind::Server);
    assert!(
        message.starts_with("HTTP 500 Internal Server Error: The server had an error"),
        "{message}"
    );

    let server = FakeProvider::start(vec![Reply::sse_fixture("anthropic_error_event.sse")]).await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let (kind, message) = provider_error(anthropic(&server).infer(question(), ctx).await);
    assert_eq!(kind, ProviderErrorKind::Server);
    assert!(message.contains("Overloaded"), "{message}");
}

#[tokio::test]
async fn a_stream_that_breaks_off_is_a_protocol_error() {
    let cases = [
        (
            "openai",
            Reply::sse_fixture("openai_cut.sse"),
            "ended before its end",
        ),
        (
            "openai",
            Reply::sse_fixture("openai_text.sse").abort_after(3),
            "broke off",
        ),
        (
            "anthropic",
            Reply::sse_fixture("anthropic_cut.sse"),
            "ended before its end",
        ),
        (
            "anthropic",
            Reply::sse_fixture("anthropic_text.sse").abort_after(4),
            "broke off",
        ),
    ];
    for (provider, reply, expected) in cases {
        let server = FakeProvider::start(vec![reply]).await;
        let (ctx, _rx) = context(vec![], ToolChoice::Auto);
        let result = match provider {
            "openai" => openai(&server).infer(question(), ctx).await,
            _ => anthropic(&server).infer(question(), ctx).await,
        };
        let (kind, message) = provider_error(result);
        assert_eq!(kind, ProviderErrorKind::Protocol, "{provider}: {message}");
        assert!(message.contains(expected), "{provider}: {message}");
    }
}

#[tokio::test]
async fn other_failures_are_request_errors() {
    let server = FakeProvider::start(vec![Reply::json(
        400,
        r#"{"error": {"message": "Unrecognized request argument supplied: foo"}}"#,
    )])
    .await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let (kind, message) = provider_error(openai(&server).infer(question(), ctx).await);
    assert_eq!(kind, ProviderErrorKind::Request);
    assert_eq!(
        message,
        "HTTP 400 Bad Request: Unrecognized request argument supplied: foo"
    );

    // Nobody listens on the port any more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let engine = AnthropicEngine::new(AnthropicConfig {
        base_url,
        retry: quick_retries(),
        ..AnthropicConfig::default()
    })
    .unwrap();
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let (kind, message) = provider_error(engine.infer(question(), ctx).await);
    assert_eq!(kind, ProviderErrorKind::Request, "{message}");
    assert!(message.contains("gave up after 2 retries"), "{message}");
}

#[tokio::test]
async fn a_failed_inference_fails_the_run_and_appends_nothing() {
    let server = FakeProvider::start(vec![Reply::json_fixture(500, "openai_500.json")]).await;
    let session = Session::builder()
        .engine(Arc::new(openai(&server)))
        .build()
        .unwrap();
    let error = session
        .run(Some(question()), RunOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Provider {
                kind: ProviderErrorKind::Server,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        session
            .turns()
            .iter()
            .flat_map(|t| &t.blocks)
            .all(|b| b.kind != BlockKind::LlmText),
        "no half-answered turn in the history"
    );
}

#[tokio::test]
async fn malformed_data_is_a_protocol_error() {
    let server = FakeProvider::start(vec![Reply::sse_fixture("openai_malformed.sse")]).await;
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let (kind, message) = provider_error(openai(&server).infer(question(), ctx).await);
    assert_eq!(kind, ProviderErrorKind::Protocol);
    assert!(message.starts_with("malformed data"), "{message}");
}

#[tokio::test]
async fn a_stalled_stream_times_out() {
    let never = Arc::new(Notify::new());
    let server = FakeProvider::start(vec![
        Reply::sse_fixture("openai_text.sse").hold_before(2, never),
    ])
    .await;
    let engine = OpenAiEngine::new(OpenAiConfig {
        timeout: Duration::from_millis(300),
        ..openai(&server).config().clone()
    })
    .unwrap();
    let (ctx, _rx) = context(vec![], ToolChoice::Auto);
    let (kind, message) = provider_error(engine.infer(question(), ctx.clone()).await);
    assert_eq!(kind, ProviderErrorKind::Timeout, "{message}");
    assert_eq!(
        message,
        "no complete answer within 0.3s (the request timeout)"
    );

    // No answer at all: the headers never come.
    let server = FakeProvider::start(vec![
        Reply::sse_fixture("openai_text.sse").delay(Duration::from_secs(3)),
    ])
    .await;
    let engine = OpenAiEngine::new(OpenAiConfig {
        base_url: format!("{}/v1", server.url),
        ..engine.config().clone()
    })
    .unwrap();
    let (kind, message) = provider_error(engine.infer(question(), ctx).await);
    assert_eq!(kind, ProviderErrorKind::Timeout, "{message}");
}

#[tokio::test]
async fn anthropic_streams_text_with_the_system_prompt_on_top() {
    let gate = Arc::new(Notify::new());
    let server = FakeProvider::start(vec![
        Reply::sse_fixture("anthropic_text.sse").hold_before(4, gate.clone()),
    ])
    .await;
    let engine = anthropic(&server);
    let (ctx, mut rx) = context(vec![], ToolChoice::Auto);
    let task = tokio::spawn(async move { engine.infer(question(), ctx).await });
    assert_eq!(partial(rx.recv().await), ("Hello".into(), "Hello".into()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!task.is_finished());
    gate.notify_one();
    let turn = task.await.unwrap().unwrap();
    assert_eq!(
        partial(rx.recv().await),
        (", world!".into(), "Hello, world!".into())
    );
    let answer = &turn.blocks[2];
    assert_eq!(answer.payload["text"], "Hello, world!");
    assert_eq!(answer.metadata["finish_reason"], "end_turn");
    assert_eq!(answer.metadata["usage"]["input_tokens"], 25);
    assert_eq!(answer.metadata["usage"]["output_tokens"], 6);

    let request = &server.requests()[0];
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.headers["x-api-key"], KEY);
    assert_eq!(request.headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        request.body,
        json!({"model": "claude-test", "max_tokens": 256, "stream": true, "system": "be brief",
               "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
    );
}

#[tokio::test]
async fn anthropic_assembles_tool_use() {
    let server = FakeProvider::start(vec![Reply::sse_fixture("anthropic_tool_use.sse")]).await;
    let (ctx, _rx) = context(tools(), ToolChoice::Required);
    let turn = anthropic(&server).infer(question(), ctx).await.unwrap();
    let kinds: Vec<BlockKind> = turn.blocks[2..].iter().map(|b| b.kind).collect();
    assert_eq!(
        kinds,
        [BlockKind::LlmText, BlockKind::ToolCall, BlockKind::ToolCall]
    );
    assert_eq!(turn.blocks[3].payload["args"], json!({"a": 2, "b": 3}));
    assert_eq!(turn.blocks[4].payload["id"], "toolu_02");
    assert_eq!(turn.blocks[4].payload["args"], json!({"city": "Paris"}));
    assert_eq!(turn.blocks[4].metadata["usage"]["output_tokens"], 89);

    let body = &server.requests()[0].body;
    assert_eq!(body["tool_choice"], json!({"type": "any"}));
    assert_eq!(
        body["tools"][1],
        json!({"name": "weather", "description": "the weather tool", "input_schema": {"type": "object"}})
    );
}

#[test]
fn fixtures_are_the_wire_format() {
    // Every SSE fixture ends its events with a blank line, as servers do.
    for name in [
        "openai_text.sse",
        "openai_tool_calls.sse",
        "anthropic_text.sse",
        "anthropic_tool_use.sse",
    ] {
        assert!(provider_fixture(name).ends_with("\n\n"), "{name}");
    }
}

/// Opt-in: the real OpenAI API (`OPENAI_API_KEY`, optional `OPENAI_MODEL`).
#[tokio::test]
#[ignore = "calls the real OpenAI API; needs OPENAI_API_KEY"]
async fn real_openai() {
    let key = std::env::var("OPENAI_API_KEY").expect("OPENAI_API_KEY");
    let engine = OpenAiEngine::new(OpenAiConfig {
        api_key: Some(key),
        model: std::env::var("OPENAI_MODEL").unwrap_or_else(|_| "gpt-4o-mini".into()),
        ..OpenAiConfig::default()
    })
    .unwrap();
    real_round_trip(&engine).await;
}

/// Opt-in: the real Anthropic API (`ANTHROPIC_API_KEY`, optional
/// `ANTHROPIC_MODEL`).
#[tokio::test]
#[ignore = "calls the real Anthropic API; needs ANTHROPIC_API_KEY"]
async fn real_anthropic() {
    let key = std::env::var("ANTHROPIC_API_KEY").expect("ANTHROPIC_API_KEY");
    let engine = AnthropicEngine::new(AnthropicConfig {
        api_key: Some(key),
        model: std::env::var("ANTHROPIC_MODEL")
            .unwrap_or_else(|_| AnthropicConfig::default().model),
        ..AnthropicConfig::default()
    })
    .unwrap();
    real_round_trip(&engine).await;
}

/// Text with partials, then a forced tool call.
async fn real_round_trip(engine: &dyn Engine) {
    let (ctx, mut rx) = context(vec![], ToolChoice::Auto);
    let turn = engine.infer(question(), ctx).await.unwrap();
    assert_eq!(turn.blocks[2].kind, BlockKind::LlmText);
    assert!(rx.try_recv().is_ok(), "at least one partial event");
    let (ctx, _rx) = context(tools(), ToolChoice::Required);
    let mut ask = question();
    ask.blocks[1] = block(
        BlockKind::User,
        "What is 2 + 3? Use the add tool with a and b.",
    );
    let turn = engine.infer(ask, ctx).await.unwrap();
    assert!(
        turn.blocks.iter().any(|b| b.kind == BlockKind::ToolCall),
        "{turn:?}"
    );
}

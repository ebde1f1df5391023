//! Pure parsing of the OpenAI engine: chunk assembly, message mapping.

use super::*;
use crate::model::Block;

fn block(kind: BlockKind, payload: Value) -> Block {
    Block {
        id: "b".into(),
        kind,
        role: None,
        payload: payload.as_object().cloned().unwrap_or_default(),
        metadata: Map::new(),
    }
}

#[test]
fn chunks_assemble_text_tool_calls_and_usage() {
    let chunks = [
        json!({"model": "gpt-x", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let "}}]}),
        json!({"choices": [{"index": 0, "delta": {"content": "me see."}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "add", "arguments": ""}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 1, "id": "call_b", "type": "function", "function": {"name": "mul", "arguments": "{\"x\""}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "{\"a\": 1,"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": " \"b\": 2}"}}, {"index": 1, "function": {"arguments": ": 3"}}]}}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}),
    ];
    let mut answer = Assembly::default();
    let deltas: Vec<Option<String>> = chunks.iter().map(|c| answer.apply(c).unwrap()).collect();
    assert_eq!(deltas[0].as_deref(), Some("Let "));
    assert_eq!(deltas[1].as_deref(), Some("me see."));
    assert!(deltas[2..].iter().all(Option::is_none));
    let metadata = answer.metadata("configured");
    assert_eq!(metadata["model"], "gpt-x");
    assert_eq!(metadata["finish_reason"], "tool_calls");
    assert_eq!(metadata["usage"]["total_tokens"], 12);
    let blocks = answer.blocks();
    assert_eq!(blocks.len(), 3);
    assert_eq!(blocks[0].payload["text"], "Let me see.");
    assert_eq!(blocks[1].payload["id"], "call_a");
    assert_eq!(blocks[1].payload["args"], json!({"a": 1, "b": 2}));
    assert_eq!(blocks[2].payload["name"], "mul");
    // `{"x": 3` never closed: kept as text for the loop's validation.
    assert_eq!(blocks[2].payload["args"], json!("{\"x\": 3"));
}

#[test]
fn an_error_chunk_fails_the_inference() {
    let mut answer = Assembly::default();
    let (kind, message) = answer
        .apply(&json!({"error": {"message": "overloaded", "type": "server_error"}}))
        .unwrap_err();
    assert_eq!(kind, ProviderErrorKind::Server);
    assert!(message.contains("overloaded"), "{message}");
}

#[test]
fn blocks_map_to_chat_messages() {
    let turn = Turn {
        blocks: vec![
            block(BlockKind::System, json!({"text": "be brief"})),
            block(BlockKind::User, json!({"text": "1+2?"})),
            block(BlockKind::LlmText, json!({"text": "adding"})),
            block(
                BlockKind::ToolCall,
                json!({"id": "c1", "name": "add", "args": {"a": 1}}),
            ),
            block(
                BlockKind::ToolCall,
                json!({"id": "c2", "name": "add", "args": "{bad"}),
            ),
            block(BlockKind::ToolUse, json!({"id": "c1", "result": 3})),
            block(
                BlockKind::ToolUse,
                json!({"id": "c2", "result": null, "error": "invalid args"}),
            ),
            block(BlockKind::Reasoning, json!({"text": "hidden"})),
            block(BlockKind::ToolCall, json!({"id": "c3", "name": "now"})),
        ],
        ..Turn::default()
    };
    assert_eq!(
        Value::Array(messages(&turn)),
        json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "1+2?"},
            {"role": "assistant", "content": "adding", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":1}"}},
                {"id": "c2", "type": "function", "function": {"name": "add", "arguments": "{bad"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "3"},
            {"role": "tool", "tool_call_id": "c2", "content": "error: invalid args"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c3", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
        ])
    );
}

#[test]
fn the_config_debug_hides_the_key() {
    let config = OpenAiConfig {
        api_key: Some("sk-secret".into()),
        extra_headers: vec![("x-proxy-token".into(), "hidden".into())],
        ..OpenAiConfig::default()
    };
    let text = format!("{:?}", OpenAiEngine::new(config).unwrap());
    assert!(
        !text.contains("sk-secret") && !text.contains("hidden"),
        "{text}"
    );
    assert!(
        text.contains("[redacted]") && text.contains("x-proxy-token"),
        "{text}"
    );
}

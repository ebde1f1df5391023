//! Pure parsing of the Anthropic engine: event assembly, message mapping.

use super::*;

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
fn events_assemble_text_tool_use_and_usage() {
    let events = [
        json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x",
            "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " add."}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block":
            {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\": 1, "}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"b\": 2}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 42}}),
        json!({"type": "message_stop"}),
    ];
    let mut answer = Assembly::default();
    let deltas: Vec<Option<String>> = events.iter().map(|e| answer.apply(e).unwrap()).collect();
    assert_eq!(deltas[3].as_deref(), Some("Let me"));
    assert_eq!(deltas[4].as_deref(), Some(" add."));
    assert_eq!(deltas.iter().flatten().count(), 2);
    assert!(answer.done);
    let metadata = answer.metadata("configured");
    assert_eq!(metadata["model"], "claude-x");
    assert_eq!(metadata["finish_reason"], "tool_use");
    assert_eq!(
        metadata["usage"],
        json!({"input_tokens": 10, "output_tokens": 42})
    );
    let blocks = answer.blocks();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].payload["text"], "Let me add.");
    assert_eq!(blocks[1].payload["id"], "toolu_1");
    assert_eq!(blocks[1].payload["args"], json!({"a": 1, "b": 2}));
}

#[test]
fn error_events_and_strays_are_typed() {
    let mut answer = Assembly::default();
    let (kind, message) = answer
        .apply(&json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
        .unwrap_err();
    assert_eq!(kind, ProviderErrorKind::Server);
    assert!(message.contains("Overloaded"));
    let (kind, _) = answer
        .apply(&json!({"type": "content_block_delta", "index": 5, "delta": {"type": "text_delta", "text": "x"}}))
        .unwrap_err();
    assert_eq!(kind, ProviderErrorKind::Protocol);
}

#[test]
fn blocks_map_to_system_and_messages() {
    let turn = Turn {
        blocks: vec![
            block(BlockKind::System, json!({"text": "be brief"})),
            block(BlockKind::System, json!({"text": "be kind"})),
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
                json!({"id": "c2", "error": "invalid args"}),
            ),
            block(BlockKind::LlmText, json!({"text": "3"})),
        ],
        ..Turn::default()
    };
    let (system, messages) = messages(&turn);
    assert_eq!(system.as_deref(), Some("be brief\n\nbe kind"));
    assert_eq!(
        Value::Array(messages),
        json!([
            {"role": "user", "content": [{"type": "text", "text": "1+2?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "adding"},
                {"type": "tool_use", "id": "c1", "name": "add", "input": {"a": 1}},
                {"type": "tool_use", "id": "c2", "name": "add", "input": {"arguments": "{bad"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "3"},
                {"type": "tool_result", "tool_use_id": "c2", "content": "error: invalid args", "is_error": true}]},
            {"role": "assistant", "content": [{"type": "text", "text": "3"}]},
        ])
    );
}

#[test]
fn the_config_debug_hides_the_key() {
    let config = AnthropicConfig {
        api_key: Some("sk-ant-secret".into()),
        ..AnthropicConfig::default()
    };
    let text = format!("{:?}", AnthropicEngine::new(config).unwrap());
    assert!(
        !text.contains("sk-ant-secret") && text.contains("[redacted]"),
        "{text}"
    );
}

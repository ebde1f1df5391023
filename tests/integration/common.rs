//! Shared fixtures of the integration tests.

use std::path::PathBuf;

/// The folder of JavaScript fixtures.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// The source of fixture `name`.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Drops a JSON value without recursion: serde_json drops nested values
/// recursively, and a value nested thousands of levels deep would overflow
/// a test thread's stack.
pub fn dismantle(value: serde_json::Value) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// A block of the model's (`role: assistant`) with `payload`, an object.
pub fn assistant_block(
    kind: marionette::model::BlockKind,
    payload: serde_json::Value,
) -> marionette::model::Block {
    let serde_json::Value::Object(payload) = payload else {
        unreachable!("payloads are objects")
    };
    marionette::model::Block {
        id: String::new(),
        kind,
        role: Some("assistant".into()),
        payload,
        metadata: serde_json::Map::new(),
    }
}

//! Validation of tool arguments against each tool's JSON Schema, compiled
//! once per session and tool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::model::ToolDefinition;

type Compiled = Arc<Result<jsonschema::Validator, String>>;

/// Compiled schemas by tool name. A session's tools are fixed when it is
/// built, so a name always means the same schema.
#[derive(Default)]
pub(crate) struct Schemas {
    compiled: Mutex<HashMap<String, Compiled>>,
}

impl Schemas {
    /// Checks `args` against `tool`'s `parameters`.
    ///
    /// # Errors
    /// The text the model sees: `invalid arguments for tool "add": "x" is
    /// not of type "number" at /a`, or that the tool's schema itself is
    /// invalid. A `null` or empty schema accepts anything.
    pub(crate) fn check(&self, tool: &ToolDefinition, args: &Value) -> Result<(), String> {
        let schema = &tool.parameters;
        if schema.is_null() || schema.as_object().is_some_and(|o| o.is_empty()) {
            return Ok(());
        }
        let compiled = self.compiled(tool);
        let validator = match compiled.as_ref() {
            Ok(validator) => validator,
            Err(e) => {
                return Err(format!(
                    "tool \"{}\" has an invalid parameters schema: {e}",
                    tool.name
                ));
            }
        };
        crate::schema::check(validator, args)
            .map_err(|problems| format!("invalid arguments for tool \"{}\": {problems}", tool.name))
    }

    fn compiled(&self, tool: &ToolDefinition) -> Compiled {
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        compiled
            .entry(tool.name.clone())
            .or_insert_with(|| {
                // No retriever is configured (default features are off):
                // a remote or file `$ref` fails to compile, never fetches.
                Arc::new(jsonschema::validator_for(&tool.parameters).map_err(|e| e.to_string()))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn add() -> ToolDefinition {
        ToolDefinition {
            name: "add".into(),
            description: String::new(),
            parameters: json!({
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"]
            }),
        }
    }

    #[test]
    fn reports_the_tool_the_problem_and_the_path() {
        let schemas = Schemas::default();
        assert!(schemas.check(&add(), &json!({"a": 1, "b": 2})).is_ok());
        let e = schemas
            .check(&add(), &json!({"a": "x", "b": 2}))
            .unwrap_err();
        assert_eq!(
            e,
            r#"invalid arguments for tool "add": "x" is not of type "number" at /a"#
        );
        let e = schemas.check(&add(), &json!({"a": 1})).unwrap_err();
        assert_eq!(
            e,
            r#"invalid arguments for tool "add": "b" is a required property"#
        );
        let open = ToolDefinition {
            parameters: Value::Null,
            ..add()
        };
        assert!(
            schemas.check(&open, &json!("anything")).is_ok(),
            "cached by name, but null is open"
        );
    }

    #[test]
    fn a_broken_schema_is_a_tool_error_and_nothing_is_fetched() {
        let schemas = Schemas::default();
        let broken = ToolDefinition {
            parameters: json!({"type": 12}),
            ..add()
        };
        let e = schemas.check(&broken, &json!({})).unwrap_err();
        assert!(
            e.starts_with(r#"tool "add" has an invalid parameters schema"#),
            "{e}"
        );
        let remote = ToolDefinition {
            name: "remote".into(),
            parameters: json!({"$ref": "https://example.invalid/schema.json"}),
            ..add()
        };
        assert!(schemas.check(&remote, &json!({})).is_err());
    }
}

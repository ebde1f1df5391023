//! Tool arguments against their JSON Schema, with errors a model (or a
//! person) can act on: what is wrong and where.
//!
//! Validators are compiled once per schema text and cached: a sandbox checks
//! the same few tool schemas over and over.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

/// How many compiled schemas a [`SchemaCache`] keeps before starting over.
const CACHE_CAPACITY: usize = 256;

/// Compiled validators by schema text.
#[derive(Default)]
pub(crate) struct SchemaCache {
    validators: HashMap<String, Arc<jsonschema::Validator>>,
}

impl SchemaCache {
    /// Checks `arguments` (JSON text) against `schema` (JSON text).
    ///
    /// # Errors
    /// Text naming each problem and its place (`"x" is not of type "number"
    /// at /a`), or saying that the schema itself is unusable.
    pub(crate) fn check(&mut self, schema: &str, arguments: &str) -> Result<(), String> {
        let arguments: Value = serde_json::from_str(arguments)
            .map_err(|e| format!("the arguments are not valid JSON: {e}"))?;
        let validator = match self.validators.get(schema) {
            Some(v) => v.clone(),
            None => {
                let parsed: Value = serde_json::from_str(schema)
                    .map_err(|e| format!("the tool's schema is not valid JSON: {e}"))?;
                let compiled = Arc::new(compile(&parsed)?);
                if self.validators.len() >= CACHE_CAPACITY {
                    self.validators.clear();
                }
                self.validators.insert(schema.to_string(), compiled.clone());
                compiled
            }
        };
        check(&validator, &arguments)
    }
}

/// Compiles a schema.
///
/// # Errors
/// Text saying why the schema is unusable.
pub(crate) fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| format!("the tool's schema is invalid: {e}"))
}

/// Most problems reported for one set of arguments: enough for a model to
/// fix its call, not a wall of text.
const MAX_REPORTED: usize = 5;

/// Checks `arguments` with a compiled validator.
///
/// # Errors
/// Up to [`MAX_REPORTED`] problems, each with its place, joined with `; `.
pub(crate) fn check(validator: &jsonschema::Validator, arguments: &Value) -> Result<(), String> {
    let problems: Vec<String> = validator
        .iter_errors(arguments)
        .take(MAX_REPORTED)
        .map(|e| {
            let path = e.instance_path().to_string();
            if path.is_empty() {
                e.to_string()
            } else {
                format!("{e} at {path}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}},"required":["a","b"]}"#;

    #[test]
    fn good_arguments_pass_and_bad_ones_say_what_and_where() {
        let mut cache = SchemaCache::default();
        assert_eq!(cache.check(SCHEMA, r#"{"a": 1, "b": 2}"#), Ok(()));
        let error = cache.check(SCHEMA, r#"{"a": "x", "b": 2}"#).unwrap_err();
        assert_eq!(error, r#""x" is not of type "number" at /a"#);
        let error = cache.check(SCHEMA, r#"{"a": 1}"#).unwrap_err();
        assert_eq!(error, r#""b" is a required property"#);
        assert!(
            cache
                .check(SCHEMA, "{nope")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            cache
                .check("{\"type\": 12}", "{}")
                .unwrap_err()
                .contains("schema is invalid")
        );
    }
}

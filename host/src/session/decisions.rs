//! What tool hooks decide, and reading those decisions from the JSON a
//! JavaScript hook returns.

use serde_json::{Map, Value};

/// What `beforeToolCall` decided.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum BeforeDecision {
    /// Run the call as it is (`null`, `{}`, `{action: "continue"}`).
    #[default]
    Continue,
    /// Do not run it; its `tool_use` block carries the error
    /// (`{action: "abort", error?}`). Only this call is skipped; the run
    /// fails only under `toolErrorHandling: "abort"`.
    Abort {
        /// The error the model sees (a default text without it).
        error: Option<String>,
    },
    /// Run a changed call (`{call: {name?, args?}}`); the id stays the
    /// model's, so the result still answers its call.
    Change {
        /// Another tool to run.
        name: Option<String>,
        /// Other arguments.
        args: Option<Value>,
    },
}

/// What `afterToolCall` decided.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum AfterDecision {
    /// Keep the outcome (`null`, `{}`, `{action: "continue"}`).
    #[default]
    Keep,
    /// Report this result instead, as a success (`{result}`).
    Replace(Value),
    /// Report this error instead (`{error}`).
    Error(String),
}

/// What `onToolError` decided after a failed attempt.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ErrorDecision {
    /// No decision (`null`): the configured `toolErrorHandling` applies.
    #[default]
    Default,
    /// Try again after `backoff_ms`, or after the configured backoff
    /// (`{action: "retry", backoffMs?}`), up to `maxHookRetries` times.
    Retry {
        /// How long to wait first.
        backoff_ms: Option<u64>,
    },
    /// Stop, and fail the whole run (`{action: "abort"}`).
    Abort,
    /// Stop, and report the error to the model (`{action: "continue"}`).
    Continue,
}

/// A hook returned something that is not a decision. The message says
/// which hook and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{hook} returned an invalid decision: {message}")]
pub struct HookReturnError {
    /// `beforeToolCall`, `afterToolCall` or `onToolError`.
    pub hook: &'static str,
    /// What was wrong.
    pub message: String,
}
/// Reads a decision object: `null` is "none"; anything else must be an
/// object with only the `allowed` keys.
fn object<'v>(
    hook: &'static str,
    value: &'v Value,
    allowed: &[&str],
) -> Result<Option<&'v Map<String, Value>>, HookReturnError> {
    let invalid = |message: String| HookReturnError { hook, message };
    match value {
        Value::Null => Ok(None),
        Value::Object(o) => {
            if let Some(key) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(invalid(format!(
                    "unknown key \"{key}\" (expected {})",
                    allowed.join(", ")
                )));
            }
            Ok(Some(o))
        }
        other => Err(invalid(format!("expected an object or null, got {other}"))),
    }
}

fn action<'v>(
    hook: &'static str,
    o: &'v Map<String, Value>,
    allowed: &[&str],
) -> Result<Option<&'v str>, HookReturnError> {
    match o.get("action") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(a)) if allowed.contains(&a.as_str()) => Ok(Some(a)),
        Some(other) => Err(HookReturnError {
            hook,
            message: format!("action {other} (expected {})", allowed.join(" or ")),
        }),
    }
}

fn text(
    hook: &'static str,
    o: &Map<String, Value>,
    key: &str,
) -> Result<Option<String>, HookReturnError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(HookReturnError {
            hook,
            message: format!("{key} must be a string, got {other}"),
        }),
    }
}

impl BeforeDecision {
    /// Reads what a JavaScript `beforeToolCall` returned.
    ///
    /// # Errors
    /// [`HookReturnError`] for anything but the forms listed on the variants.
    pub fn from_json(value: &Value) -> Result<Self, HookReturnError> {
        const HOOK: &str = "beforeToolCall";
        let Some(o) = object(HOOK, value, &["action", "error", "call"])? else {
            return Ok(BeforeDecision::Continue);
        };
        if action(HOOK, o, &["abort", "continue"])? == Some("abort") {
            return Ok(BeforeDecision::Abort {
                error: text(HOOK, o, "error")?,
            });
        }
        match o.get("call") {
            None | Some(Value::Null) => Ok(BeforeDecision::Continue),
            Some(call) => {
                let Some(call) = object(HOOK, call, &["id", "name", "args"])? else {
                    return Ok(BeforeDecision::Continue);
                };
                Ok(BeforeDecision::Change {
                    name: text(HOOK, call, "name")?,
                    args: call.get("args").cloned(),
                })
            }
        }
    }
}

impl AfterDecision {
    /// Reads what a JavaScript `afterToolCall` returned.
    ///
    /// # Errors
    /// [`HookReturnError`] for anything but the forms listed on the
    /// variants, or for both `result` and `error`.
    pub fn from_json(value: &Value) -> Result<Self, HookReturnError> {
        const HOOK: &str = "afterToolCall";
        let Some(o) = object(HOOK, value, &["action", "result", "error"])? else {
            return Ok(AfterDecision::Keep);
        };
        action(HOOK, o, &["continue"])?;
        match (o.get("result"), text(HOOK, o, "error")?) {
            (Some(_), Some(_)) => Err(HookReturnError {
                hook: HOOK,
                message: "both result and error: return one of them".into(),
            }),
            (Some(result), None) => Ok(AfterDecision::Replace(result.clone())),
            (None, Some(error)) => Ok(AfterDecision::Error(error)),
            (None, None) => Ok(AfterDecision::Keep),
        }
    }
}

impl ErrorDecision {
    /// Reads what a JavaScript `onToolError` returned.
    ///
    /// # Errors
    /// [`HookReturnError`] for anything but the forms listed on the variants.
    pub fn from_json(value: &Value) -> Result<Self, HookReturnError> {
        const HOOK: &str = "onToolError";
        let Some(o) = object(HOOK, value, &["action", "backoffMs"])? else {
            return Ok(ErrorDecision::Default);
        };
        let invalid = |message: String| HookReturnError {
            hook: HOOK,
            message,
        };
        let backoff_ms = match o.get("backoffMs") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                invalid(format!("backoffMs must be a non-negative integer, got {v}"))
            })?),
        };
        match action(HOOK, o, &["retry", "abort", "continue"])? {
            Some("retry") => Ok(ErrorDecision::Retry { backoff_ms }),
            _ if backoff_ms.is_some() => Err(invalid("backoffMs without action \"retry\"".into())),
            Some("abort") => Ok(ErrorDecision::Abort),
            Some(_) => Ok(ErrorDecision::Continue),
            None => Ok(ErrorDecision::Default),
        }
    }
}
impl BeforeDecision {
    /// The JSON a JavaScript `beforeToolCall` would return for this
    /// decision ([`from_json`](Self::from_json) reads it back).
    pub fn to_json(&self) -> Value {
        match self {
            BeforeDecision::Continue => Value::Null,
            BeforeDecision::Abort { error } => {
                let mut o = Map::new();
                o.insert("action".into(), "abort".into());
                if let Some(error) = error {
                    o.insert("error".into(), error.clone().into());
                }
                Value::Object(o)
            }
            BeforeDecision::Change { name, args } => {
                let mut call = Map::new();
                if let Some(name) = name {
                    call.insert("name".into(), name.clone().into());
                }
                if let Some(args) = args {
                    call.insert("args".into(), args.clone());
                }
                let mut o = Map::new();
                o.insert("call".into(), Value::Object(call));
                Value::Object(o)
            }
        }
    }
}

impl AfterDecision {
    /// The JSON a JavaScript `afterToolCall` would return for this decision.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        match self {
            AfterDecision::Keep => return Value::Null,
            AfterDecision::Replace(result) => o.insert("result".into(), result.clone()),
            AfterDecision::Error(error) => o.insert("error".into(), error.clone().into()),
        };
        Value::Object(o)
    }
}

impl ErrorDecision {
    /// The JSON a JavaScript `onToolError` would return for this decision.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        match self {
            ErrorDecision::Default => return Value::Null,
            ErrorDecision::Retry { backoff_ms } => {
                o.insert("action".into(), "retry".into());
                if let Some(ms) = backoff_ms {
                    o.insert("backoffMs".into(), (*ms).into());
                }
            }
            ErrorDecision::Abort => {
                o.insert("action".into(), "abort".into());
            }
            ErrorDecision::Continue => {
                o.insert("action".into(), "continue".into());
            }
        }
        Value::Object(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decisions_read_the_javascript_forms() {
        use BeforeDecision as B;
        assert_eq!(B::from_json(&Value::Null).unwrap(), B::Continue);
        assert_eq!(
            B::from_json(&json!({"action": "abort", "error": "no"})).unwrap(),
            B::Abort {
                error: Some("no".into())
            }
        );
        assert_eq!(
            B::from_json(&json!({"call": {"args": {"a": 2}}})).unwrap(),
            B::Change {
                name: None,
                args: Some(json!({"a": 2}))
            }
        );
        assert_eq!(
            AfterDecision::from_json(&json!({"result": 5})).unwrap(),
            AfterDecision::Replace(json!(5))
        );
        assert_eq!(
            AfterDecision::from_json(&json!({"error": "x"})).unwrap(),
            AfterDecision::Error("x".into())
        );
        assert_eq!(
            ErrorDecision::from_json(&json!({"action": "retry", "backoffMs": 5})).unwrap(),
            ErrorDecision::Retry {
                backoff_ms: Some(5)
            }
        );
        assert_eq!(
            ErrorDecision::from_json(&json!({"action": "abort"})).unwrap(),
            ErrorDecision::Abort
        );
        assert_eq!(
            ErrorDecision::from_json(&Value::Null).unwrap(),
            ErrorDecision::Default
        );
    }

    #[test]
    fn decisions_round_trip_through_their_javascript_form() {
        let before = [
            BeforeDecision::Continue,
            BeforeDecision::Abort { error: None },
            BeforeDecision::Abort {
                error: Some("no".into()),
            },
            BeforeDecision::Change {
                name: Some("mul".into()),
                args: Some(json!({"a": 1})),
            },
            BeforeDecision::Change {
                name: None,
                args: Some(Value::Null),
            },
        ];
        for d in before {
            assert_eq!(BeforeDecision::from_json(&d.to_json()).unwrap(), d);
        }
        let after = [
            AfterDecision::Keep,
            AfterDecision::Replace(json!(3)),
            AfterDecision::Replace(Value::Null),
            AfterDecision::Error("bad".into()),
        ];
        for d in after {
            assert_eq!(AfterDecision::from_json(&d.to_json()).unwrap(), d);
        }
        let error = [
            ErrorDecision::Default,
            ErrorDecision::Retry { backoff_ms: None },
            ErrorDecision::Retry {
                backoff_ms: Some(5),
            },
            ErrorDecision::Abort,
            ErrorDecision::Continue,
        ];
        for d in error {
            assert_eq!(ErrorDecision::from_json(&d.to_json()).unwrap(), d);
        }
    }

    #[test]
    fn malformed_decisions_say_what_is_wrong() {
        let e = BeforeDecision::from_json(&json!("abort"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            r#"beforeToolCall returned an invalid decision: expected an object or null, got "abort""#
        );
        let e = BeforeDecision::from_json(&json!({"args": {}}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(r#"unknown key "args" (expected action, error, call)"#),
            "{e}"
        );
        let e = BeforeDecision::from_json(&json!({"action": "retry"}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(r#"action "retry" (expected abort or continue)"#),
            "{e}"
        );
        let e = AfterDecision::from_json(&json!({"result": 1, "error": "x"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("both result and error"), "{e}");
        let e = ErrorDecision::from_json(&json!({"action": "retry", "backoffMs": -1})).unwrap_err();
        assert!(
            e.to_string()
                .contains("backoffMs must be a non-negative integer, got -1")
        );
        assert!(ErrorDecision::from_json(&json!({"action": "explode"})).is_err());
    }
}

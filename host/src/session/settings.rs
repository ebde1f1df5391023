//! The tool loop's settings, parsed from the JSON a script writes.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Whether, and how, the model may call tools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// The model is offered no tools, and calls it makes anyway are not
    /// executed.
    None,
    /// The model must call a tool. Only the first inference of a run is
    /// told so; later ones get `auto`, otherwise the model could never
    /// answer with the results and every run would hit `maxIterations`.
    Required,
}

/// What a failed tool call does to the run (when no `onToolError` hook
/// decides otherwise).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolErrorHandling {
    /// The error goes to the model in the `tool_use` block; the loop goes on.
    #[default]
    Continue,
    /// The run fails, naming the tool and the error.
    Abort,
    /// The call is retried `retryMaxRetries` times with exponential backoff;
    /// if it still fails, the error goes to the model.
    Retry,
}

/// How the tool loop runs, in the shape a script writes it
/// (`{maxIterations, toolChoice, ...}`); every key is optional.
///
/// Deserializing goes through [`from_json`](Self::from_json), so an unknown
/// key or a bad value is an error naming it rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "Value")]
pub struct ToolLoopSettings {
    /// Engine calls per run, at most (5). Reaching it with tool calls still
    /// pending fails the run.
    pub max_iterations: u32,
    /// Tool calls of one step that run at once, at most (4).
    pub max_parallel_tools: usize,
    /// How long one attempt of one tool call may take, in ms (30000); past
    /// it the attempt fails with "tool X timed out after Nms".
    pub execution_timeout_ms: u64,
    /// Whether the model may call tools (`auto`).
    pub tool_choice: ToolChoice,
    /// What a failed call does (`continue`).
    pub tool_error_handling: ToolErrorHandling,
    /// Retries of a failed call under `retry` (2, so 3 attempts).
    pub retry_max_retries: u32,
    /// The first retry's wait, in ms (1000).
    pub retry_backoff_ms: u64,
    /// Each further retry waits this much longer (2.0).
    pub retry_backoff_factor: f64,
    /// The tools the model may call; `None` allows all. A call to another
    /// tool fails, and the engine is only offered these.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<Vec<String>>,
    /// Retries an `onToolError` hook may ask for per call (10): a hook that
    /// always says retry cannot loop forever.
    pub max_hook_retries: u32,
}

impl Default for ToolLoopSettings {
    fn default() -> Self {
        ToolLoopSettings {
            max_iterations: 5,
            max_parallel_tools: 4,
            execution_timeout_ms: 30_000,
            tool_choice: ToolChoice::Auto,
            tool_error_handling: ToolErrorHandling::Continue,
            retry_max_retries: 2,
            retry_backoff_ms: 1000,
            retry_backoff_factor: 2.0,
            allowed_tools: None,
            max_hook_retries: 10,
        }
    }
}

/// A tool loop setting that is unknown or has a bad value; the message
/// names the key (`invalid toolChoice "sometimes": expected auto, none or
/// required`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SettingsError {
    /// The key at fault (empty when the whole value was not an object).
    pub key: String,
    /// What is wrong, in words.
    pub message: String,
}

impl SettingsError {
    fn new(key: &str, message: String) -> Self {
        SettingsError {
            key: key.to_string(),
            message,
        }
    }
}

impl TryFrom<Value> for ToolLoopSettings {
    type Error = SettingsError;

    fn try_from(value: Value) -> Result<Self, SettingsError> {
        ToolLoopSettings::from_json(&value)
    }
}

impl ToolLoopSettings {
    /// Parses settings as a script writes them. Missing keys and `null`
    /// values keep their defaults; `null` or `undefined` as a whole gives
    /// the defaults.
    ///
    /// # Errors
    /// [`SettingsError`] naming the first unknown key or invalid value.
    pub fn from_json(value: &Value) -> Result<Self, SettingsError> {
        let mut s = ToolLoopSettings::default();
        let object = match value {
            Value::Null => return Ok(s),
            Value::Object(object) => object,
            other => {
                return Err(SettingsError::new(
                    "",
                    format!("tool loop settings must be an object, got {other}"),
                ));
            }
        };
        for (key, v) in object {
            if v.is_null() {
                if !KEYS.contains(&key.as_str()) {
                    return Err(unknown(key));
                }
                continue;
            }
            match key.as_str() {
                "maxIterations" => s.max_iterations = positive(key, v)?,
                "maxParallelTools" => s.max_parallel_tools = positive(key, v)?,
                "executionTimeoutMs" => s.execution_timeout_ms = positive(key, v)?,
                "toolChoice" => s.tool_choice = choice(key, v, "auto, none or required")?,
                "toolErrorHandling" => {
                    s.tool_error_handling = choice(key, v, "continue, abort or retry")?
                }
                "retryMaxRetries" => s.retry_max_retries = non_negative(key, v)?,
                "retryBackoffMs" => s.retry_backoff_ms = non_negative(key, v)?,
                "retryBackoffFactor" => match v.as_f64() {
                    Some(f) => s.retry_backoff_factor = f,
                    None => return Err(factor_error(v)),
                },
                "allowedTools" => s.allowed_tools = Some(names(key, v)?),
                "maxHookRetries" => s.max_hook_retries = non_negative(key, v)?,
                _ => return Err(unknown(key)),
            }
        }
        s.validate()?;
        Ok(s)
    }

    /// Checks values that [`from_json`](Self::from_json) checks, for
    /// settings built in Rust (`max_iterations: 0` would never call the
    /// engine).
    ///
    /// # Errors
    /// [`SettingsError`] naming the invalid value.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let positive = [
            ("maxIterations", self.max_iterations as u64),
            ("maxParallelTools", self.max_parallel_tools as u64),
            ("executionTimeoutMs", self.execution_timeout_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(SettingsError::new(
                    key,
                    format!("{key} must be a positive integer, got 0"),
                ));
            }
        }
        let f = self.retry_backoff_factor;
        if !f.is_finite() || f < 1.0 {
            return Err(factor_error(&Value::from(f)));
        }
        Ok(())
    }

    /// The per-attempt execution timeout.
    pub fn execution_timeout(&self) -> Duration {
        Duration::from_millis(self.execution_timeout_ms)
    }

    /// The wait before retrying after failed attempt `attempt` (1-based):
    /// `retryBackoffMs * retryBackoffFactor^(attempt - 1)`, saturating.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(i32::MAX as u32) as i32;
        let ms = self.retry_backoff_ms as f64 * self.retry_backoff_factor.powi(exponent);
        // About 31 years: beyond any useful wait, and far from overflow.
        Duration::from_millis(ms.clamp(0.0, 1e12) as u64)
    }

    /// Whether the model may call `tool`.
    pub fn allows(&self, tool: &str) -> bool {
        self.allowed_tools
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|a| a == tool))
    }
}

const KEYS: &[&str] = &[
    "maxIterations",
    "maxParallelTools",
    "executionTimeoutMs",
    "toolChoice",
    "toolErrorHandling",
    "retryMaxRetries",
    "retryBackoffMs",
    "retryBackoffFactor",
    "allowedTools",
    "maxHookRetries",
];

fn unknown(key: &str) -> SettingsError {
    SettingsError::new(
        key,
        format!(
            "unknown tool loop setting \"{key}\" (known: {})",
            KEYS.join(", ")
        ),
    )
}

/// A JSON number that is a whole number (`5` or `5.0`), as JS sends them.
fn whole(v: &Value) -> Option<i128> {
    if let Some(n) = v.as_i64() {
        return Some(n.into());
    }
    if let Some(n) = v.as_u64() {
        return Some(n.into());
    }
    v.as_f64()
        .filter(|f| f.fract() == 0.0 && f.abs() < 1e30)
        .map(|f| f as i128)
}

fn positive<T: TryFrom<i128>>(key: &str, v: &Value) -> Result<T, SettingsError> {
    whole(v)
        .filter(|n| *n > 0)
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| {
            SettingsError::new(key, format!("{key} must be a positive integer, got {v}"))
        })
}

fn non_negative<T: TryFrom<i128>>(key: &str, v: &Value) -> Result<T, SettingsError> {
    whole(v)
        .filter(|n| *n >= 0)
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| {
            SettingsError::new(
                key,
                format!("{key} must be a non-negative integer, got {v}"),
            )
        })
}

fn choice<T: for<'de> Deserialize<'de>>(
    key: &str,
    v: &Value,
    expected: &str,
) -> Result<T, SettingsError> {
    serde_json::from_value(v.clone())
        .map_err(|_| SettingsError::new(key, format!("invalid {key} {v}: expected {expected}")))
}

fn factor_error(v: &Value) -> SettingsError {
    SettingsError::new(
        "retryBackoffFactor",
        format!("retryBackoffFactor must be a finite number of at least 1, got {v}"),
    )
}

fn names(key: &str, v: &Value) -> Result<Vec<String>, SettingsError> {
    let error = || {
        SettingsError::new(
            key,
            format!("{key} must be an array of tool names, got {v}"),
        )
    };
    let items = v.as_array().ok_or_else(error)?;
    items
        .iter()
        .map(|item| item.as_str().map(str::to_string).ok_or_else(error))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        ToolLoopSettings::from_json(&v).unwrap_err().to_string()
    }

    #[test]
    fn parses_what_javascript_writes() {
        let s = ToolLoopSettings::from_json(&json!({
            "maxIterations": 3, "maxParallelTools": 2.0, "executionTimeoutMs": 100,
            "toolChoice": "required", "toolErrorHandling": "retry", "retryMaxRetries": 0,
            "retryBackoffMs": 5, "retryBackoffFactor": 3, "allowedTools": ["a"],
            "maxHookRetries": 1, "retryBackoffMs": null
        }))
        .unwrap();
        assert_eq!((s.max_iterations, s.max_parallel_tools), (3, 2));
        assert_eq!(s.tool_choice, ToolChoice::Required);
        assert_eq!(s.tool_error_handling, ToolErrorHandling::Retry);
        assert_eq!(s.retry_backoff_ms, 1000, "null keeps the default");
        assert!(s.allows("a") && !s.allows("b"));
        assert_eq!(
            ToolLoopSettings::from_json(&Value::Null).unwrap(),
            ToolLoopSettings::default()
        );
        let round: ToolLoopSettings =
            serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(round, s);
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            err(json!({"toolChoice": "sometimes"})),
            r#"invalid toolChoice "sometimes": expected auto, none or required"#
        );
        assert!(
            err(json!({"maxIterations": 0}))
                .starts_with("maxIterations must be a positive integer")
        );
        assert!(
            err(json!({"maxIterations": 1.5}))
                .starts_with("maxIterations must be a positive integer")
        );
        assert!(
            err(json!({"retryMaxRetries": -1}))
                .starts_with("retryMaxRetries must be a non-negative")
        );
        assert!(
            err(json!({"maxIteration": 3}))
                .starts_with(r#"unknown tool loop setting "maxIteration""#)
        );
        assert!(err(json!({"allowedTools": [1]})).starts_with("allowedTools must be an array"));
        assert!(err(json!({"retryBackoffFactor": 0.5})).starts_with("retryBackoffFactor must be"));
        assert!(
            err(json!({"toolErrorHandling": "explode"}))
                .contains("expected continue, abort or retry")
        );
        assert!(err(json!(3)).starts_with("tool loop settings must be an object"));
        let e = serde_json::from_value::<ToolLoopSettings>(json!({"nope": 1})).unwrap_err();
        assert!(
            e.to_string().contains("unknown tool loop setting \"nope\""),
            "{e}"
        );
    }

    #[test]
    fn backoff_grows_by_the_factor() {
        let s = ToolLoopSettings {
            retry_backoff_ms: 100,
            retry_backoff_factor: 2.0,
            ..Default::default()
        };
        let waits: Vec<u128> = (1..=3).map(|a| s.backoff(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400]);
        let huge = ToolLoopSettings {
            retry_backoff_factor: 1e300,
            ..s
        };
        assert!(huge.backoff(100) > Duration::from_secs(1_000_000));
    }
}

//! `sessions.run` from a host that breaks the protocol: a malformed spec
//! fails the task with a `TypeError` naming the field, and the sandbox
//! serves the next run.

use super::*;
use crate::Policy;
use crate::sandbox::Sandbox;

/// Runs `spec` as a `sessions.run` task and returns its script error.
async fn refused(sandbox: &Sandbox, spec: &str) -> crate::ScriptError {
    let (sink, _events) = tokio::sync::mpsc::unbounded_channel();
    let outcome = sandbox
        .run_session(
            "test session".into(),
            spec.to_string(),
            &user_turn("x"),
            sink,
            None,
            tokio_util::sync::CancellationToken::new(),
        )
        .await;
    match outcome {
        Err(Error::Script { error, .. }) => *error,
        other => panic!("{spec}: expected a script error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_malformed_spec_is_a_type_error_naming_the_field() {
    let sandbox = Sandbox::new(Policy::default()).await.unwrap();
    let cases = [
        (
            "[]",
            "TypeError",
            "sessions.run: the spec must be a JSON object",
        ),
        (
            "{}",
            "TypeError",
            "sessions.run: engine: expected {target} or {host}",
        ),
        (
            r#"{"engine": {"host": 5}}"#,
            "TypeError",
            "sessions.run: engine: expected {target} or {host: name}",
        ),
        (
            r#"{"engine": {"host": "echo"}, "middlewares": {}}"#,
            "TypeError",
            "sessions.run: middlewares must be an array",
        ),
        (
            r#"{"engine": {"host": "echo"}, "tools": [{"host": "t", "tools": [{"description": "x"}]}]}"#,
            "TypeError",
            "sessions.run: tools[0]: a tool definition needs a name",
        ),
        (
            r#"{"engine": {"host": "echo"}, "settings": {"maxIterations": 0}}"#,
            "TypeError",
            "sessions.run: settings: invalid maxIterations 0",
        ),
        (
            r#"{"engine": {"host": "echo"}, "settings": {"retries": 1}}"#,
            "TypeError",
            "sessions.run: settings: unknown tool loop setting",
        ),
        (
            r#"{"engine": {"target": {"script": "none.js", "name": "e"}}}"#,
            "Error",
            "no script named",
        ),
        ("{not json", "SyntaxError", ""),
    ];
    for (spec, name, words) in cases {
        let error = refused(&sandbox, spec).await;
        assert_eq!(error.name, name, "{spec}: {error:?}");
        assert!(error.message.contains(words), "{spec}: {}", error.message);
    }
    // An engine the host does not have fails the run with the host's words.
    let error = refused(&sandbox, r#"{"engine": {"host": "nope"}}"#).await;
    assert!(error.message.contains("nope"), "{}", error.message);
    // The sandbox serves a well-formed run after all that.
    let (sink, _events) = tokio::sync::mpsc::unbounded_channel();
    let out = sandbox
        .run_session(
            "test session".into(),
            r#"{"engine": {"host": "echo"}}"#.into(),
            &user_turn("x"),
            sink,
            None,
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        out["turn"]["blocks"][1]["payload"]["text"], "READY",
        "{out}"
    );
}

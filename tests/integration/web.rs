//! The web basics of the guest (`URL`, `URLSearchParams`, `atob`/`btoa`,
//! `structuredClone`, `AbortController`/`AbortSignal`, `performance`,
//! `crypto`, `TextDecoder`) against what their specifications say, and the
//! signals of session runs. The checks are in `tests/fixtures/web/basics.js`:
//! each export returns how many comparisons it made and the ones that
//! failed.

use marionette::{Policy, Sandbox, TaskOptions};
use serde_json::{Value, json};

use crate::common::fixture;

async fn sandbox() -> Sandbox {
    let sb = Sandbox::new(Policy::default()).await.expect("sandbox");
    sb.load("basics.js", fixture("web/basics.js"))
        .await
        .expect("the fixture loads");
    sb
}

async fn call(sb: &Sandbox, function: &str, args: &[Value]) -> Value {
    sb.call("basics.js", function, args, TaskOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{function}: {e}"))
}

/// Runs the export `function` and requires at least `floor` checks, none
/// failed; returns what it returned.
async fn passes(function: &str, args: &[Value], floor: u64) -> Value {
    let sb = sandbox().await;
    let out = call(&sb, function, args).await;
    let failures = out["failures"].as_array().expect("failures");
    assert!(
        failures.is_empty(),
        "{function}: {} failed:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|f| f.as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let checks = out["checks"].as_u64().expect("checks");
    assert!(checks >= floor, "{function}: only {checks} checks ran");
    out
}

#[tokio::test]
async fn url_parsing_follows_the_whatwg_examples() {
    let cases: Value =
        serde_json::from_str(&fixture("web/url_cases.json")).expect("url_cases.json");
    let cases = cases["cases"].clone();
    assert!(cases.as_array().expect("cases").len() >= 40);
    let out = passes("urlParsing", &[cases], 250).await;
    // Where the url crate is known to differ from the standard (a case
    // marked `deviation`); a fixed crate makes this fail, and the mark goes.
    assert_eq!(out["deviations"], json!(["file:///C|/demo"]));
}

#[tokio::test]
async fn url_setters_and_search_params() {
    passes("urlSetters", &[], 18).await;
    passes("searchParams", &[], 35).await;
}

#[tokio::test]
async fn base64_is_the_forgiving_base64_of_the_infra_standard() {
    passes("base64", &[], 30).await;
}

#[tokio::test]
async fn structured_clone_keeps_cycles_and_types_and_refuses_what_it_cannot_clone() {
    passes("cloning", &[], 40).await;
}

#[tokio::test]
async fn abort_signals_follow_the_dom_standard() {
    passes("abortSignals", &[], 20).await;
}

#[tokio::test]
async fn text_decoder_decodes_utf8_as_the_encoding_standard_says() {
    passes("textDecoding", &[], 30).await;
}

#[tokio::test]
async fn crypto_gives_host_randomness_within_its_quota() {
    passes("randomness", &[], 12).await;
}

#[tokio::test]
async fn performance_now_is_monotonic() {
    passes("performanceClock", &[], 4).await;
}

#[tokio::test]
async fn an_aborted_signal_cancels_a_run_and_its_tools_see_their_signal_fire() {
    let sb = sandbox().await;
    assert_eq!(
        call(&sb, "runCancelledBySignal", &[]).await,
        json!({
            "rejectedWith": "AbortError: the user left",
            "toolHadSignal": true,
            "toolSignalReason": "AbortError: the user left",
            "running": false,
        })
    );
    assert_eq!(
        call(&sb, "runWithAbortedSignal", &[]).await,
        json!({
            "error": "too late",
            "engineCalls": 0,
            "badSignal": "TypeError: invalid signal: must be an AbortSignal",
            "running": false,
        })
    );
    assert_eq!(
        call(&sb, "cancelActiveFiresSignals", &[]).await,
        json!({
            "error": "AbortError: stop now",
            "toolHadSignal": true,
            "toolSignalReason": "AbortError: stop now",
        })
    );
}

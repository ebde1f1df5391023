//! `fetch` under the policy's network rules, against a server of the test
//! on 127.0.0.1 (allowed explicitly), and the Fetch API's classes against
//! the standard. The scripts are in `tests/fixtures/web/fetch.js`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use marionette::policy::{NetAllow, NetPolicy};
use marionette::{Policy, Sandbox, TaskOptions};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::common::fixture;

/// What the server saw.
#[derive(Default)]
struct Seen {
    /// Paths, in order of arrival.
    paths: Mutex<Vec<String>>,
    /// `/hold` requests in flight now, and the most at once.
    holding: AtomicUsize,
    most_holding: AtomicUsize,
    /// `/hold` requests whose handler was dropped before it answered (the
    /// client went away).
    dropped: AtomicUsize,
    /// Signalled when a `/hold` request arrives.
    held: Notify,
    /// Releases the `/hold` requests.
    release: Notify,
    released: std::sync::atomic::AtomicBool,
}

struct Server {
    base: String,
    port: u16,
    seen: Arc<Seen>,
}

impl Server {
    fn paths(&self) -> Vec<String> {
        self.seen.paths.lock().unwrap().clone()
    }

    fn release(&self) {
        self.seen.released.store(true, Ordering::SeqCst);
        self.seen.release.notify_waiters();
    }

    async fn wait_holding(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let held = self.seen.held.notified();
                if self.seen.holding.load(Ordering::SeqCst) >= n {
                    return;
                }
                held.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} /hold requests never arrived"));
    }
}

/// Counts a `/hold` request while it is in flight; notes a drop.
struct Holding(Arc<Seen>, bool);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.holding.fetch_sub(1, Ordering::SeqCst);
        if !self.1 {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn start() -> Server {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route(
            "/json",
            get(|| async { axum::Json(json!({"hello": "world"})) }),
        )
        .route("/echo", any(echo))
        .route(
            "/redirect",
            get(|uri: Uri| async move {
                let q = query(&uri);
                let status = q.get("status").and_then(|s| s.parse().ok()).unwrap_or(302);
                Response::builder()
                    .status(status)
                    .header("location", q.get("to").cloned().unwrap_or_default())
                    .body(Body::empty())
                    .unwrap()
            }),
        )
        .route(
            "/big",
            get(|uri: Uri| async move {
                let q = query(&uri);
                let n: usize = q.get("n").and_then(|s| s.parse().ok()).unwrap_or(0);
                let chunked = q.contains_key("chunked");
                let chunks = (0..n.div_ceil(65536)).map(move |i| {
                    let len = 65536.min(n - i * 65536);
                    Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; len]))
                });
                if chunked {
                    // No content-length: the cap is met while reading.
                    Body::from_stream(futures::stream::iter(chunks)).into_response()
                } else {
                    vec![b'x'; n].into_response()
                }
            }),
        )
        .route(
            "/slow",
            get(|| async {
                // Headers at once, then a body that never ends.
                let first = futures::stream::once(async {
                    Ok::<_, std::io::Error>(Bytes::from_static(b"partial"))
                });
                Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()))
            }),
        )
        .route(
            "/cookie",
            get(|| async {
                (
                    [("set-cookie", "session=secret"), ("x-visible", "yes")],
                    "ok",
                )
            }),
        )
        .route("/hold", get(hold))
        .route("/after-hold", get(after_hold))
        .layer(axum::middleware::from_fn_with_state(seen.clone(), record))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        base: format!("http://127.0.0.1:{port}"),
        port,
        seen,
    }
}

fn query(uri: &Uri) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

async fn record(
    State(seen): State<Arc<Seen>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    seen.paths
        .lock()
        .unwrap()
        .push(request.uri().path().to_string());
    next.run(request).await
}

async fn echo(method: Method, headers: HeaderMap, body: Bytes) -> Response {
    let shown: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), json!(v.to_str().unwrap_or("?"))))
        .collect();
    if method == Method::PUT {
        return body.into_response();
    }
    (
        StatusCode::CREATED,
        [("content-type", "application/json")],
        json!({"method": method.as_str(), "headers": shown, "body": String::from_utf8_lossy(&body)})
            .to_string(),
    )
        .into_response()
}

async fn hold(State(seen): State<Arc<Seen>>) -> &'static str {
    let now = seen.holding.fetch_add(1, Ordering::SeqCst) + 1;
    seen.most_holding.fetch_max(now, Ordering::SeqCst);
    let mut guard = Holding(seen.clone(), false);
    seen.held.notify_waiters();
    loop {
        let released = seen.release.notified();
        if seen.released.load(Ordering::SeqCst) {
            break;
        }
        released.await;
    }
    guard.1 = true;
    "held"
}

/// Answers once a `/hold` request is in flight.
async fn after_hold(State(seen): State<Arc<Seen>>) -> &'static str {
    loop {
        let held = seen.held.notified();
        if seen.holding.load(Ordering::SeqCst) > 0 {
            return "after";
        }
        held.await;
    }
}

fn allow(entries: &[String]) -> NetPolicy {
    NetPolicy {
        allow: entries
            .iter()
            .map(|e| e.parse::<NetAllow>().expect("an origin"))
            .collect(),
        ..NetPolicy::default()
    }
}

async fn sandbox(net: NetPolicy) -> Sandbox {
    let sb = Sandbox::new(Policy {
        net,
        ..Policy::default()
    })
    .await
    .expect("sandbox");
    sb.load("fetch.js", fixture("web/fetch.js"))
        .await
        .expect("the fixture loads");
    sb
}

async fn call(sb: &Sandbox, function: &str, args: &[Value]) -> Value {
    sb.call("fetch.js", function, args, TaskOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{function}: {e}"))
}

/// `attempt(url, init)` must be refused with a TypeError whose message
/// says `words`.
async fn refused(sb: &Sandbox, url: &str, init: Value, words: &str) {
    let out = call(sb, "attempt", &[json!(url), init]).await;
    assert_eq!(out["ok"], false, "{url}: {out}");
    assert_eq!(out["isTypeError"], true, "{url}: {out}");
    let message = out["message"].as_str().unwrap();
    assert!(
        message.starts_with("fetch refused by the policy:") && message.contains(words),
        "{url}: {message:?} does not say {words:?}"
    );
}

fn checks_pass(out: &Value, floor: u64) {
    let failures = out["failures"].as_array().expect("failures");
    assert!(failures.is_empty(), "failed:\n{failures:#?}");
    assert!(
        out["checks"].as_u64().unwrap() >= floor,
        "too few checks: {out}"
    );
}

#[tokio::test]
async fn the_classes_follow_the_standard() {
    let sb = sandbox(NetPolicy::default()).await;
    checks_pass(&call(&sb, "headers", &[]).await, 14);
    checks_pass(&call(&sb, "requestsAndResponses", &[]).await, 37);
}

#[tokio::test]
async fn get_and_post_reach_an_allowed_server() {
    let server = start().await;
    let sb = sandbox(allow(&[format!("127.0.0.1:{}", server.port)])).await;
    let out = call(&sb, "getJson", &[json!(server.base)]).await;
    assert_eq!(
        out,
        json!({"status": 200, "ok": true, "url": format!("{}/json", server.base),
            "json": {"hello": "world"}, "contentType": "application/json", "immutable": true})
    );
    let out = call(&sb, "postEcho", &[json!(server.base)]).await;
    assert_eq!(out["status"], 201);
    assert_eq!(out["statusText"], "Created");
    assert_eq!(out["type"], "basic");
    let echoed: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["body"], r#"{"hello":"wörld"}"#);
    assert_eq!(echoed["headers"]["authorization"], "Bearer t0k");
    assert_eq!(echoed["headers"]["x-custom"], "yes");
    assert_eq!(echoed["headers"]["content-type"], "application/json");
    assert!(
        echoed["headers"]["user-agent"]
            .as_str()
            .unwrap()
            .starts_with("marionette/")
    );
    let out = call(&sb, "postBytes", &[json!(server.base)]).await;
    assert_eq!(out, json!([0, 1, 2, 255]));
    // set-cookie is not for scripts.
    let out = call(&sb, "follow", &[json!(format!("{}/cookie", server.base))]).await;
    assert_eq!(out["headers"]["x-visible"], "yes");
    assert_eq!(out["headers"].get("set-cookie"), None, "{out}");
}

#[tokio::test]
async fn nothing_is_allowed_by_default() {
    let server = start().await;
    let sb = sandbox(NetPolicy::default()).await;
    refused(&sb, &server.base, json!({}), "net.allow is empty").await;
    assert!(server.paths().is_empty());
}

#[tokio::test]
async fn origins_and_methods_outside_the_policy_are_refused() {
    let server = start().await;
    let other = start().await;
    let net = NetPolicy {
        methods: vec!["GET".into()],
        ..allow(&[format!("127.0.0.1:{}", server.port)])
    };
    let sb = sandbox(net).await;
    refused(
        &sb,
        &format!("{}/json", other.base),
        json!({}),
        &format!(
            "the origin http://127.0.0.1:{} is not in the allow-list",
            other.port
        ),
    )
    .await;
    // Another port of the same host, and the default port.
    refused(
        &sb,
        &format!("http://127.0.0.1:{}/json", server.port + 1),
        json!({}),
        "is not in the allow-list",
    )
    .await;
    refused(
        &sb,
        "https://127.0.0.1/json",
        json!({}),
        "the origin https://127.0.0.1:443 is not in the allow-list",
    )
    .await;
    refused(
        &sb,
        &format!("{}/echo", server.base),
        json!({"method": "POST", "body": "x"}),
        "the method POST is not allowed",
    )
    .await;
    refused(
        &sb,
        &format!("{}/json", server.base),
        json!({"headers": {"host": "internal.example"}}),
        "may not set the request header \"host\"",
    )
    .await;
    refused(
        &sb,
        &format!("{}/json", server.base),
        json!({"headers": {"cookie": "a=1"}}),
        "may not set the request header \"cookie\"",
    )
    .await;
    assert!(server.paths().is_empty() && other.paths().is_empty());
}

#[tokio::test]
async fn redirects_are_followed_only_within_the_allow_list() {
    let server = start().await;
    let other = start().await;
    let sb = sandbox(allow(&[format!("127.0.0.1:{}", server.port)])).await;
    // Within: followed.
    let to = format!("{}/json", server.base);
    let out = call(
        &sb,
        "follow",
        &[json!(format!("{}/redirect?to={to}", server.base))],
    )
    .await;
    assert_eq!(out["status"], 200);
    assert_eq!(out["redirected"], true);
    assert_eq!(out["url"], to);
    // Out: refused before the other server is asked.
    let escape = format!("{}/redirect?to={}/json", server.base, other.base);
    refused(&sb, &escape, json!({}), "is not in the allow-list").await;
    assert!(other.paths().is_empty(), "{:?}", other.paths());
    // To the host's own metadata address, with a 307: refused.
    let metadata = format!(
        "{}/redirect?status=307&to=http://169.254.169.254/latest",
        server.base
    );
    refused(&sb, &metadata, json!({}), "is not in the allow-list").await;
    // manual: the 3xx itself; error: a TypeError.
    let out = call(&sb, "follow", &[json!(escape), json!("manual")]).await;
    assert_eq!(out["status"], 302);
    assert_eq!(out["headers"]["location"], format!("{}/json", other.base));
    let out = call(
        &sb,
        "attempt",
        &[json!(escape), json!({"redirect": "error"})],
    )
    .await;
    assert_eq!(out["isTypeError"], true);
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains("redirect mode is \"error\"")
    );
    // A loop ends at the policy's count.
    let looping = format!("{}/redirect?to=/redirect", server.base);
    let out = call(&sb, "attempt", &[json!(looping), json!({})]).await;
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains("more than 10 redirects"),
        "{out}"
    );
    assert!(other.paths().is_empty());
}

#[tokio::test]
async fn a_huge_body_meets_the_cap() {
    let server = start().await;
    let net = NetPolicy {
        max_response_bytes: 100_000,
        max_request_bytes: 1_000,
        ..allow(&[format!("127.0.0.1:{}", server.port)])
    };
    let sb = sandbox(net).await;
    // Under the cap: whole.
    let out = call(
        &sb,
        "attempt",
        &[json!(format!("{}/big?n=100000", server.base)), json!({})],
    )
    .await;
    assert_eq!(out["body"], 100_000, "{out}");
    // Announced by content-length, and counted while streaming.
    for url in ["/big?n=5000000", "/big?n=5000000&chunked"] {
        refused(
            &sb,
            &format!("{}{url}", server.base),
            json!({}),
            "more than the 100000 the policy allows (net.max_response_bytes)",
        )
        .await;
    }
    refused(
        &sb,
        &format!("{}/echo", server.base),
        json!({"method": "POST", "body": "x".repeat(1001)}),
        "the request body is 1001 bytes, more than the 1000",
    )
    .await;
}

#[tokio::test]
async fn a_slow_body_meets_the_timeout() {
    let server = start().await;
    let net = NetPolicy {
        timeout: Duration::from_millis(300),
        ..allow(&[format!("127.0.0.1:{}", server.port)])
    };
    let sb = sandbox(net).await;
    let out = call(
        &sb,
        "attempt",
        &[json!(format!("{}/slow", server.base)), json!({})],
    )
    .await;
    assert_eq!(out["isTypeError"], true, "{out}");
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains("no complete response within 300ms (the policy's net.timeout)"),
        "{out}"
    );
}

#[tokio::test]
async fn a_name_that_resolves_to_a_private_address_is_refused() {
    let server = start().await;
    // `localhost` is allowed by name, but resolves to loopback.
    let sb = sandbox(allow(&[format!("localhost:{}", server.port)])).await;
    let url = format!("http://localhost:{}/json", server.port);
    refused(&sb, &url, json!({}), "localhost resolves to").await;
    refused(&sb, &url, json!({}), "net.allow_private").await;
    assert!(server.paths().is_empty());
    // Allowed explicitly, it works.
    let sb = sandbox(NetPolicy {
        allow_private: true,
        ..allow(&[format!("localhost:{}", server.port)])
    })
    .await;
    let out = call(&sb, "attempt", &[json!(url), json!({})]).await;
    assert_eq!(out["ok"], true, "{out}");
    // An IP literal of a private range that the list does not name.
    let sb = sandbox(allow(&[format!("127.0.0.2:{}", server.port)])).await;
    refused(
        &sb,
        &format!("http://127.0.0.1:{}/json", server.port),
        json!({}),
        "not in the allow-list",
    )
    .await;
}

#[tokio::test]
async fn fetches_past_the_concurrency_cap_wait() {
    let server = start().await;
    let net = NetPolicy {
        max_concurrent: 2,
        ..allow(&[format!("127.0.0.1:{}", server.port)])
    };
    let sb = sandbox(net).await;
    let url = format!("{}/hold", server.base);
    let run = {
        let sb = sb.clone();
        tokio::spawn(async move { call(&sb, "many", &[json!(url), json!(4)]).await })
    };
    server.wait_holding(2).await;
    // Two are in flight; the other two wait for a slot. Give a third the
    // chance to arrive if the cap were broken.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.seen.holding.load(Ordering::SeqCst), 2);
    server.release();
    let out = run.await.unwrap();
    assert_eq!(out, json!(["held", "held", "held", "held"]));
    assert_eq!(server.seen.most_holding.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_aborted_fetch_drops_the_request() {
    let server = start().await;
    let sb = sandbox(allow(&[format!("127.0.0.1:{}", server.port)])).await;
    let out = call(
        &sb,
        "aborted",
        &[
            json!(format!("{}/hold", server.base)),
            json!(format!("{}/after-hold", server.base)),
        ],
    )
    .await;
    assert_eq!(out, json!({"name": "AbortError", "isDOMException": true}));
    // The host dropped the connection: the server's handler went away.
    tokio::time::timeout(Duration::from_secs(20), async {
        while server.seen.dropped.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the server saw the aborted request go away");
    let out = call(
        &sb,
        "abortedBefore",
        &[json!(format!("{}/json", server.base))],
    )
    .await;
    assert_eq!(out, "AbortError");
}

#[tokio::test]
async fn a_cancelled_run_drops_its_fetch() {
    let server = start().await;
    let sb = sandbox(allow(&[format!("127.0.0.1:{}", server.port)])).await;
    let cancel = CancellationToken::new();
    let run = {
        let (sb, cancel, url) = (sb.clone(), cancel.clone(), format!("{}/hold", server.base));
        tokio::spawn(async move {
            sb.call(
                "fetch.js",
                "attempt",
                &[json!(url), json!({})],
                TaskOptions {
                    cancel: Some(cancel),
                    ..TaskOptions::default()
                },
            )
            .await
        })
    };
    server.wait_holding(1).await;
    cancel.cancel();
    let out = run.await.unwrap();
    assert!(
        matches!(out, Err(marionette::Error::Canceled { .. })),
        "{out:?}"
    );
    tokio::time::timeout(Duration::from_secs(20), async {
        while server.seen.dropped.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the server saw the cancelled run's request go away");
}

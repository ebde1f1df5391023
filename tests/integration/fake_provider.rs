//! A fake inference provider on 127.0.0.1: replays queued replies (SSE
//! fixtures in the providers' wire formats, or error bodies) and records
//! every request it received, for the engine tests and the CLI's.
//!
//! Faults to inject: error statuses with `retry-after` headers, a stream
//! held open or cut off mid-way, a stream of keep-alive comments only, a
//! body that is not an event stream, and connections hung up before any
//! byte of the answer ([`FakeProvider::start_hanging_up`]).
//!
//! ```ignore
//! let gate = Arc::new(Notify::new());
//! let server = FakeProvider::start(vec![
//!     Reply::json(429, "{}").header("retry-after", "1"),
//!     Reply::sse_fixture("openai_text.sse").hold_before(2, gate.clone()),
//! ]).await;
//! // point an engine at server.url ... then server.requests()
//! ```
#![allow(dead_code)] // not every test binary module uses every helper

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;
use tokio::sync::Notify;

use crate::common::fixtures;

/// One request the fake provider received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`, ...
    pub method: String,
    /// The path, `/v1/chat/completions`.
    pub path: String,
    /// Headers, names lower-case.
    pub headers: HashMap<String, String>,
    /// The body as JSON (`Null` when it was not JSON).
    pub body: Value,
}

/// What the fake provider answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Payload,
    /// Wait this long before answering (to trip a timeout).
    delay: Option<Duration>,
}

#[derive(Debug, Clone)]
enum Payload {
    Text(String),
    Sse {
        /// The events, each sent as its own chunk.
        events: Vec<String>,
        /// Before sending event N, wait for this gate.
        hold: Option<(usize, Arc<Notify>)>,
        /// After N events, break the connection off (no clean end).
        abort_after: Option<usize>,
        /// Wait this long before each event.
        interval: Option<Duration>,
    },
}

impl Reply {
    /// `200 text/event-stream` with `text`'s events (split at blank lines).
    pub fn sse(text: &str) -> Self {
        let events = text
            .split("\n\n")
            .map(str::trim_end)
            .filter(|e| !e.trim().is_empty())
            .map(str::to_string)
            .collect();
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body: Payload::Sse {
                events,
                hold: None,
                abort_after: None,
                interval: None,
            },
            delay: None,
        }
    }

    /// `200 text/event-stream` that sends only keep-alive comments, one
    /// every 20 ms, `count` of them, then ends without a single event.
    pub fn keep_alive_only(count: usize) -> Self {
        let mut reply = Reply::sse("");
        if let Payload::Sse {
            events, interval, ..
        } = &mut reply.body
        {
            *events = vec![": keep-alive".to_string(); count];
            *interval = Some(Duration::from_millis(20));
        }
        reply
    }

    /// `200` with `body` as `content_type`, say a server that ignores
    /// `"stream": true` and answers JSON.
    pub fn body(content_type: &str, body: &str) -> Self {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            body: Payload::Text(body.to_string()),
            delay: None,
        }
    }

    /// [`sse`](Self::sse) of `tests/fixtures/providers/NAME`.
    pub fn sse_fixture(name: &str) -> Self {
        Reply::sse(&provider_fixture(name))
    }

    /// `STATUS application/json` with `body`.
    pub fn json(status: u16, body: &str) -> Self {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Payload::Text(body.to_string()),
            delay: None,
        }
    }

    /// [`json`](Self::json) of `tests/fixtures/providers/NAME`.
    pub fn json_fixture(status: u16, name: &str) -> Self {
        Reply::json(status, &provider_fixture(name))
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Holds the stream open before event `n` until `gate` is notified.
    pub fn hold_before(mut self, n: usize, gate: Arc<Notify>) -> Self {
        if let Payload::Sse { hold, .. } = &mut self.body {
            *hold = Some((n, gate));
        }
        self
    }

    /// Breaks the connection off after `n` events.
    pub fn abort_after(mut self, n: usize) -> Self {
        if let Payload::Sse { abort_after, .. } = &mut self.body {
            *abort_after = Some(n);
        }
        self
    }

    /// Answers only after `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

/// The text of `tests/fixtures/providers/NAME`.
pub fn provider_fixture(name: &str) -> String {
    let path = fixtures().join("providers").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Default)]
struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    /// Woken at each request.
    arrived: Notify,
    /// Connections hung up before any byte of an answer.
    hung_up: Mutex<usize>,
}

/// A listener that hangs up its first `left` connections at once, as a
/// server that is restarting or a proxy that drops connections would.
struct HangingUp {
    listener: tokio::net::TcpListener,
    left: usize,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for HangingUp {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.listener.accept().await else {
                continue;
            };
            if self.left == 0 {
                return (stream, addr);
            }
            self.left -= 1;
            *self.shared.hung_up.lock().unwrap() += 1;
            // Closed without reading or answering: the client sees the
            // connection reset or closed before any byte of an answer.
            drop(stream);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A running fake provider; it stops with the test's runtime.
pub struct FakeProvider {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub url: String,
    shared: Arc<Shared>,
}

impl FakeProvider {
    /// Starts a server on 127.0.0.1:0 that answers with `replies` in order
    /// (then with 500 "no reply queued").
    pub async fn start(replies: Vec<Reply>) -> Self {
        FakeProvider::start_hanging_up(0, replies).await
    }

    /// [`start`](Self::start), but the first `hang_ups` connections are
    /// closed as soon as they are accepted, before any byte of an answer.
    pub async fn start_hanging_up(hang_ups: usize, replies: Vec<Reply>) -> Self {
        let shared = Arc::new(Shared {
            replies: Mutex::new(replies.into()),
            ..Shared::default()
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let listener = HangingUp {
            listener,
            left: hang_ups,
            shared: shared.clone(),
        };
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeProvider { url, shared }
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many connections were hung up before an answer.
    pub fn hung_up(&self) -> usize {
        *self.shared.hung_up.lock().unwrap()
    }

    /// Waits until `n` requests have arrived.
    pub async fn wait_for_requests(&self, n: usize) {
        loop {
            // Created before the count is read, so no wake-up is missed.
            let arrived = self.shared.arrived.notified();
            if self.shared.requests.lock().unwrap().len() >= n {
                return;
            }
            arrived.await;
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers = headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    shared.requests.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    shared.arrived.notify_waiters();
    let reply = shared.replies.lock().unwrap().pop_front();
    let reply = reply.unwrap_or_else(|| {
        Reply::json(
            500,
            r#"{"error": {"message": "fake provider: no reply queued"}}"#,
        )
    });
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::builder().status(StatusCode::from_u16(reply.status).unwrap());
    for (name, value) in &reply.headers {
        response = response.header(name, value);
    }
    let body = match reply.body {
        Payload::Text(text) => Body::from(text),
        Payload::Sse {
            events,
            hold,
            abort_after,
            interval,
        } => {
            let events = Arc::new(events);
            Body::from_stream(futures::stream::unfold(0usize, move |i| {
                let (events, hold) = (events.clone(), hold.clone());
                async move {
                    if i == usize::MAX || i >= events.len() {
                        return None;
                    }
                    if abort_after == Some(i) {
                        // Let what was sent reach the client first, as a
                        // connection that drops mid-answer would.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return Some((
                            Err(std::io::Error::other("fake provider: cut off")),
                            usize::MAX,
                        ));
                    }
                    if let Some((n, gate)) = hold
                        && n == i
                    {
                        gate.notified().await;
                    }
                    if let Some(interval) = interval {
                        tokio::time::sleep(interval).await;
                    }
                    Some((Ok(Bytes::from(format!("{}\n\n", events[i]))), i + 1))
                }
            }))
        }
    };
    response.body(body).unwrap()
}

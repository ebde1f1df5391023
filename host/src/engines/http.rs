//! What both providers share: the HTTP client, the request with its
//! retries, HTTP statuses and transport failures as typed
//! [`Error::Provider`]s, the idle timeout between events, and the answer:
//! a server-sent-event stream, or a complete JSON body from a server that
//! ignored `"stream": true`.

use std::time::{Duration, SystemTime};

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde_json::Value;

use super::RetryPolicy;
use crate::error::{Error, ProviderErrorKind, Result};

/// The longest provider message an error quotes; an HTML error page from a
/// proxy would otherwise flood the log.
const MAX_MESSAGE: usize = 500;

/// One provider's connection: the client, where its key comes from, how it
/// retries and how long it waits. Built once per engine and shared by its
/// calls.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// `openai`, `anthropic`: names the provider in errors.
    pub provider: &'static str,
    /// The pooled client; carries the request timeout.
    pub client: reqwest::Client,
    /// The key, only to scrub it from messages we quote.
    pub api_key: Option<String>,
    /// Where the key comes from, for the 401 message.
    pub api_key_source: String,
    /// The total request timeout, for the timeout message.
    pub timeout: Duration,
    /// The longest wait for the next event of a stream.
    pub idle_timeout: Duration,
    /// Which failures are retried, how often, how long apart.
    pub retry: RetryPolicy,
}

/// The body of a successful answer.
pub(crate) enum Answer<S> {
    /// A `text/event-stream`: the events as they come.
    Stream(S),
    /// A complete JSON body (a server that does not stream), parsed.
    Complete(Value),
}

/// A failed attempt: the error it would be, and whether to try again.
struct Failure {
    kind: ProviderErrorKind,
    text: String,
    retryable: bool,
    /// The wait the server asked for (`retry-after-ms`, `retry-after`).
    asked: Option<Duration>,
}

impl Endpoint {
    /// A client with `timeout` for the whole request, the streamed body
    /// included (a stream that trickles keeps going no longer than that).
    pub fn client(timeout: Duration) -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(30)))
            .build()
            .map_err(|e| Error::host("engines.client", e))
    }

    /// An [`Error::Provider`] of this provider.
    pub fn error(&self, kind: ProviderErrorKind, message: impl Into<String>) -> Error {
        Error::Provider {
            op: format!("{}.infer", self.provider).into(),
            provider: self.provider.to_string(),
            kind,
            message: self.scrub(message.into()),
        }
    }

    /// `message` with the API key replaced, should a provider echo it.
    fn scrub(&self, message: String) -> String {
        match &self.api_key {
            Some(key) if key.len() >= 4 && message.contains(key.as_str()) => {
                message.replace(key.as_str(), "[redacted]")
            }
            _ => message,
        }
    }

    /// Sends the request `build` makes and returns the successful
    /// response, its body unread. A failure before any byte of the answer
    /// is tried again as the [`RetryPolicy`] allows: HTTP 408, 409, 429,
    /// 5xx (529 included) and connection failures, after the wait the
    /// server asked for (`retry-after-ms`, `retry-after`) or a jittered
    /// exponential backoff; `x-should-retry` overrides the status. Each
    /// retry is logged (warn). Nothing here reads the body of a success,
    /// so a stream that began is never retried.
    ///
    /// # Errors
    /// [`Error::Provider`] for a transport failure or a non-2xx status,
    /// once it is not retryable or the retries or their total wait ran out.
    pub async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut waited = Duration::ZERO;
        let mut retries = 0;
        loop {
            let failure = match build().send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => self.status_failure(response).await,
                Err(e) => Failure {
                    // A timeout is not retried: the request timeout bounds
                    // the whole call.
                    retryable: !e.is_timeout() && (e.is_connect() || e.is_request()),
                    asked: None,
                    ..self.transport_failure(&e)
                },
            };
            if !failure.retryable {
                return Err(self.error(failure.kind, failure.text));
            }
            if retries >= self.retry.max_retries {
                let text = match retries {
                    0 => failure.text,
                    n => format!(
                        "{} (gave up after {n} retr{}, {:.1}s waited)",
                        failure.text,
                        if n == 1 { "y" } else { "ies" },
                        waited.as_secs_f64()
                    ),
                };
                return Err(self.error(failure.kind, text));
            }
            let wait = failure.asked.unwrap_or_else(|| self.retry.backoff(retries));
            if waited + wait > self.retry.max_retry_wait {
                return Err(self.error(
                    failure.kind,
                    format!(
                        "{} (a retry would wait {:.1}s, beyond the {:.1}s the retries may wait in all)",
                        failure.text,
                        wait.as_secs_f64(),
                        self.retry.max_retry_wait.as_secs_f64()
                    ),
                ));
            }
            retries += 1;
            tracing::warn!(
                provider = self.provider,
                retry = retries,
                max_retries = self.retry.max_retries,
                wait_ms = wait.as_millis() as u64,
                failure = %failure.text,
                "{} request failed; retrying", self.provider
            );
            tokio::time::sleep(wait).await;
            waited += wait;
        }
    }

    /// A non-2xx answer as a failure: its status named, its body's message
    /// quoted, whether it may be retried and after how long.
    async fn status_failure(&self, response: reqwest::Response) -> Failure {
        let status = response.status();
        let headers = response.headers();
        let asked = retry_after(headers, SystemTime::now());
        let retryable = match headers.get("x-should-retry").and_then(|v| v.to_str().ok()) {
            Some("true") => true,
            Some("false") => false,
            _ => retryable_status(status),
        };
        let body = response.text().await.unwrap_or_default();
        let (kind, text) = self.status_error(status, &provider_message(&body));
        Failure {
            kind,
            text,
            retryable,
            asked,
        }
    }

    /// A non-2xx status as an error kind and message.
    fn status_error(&self, status: StatusCode, message: &str) -> (ProviderErrorKind, String) {
        let kind = match status.as_u16() {
            401 | 403 => ProviderErrorKind::Unauthorized,
            408 => ProviderErrorKind::Timeout,
            429 => ProviderErrorKind::RateLimited,
            500..=599 => ProviderErrorKind::Server,
            _ => ProviderErrorKind::Request,
        };
        let status = status_name(status);
        let text = if kind == ProviderErrorKind::Unauthorized {
            match self.api_key {
                None => format!(
                    "HTTP {status}: no API key was configured; set {}: {message}",
                    self.api_key_source
                ),
                Some(_) => format!(
                    "HTTP {status}: the API key was rejected; check {}: {message}",
                    self.api_key_source
                ),
            }
        } else {
            format!("HTTP {status}: {message}")
        };
        (kind, text)
    }

    /// A failure below HTTP (connect, TLS, timeout, a body cut off).
    fn transport_failure(&self, error: &reqwest::Error) -> Failure {
        let (kind, text) = if error.is_timeout() {
            (
                ProviderErrorKind::Timeout,
                format!(
                    "no complete answer within {}s (the request timeout)",
                    self.timeout.as_secs_f64()
                ),
            )
        } else if error.is_body() || error.is_decode() {
            (ProviderErrorKind::Protocol, chain(error))
        } else {
            (ProviderErrorKind::Request, chain(error))
        };
        Failure {
            kind,
            text,
            retryable: false,
            asked: None,
        }
    }

    /// A transport failure as an error.
    pub fn transport_error(&self, error: &reqwest::Error) -> Error {
        let failure = self.transport_failure(error);
        self.error(failure.kind, failure.text)
    }

    /// The body of a successful response: its events when it is an event
    /// stream (or says nothing of its type), its JSON when it is JSON.
    ///
    /// # Errors
    /// [`ProviderErrorKind::Protocol`] naming the `Content-Type` when the
    /// body is neither; [`ProviderErrorKind::Timeout`] or a transport
    /// error while a JSON body is read.
    pub async fn answer(
        &self,
        response: reqwest::Response,
    ) -> Result<Answer<impl Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Unpin>>
    {
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let essence = content_type.as_deref().map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
        match essence.as_deref() {
            None | Some("text/event-stream") => {
                return Ok(Answer::Stream(response.bytes_stream().eventsource()));
            }
            _ => {}
        }
        let content_type = content_type.unwrap_or_default();
        let not_a_stream = |detail: String| {
            self.error(
                ProviderErrorKind::Protocol,
                format!(
                    "expected an event stream (text/event-stream), but the answer's \
                     Content-Type is {content_type:?}: {detail}"
                ),
            )
        };
        let is_json = essence
            .as_deref()
            .is_some_and(|t| t == "application/json" || t.ends_with("+json"));
        let body = response
            .text()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if !is_json {
            return Err(not_a_stream(truncate(body.trim())));
        }
        serde_json::from_str(&body)
            .map(Answer::Complete)
            .map_err(|e| not_a_stream(format!("not JSON ({e}): {}", truncate(body.trim()))))
    }

    /// The error for a complete JSON answer that is not the provider's
    /// completion object.
    pub fn not_a_completion(&self, what: &str, body: &Value) -> Error {
        self.error(
            ProviderErrorKind::Protocol,
            format!(
                "the server answered with JSON (Content-Type application/json) instead of \
                 an event stream, and it is not {what}: {}",
                truncate(&body.to_string())
            ),
        )
    }

    /// The next event of `events`, `None` at the end of the body.
    ///
    /// # Errors
    /// [`ProviderErrorKind::Timeout`] when no event came within the idle
    /// timeout (keep-alive comments do not count) or the request timeout
    /// ran out; [`ProviderErrorKind::Protocol`] when the body breaks off or
    /// is not UTF-8.
    pub async fn next_event<S>(&self, events: &mut S) -> Result<Option<Event>>
    where
        S: Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Unpin,
    {
        let Ok(next) = tokio::time::timeout(self.idle_timeout, events.next()).await else {
            return Err(self.error(
                ProviderErrorKind::Timeout,
                format!(
                    "no event for {}s (the idle timeout between stream events)",
                    self.idle_timeout.as_secs_f64()
                ),
            ));
        };
        match next {
            None => Ok(None),
            Some(Ok(event)) => Ok(Some(event)),
            Some(Err(EventStreamError::Transport(e))) if e.is_timeout() => {
                Err(self.transport_error(&e))
            }
            Some(Err(EventStreamError::Transport(e))) => Err(self.error(
                ProviderErrorKind::Protocol,
                format!("the stream broke off: {}", chain(&e)),
            )),
            Some(Err(e)) => Err(self.error(
                ProviderErrorKind::Protocol,
                format!("malformed event stream: {e}"),
            )),
        }
    }

    /// A `data:` payload as JSON.
    ///
    /// # Errors
    /// [`ProviderErrorKind::Protocol`] quoting the start of the bad data.
    pub fn parse(&self, data: &str) -> Result<Value> {
        serde_json::from_str(data).map_err(|e| {
            self.error(
                ProviderErrorKind::Protocol,
                format!("malformed data ({e}): {}", truncate(data)),
            )
        })
    }
}

/// Whether a status is worth another try, as the official SDKs judge it:
/// request timeout, conflict (a lock), rate limit, any server error.
fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 409 | 429 | 500..=599)
}

/// `529 Overloaded`: the code and its reason, including the reasons of
/// codes the HTTP registry lacks but providers and proxies send.
fn status_name(status: StatusCode) -> String {
    let code = status.as_u16();
    let reason = status.canonical_reason().or(match code {
        499 => Some("Client Closed Request"),
        520 => Some("Unknown Error"),
        521 => Some("Web Server Is Down"),
        522 => Some("Connection Timed Out"),
        523 => Some("Origin Is Unreachable"),
        524 => Some("A Timeout Occurred"),
        529 => Some("Overloaded"),
        _ => None,
    });
    match reason {
        Some(reason) => format!("{code} {reason}"),
        None => code.to_string(),
    }
}

/// `extra_headers` as a header map.
pub(crate) fn header_map(op: &'static str, headers: &[(String, String)]) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|e| Error::host(op, anyhow::anyhow!("header name {name:?}: {e}")))?;
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|e| Error::host(op, anyhow::anyhow!("header {name}: {e}")))?;
        map.insert(name, value);
    }
    Ok(map)
}

/// The wait a server asked for: `retry-after-ms` (milliseconds), else
/// `retry-after` (seconds, fractions allowed, or an HTTP date, counted
/// from `now`).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    let number = |text: &str| {
        text.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    if let Some(ms) = header("retry-after-ms").and_then(number) {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = header(RETRY_AFTER.as_str())?;
    if let Some(seconds) = number(value) {
        return Some(Duration::from_secs_f64(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The message of an error body: `error.message` of OpenAI's and
/// Anthropic's JSON, else the body's text, shortened.
pub(crate) fn provider_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        let error = v.get("error").unwrap_or(v);
        error
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| error.as_str())
    });
    match message {
        Some(m) => truncate(m),
        None if body.trim().is_empty() => "(no message)".to_string(),
        None => truncate(body.trim()),
    }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// An error with its causes, `a: b: c` (reqwest hides the cause otherwise).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_messages_are_found_and_shortened() {
        let openai =
            r#"{"error": {"message": "Incorrect API key", "type": "invalid_request_error"}}"#;
        assert_eq!(provider_message(openai), "Incorrect API key");
        let anthropic =
            r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;
        assert_eq!(provider_message(anthropic), "Overloaded");
        assert_eq!(provider_message("  bad gateway \n"), "bad gateway");
        assert_eq!(provider_message(""), "(no message)");
        assert_eq!(provider_message(&"x".repeat(900)).len(), MAX_MESSAGE + 3);
    }

    #[test]
    fn retry_after_is_milliseconds_seconds_or_a_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(2)));
        headers.insert(RETRY_AFTER, "0.5".parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_millis(500)));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:07 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:27:00 GMT".parse().unwrap(),
        );
        assert_eq!(
            retry_after(&headers, now),
            Some(Duration::ZERO),
            "a date past"
        );
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers, now), None);
        headers.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(
            retry_after(&headers, now),
            Some(Duration::from_millis(250)),
            "retry-after-ms wins"
        );
    }

    #[test]
    fn statuses_are_named_and_judged_as_the_sdks_do() {
        let status = |code| StatusCode::from_u16(code).unwrap();
        assert_eq!(status_name(status(529)), "529 Overloaded");
        assert_eq!(status_name(status(503)), "503 Service Unavailable");
        assert_eq!(status_name(status(599)), "599");
        for code in [408, 409, 429, 500, 502, 503, 504, 529] {
            assert!(retryable_status(status(code)), "{code}");
        }
        for code in [400, 401, 403, 404, 422] {
            assert!(!retryable_status(status(code)), "{code}");
        }
    }

    #[test]
    fn errors_never_quote_the_key() {
        let endpoint = Endpoint {
            provider: "openai",
            client: reqwest::Client::new(),
            api_key: Some("sk-secret-123".into()),
            api_key_source: "OPENAI_API_KEY".into(),
            timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
        };
        let (kind, text) = endpoint.status_error(StatusCode::UNAUTHORIZED, "bad key sk-secret-123");
        let e = endpoint.error(kind, text);
        let text = e.to_string();
        assert!(!text.contains("sk-secret-123"), "{text}");
        assert!(
            text.contains("OPENAI_API_KEY") && text.contains("[redacted]"),
            "{text}"
        );
        assert!(matches!(
            e,
            Error::Provider {
                kind: ProviderErrorKind::Unauthorized,
                ..
            }
        ));
        let keyless = Endpoint {
            api_key: None,
            ..endpoint
        };
        let (kind, text) = keyless.status_error(StatusCode::UNAUTHORIZED, "missing key");
        let text = keyless.error(kind, text).to_string();
        assert_eq!(
            text,
            "openai.infer: openai: unauthorized: HTTP 401 Unauthorized: \
             no API key was configured; set OPENAI_API_KEY: missing key"
        );
    }
}

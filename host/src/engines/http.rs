//! What both providers share: the HTTP client, the request with its
//! rate-limit retries, HTTP statuses and transport failures as typed
//! [`Error::Provider`]s, and the server-sent-event stream of the answer.

use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde_json::Value;

use crate::error::{Error, ProviderErrorKind, Result};

/// The longest provider message an error quotes; an HTML error page from a
/// proxy would otherwise flood the log.
const MAX_MESSAGE: usize = 500;

/// One provider's connection: the client, where its key comes from, how it
/// retries. Built once per engine and shared by its calls.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// `openai`, `anthropic`: names the provider in errors.
    pub provider: &'static str,
    /// The pooled client; carries the timeout.
    pub client: reqwest::Client,
    /// The key, only to scrub it from messages we quote.
    pub api_key: Option<String>,
    /// Where the key comes from, for the 401 message.
    pub api_key_source: String,
    /// The total request timeout, for the timeout message.
    pub timeout: Duration,
    /// Retries of a 429.
    pub max_retries: u32,
    /// The longest total wait across those retries.
    pub max_retry_wait: Duration,
}

impl Endpoint {
    /// A client with `timeout` for the whole request, the streamed body
    /// included (a stalled stream then ends as a timeout, not a hang).
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

    /// Sends the request `build` makes, again after a 429 as long as the
    /// retries and the total wait allow, honouring `retry-after` (seconds;
    /// 1 s, 2 s, 4 s... without it). Returns the successful response, its
    /// body unread.
    ///
    /// # Errors
    /// [`Error::Provider`] for a transport failure or a non-2xx status.
    pub async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut waited = Duration::ZERO;
        let mut retries = 0;
        loop {
            let response = build().send().await.map_err(|e| self.transport_error(&e))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let retry_after = retry_after(response.headers());
            let body = response.text().await.unwrap_or_default();
            let message = provider_message(&body);
            if status != StatusCode::TOO_MANY_REQUESTS {
                return Err(self.status_error(status, &message));
            }
            let wait = retry_after.unwrap_or(Duration::from_secs(1 << retries.min(5)));
            if retries >= self.max_retries || waited + wait > self.max_retry_wait {
                return Err(self.error(
                    ProviderErrorKind::RateLimited,
                    format!(
                        "HTTP 429 after {retries} retries ({}s waited; next wait {}s, \
                         bounds {} retries and {}s): {message}",
                        waited.as_secs(),
                        wait.as_secs(),
                        self.max_retries,
                        self.max_retry_wait.as_secs()
                    ),
                ));
            }
            tracing::warn!(
                provider = self.provider,
                wait_s = wait.as_secs_f64(),
                "rate limited; retrying"
            );
            tokio::time::sleep(wait).await;
            waited += wait;
            retries += 1;
        }
    }

    /// A non-2xx status (other than a retried 429) as a typed error.
    fn status_error(&self, status: StatusCode, message: &str) -> Error {
        let kind = match status.as_u16() {
            401 | 403 => ProviderErrorKind::Unauthorized,
            408 => ProviderErrorKind::Timeout,
            429 => ProviderErrorKind::RateLimited,
            500..=599 => ProviderErrorKind::Server,
            _ => ProviderErrorKind::Request,
        };
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
        self.error(kind, text)
    }

    /// A failure below HTTP (connect, TLS, timeout, a body cut off).
    pub fn transport_error(&self, error: &reqwest::Error) -> Error {
        if error.is_timeout() {
            return self.error(
                ProviderErrorKind::Timeout,
                format!("no complete answer within {}s", self.timeout.as_secs_f64()),
            );
        }
        let kind = if error.is_body() || error.is_decode() {
            ProviderErrorKind::Protocol
        } else {
            ProviderErrorKind::Request
        };
        self.error(kind, chain(error))
    }

    /// The next event of `events`, `None` at the end of the body.
    ///
    /// # Errors
    /// [`ProviderErrorKind::Protocol`] when the body breaks off or is not
    /// UTF-8, [`ProviderErrorKind::Timeout`] when the timeout ran out.
    pub async fn next_event<S>(&self, events: &mut S) -> Result<Option<Event>>
    where
        S: Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Unpin,
    {
        match events.next().await {
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

/// The response body as server-sent events.
pub(crate) fn events(
    response: reqwest::Response,
) -> impl Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Unpin {
    response.bytes_stream().eventsource()
}

/// `retry-after` in seconds (fractions allowed); an HTTP date is ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
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
    fn retry_after_is_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(RETRY_AFTER, "0.5".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(500)));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn errors_never_quote_the_key() {
        let endpoint = Endpoint {
            provider: "openai",
            client: reqwest::Client::new(),
            api_key: Some("sk-secret-123".into()),
            api_key_source: "OPENAI_API_KEY".into(),
            timeout: Duration::from_secs(1),
            max_retries: 0,
            max_retry_wait: Duration::ZERO,
        };
        let e = endpoint.status_error(StatusCode::UNAUTHORIZED, "bad key sk-secret-123");
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
        let text = keyless
            .status_error(StatusCode::UNAUTHORIZED, "missing key")
            .to_string();
        assert_eq!(
            text,
            "openai.infer: openai: unauthorized: HTTP 401 Unauthorized: \
             no API key was configured; set OPENAI_API_KEY: missing key"
        );
    }
}

//! A script's `fetch`, performed by the host's HTTP client under the
//! policy's network rules ([`NetPolicy`]).
//!
//! Every refusal is a `TypeError` whose message starts with
//! [`REFUSED`](crate::policy::REFUSED) and names the rule; a failure of
//! the network is a `TypeError` starting `fetch failed:`. What is checked:
//!
//! - the method, the headers a script may not set, the body's size;
//! - the URL: http(s), its origin in the allow-list, and an IP address
//!   host public unless named by the allow-list or allowed as private;
//! - after DNS, each address a name resolves to (a resolver of our own
//!   drops the non-public ones unless allowed; the connection goes only
//!   to what it returns, so a name cannot be re-resolved elsewhere);
//! - each redirect, followed by hand: every hop is a new, fully checked
//!   request;
//! - the response body's size, counted as it arrives; the whole fetch's
//!   time; the fetches in flight at once (more wait for a slot).
//!
//! No proxy from the environment is used (it would connect elsewhere than
//! the address checked), no cookie is stored or sent, and `set-cookie` is
//! not shown to the script.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, StatusCode};
use tokio::sync::Semaphore;
use url::Url;

use super::convert;
use crate::bindings::marionette::runtime::types as wit;
use crate::policy::{NetPolicy, readable_response_header};

fn type_error(message: impl Into<String>) -> wit::ScriptError {
    convert::host_error("TypeError", message)
}

/// The HTTP client of one sandbox, built on its first fetch.
pub(crate) struct Fetcher {
    policy: NetPolicy,
    client: reqwest::Client,
    slots: Arc<Semaphore>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A name resolved only to addresses the policy does not allow.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The system resolver, with the SSRF rule applied to what it answers.
struct CheckedResolver {
    policy: NetPolicy,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(found) => found.collect(),
                Err(e) => return Err(Box::new(e) as BoxError),
            };
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check_resolved(&host, a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refusal.get_or_insert(why);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refusal) {
                (true, Some(why)) => Err(Box::new(Refused(why)) as BoxError),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

impl Fetcher {
    pub(crate) fn new(policy: NetPolicy) -> Result<Fetcher, String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .dns_resolver(Arc::new(CheckedResolver {
                policy: policy.clone(),
            }))
            .user_agent(concat!("marionette/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("fetch failed: the host's HTTP client could not be built: {e}"))?;
        Ok(Fetcher {
            slots: Arc::new(Semaphore::new(policy.max_concurrent.max(1) as usize)),
            policy,
            client,
        })
    }

    /// Performs `request` within the policy's timeout.
    pub(crate) async fn fetch(self: Arc<Self>, request: wit::HttpRequest) -> wit::Outcome {
        let timeout = self.policy.timeout;
        match tokio::time::timeout(timeout, self.perform(request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(type_error(format!(
                "fetch failed: no complete response within {}ms (the policy's net.timeout)",
                timeout.as_millis()
            ))),
        }
    }

    async fn perform(&self, request: wit::HttpRequest) -> wit::Outcome {
        let policy = &self.policy;
        let wit::HttpRequest {
            method,
            url,
            mut headers,
            mut body,
            redirect,
        } = request;
        policy.check_method(&method).map_err(type_error)?;
        let mut method = Method::from_bytes(method.as_bytes())
            .map_err(|_| type_error(format!("fetch: {method:?} is not a valid method")))?;
        for (name, _) in &headers {
            policy.check_header(name).map_err(type_error)?;
        }
        if let Some(body) = &body {
            policy.check_request_body(body.len()).map_err(type_error)?;
        }
        let mut url = Url::parse(&url)
            .map_err(|e| type_error(format!("fetch: {url:?} is not a valid URL: {e}")))?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| type_error("fetch failed: the sandbox is closing"))?;
        let mut redirected = false;
        let mut hops = 0;
        loop {
            policy.check_url(&url).map_err(type_error)?;
            let mut builder = self.client.request(method.clone(), url.clone());
            for (name, value) in &headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            if let Some(body) = &body {
                builder = builder.body(body.clone());
            }
            let response = builder.send().await.map_err(|e| failed(&url, &e))?;
            let status = response.status();
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_string);
            if let (true, Some(location)) = (status.is_redirection(), location)
                && redirect != wit::RedirectMode::Manual
            {
                let next = url.join(&location).map_err(|e| {
                    type_error(format!(
                        "fetch failed: {url} redirected to {location:?}, which is not a valid URL: {e}"
                    ))
                })?;
                if redirect == wit::RedirectMode::Error {
                    return Err(type_error(format!(
                        "fetch failed: {url} redirected to {next} and the request's redirect mode is \"error\""
                    )));
                }
                hops += 1;
                if hops > policy.max_redirects {
                    return Err(type_error(format!(
                        "fetch failed: more than {} redirects (the policy's net.max_redirects)",
                        policy.max_redirects
                    )));
                }
                // As the Fetch standard: 303 (and 301/302 after a POST)
                // turn into a GET without a body.
                if (status == StatusCode::SEE_OTHER && method != Method::HEAD)
                    || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                        && method == Method::POST)
                {
                    method = Method::GET;
                    body = None;
                    headers.retain(|(n, _)| !n.starts_with("content-"));
                }
                // Credentials are not carried to another origin.
                if next.origin() != url.origin() {
                    headers.retain(|(n, _)| n != "authorization");
                }
                url = next;
                redirected = true;
                continue;
            }
            return self.read(url, redirected, response).await;
        }
    }

    /// The response, its body read whole within the policy's cap.
    async fn read(
        &self,
        url: Url,
        redirected: bool,
        mut response: reqwest::Response,
    ) -> wit::Outcome {
        let max = self.policy.max_response_bytes;
        let too_big = |len: u64| {
            type_error(format!(
                "{}: the response body of {url} is {len} bytes or more, more than the {max} the policy allows (net.max_response_bytes)",
                crate::policy::REFUSED
            ))
        };
        if let Some(len) = response.content_length()
            && len > max
        {
            return Err(too_big(len));
        }
        let status = response.status();
        let headers = response
            .headers()
            .iter()
            .filter(|(n, _)| readable_response_header(n.as_str()))
            .map(|(n, v)| {
                // A value is bytes: those that are not ASCII are Latin-1,
                // as a browser's `Headers` shows them.
                let value = v.as_bytes().iter().map(|b| *b as char).collect();
                (n.as_str().to_string(), value)
            })
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(&url, &e))? {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(too_big((body.len() + chunk.len()) as u64));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(wit::Value::HttpResponse(wit::HttpResponse {
            status: status.as_u16(),
            status_text: status.canonical_reason().unwrap_or_default().to_string(),
            url: url.to_string(),
            redirected,
            headers,
            body,
        }))
    }
}

/// A transport failure as the script sees it: the policy's refusal when
/// DNS found only addresses it forbids, else `fetch failed:` and the cause.
fn failed(url: &Url, e: &reqwest::Error) -> wit::ScriptError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut causes = Vec::new();
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<Refused>() {
            return type_error(refused.0.clone());
        }
        let text = s.to_string();
        if causes.last() != Some(&text) {
            causes.push(text);
        }
        source = s.source();
    }
    // reqwest's own text repeats the URL; the causes say what went wrong.
    let why = causes.get(1..).map(|c| c.join(": ")).unwrap_or_default();
    type_error(format!(
        "fetch failed: {url}: {}",
        if why.is_empty() { &causes[0] } else { &why }
    ))
}

//! The network rules of a sandbox: which origins and methods a script's
//! `fetch` may reach, and the caps on it, as plain data with the checks
//! that apply them. Deny by default: with an empty allow-list every fetch
//! is refused. The HTTP client that enforces them (and checks each address
//! it connects to, after DNS) is the sandbox's, behind the `fetch` feature.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::{Host, Url};

/// What a script's `fetch` may reach, and how much of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetPolicy {
    /// The origins `fetch` may reach (`HOST`, `HOST:PORT`,
    /// `SCHEME://HOST[:PORT]`); empty, the default, refuses every fetch.
    /// Redirects are followed only to origins of this list.
    pub allow: Vec<NetAllow>,
    /// The methods `fetch` may use (compared without case). The default is
    /// the standard ones: `GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE`,
    /// `OPTIONS`; `["GET", "HEAD"]` makes the network read-only.
    pub methods: Vec<String>,
    /// Whether an allowed name may resolve to a private, loopback,
    /// link-local or otherwise non-public address (the SSRF rule). Off by
    /// default: such addresses are dropped from what a name resolves to,
    /// and a name that resolves to nothing else is refused. An entry of
    /// `allow` that is an IP address allows that address whatever it is.
    pub allow_private: bool,
    /// The largest request body, in bytes.
    pub max_request_bytes: u64,
    /// The largest response body, in bytes (read whole; a larger one fails
    /// the fetch).
    pub max_response_bytes: u64,
    /// How long one fetch may take, from its start (waiting for a slot
    /// included) to the last byte of its body.
    #[serde(with = "super::millis")]
    pub timeout: Duration,
    /// Fetches in flight at once in one sandbox; more wait for a slot.
    pub max_concurrent: u32,
    /// Redirects one fetch may follow.
    pub max_redirects: u32,
}

impl Default for NetPolicy {
    fn default() -> Self {
        NetPolicy {
            allow: Vec::new(),
            methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                .map(String::from)
                .to_vec(),
            allow_private: false,
            max_request_bytes: 1 << 20,
            max_response_bytes: 10 << 20,
            timeout: Duration::from_secs(30),
            max_concurrent: 8,
            max_redirects: 10,
        }
    }
}

/// Request headers a script may not set: they belong to the connection
/// (`host`, `content-length`, `transfer-encoding`, `connection`...), to a
/// proxy, or carry ambient credentials (`cookie`). A fetch that sets one is
/// refused. `authorization` is allowed: the host adds no credentials of
/// its own, so a script sends only what it was given.
pub const FORBIDDEN_REQUEST_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "cookie",
    "cookie2",
    "expect",
    "host",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "via",
];

/// Prefixes of request headers a script may not set (`proxy-*`, `sec-*`).
pub const FORBIDDEN_REQUEST_PREFIXES: &[&str] = &["proxy-", "sec-"];

/// Response headers a script does not see: cookies are the host's
/// business, and there is no cookie store.
pub const HIDDEN_RESPONSE_HEADERS: &[&str] = &["set-cookie", "set-cookie2"];

/// The start of every refusal's message: a script can tell a refusal from
/// a network failure (`fetch failed: ...`).
pub const REFUSED: &str = "fetch refused by the policy";

fn refused(why: impl fmt::Display) -> String {
    format!("{REFUSED}: {why}")
}

/// The scheme's port when a URL names none.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl NetPolicy {
    /// Whether `method` may be used; the refusal's message otherwise.
    pub fn check_method(&self, method: &str) -> Result<(), String> {
        if self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
            return Ok(());
        }
        Err(refused(format_args!(
            "the method {method} is not allowed (net.methods: {})",
            self.methods.join(", ")
        )))
    }

    /// Whether a script may set the header `name` (lower-case).
    pub fn check_header(&self, name: &str) -> Result<(), String> {
        let name = name.to_ascii_lowercase();
        if FORBIDDEN_REQUEST_HEADERS.contains(&name.as_str())
            || FORBIDDEN_REQUEST_PREFIXES
                .iter()
                .any(|p| name.starts_with(p))
        {
            return Err(refused(format_args!(
                "a script may not set the request header {name:?} (see SECURITY.md, network rules)"
            )));
        }
        Ok(())
    }

    /// Whether a body of `len` bytes may be sent.
    pub fn check_request_body(&self, len: usize) -> Result<(), String> {
        if len as u64 > self.max_request_bytes {
            return Err(refused(format_args!(
                "the request body is {len} bytes, more than the {} the policy allows (net.max_request_bytes)",
                self.max_request_bytes
            )));
        }
        Ok(())
    }

    /// Whether `url` may be fetched: an http(s) URL whose origin is
    /// allowed and, when its host is an IP address, one that may be
    /// reached. A name's addresses are checked after DNS
    /// ([`NetPolicy::check_resolved`]).
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        let scheme = url.scheme();
        let Some(port) = url
            .port_or_known_default()
            .filter(|_| default_port(scheme).is_some())
        else {
            return Err(refused(format_args!(
                "only http and https URLs may be fetched, not {scheme}:"
            )));
        };
        let Some(host) = url.host() else {
            return Err(refused("the URL has no host"));
        };
        let origin =
            format!("{scheme}://{}", url.host_str().unwrap_or_default()) + &format!(":{port}");
        if self.allow.is_empty() {
            return Err(refused(format_args!(
                "no origin is allowed, so {origin} is not (net.allow is empty; the CLI grants origins with --allow-net)"
            )));
        }
        let Some(entry) = self.allow.iter().find(|a| a.matches(scheme, &host, port)) else {
            return Err(refused(format_args!(
                "the origin {origin} is not in the allow-list (net.allow; the CLI's --allow-net)"
            )));
        };
        let ip = match host {
            Host::Ipv4(ip) => IpAddr::V4(ip),
            Host::Ipv6(ip) => IpAddr::V6(ip),
            Host::Domain(_) => return Ok(()),
        };
        // An address the allow-list names is allowed for what it is.
        if entry.names_ip() {
            return Ok(());
        }
        self.check_resolved(url.host_str().unwrap_or_default(), ip)
    }

    /// Whether the address `ip` that `name` resolved to may be connected
    /// to (the SSRF rule).
    pub fn check_resolved(&self, name: &str, ip: IpAddr) -> Result<(), String> {
        match classify(ip) {
            None => Ok(()),
            Some(_) if self.allow_private => Ok(()),
            Some(kind) => Err(refused(format_args!(
                "{name} resolves to {ip}, a {kind} address, and the policy does not allow private addresses (net.allow_private; the CLI's --allow-private-net)"
            ))),
        }
    }
}

/// Whether a script may read the response header `name` (lower-case).
pub fn readable_response_header(name: &str) -> bool {
    !HIDDEN_RESPONSE_HEADERS.contains(&name)
}

/// What kind of non-public address `ip` is, or `None` for a public one
/// (globally routable unicast).
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        (0, _, _) => "\"this network\"",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        _ if ip.is_broadcast() => "broadcast",
        _ if ip.is_multicast() => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // An IPv4 address inside IPv6 is what it embeds.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    Some(match s {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        // IPv4-compatible (deprecated), NAT64, 6to4: the IPv4 inside.
        [0, 0, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => {
            return classify_v4(Ipv4Addr::new(
                (s[6] >> 8) as u8,
                s[6] as u8,
                (s[7] >> 8) as u8,
                s[7] as u8,
            ))
            .or(Some("IPv4-embedding"));
        }
        [0x2002, hi, lo, ..] => {
            return classify_v4(Ipv4Addr::new(
                (hi >> 8) as u8,
                hi as u8,
                (lo >> 8) as u8,
                lo as u8,
            ));
        }
        _ if s[0] & 0xfe00 == 0xfc00 => "unique local (private)",
        _ if s[0] & 0xffc0 == 0xfe80 => "link-local",
        _ if s[0] & 0xffc0 == 0xfec0 => "site-local",
        _ if s[0] & 0xff00 == 0xff00 => "multicast",
        [0x2001, 0xdb8, ..] => "documentation",
        [0x0100, 0, 0, 0, ..] => "discard-only",
        [0x2001, b, ..] if b < 0x200 => "IETF protocol assignment",
        _ => return None,
    })
}

/// One origin of [`NetPolicy::allow`]: `HOST`, `HOST:PORT` or
/// `SCHEME://HOST[:PORT]`. Without a scheme, http and https are both
/// allowed; without a port, only the scheme's default port (80, 443).
/// A host is a name (matched without case, exactly: no wildcards) or an IP
/// address (`127.0.0.1`, `[::1]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NetAllow {
    scheme: Option<String>,
    host: Host<String>,
    port: Option<u16>,
}

impl NetAllow {
    fn matches(&self, scheme: &str, host: &Host<&str>, port: u16) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        let want_port = self.port.or_else(|| default_port(scheme));
        if want_port != Some(port) {
            return false;
        }
        match (&self.host, host) {
            (Host::Domain(a), Host::Domain(b)) => a.eq_ignore_ascii_case(b),
            (Host::Ipv4(a), Host::Ipv4(b)) => a == b,
            (Host::Ipv6(a), Host::Ipv6(b)) => a == b,
            _ => false,
        }
    }

    fn names_ip(&self) -> bool {
        !matches!(self.host, Host::Domain(_))
    }
}

impl FromStr for NetAllow {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "{s:?} is not an origin to allow ({why}); expected HOST, HOST:PORT or SCHEME://HOST[:PORT]"
            )
        };
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => {
                let scheme = scheme.to_ascii_lowercase();
                if default_port(&scheme).is_none() {
                    return Err(bad("only http and https"));
                }
                (Some(scheme), rest)
            }
            None => (None, s),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) || rest.contains('*') {
            return Err(bad(
                "a host and a port only: no path, credentials or wildcard",
            ));
        }
        // The WHATWG parser normalizes the host as `fetch` will see it.
        let url = Url::parse(&format!("{}://{rest}", scheme.as_deref().unwrap_or("http")))
            .map_err(|e| bad(&e.to_string()))?;
        let host = url.host().ok_or_else(|| bad("no host"))?.to_owned();
        let explicit = rest.rsplit_once(':').is_some_and(|(h, p)| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']'))
        });
        let port = if explicit {
            url.port_or_known_default()
        } else {
            None
        };
        Ok(NetAllow { scheme, host, port })
    }
}

impl TryFrom<String> for NetAllow {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<NetAllow> for String {
    fn from(a: NetAllow) -> String {
        a.to_string()
    }
}

impl fmt::Display for NetAllow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scheme) = &self.scheme {
            write!(f, "{scheme}://")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> NetPolicy {
        NetPolicy {
            allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
            ..NetPolicy::default()
        }
    }

    fn check(p: &NetPolicy, url: &str) -> Result<(), String> {
        p.check_url(&Url::parse(url).unwrap())
    }

    #[test]
    fn deny_by_default() {
        let e = check(&NetPolicy::default(), "https://example.com/").unwrap_err();
        assert!(e.starts_with(REFUSED), "{e}");
        assert!(e.contains("net.allow is empty"), "{e}");
    }

    #[test]
    fn origins_match_scheme_host_and_port() {
        let p = policy(&["example.com"]);
        assert!(check(&p, "https://example.com/a?b").is_ok());
        assert!(check(&p, "http://EXAMPLE.com/").is_ok());
        let e = check(&p, "https://example.com:8443/").unwrap_err();
        assert!(
            e.contains("https://example.com:8443 is not in the allow-list"),
            "{e}"
        );
        assert!(check(&p, "https://api.example.com/").is_err());
        assert!(check(&p, "https://example.com.evil.net/").is_err());
        let p = policy(&["https://example.com:8443"]);
        assert!(check(&p, "https://example.com:8443/").is_ok());
        assert!(check(&p, "http://example.com:8443/").is_err());
        let p = policy(&["example.com:8080"]);
        assert!(check(&p, "http://example.com:8080/").is_ok());
        assert!(check(&p, "http://example.com/").is_err());
        let e = check(&p, "ftp://example.com:8080/").unwrap_err();
        assert!(e.contains("only http and https"), "{e}");
        assert!(check(&p, "file:///etc/passwd").is_err());
    }

    #[test]
    fn entries_parse_and_print() {
        for (text, shown) in [
            ("example.com", "example.com"),
            ("Example.COM:8080", "example.com:8080"),
            ("https://example.com", "https://example.com"),
            ("127.0.0.1:3000", "127.0.0.1:3000"),
            ("[::1]:3000", "[::1]:3000"),
            ("[::1]", "[::1]"),
            ("http://example.com:80/", "http://example.com:80"),
        ] {
            assert_eq!(
                text.parse::<NetAllow>().unwrap().to_string(),
                shown,
                "{text}"
            );
        }
        for bad in [
            "",
            "ftp://x",
            "x/path",
            "user@x",
            "*.example.com",
            "x:99999",
            "http://",
        ] {
            assert!(bad.parse::<NetAllow>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn private_ip_literals_need_naming_or_the_flag() {
        // Named exactly: allowed.
        let p = policy(&["127.0.0.1:3000"]);
        assert!(check(&p, "http://127.0.0.1:3000/").is_ok());
        // The same IP written otherwise is the same address.
        assert!(check(&p, "http://0x7f.0.0.1:3000/").is_ok());
        // A name resolving to a private address is refused after DNS.
        let e = p
            .check_resolved("localhost", "127.0.0.1".parse().unwrap())
            .unwrap_err();
        assert!(
            e.contains("localhost resolves to 127.0.0.1, a loopback address"),
            "{e}"
        );
        let open = NetPolicy {
            allow_private: true,
            ..p.clone()
        };
        assert!(
            open.check_resolved("localhost", "127.0.0.1".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn addresses_are_classified() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(classify(ip).is_some(), "{private} counted as public");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert_eq!(classify(ip), None, "{public}");
        }
    }

    #[test]
    fn methods_and_headers() {
        let p = NetPolicy {
            methods: vec!["GET".into()],
            ..NetPolicy::default()
        };
        assert!(p.check_method("get").is_ok());
        let e = p.check_method("POST").unwrap_err();
        assert!(e.contains("the method POST is not allowed"), "{e}");
        for h in [
            "Host",
            "cookie",
            "Proxy-Authorization",
            "sec-fetch-mode",
            "transfer-encoding",
        ] {
            assert!(p.check_header(h).is_err(), "{h}");
        }
        for h in ["authorization", "content-type", "x-api-key", "accept"] {
            assert!(p.check_header(h).is_ok(), "{h}");
        }
        assert!(!readable_response_header("set-cookie"));
        assert!(readable_response_header("content-type"));
    }
}

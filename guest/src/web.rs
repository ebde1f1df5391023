//! The natives behind the web basics of `js/web.js`: URL parsing (the `url`
//! crate, the WHATWG URL standard as Servo and Firefox implement it), the
//! `application/x-www-form-urlencoded` format of `URLSearchParams`, the
//! forgiving base64 of `atob`/`btoa`, UTF-8 decoding for `TextDecoder`, the
//! randomness for `crypto` and the monotonic clock for `performance`
//! (the host's, or a deterministic run's: see `clock.rs`).
//!
//! JavaScript hands these only well-formed strings (`web.js` converts its
//! arguments as WebIDL's `USVString` does: lone surrogates become U+FFFD)
//! and typed checks; what is refused comes back as `undefined` (`None`),
//! and `web.js` throws the error the specification names.

use base64::Engine as _;
use rquickjs::{ArrayBuffer, Ctx, Exception, Function, Object, Result, TypedArray, Value, qjs};
use url::{Url, quirks};

use crate::clock;

/// The components of a parsed URL, as the getters of `URL` return them.
fn components<'js>(ctx: &Ctx<'js>, url: &Url) -> Result<Object<'js>> {
    let out = Object::new(ctx.clone())?;
    out.set("href", quirks::href(url))?;
    out.set("origin", quirks::origin(url))?;
    out.set("protocol", quirks::protocol(url))?;
    out.set("username", quirks::username(url))?;
    out.set("password", quirks::password(url))?;
    out.set("host", quirks::host(url))?;
    out.set("hostname", quirks::hostname(url))?;
    out.set("port", quirks::port(url))?;
    out.set("pathname", quirks::pathname(url))?;
    out.set("search", quirks::search(url))?;
    out.set("hash", quirks::hash(url))?;
    Ok(out)
}

/// The URL parser: `input` against `base` (when given). `None` is failure.
fn parse(input: &str, base: Option<&str>) -> Option<Url> {
    match base {
        None => Url::parse(input).ok(),
        Some(base) => Url::parse(base).ok()?.join(input).ok(),
    }
}

/// Runs the setter `key` of a URL whose href is `href`. The setters of the
/// standard ignore a value they cannot use, except `href`, which fails.
fn set(href: &str, key: &str, value: &str) -> Option<Url> {
    let mut url = Url::parse(href).ok()?;
    // Each setter's refusal leaves the URL as it was, as the standard says.
    let _ = match key {
        "href" => return quirks::set_href(&mut url, value).ok().map(|_| url),
        "protocol" => quirks::set_protocol(&mut url, value),
        "username" => quirks::set_username(&mut url, value),
        "password" => quirks::set_password(&mut url, value),
        "host" => quirks::set_host(&mut url, value),
        "hostname" => quirks::set_hostname(&mut url, value),
        "port" => quirks::set_port(&mut url, value),
        "pathname" => {
            quirks::set_pathname(&mut url, value);
            Ok(())
        }
        "search" => {
            quirks::set_search(&mut url, value);
            Ok(())
        }
        "hash" => {
            quirks::set_hash(&mut url, value);
            Ok(())
        }
        _ => return None,
    };
    Some(url)
}

/// Whether `c` is ASCII whitespace as the infra standard defines it.
fn ascii_whitespace(c: u8) -> bool {
    matches!(c, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

/// The forgiving-base64 decode of the infra standard: `None` is failure
/// (an `InvalidCharacterError` for `atob`).
fn forgiving_base64(input: &str) -> Option<Vec<u8>> {
    let mut data: Vec<u8> = input.bytes().filter(|c| !ascii_whitespace(*c)).collect();
    if data.len().is_multiple_of(4) {
        // One or two `=` at the end, and only there.
        for _ in 0..2 {
            if data.last() == Some(&b'=') {
                data.pop();
            }
        }
    }
    if data.len() % 4 == 1 {
        return None;
    }
    if !data
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
    {
        return None;
    }
    // The bits past the last whole byte are discarded, whatever they are.
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    engine.decode(&data).ok()
}

/// UTF-8 decoding as the Encoding standard's decoder does it: each maximal
/// invalid subpart is one U+FFFD (or, when `fatal`, the error); when
/// `stream`, a valid but unfinished sequence at the end is not decoded and
/// its length is returned, to be prepended to the next chunk.
fn decode_utf8(
    mut bytes: &[u8],
    fatal: bool,
    stream: bool,
) -> std::result::Result<(String, usize), ()> {
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                out.push_str(text);
                return Ok((out, 0));
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                // `valid_up_to` bytes are valid UTF-8: this cannot fail.
                out.push_str(std::str::from_utf8(valid).map_err(|_| ())?);
                match e.error_len() {
                    Some(bad) => {
                        if fatal {
                            return Err(());
                        }
                        out.push('\u{FFFD}');
                        bytes = &rest[bad..];
                    }
                    // The input ended inside a sequence that could still be
                    // valid.
                    None if stream => return Ok((out, rest.len())),
                    None => {
                        if fatal {
                            return Err(());
                        }
                        out.push('\u{FFFD}');
                        return Ok((out, 0));
                    }
                }
            }
        }
    }
}

/// Adds the web natives to `native` (see `js/web.js`).
pub fn install<'js>(ctx: &Ctx<'js>, native: &Object<'js>) -> Result<()> {
    native.set(
        "urlParse",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, input: String, base: Option<String>| -> Result<Option<Object<'js>>> {
                parse(&input, base.as_deref())
                    .map(|url| components(&ctx, &url))
                    .transpose()
            },
        )?,
    )?;
    native.set(
        "urlSet",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>,
             href: String,
             key: String,
             value: String|
             -> Result<Option<Object<'js>>> {
                set(&href, &key, &value)
                    .map(|url| components(&ctx, &url))
                    .transpose()
            },
        )?,
    )?;
    // `URLSearchParams`: the list of name-value pairs of a query, and back.
    native.set(
        "formParse",
        Function::new(ctx.clone(), |query: String| -> Vec<Vec<String>> {
            url::form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| vec![k.into_owned(), v.into_owned()])
                .collect()
        })?,
    )?;
    native.set(
        "formSerialize",
        Function::new(ctx.clone(), |pairs: Vec<Vec<String>>| -> String {
            let mut out = url::form_urlencoded::Serializer::new(String::new());
            for pair in &pairs {
                if let [name, value] = pair.as_slice() {
                    out.append_pair(name, value);
                }
            }
            out.finish()
        })?,
    )?;
    // `btoa`: the caller checked that every code unit is below 256; each is
    // one byte.
    native.set(
        "base64Encode",
        Function::new(ctx.clone(), |latin1: String| -> String {
            let bytes: Vec<u8> = latin1.chars().map(|c| c as u32 as u8).collect();
            base64::engine::general_purpose::STANDARD.encode(bytes)
        })?,
    )?;
    // `atob`: each byte decoded is one code unit; `undefined` is failure.
    native.set(
        "base64Decode",
        Function::new(ctx.clone(), |text: String| -> Option<String> {
            forgiving_base64(&text).map(|bytes| bytes.into_iter().map(char::from).collect())
        })?,
    )?;
    // `TextDecoder`: `[text, pending]` (see `decode_utf8`); throws a
    // TypeError for `fatal` on malformed input.
    native.set(
        "decodeUtf8",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>,
             bytes: TypedArray<'js, u8>,
             fatal: bool,
             stream: bool|
             -> Result<rquickjs::Array<'js>> {
                let bytes = bytes.as_bytes().ok_or_else(|| {
                    Exception::throw_type(&ctx, "TextDecoder.decode: the buffer is detached")
                })?;
                match decode_utf8(bytes, fatal, stream) {
                    Ok((text, pending)) => {
                        let out = rquickjs::Array::new(ctx.clone())?;
                        out.set(0, text)?;
                        out.set(1, pending as f64)?;
                        Ok(out)
                    }
                    Err(()) => Err(Exception::throw_type(
                        &ctx,
                        "TextDecoder.decode: the input is not valid UTF-8 (the decoder is fatal)",
                    )),
                }
            },
        )?,
    )?;
    // `crypto`: `n` bytes (at most 65536, checked by the caller) of the
    // host's randomness (WASI `random`), or of a deterministic run's
    // generator (see `clock.rs`).
    native.set(
        "randomBytes",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, n: f64| -> Result<ArrayBuffer<'js>> {
                let mut bytes = vec![0u8; (n.max(0.0) as usize).min(65536)];
                clock::fill(&mut bytes).map_err(|e| {
                    Exception::throw_internal(&ctx, &format!("the host gave no randomness: {e}"))
                })?;
                ArrayBuffer::new(ctx, bytes)
            },
        )?,
    )?;
    // `performance.now()`: milliseconds on the host's monotonic clock (WASI
    // `monotonic-clock`) in whole microseconds, or a deterministic run's
    // virtual clock (see `clock.rs`).
    native.set(
        "monotonicMs",
        Function::new(ctx.clone(), clock::monotonic_ms)?,
    )?;
    // `structuredClone`: a proxy is not cloneable (its traps are code), and
    // only QuickJS can tell one from its target.
    native.set(
        "isProxy",
        Function::new(ctx.clone(), |value: Value<'js>| -> bool {
            // SAFETY: `value` is a live value; this reads its class only.
            unsafe { qjs::JS_IsProxy(value.as_raw()) }
        })?,
    )?;
    Ok(())
}

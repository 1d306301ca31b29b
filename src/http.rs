//! HTTP plumbing shared by every outbound caller (token endpoints, JWT exchange, form verification,
//! the sidecar's provider calls) and by the sidecar's loopback guard. Each helper here exists once;
//! policy (which addresses may be reached) stays in [`crate::egress`].

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Longest wait a `Retry-After` can impose, so a hostile endpoint cannot park an account forever.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A reqwest client builder with what every caller needs: rustls (the crate's only TLS feature),
/// no redirects (a redirect would carry credentials elsewhere and bypass URL checks), and bounded
/// connect and total timeouts. Callers add their own resolver or proxy settings.
pub fn client_builder(
    user_agent: &'static str,
    connect_timeout: Duration,
    timeout: Duration,
) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .user_agent(user_agent)
}

/// `e` and each of its causes, outermost first.
pub fn error_chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// `e` and its causes joined by `: `, leaving out a cause whose text is already there (many
/// errors repeat their source in their own message).
pub fn describe_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    for cause in error_chain(e) {
        let more = cause.to_string();
        if text.is_empty() {
            text = more;
        } else if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
    }
    text
}

/// The innermost cause of `e`: "Connection refused (os error 111)" rather than
/// "client error (Connect)".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    error_chain(e).last().unwrap_or(e).to_string()
}

/// A body read up to a limit.
#[derive(Debug)]
pub struct Capped {
    /// At most the limit's worth of bytes.
    pub body: Bytes,
    /// The answer had more than the limit; `body` is its beginning.
    pub cut: bool,
}

/// Reads at most `limit` bytes of `response`, chunk by chunk, so a large answer is never buffered
/// whole; the rest is not read.
pub async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Capped, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit.saturating_sub(body.len());
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok(Capped {
                body: body.into(),
                cut: true,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Capped {
        body: body.into(),
        cut: false,
    })
}

/// Why [`read_limited`] gave no body.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the answer could not be read")]
    Read(#[source] reqwest::Error),
}

/// The whole body of `response` when it is at most `limit` bytes; a larger one is an error (told
/// by `Content-Length` before reading when the sender declares it), never buffered whole.
pub async fn read_limited(response: reqwest::Response, limit: usize) -> Result<Bytes, ReadError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge(limit));
    }
    match read_capped(response, limit).await {
        Ok(read) if read.cut => Err(ReadError::TooLarge(limit)),
        Ok(read) => Ok(read.body),
        Err(e) => Err(ReadError::Read(e)),
    }
}

/// The `Retry-After` header as sent (seconds or an HTTP date), for passing on.
pub fn retry_after_value(headers: &HeaderMap) -> Option<&str> {
    headers.get(RETRY_AFTER)?.to_str().ok()
}

/// `Retry-After` in seconds, capped at an hour. HTTP dates are rare at token endpoints and are
/// ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = retry_after_value(headers)?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Whether a host (as in a `Host` header or a URL: a name, an IP, `[v6]`, with or without a port)
/// is this machine's loopback: `localhost` or a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_caps_them() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, " 7 ".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "99999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        assert_eq!(retry_after_value(&h), Some("Wed, 21 Oct 2015 07:28:00 GMT"));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer: inner")]
    struct Outer(#[source] Inner);
    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn chains_are_joined_without_repeats_and_end_at_the_root() {
        let e = Outer(Inner(std::io::Error::other("root")));
        assert_eq!(describe_chain(&e), "outer: inner: root");
        assert_eq!(root_cause(&e), "root");
        assert_eq!(error_chain(&e).count(), 3);
    }

    #[test]
    fn loopback_hosts_with_and_without_ports() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.2:1",
            "[::1]",
            "[::1]:80",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in ["example.com", "10.0.0.1", "[::2]:80", "localhost.evil.test", ""] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}

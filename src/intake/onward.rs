//! Where the gateway may send a user after an authorization: a Connection's `successRedirectUrl`
//! and `spec.verification.url` are followed only when their origin is on the operator's allowlist
//! (`--allowed-redirect-origin`, env `ALLOWED_REDIRECT_ORIGINS`).
//!
//! Guarantees: the allowlist compares whole origins (scheme, host, port), never prefixes or
//! suffixes; an empty list allows nothing (the gateway shows its own pages); a URL that does not
//! parse, or is not http(s), is never followed. A tenant who may create Connections therefore
//! cannot use the gateway's good name to send users, or the verification `request_id`, to a site
//! the platform team did not list.

use url::{Origin, Url};

/// Parses one allowlist entry: `scheme://host[:port]`, http or https, nothing after the host but
/// an optional `/`.
pub fn parse_origin(s: &str) -> Result<Origin, String> {
    let s = s.trim();
    let url = Url::parse(s).map_err(|e| format!("`{s}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "`{s}`: an allowed redirect origin is http(s)://host[:port]"
        ));
    }
    if url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(format!(
            "`{s}`: an origin has no path, query, fragment or credentials (e.g. https://app.example.com)"
        ));
    }
    Ok(url.origin())
}

/// Where the user goes next.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Onward {
    /// Nowhere: the gateway's own page is the end.
    Stay,
    /// To this URL, whose origin is allowed.
    Go(Url),
    /// The Connection names a page that is not allowed; shown (as an origin) and not followed.
    Refused(String),
}

/// What to do with `target`, a URL a Connection names.
pub fn decide(allowed: &[Origin], target: Option<&str>) -> Onward {
    let Some(target) = target else {
        return Onward::Stay;
    };
    match Url::parse(target) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {
            let origin = url.origin();
            if allowed.contains(&origin) {
                Onward::Go(url)
            } else {
                Onward::Refused(origin.ascii_serialization())
            }
        }
        _ => Onward::Refused("an invalid URL".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_bare_origins() {
        let o = parse_origin("https://platform.example").unwrap();
        assert_eq!(o.ascii_serialization(), "https://platform.example");
        assert_eq!(
            parse_origin(" http://127.0.0.1:8080/ ")
                .unwrap()
                .ascii_serialization(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "platform.example",
            "https://platform.example/verify",
            "https://platform.example?x=1",
            "https://u@platform.example",
            "ftp://platform.example",
            "",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_exact_origins_are_followed() {
        let allowed = vec![parse_origin("https://platform.example").unwrap()];
        assert_eq!(decide(&allowed, None), Onward::Stay);
        assert!(matches!(
            decide(&allowed, Some("https://platform.example/agent/verify?x=1")),
            Onward::Go(_)
        ));
        for (target, shown) in [
            (
                "https://platform.example.evil.example/",
                "https://platform.example.evil.example",
            ),
            ("http://platform.example/", "http://platform.example"),
            ("https://platform.example:8443/", "https://platform.example:8443"),
            (
                "https://evil.example/https://platform.example",
                "https://evil.example",
            ),
            ("javascript:alert(1)", "an invalid URL"),
        ] {
            assert_eq!(
                decide(&allowed, Some(target)),
                Onward::Refused(shown.into()),
                "{target}"
            );
        }
        assert!(matches!(
            decide(&[], Some("https://platform.example/")),
            Onward::Refused(_)
        ));
    }
}

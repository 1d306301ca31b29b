//! Parsing an RFC 8693 token-exchange request (`application/x-www-form-urlencoded`).
//!
//! Strict on purpose: every parameter at most once (RFC 6749 §3.2), only the grant and token types
//! the broker issues, exactly one way of naming the account, and every value bounded, so that a
//! malformed call is an `invalid_request` naming the problem and never a guess.

use super::refusal::Refusal;

pub use super::wire::{ACCESS_TOKEN, GRANT_TYPE, JWT};
/// Scheme of `resource`: `agentauth://<namespace>/<account>`.
const RESOURCE_SCHEME: &str = "agentauth://";
/// Longest ServiceAccount token accepted (real ones are about 1 KiB).
const MAX_TOKEN: usize = 8 * 1024;
/// Longest other value (an identifier is at most 253 characters).
const MAX_VALUE: usize = 512;

/// Which account the caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `resource=agentauth://<namespace>/<name>`.
    Named { namespace: String, name: String },
    /// `audience=<connection>` and `identifier=<id>`, in `namespace` (default: the caller's).
    Matching {
        connection: String,
        identifier: String,
        namespace: Option<String>,
    },
}

/// A well-formed exchange. `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq)]
pub struct Exchange {
    pub subject_token: String,
    pub target: Target,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The parameters of a token exchange, in any order.
const KNOWN: [&str; 9] = [
    "grant_type",
    "subject_token",
    "subject_token_type",
    "requested_token_type",
    "resource",
    "audience",
    "identifier",
    "namespace",
    "scope",
];

/// Parses the form body of `POST /token`.
pub fn parse(body: &[u8]) -> Result<Exchange, Refusal> {
    let mut values: [Option<String>; KNOWN.len()] = Default::default();
    for (key, value) in url::form_urlencoded::parse(body) {
        // Unknown parameters are ignored, as RFC 6749 §3.2 asks (actor_token is not supported and
        // is refused below, since acting on behalf of another caller would bypass RBAC).
        if key == "actor_token" || key == "actor_token_type" {
            return Err(Refusal::request("actor tokens (delegation) are not supported"));
        }
        let Some(i) = KNOWN.iter().position(|k| *k == key) else {
            continue;
        };
        let limit = if key == "subject_token" {
            MAX_TOKEN
        } else {
            MAX_VALUE
        };
        if value.len() > limit {
            return Err(Refusal::request(format!("`{key}` is too long")));
        }
        if values[i].replace(value.into_owned()).is_some() {
            return Err(Refusal::request(format!("`{key}` is given more than once")));
        }
    }
    let [
        grant,
        token,
        token_type,
        requested,
        resource,
        audience,
        identifier,
        namespace,
        scope,
    ] = values;
    match grant.as_deref() {
        Some(GRANT_TYPE) => {}
        Some(_) => return Err(Refusal::UnsupportedGrant),
        None => return Err(Refusal::request("`grant_type` is required")),
    }
    let subject_token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
        Refusal::request("`subject_token` is required: the pod's projected ServiceAccount token")
    })?;
    if token_type.as_deref() != Some(JWT) {
        return Err(Refusal::request(format!("`subject_token_type` must be {JWT}")));
    }
    if requested.as_deref().is_some_and(|r| r != ACCESS_TOKEN) {
        return Err(Refusal::request(format!(
            "`requested_token_type` can only be {ACCESS_TOKEN}"
        )));
    }
    if scope.is_some() {
        return Err(Refusal::request(
            "`scope` cannot be narrowed: the broker hands out the account's token as granted",
        ));
    }
    let target = match (resource, audience, identifier) {
        (Some(r), None, None) => {
            if namespace.is_some() {
                return Err(Refusal::request(
                    "`namespace` goes with `audience`; `resource` names it already",
                ));
            }
            named(&r)?
        }
        (None, Some(connection), Some(identifier)) if !connection.is_empty() && !identifier.is_empty() => {
            // Names that cannot exist are refused here rather than sent to the API server in a
            // SubjectAccessReview (and cached) as they are.
            let namespace = namespace.filter(|n| !n.is_empty());
            if namespace
                .as_deref()
                .is_some_and(|n| !dns_name(n, 63) || n.contains('.'))
            {
                return Err(Refusal::request("`namespace` must be a namespace name"));
            }
            if !dns_name(&connection, 253) {
                return Err(Refusal::request("`audience` must be a Connection name"));
            }
            Target::Matching {
                connection,
                identifier,
                namespace,
            }
        }
        (None, Some(_), _) => {
            return Err(Refusal::request(
                "`audience` (the Connection) needs `identifier` (the user)",
            ));
        }
        _ => {
            return Err(Refusal::request(
                "name the account either by `resource=agentauth://<namespace>/<account>` or by `audience=<connection>` and `identifier=<user>`",
            ));
        }
    };
    Ok(Exchange {
        subject_token,
        target,
    })
}

/// `agentauth://<namespace>/<name>`, both DNS-1123 names.
fn named(resource: &str) -> Result<Target, Refusal> {
    let bad = || Refusal::request("`resource` must be agentauth://<namespace>/<account>");
    let rest = resource.strip_prefix(RESOURCE_SCHEME).ok_or_else(bad)?;
    let (namespace, name) = rest.split_once('/').ok_or_else(bad)?;
    if !dns_name(namespace, 63) || !dns_name(name, 253) {
        return Err(bad());
    }
    Ok(Target::Named {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// A lowercase DNS-1123 name of at most `max` characters (dots allowed inside).
fn dns_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("grant_type", GRANT_TYPE),
            ("subject_token", "eyJ.x.y"),
            ("subject_token_type", JWT),
        ]
    }

    #[test]
    fn both_ways_of_naming_an_account() {
        let mut p = base();
        p.push(("resource", "agentauth://team-a/alice-gmail"));
        let e = parse(&form(&p)).unwrap();
        assert_eq!(
            e.target,
            Target::Named {
                namespace: "team-a".into(),
                name: "alice-gmail".into()
            }
        );
        assert!(!format!("{e:?}").contains("eyJ"), "Debug never shows the token");
        let mut p = base();
        p.extend([
            ("audience", "gmail"),
            ("identifier", "user_123"),
            ("requested_token_type", ACCESS_TOKEN),
        ]);
        assert_eq!(
            parse(&form(&p)).unwrap().target,
            Target::Matching {
                connection: "gmail".into(),
                identifier: "user_123".into(),
                namespace: None
            }
        );
    }

    #[test]
    fn malformed_calls_are_refused_with_the_reason() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![], "grant_type"),
            (vec![("grant_type", GRANT_TYPE)], "subject_token"),
            (
                vec![("grant_type", GRANT_TYPE), ("subject_token", "t")],
                "subject_token_type",
            ),
            (base(), "name the account"),
            (
                [
                    base(),
                    vec![("resource", "agentauth://a/b"), ("resource", "agentauth://a/c")],
                ]
                .concat(),
                "more than once",
            ),
            (
                [base(), vec![("resource", "agentauth://A/b")]].concat(),
                "resource",
            ),
            ([base(), vec![("resource", "https://a/b")]].concat(), "resource"),
            (
                [base(), vec![("resource", "agentauth://a/b/c")]].concat(),
                "resource",
            ),
            (
                [
                    base(),
                    vec![("resource", "agentauth://a/b"), ("audience", "gmail")],
                ]
                .concat(),
                "either",
            ),
            ([base(), vec![("audience", "gmail")]].concat(), "identifier"),
            (
                [
                    base(),
                    vec![("audience", "gmail"), ("identifier", "u"), ("namespace", "a/b")],
                ]
                .concat(),
                "namespace",
            ),
            (
                [
                    base(),
                    vec![("audience", "gmail"), ("identifier", "u"), ("namespace", "a.b")],
                ]
                .concat(),
                "namespace",
            ),
            (
                [base(), vec![("audience", "Gmail Inbox"), ("identifier", "u")]].concat(),
                "audience",
            ),
            (
                [base(), vec![("resource", "agentauth://a/b"), ("scope", "x")]].concat(),
                "scope",
            ),
            (
                [
                    base(),
                    vec![("resource", "agentauth://a/b"), ("requested_token_type", JWT)],
                ]
                .concat(),
                "requested_token_type",
            ),
            (
                [
                    base(),
                    vec![("resource", "agentauth://a/b"), ("actor_token", "x")],
                ]
                .concat(),
                "actor",
            ),
        ];
        for (pairs, needle) in cases {
            match parse(&form(&pairs)) {
                Err(Refusal::InvalidRequest(m)) => assert!(m.contains(needle), "{pairs:?}: {m}"),
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
        let mut p = base();
        p[0] = ("grant_type", "authorization_code");
        assert!(matches!(parse(&form(&p)), Err(Refusal::UnsupportedGrant)));
        let long = "x".repeat(MAX_TOKEN + 1);
        let p = vec![("grant_type", GRANT_TYPE), ("subject_token", long.as_str())];
        assert!(matches!(parse(&form(&p)), Err(Refusal::InvalidRequest(m)) if m.contains("too long")));
        assert!(
            parse(b"\xff\xfe=%%%&&&=").is_err(),
            "garbage is a refusal, not a panic"
        );
    }
}

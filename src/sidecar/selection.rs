//! Which account a call names, from its query, headers or MCP arguments.
//!
//! A call names at most one of: `account` or `connected_account` (`name` or `namespace/name`), or
//! `connection` + `identifier` (the user). Anything else (two ways at once, half a pair, a value
//! that cannot be a name) is refused with `invalid_account_selection` before any account is
//! looked up: a call never runs as an account it did not clearly name.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

use super::args::{valid_name, valid_namespace};
use super::error::ApiError;

/// Longest user identifier accepted (the CRD allows no more).
const IDENTIFIER_MAX: usize = 1024;

/// The names a call uses, as query parameters (and MCP properties), with their headers.
pub const PARAMS: [(&str, &str); 4] = [
    ("account", "x-agentauth-account"),
    ("connected_account", "x-agentauth-connected-account"),
    ("connection", "x-agentauth-connection"),
    ("identifier", "x-agentauth-identifier"),
];

/// The account a call names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Nothing: the only mounted account for the tool's provider.
    Any,
    /// A bare name: the mounted account of that name, else the broker's in the sidecar's namespace.
    Name(String),
    /// `namespace/name`: the broker's account.
    Qualified { namespace: String, name: String },
    /// The broker's account of `connection` for the user `identifier` (in the sidecar's namespace).
    User { connection: String, identifier: String },
}

impl Selection {
    /// From the four values (each absent or given once).
    pub fn from_values(
        account: Option<&str>,
        connected_account: Option<&str>,
        connection: Option<&str>,
        identifier: Option<&str>,
    ) -> Result<Selection, ApiError> {
        let bad = |m: &str| Err(ApiError::BadSelection(m.to_owned()));
        match (account, connected_account, connection, identifier) {
            (None, None, None, None) => Ok(Selection::Any),
            (Some(a), None, None, None) | (None, Some(a), None, None) => Self::named(a),
            (None, None, Some(c), Some(i)) => {
                if !valid_name(c) {
                    return bad("`connection` is not a Connection name");
                }
                if i.is_empty() || i.len() > IDENTIFIER_MAX || i.chars().any(char::is_control) {
                    return bad("`identifier` must be 1 to 1024 characters without control characters");
                }
                Ok(Selection::User {
                    connection: c.to_owned(),
                    identifier: i.to_owned(),
                })
            }
            (None, None, Some(_), None) => bad("`connection` needs `identifier`"),
            (None, None, None, Some(_)) => bad("`identifier` needs `connection`"),
            _ => bad("name the account one way: `connected_account` or `connection` + `identifier`"),
        }
    }

    /// `name` or `namespace/name`.
    pub fn named(s: &str) -> Result<Selection, ApiError> {
        match s.split_once('/') {
            None if valid_name(s) => Ok(Selection::Name(s.to_owned())),
            Some((ns, name)) if valid_namespace(ns) && valid_name(name) => Ok(Selection::Qualified {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            }),
            _ => Err(ApiError::BadSelection(
                "not an account name (`name` or `namespace/name`)".into(),
            )),
        }
    }

    /// From query parameters, else the matching headers (a value in both must agree).
    pub fn from_request(
        query: &BTreeMap<String, String>,
        headers: &HeaderMap,
    ) -> Result<Selection, ApiError> {
        let mut values: [Option<&str>; 4] = [None; 4];
        for (slot, (param, header)) in values.iter_mut().zip(PARAMS) {
            let mut from_headers = headers.get_all(header).iter();
            let h = match (from_headers.next(), from_headers.next()) {
                (None, _) => None,
                (Some(v), None) => Some(
                    v.to_str()
                        .map_err(|_| ApiError::BadSelection(format!("{header}: not text")))?,
                ),
                (Some(_), Some(_)) => return Err(ApiError::BadSelection(format!("{header} given twice"))),
            };
            let q = query.get(param).map(String::as_str);
            *slot = match (q, h) {
                (Some(q), Some(h)) if q != h => {
                    return Err(ApiError::BadSelection(format!("`{param}` and {header} disagree")));
                }
                (q, h) => q.or(h),
            };
        }
        let [a, ca, c, i] = values;
        Self::from_values(a, ca, c, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(
        a: Option<&str>,
        ca: Option<&str>,
        c: Option<&str>,
        i: Option<&str>,
    ) -> Result<Selection, ApiError> {
        Selection::from_values(a, ca, c, i)
    }

    #[test]
    fn one_way_of_naming_an_account() {
        assert_eq!(sel(None, None, None, None).unwrap(), Selection::Any);
        assert_eq!(
            sel(Some("alice-gmail"), None, None, None).unwrap(),
            Selection::Name("alice-gmail".into())
        );
        assert_eq!(
            sel(None, Some("team-a/alice-gmail"), None, None).unwrap(),
            Selection::Qualified {
                namespace: "team-a".into(),
                name: "alice-gmail".into()
            }
        );
        assert_eq!(
            sel(None, None, Some("gmail"), Some("alice@example.com")).unwrap(),
            Selection::User {
                connection: "gmail".into(),
                identifier: "alice@example.com".into()
            }
        );
        for (a, ca, c, i) in [
            (Some("a"), Some("b"), None, None),
            (None, Some("a"), Some("gmail"), Some("u")),
            (None, None, Some("gmail"), None),
            (None, None, None, Some("u")),
            (None, None, Some("gm ail"), Some("u")),
            (None, None, Some("gmail"), Some("")),
            (None, None, Some("gmail"), Some("a\nb")),
            (None, Some("a/b/c"), None, None),
            (None, Some("Team/x"), None, None),
            (None, Some("/x"), None, None),
            (Some("a b"), None, None, None),
        ] {
            let r = sel(a, ca, c, i);
            assert!(
                matches!(r, Err(ApiError::BadSelection(_))),
                "{a:?} {ca:?} {c:?} {i:?}: {r:?}"
            );
        }
    }

    #[test]
    fn query_and_headers() {
        let q = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
        };
        let mut h = HeaderMap::new();
        h.insert("x-agentauth-connection", "gmail".parse().unwrap());
        h.insert("x-agentauth-identifier", "u1".parse().unwrap());
        let want = Selection::User {
            connection: "gmail".into(),
            identifier: "u1".into(),
        };
        assert_eq!(Selection::from_request(&q(&[]), &h).unwrap(), want);
        assert_eq!(
            Selection::from_request(&q(&[("identifier", "u1")]), &h).unwrap(),
            want
        );
        assert!(Selection::from_request(&q(&[("identifier", "u2")]), &h).is_err());
        assert!(Selection::from_request(&q(&[("account", "a")]), &h).is_err());
        let mut legacy = HeaderMap::new();
        legacy.insert("x-agentauth-account", "alice".parse().unwrap());
        assert_eq!(
            Selection::from_request(&q(&[]), &legacy).unwrap(),
            Selection::Name("alice".into())
        );
        legacy.append("x-agentauth-account", "bob".parse().unwrap());
        assert!(Selection::from_request(&q(&[]), &legacy).is_err());
    }
}

//! What a namespace tenant's Connection may do, decided without API calls.
//!
//! A tenant who may create Connections chooses where the operator sends codes, client secrets
//! and refresh tokens. Three checks bound that, each refusing with `Ready=False` and a reason:
//! - the operator's [`ConnectionPolicy`] (`--connection-policy`): `any` trusts every Connection
//!   editor; `presets-only` (the default) allows explicit endpoints only on hosts of
//!   `--connection-host-allow` and the catalog's endpoints otherwise; `deny` refuses namespaced
//!   Connections altogether (use ClusterConnections);
//! - the egress policy: every URL the Connection leads to must pass it at apply time, so a
//!   plain-http `revocationUrl` is found now rather than at delete time;
//! - one client per authorization server per namespace: a Connection using an authorization host
//!   and client id that a Connection in another namespace used first is refused, so tenant B cannot
//!   wrap tenant A's OAuth app in its own token endpoint (RFC 9700 section 4.4 mix-up).

use crate::api::{AuthType, Connection, Reason};
use crate::auth::resolve as conn_auth;
pub use crate::config::ConnectionPolicy;
use crate::egress::EgressPolicy;

/// A refusal: reason and message for the Ready condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

/// The URLs a Connection spells out itself (not from the catalog), with their field names.
fn explicit_urls(conn: &Connection) -> Vec<(&'static str, String)> {
    let spec = &conn.spec;
    let mut urls = Vec::new();
    if let Some(o) = &spec.oauth2 {
        for (what, u) in [
            ("oauth2.authorizationUrl", &o.authorization_url),
            ("oauth2.tokenUrl", &o.token_url),
            ("oauth2.revocationUrl", &o.revocation_url),
            // The new access token is sent here: as much a token destination as tokenUrl.
            ("oauth2.userinfoUrl", &o.userinfo_url),
            ("oauth2.issuer", &o.issuer),
        ] {
            if let Some(u) = u {
                urls.push((what, u.clone()));
            }
        }
    }
    if let Some(x) = spec.custom_jwt.as_ref().and_then(|j| j.exchange.as_ref()) {
        urls.push(("customJWT.exchange.tokenUrl", x.token_url.clone()));
    }
    for (what, form) in [
        ("apiKey.verify.url", &spec.api_key),
        ("bearerToken.verify.url", &spec.bearer_token),
    ] {
        if let Some(v) = form.as_ref().and_then(|f| f.verify.as_ref()) {
            urls.push((what, v.url.clone()));
        }
    }
    urls
}

/// Every URL the operator will call for this Connection, the catalog's included.
fn called_urls(conn: &Connection) -> Vec<(&'static str, String)> {
    let mut urls: Vec<_> = explicit_urls(conn)
        .into_iter()
        .filter(|(what, _)| *what != "oauth2.authorizationUrl" && *what != "oauth2.issuer")
        .collect();
    if let Ok(s) = conn_auth::settings(conn) {
        urls.push(("tokenUrl", s.token_url));
        urls.extend(s.refresh_url.map(|u| ("refreshUrl", u)));
        urls.extend(s.revocation_url.map(|u| ("revocationUrl", u)));
    }
    urls
}

/// A URL template (`{identifier}`, `{subdomain}`) with its placeholders filled, for checking.
fn probe(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut depth = 0usize;
    for c in url.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    out.push('x');
                }
            }
            '}' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            c => out.push(c),
        }
    }
    out
}

/// Checks `conn` against the operator's policy and the egress policy.
pub fn check(
    conn: &Connection,
    policy: ConnectionPolicy,
    hosts: &EgressPolicy,
    egress: &EgressPolicy,
) -> Result<(), Refusal> {
    match policy {
        ConnectionPolicy::Any => {}
        ConnectionPolicy::Deny => {
            return Err(Refusal {
                reason: Reason::PolicyDenied,
                message: "the operator refuses namespaced Connections (--connection-policy=deny); \
                          ask the platform team for a ClusterConnection"
                    .into(),
            });
        }
        ConnectionPolicy::PresetsOnly => {
            for (what, url) in explicit_urls(conn) {
                let listed = url::Url::parse(&probe(&url)).is_ok_and(|u| hosts.lists_host_of(&u));
                if !listed {
                    return Err(Refusal {
                        reason: Reason::PolicyDenied,
                        message: format!(
                            "spec.{what} names a host that is not on the operator's allowlist for namespaced \
                             Connections (--connection-policy=presets-only); use spec.provider's endpoints or \
                             ask the platform team to allow the host"
                        ),
                    });
                }
            }
        }
    }
    for (what, url) in called_urls(conn) {
        if let Err(e) = egress.check(&probe(&url)) {
            return Err(Refusal {
                reason: Reason::EgressDenied,
                message: format!("{what}: {e}"),
            });
        }
    }
    Ok(())
}

/// The authorization host and client id a user-facing OAuth 2.0 Connection presents to users.
fn client_key(conn: &Connection) -> Option<(String, String)> {
    if conn.spec.auth_type != AuthType::OAuth2 {
        return None;
    }
    let s = conn_auth::settings(conn).ok()?;
    let host = url::Url::parse(s.authorization_url.as_deref()?)
        .ok()?
        .host_str()?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    Some((host, s.client_id))
}

/// The namespace of an older Connection elsewhere that uses the same authorization host and client
/// id, if any. "Older" is by creation time (seconds), then namespace name, so every replica and
/// reconcile agrees.
pub fn claimed_elsewhere<'a>(
    conn: &Connection,
    others: impl IntoIterator<Item = &'a Connection>,
) -> Option<String> {
    let key = client_key(conn)?;
    let rank = |c: &Connection| {
        (
            c.metadata.creation_timestamp.clone().map(|t| t.0),
            c.metadata.namespace.clone(),
        )
    };
    let ns = conn.metadata.namespace.as_deref();
    others
        .into_iter()
        .filter(|o| o.metadata.namespace.as_deref() != ns)
        .filter(|o| client_key(o).as_ref() == Some(&key))
        .filter(|o| rank(o) < rank(conn))
        .map(|o| o.metadata.namespace.clone().unwrap_or_default())
        .min()
}

/// [`claimed_elsewhere`] as a refusal.
pub fn check_claims<'a>(
    conn: &Connection,
    others: impl IntoIterator<Item = &'a Connection>,
) -> Result<(), Refusal> {
    match claimed_elsewhere(conn, others) {
        None => Ok(()),
        Some(ns) => Err(Refusal {
            reason: Reason::ClientIdInUse,
            message: format!(
                "namespace {ns} already uses this client id at this authorization server; one OAuth app \
                 serves one namespace (share it across namespaces with a ClusterConnection)"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(ns: &str, created: i64, spec: serde_json::Value) -> Connection {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection",
            "metadata": {"name": "c", "namespace": ns, "uid": format!("uid-{ns}"),
                         "creationTimestamp": jiff::Timestamp::from_second(created).unwrap().to_string()},
            "spec": spec,
        }))
        .unwrap()
    }

    fn explicit(token_url: &str) -> serde_json::Value {
        serde_json::json!({"authType": "OAuth2", "oauth2": {
            "clientId": "shared", "authorizationUrl": "https://accounts.example.com/auth", "tokenUrl": token_url}})
    }

    fn allow(entries: &[&str]) -> EgressPolicy {
        EgressPolicy::new(entries.iter().map(|e| e.parse().unwrap()).collect())
    }

    #[test]
    fn presets_only_allows_catalog_endpoints_and_allowlisted_hosts() {
        let none = allow(&[]);
        let google = conn(
            "a",
            1,
            serde_json::json!({"authType": "OAuth2", "provider": "google", "oauth2": {"clientId": "x"}}),
        );
        assert_eq!(
            check(&google, ConnectionPolicy::PresetsOnly, &none, &none),
            Ok(())
        );
        let own = conn("a", 1, explicit("https://evil.example.net/token"));
        let err = check(&own, ConnectionPolicy::PresetsOnly, &none, &none).unwrap_err();
        assert_eq!(err.reason, Reason::PolicyDenied);
        assert!(err.message.contains("oauth2.authorizationUrl"), "{}", err.message);
        let hosts = allow(&["accounts.example.com", "*.example.net"]);
        assert_eq!(check(&own, ConnectionPolicy::PresetsOnly, &hosts, &none), Ok(()));
        assert_eq!(check(&own, ConnectionPolicy::Any, &none, &none), Ok(()));
        assert_eq!(
            check(&google, ConnectionPolicy::Deny, &hosts, &none)
                .unwrap_err()
                .reason,
            Reason::PolicyDenied
        );
    }

    #[test]
    fn a_preset_with_its_own_userinfo_url_is_an_explicit_endpoint() {
        // The new access token goes to the userinfo endpoint: a tenant may not point it elsewhere.
        let none = allow(&[]);
        let spec = serde_json::json!({"authType": "OAuth2", "provider": "google",
            "oauth2": {"clientId": "x", "userinfoUrl": "https://collector.evil.example/me"}});
        let err = check(&conn("a", 1, spec), ConnectionPolicy::PresetsOnly, &none, &none).unwrap_err();
        assert_eq!(err.reason, Reason::PolicyDenied);
        assert!(err.message.contains("oauth2.userinfoUrl"), "{}", err.message);
    }

    #[test]
    fn every_called_url_passes_the_egress_policy_at_apply_time() {
        let none = allow(&[]);
        let mut spec = explicit("https://idp.example.com/token");
        spec["oauth2"]["revocationUrl"] = "http://idp.example.com/revoke".into();
        let err = check(&conn("a", 1, spec), ConnectionPolicy::Any, &none, &none).unwrap_err();
        assert_eq!(err.reason, Reason::EgressDenied);
        assert!(err.message.contains("https"), "{}", err.message);
        let metadata = conn("a", 1, explicit("https://169.254.169.254/token"));
        assert_eq!(
            check(&metadata, ConnectionPolicy::Any, &none, &none)
                .unwrap_err()
                .reason,
            Reason::EgressDenied
        );
        let template = serde_json::json!({"authType": "CustomJWT", "customJWT": {
            "signingKeyRef": {"name": "k", "key": "k"}, "algorithm": "RS256", "issuer": "i",
            "exchange": {"tokenUrl": "https://api.example.com/app/installations/{identifier}/access_tokens", "style": "BearerCredential"}}});
        assert_eq!(
            check(&conn("a", 1, template), ConnectionPolicy::Any, &none, &none),
            Ok(())
        );
    }

    #[test]
    fn the_first_namespace_to_use_a_client_keeps_it() {
        let a = conn("tenant-a", 10, explicit("https://a.example.com/token"));
        let b = conn("tenant-b", 20, explicit("https://b.example.com/token"));
        let all = [a.clone(), b.clone()];
        assert_eq!(check_claims(&a, &all), Ok(()));
        let err = check_claims(&b, &all).unwrap_err();
        assert_eq!(err.reason, Reason::ClientIdInUse);
        assert!(err.message.contains("tenant-a"));
        let mut other_client = explicit("https://b.example.com/token");
        other_client["oauth2"]["clientId"] = "own".into();
        assert_eq!(check_claims(&conn("tenant-b", 20, other_client), &all), Ok(()));
        assert_eq!(probe("https://x/{identifier}/t{{a}}"), "https://x/x/tx");
    }
}

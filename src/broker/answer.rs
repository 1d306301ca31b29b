//! The RFC 8693 §2.2.1 answer: the account's current access token (or API key, or minted JWT) and,
//! for the sidecar, the same credential document agent Secrets carry. Never a refresh token: the
//! cache holds none, and [`agent_secret::render`] never writes one.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::cache::AccountEntry;
use super::wire::ACCESS_TOKEN;
use crate::store::TokenSet;
use crate::store::agent_secret;

/// The JSON body of a successful exchange.
pub fn body(entry: &AccountEntry, tokens: &TokenSet, provider: Option<&str>, now: Timestamp) -> Value {
    let (access_token, token_type) = token(tokens);
    let credentials = agent_secret::render(tokens, provider)
        .remove("credentials.json")
        .and_then(|doc| serde_json::from_str::<Value>(&doc).ok())
        .unwrap_or(Value::Null);
    let mut body = json!({
        "access_token": access_token,
        "issued_token_type": ACCESS_TOKEN,
        "token_type": token_type,
        "account": {
            "namespace": entry.namespace,
            "name": entry.name,
            "connection": entry.connection,
            "identifier": entry.identifier,
        },
        "credentials": credentials,
    });
    if let Some(e) = tokens.expires_at {
        body["expires_in"] = json!((e - now).get_seconds().max(0));
    }
    if !tokens.scopes.is_empty() {
        body["scope"] = json!(tokens.scopes.join(" "));
    }
    if let Some(p) = provider {
        body["provider"] = json!(p);
    }
    body
}

/// `access_token` and `token_type` for any kind of credential: an OAuth 2.0 token as issued; a
/// hosted-form credential as the value it sends, `Bearer` when it is one and else `N_A` (RFC 8693:
/// not an OAuth access token; `credentials.header_name` says where it goes).
fn token(t: &TokenSet) -> (String, String) {
    if !t.access_token.is_empty() {
        let kind = if t.token_type.eq_ignore_ascii_case("bearer") {
            "Bearer".to_owned()
        } else {
            t.token_type.clone()
        };
        return (t.access_token.clone(), kind);
    }
    let value = t.authorization();
    match value.strip_prefix("Bearer ") {
        Some(bearer) if t.header_name.is_none() => (bearer.to_owned(), "Bearer".into()),
        _ => (value, "N_A".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn entry() -> AccountEntry {
        AccountEntry {
            namespace: "team-a".into(),
            name: "alice-gmail".into(),
            uid: "u1".into(),
            kind: crate::api::ConnectionKind::Connection,
            connection: "gmail".into(),
            identifier: "alice".into(),
            state: Some(crate::api::AccountState::Active),
            delivery: None,
        }
    }

    #[test]
    fn an_oauth_token_with_its_lifetime_and_never_the_refresh_token() {
        let now = Timestamp::from_second(1_000).unwrap();
        let t = TokenSet {
            access_token: "at-1".into(),
            refresh_token: Some("rt-1".into()),
            token_type: "bearer".into(),
            expires_at: Some(Timestamp::from_second(1_600).unwrap()),
            scopes: vec!["a".into(), "b".into()],
            obtained_at: now,
            metadata: BTreeMap::new(),
            fields: BTreeMap::new(),
            header_name: None,
            header_value: None,
            identity: None,
        };
        let b = body(&entry(), &t, Some("google"), now);
        assert_eq!(
            (
                b["access_token"].as_str(),
                b["token_type"].as_str(),
                b["expires_in"].as_i64()
            ),
            (Some("at-1"), Some("Bearer"), Some(600))
        );
        assert_eq!(
            (b["scope"].as_str(), b["provider"].as_str()),
            (Some("a b"), Some("google"))
        );
        assert_eq!(b["credentials"]["authorization"], "Bearer at-1");
        assert!(!b.to_string().contains("rt-1"));
    }

    #[test]
    fn an_api_key_is_handed_out_as_it_is_sent() {
        let now = Timestamp::from_second(1_000).unwrap();
        let t = TokenSet {
            access_token: String::new(),
            refresh_token: None,
            token_type: String::new(),
            expires_at: None,
            scopes: vec![],
            obtained_at: now,
            metadata: BTreeMap::new(),
            fields: BTreeMap::from([("api_key".to_owned(), "k-1".to_owned())]),
            header_name: Some("X-Api-Key".into()),
            header_value: Some("k-1".into()),
            identity: None,
        };
        let b = body(&entry(), &t, None, now);
        assert_eq!(
            (b["access_token"].as_str(), b["token_type"].as_str()),
            (Some("k-1"), Some("N_A"))
        );
        assert!(b.get("expires_in").is_none(), "an API key does not expire");
        assert_eq!(b["credentials"]["header_name"], "X-Api-Key");
    }
}

//! `connect`: which account a (connection, identifier) pair gets, the object applied for it, when
//! waiting is over, and what is printed.
//!
//! The name is deterministic, so running `connect` twice (or from two terminals) lands on one
//! account: `<connection>-<identifier>` when the identifier is already a DNS label, else the
//! identifier made one (lowercase, other characters as `-`) plus a hash of the exact pair, so that
//! `a.b` and `a-b` never share a name; shortened to 63 characters (the hash keeps it unique).

use kube::ResourceExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::human::{ns_flag, reason_message, state_name};
use crate::api::conditions::{self, READY};
use crate::api::{AccountState, ConnectedAccount, ConnectionKind};

/// Longest name `connect` makes (a DNS label: it also fits label values and `-credentials`).
const NAME_MAX: usize = 63;
/// Hex digits of the hash suffix.
const HASH_LEN: usize = 8;

/// The account `connect` names for `identifier` on `connection`.
pub fn account_name(connection: &str, identifier: &str) -> String {
    let label = label(identifier);
    let plain = format!("{connection}-{label}");
    if label == identifier && plain.len() <= NAME_MAX {
        return plain;
    }
    fallback_name(connection, identifier)
}

/// The name to use when [`account_name`] is taken by an account of another user: always hashed
/// (the same as [`account_name`] when that already is).
pub fn fallback_name(connection: &str, identifier: &str) -> String {
    let digest = Sha256::digest(format!("{connection}\n{identifier}").as_bytes());
    let hash: String = digest
        .iter()
        .take(HASH_LEN / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut head = format!("{connection}-{}", label(identifier));
    head.truncate(NAME_MAX - HASH_LEN - 1);
    format!("{}-{hash}", head.trim_end_matches('-'))
}

/// The identifier as a DNS label: lowercase ASCII letters and digits, runs of anything else as one `-`.
fn label(identifier: &str) -> String {
    let mapped: String = identifier
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    mapped
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Whether `account` is the one for `identifier` on `connection` (of `kind`).
pub fn is_for(account: &ConnectedAccount, connection: &str, kind: ConnectionKind, identifier: &str) -> bool {
    let r = &account.spec.connection_ref;
    r.name == connection && r.kind == kind && account.spec.identifier == identifier
}

/// The ConnectedAccount `connect` applies.
pub fn account_manifest(name: &str, connection: &str, kind: ConnectionKind, identifier: &str) -> Value {
    let mut connection_ref = json!({"name": connection});
    if kind == ConnectionKind::ClusterConnection {
        connection_ref["kind"] = json!("ClusterConnection");
    }
    json!({
        "apiVersion": "agentauth.dev/v1alpha1",
        "kind": "ConnectedAccount",
        "metadata": {"name": name},
        "spec": {"connectionRef": connection_ref, "identifier": identifier},
    })
}

/// Whether there is something to print: a link for the user, or a state in which none comes.
pub fn settled(account: &ConnectedAccount) -> bool {
    let status = account.status.as_ref();
    status.is_some_and(|s| s.authorization_link.is_some())
        || matches!(
            status.and_then(|s| s.state),
            Some(
                AccountState::Active
                    | AccountState::Expired
                    | AccountState::Disconnected
                    | AccountState::Error
            )
        )
}

/// Whether `--wait` is done: the account is ACTIVE.
pub fn is_active(account: &ConnectedAccount) -> bool {
    account.status.as_ref().and_then(|s| s.state) == Some(AccountState::Active)
}

/// Why `--wait` cannot end well without the user doing something else, if so.
pub fn stuck(account: &ConnectedAccount, namespace: &str) -> Option<String> {
    let status = account.status.clone().unwrap_or_default();
    let name = account.name_any();
    let why = conditions::find(&status.conditions, READY)
        .map(|c| reason_message(&c.reason, &c.message))
        .unwrap_or_default();
    match status.state? {
        AccountState::Error => Some(format!("{name} is ERROR ({why}); fix the cause first")),
        AccountState::Disconnected => Some(format!(
            "{name} is DISCONNECTED; set spec.disconnected to false to issue a link"
        )),
        AccountState::Expired if status.authorization_link.is_none() => Some(format!(
            "{name} is EXPIRED; run `kubectl agentauth reauthorize {name}{}` for a new link",
            ns_flag(namespace)
        )),
        _ => None,
    }
}

/// What `connect -o text` prints: the account, its state and (while pending) its link.
pub fn connect_text(account: &ConnectedAccount, created: bool) -> String {
    let status = account.status.clone().unwrap_or_default();
    let mut out = format!(
        "account: {} ({})\nstate:   {}\n",
        account.name_any(),
        if created { "created" } else { "existing" },
        state_name(status.state).unwrap_or_else(|| "<none>".into())
    );
    if let Some(link) = status
        .authorization_link
        .filter(|_| status.state != Some(AccountState::Active))
    {
        out.push_str(&format!("link:    {link}\n"));
    }
    out
}

/// What `connect -o json` prints (one line).
pub fn connect_json(account: &ConnectedAccount, namespace: &str, created: bool) -> Value {
    let status = account.status.clone().unwrap_or_default();
    let link = status
        .authorization_link
        .filter(|_| status.state != Some(AccountState::Active));
    json!({
        "name": account.name_any(),
        "namespace": namespace,
        "connection": account.spec.connection_ref.name,
        "identifier": account.spec.identifier,
        "created": created,
        "state": state_name(status.state),
        "link": link,
        "linkExpiresAt": status.authorization_link_expires_at.filter(|_| link.is_some()),
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn names_are_deterministic_dns_labels() {
        assert_eq!(account_name("gmail", "alice"), "gmail-alice");
        assert_eq!(account_name("gmail", "user-123"), "gmail-user-123");
        let email = account_name("gmail", "Alice@Example.com");
        assert!(
            email.starts_with("gmail-alice-example-com-") && email.len() == 6 + 18 + HASH_LEN,
            "{email}"
        );
        assert_eq!(email, account_name("gmail", "Alice@Example.com"));
        // Identifiers that read alike get different names.
        assert_ne!(account_name("gmail", "a.b"), account_name("gmail", "a-b"));
        assert_ne!(account_name("gmail", "a.b"), account_name("gmail", "A.B"));
        assert_eq!(fallback_name("gmail", "a.b"), account_name("gmail", "a.b"));
        assert!(fallback_name("gmail", "alice").starts_with("gmail-alice-"));
        let long = account_name("gmail", &"x".repeat(100));
        assert!(long.len() <= NAME_MAX && long.starts_with("gmail-xxx"), "{long}");
        assert_ne!(long, account_name("gmail", &"x".repeat(101)));
        let odd = account_name("gmail", "__--");
        assert!(odd.starts_with("gmail-") && !odd.contains("--"), "{odd}");
        let dns_label = |n: &str| {
            n.len() <= NAME_MAX
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !n.starts_with('-')
                && !n.ends_with('-')
        };
        for n in [email, long, odd, account_name("c", "😀 ü")] {
            assert!(dns_label(&n), "{n}");
        }
    }

    #[test]
    fn manifest_and_matching() {
        let m = account_manifest(
            "gmail-alice",
            "gmail",
            ConnectionKind::Connection,
            "alice@example.com",
        );
        assert_eq!(
            m["spec"],
            json!({"connectionRef": {"name": "gmail"}, "identifier": "alice@example.com"})
        );
        let m = account_manifest("x", "google", ConnectionKind::ClusterConnection, "a");
        assert_eq!(m["spec"]["connectionRef"]["kind"], "ClusterConnection");
        let a = pending();
        assert!(is_for(
            &a,
            "gmail",
            ConnectionKind::Connection,
            "alice@example.com"
        ));
        assert!(!is_for(
            &a,
            "gmail",
            ConnectionKind::ClusterConnection,
            "alice@example.com"
        ));
        assert!(!is_for(
            &a,
            "gmail",
            ConnectionKind::Connection,
            "bob@example.com"
        ));
    }

    #[test]
    fn waiting_and_output() {
        assert!(settled(&pending()) && !is_active(&pending()));
        assert!(settled(&active()) && is_active(&active()));
        assert!(!settled(&account(serde_json::Value::Null)));
        assert!(!settled(&account(json!({"state": "PENDING_AUTH"}))));
        assert_eq!(
            connect_text(&pending(), true),
            "account: alice (created)\nstate:   PENDING_AUTH\nlink:    https://connect.example.com/connect/SECRET-LINK-TOKEN\n"
        );
        assert_eq!(
            connect_text(&active(), false),
            "account: alice (existing)\nstate:   ACTIVE\n"
        );
        let j = connect_json(&pending(), "agents", false);
        assert_eq!(
            (&j["state"], &j["link"], &j["identifier"], &j["created"]),
            (
                &json!("PENDING_AUTH"),
                &json!("https://connect.example.com/connect/SECRET-LINK-TOKEN"),
                &json!("alice@example.com"),
                &json!(false)
            )
        );
        assert_eq!(connect_json(&active(), "agents", false)["link"], Value::Null);
        assert!(
            stuck(&account(json!({"state": "EXPIRED"})), "agents")
                .unwrap()
                .contains("reauthorize alice -n agents")
        );
        assert!(stuck(&account(json!({"state": "DISCONNECTED"})), "x").is_some());
        assert_eq!(stuck(&pending(), "agents"), None);
    }
}

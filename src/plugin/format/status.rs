//! `status`: the human-readable report of one account (never its link or credentials: the Secret
//! is shown by name and existence only) and `-o json`.

use std::fmt::Write as _;

use jiff::Timestamp;
use kube::ResourceExt;

use super::events::{EVENTS_SHOWN, EventLine, events_table, recent_events};
use super::human::{condition_text, ns_flag, reason_message, state_name, time_text};
use crate::api::conditions::{self, READY};
use crate::api::{ConnectedAccount, Connection};
use crate::plugin::error::Error;

/// Everything `status` shows about one account.
#[derive(Debug, Clone)]
pub struct StatusView<'a> {
    pub account: &'a ConnectedAccount,
    pub namespace: &'a str,
    pub connection: ConnectionInfo,
    /// Whether the Secret named by [`secret_name`] exists (or why that is unknown).
    pub secret_exists: Result<bool, String>,
    /// The account's Events (any order), or why they could not be listed.
    pub events: Result<Vec<EventLine>, String>,
}

/// What is known about the account's Connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionInfo {
    /// It exists and its Ready condition is True.
    Ready,
    /// It exists and its Ready condition is False or Unknown.
    NotReady { reason: String, message: String },
    /// It exists but has no Ready condition yet.
    NoStatus,
    /// There is no Connection of that name.
    Missing,
    /// It could not be read.
    Unknown(String),
}

impl ConnectionInfo {
    /// Reads the Ready condition of a Connection.
    pub fn of(connection: &Connection) -> ConnectionInfo {
        let conds = connection
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        match conditions::find(conds, READY) {
            Some(c) if c.status == "True" => ConnectionInfo::Ready,
            Some(c) => ConnectionInfo::NotReady {
                reason: c.reason.clone(),
                message: c.message.clone(),
            },
            None => ConnectionInfo::NoStatus,
        }
    }
}

/// The name of the Secret agent pods mount: from the status, else as the operator will name it.
pub fn secret_name(account: &ConnectedAccount) -> String {
    account
        .status
        .as_ref()
        .and_then(|s| s.secret_name.clone())
        .or_else(|| account.spec.secret_name.clone())
        .unwrap_or_else(|| format!("{}-credentials", account.name_any()))
}

/// The human-readable report of `status`.
pub fn status_text(view: &StatusView<'_>, now: Timestamp) -> String {
    let account = view.account;
    let name = account.name_any();
    let status = account.status.clone().unwrap_or_default();
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |label: &str, value: String| rows.push((format!("{label}:"), value));

    row("Account", name.clone());
    row("Namespace", view.namespace.to_owned());
    let conn = &account.spec.connection_ref.name;
    row(
        "Connection",
        match &view.connection {
            ConnectionInfo::Ready => format!("{conn} (Ready)"),
            ConnectionInfo::NotReady { reason, message } => {
                format!("{conn} (not Ready: {})", reason_message(reason, message))
            }
            ConnectionInfo::NoStatus => format!("{conn} (not Ready: no status yet)"),
            ConnectionInfo::Missing => format!("{conn} (not found)"),
            ConnectionInfo::Unknown(why) => format!("{conn} (cannot read it: {why})"),
        },
    );
    row("Identifier", account.spec.identifier.clone());
    row(
        "State",
        state_name(status.state).unwrap_or_else(|| "<none> (no status yet: is the operator running?)".into()),
    );
    row(
        "Ready",
        conditions::find(&status.conditions, READY)
            .map(condition_text)
            .unwrap_or_else(|| "<none>".into()),
    );
    for c in status.conditions.iter().filter(|c| c.type_ != READY) {
        row(&c.type_, condition_text(c));
    }
    let secret = secret_name(account);
    row(
        "Secret",
        match &view.secret_exists {
            Ok(true) => format!("{secret} (exists)"),
            Ok(false) => format!("{secret} (does not exist)"),
            Err(why) => format!("{secret} (cannot check: {why})"),
        },
    );
    row("Expires At", time_text(status.expires_at.as_ref(), now));
    row("Next Refresh At", time_text(status.next_refresh_at.as_ref(), now));
    row(
        "Last Refreshed At",
        time_text(status.last_refreshed_at.as_ref(), now),
    );
    row(
        "Granted Scopes",
        if status.granted_scopes.is_empty() {
            "<none>".into()
        } else {
            status.granted_scopes.join(", ")
        },
    );
    row(
        "Link",
        match (&status.authorization_link, &status.authorization_link_expires_at) {
            (None, _) => "<none>".into(),
            (Some(_), Some(exp)) if exp.0 <= now => format!(
                "expired at {} (the operator issues a new one)",
                time_text(Some(exp), now)
            ),
            (Some(_), exp) => format!(
                "pending, expires at {}; print it with `kubectl agentauth link {name}{}`",
                time_text(exp.as_ref(), now),
                ns_flag(view.namespace)
            ),
        },
    );

    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 2;
    let mut out = String::new();
    for (label, value) in &rows {
        let _ = writeln!(out, "{label:<width$}{value}");
    }
    match &view.events {
        Err(why) => {
            let _ = writeln!(out, "{:<width$}<cannot list Events: {why}>", "Events:");
        }
        Ok(events) if events.is_empty() => {
            let _ = writeln!(out, "{:<width$}<none>", "Events:");
        }
        Ok(events) => {
            out.push_str("Events:\n");
            out.push_str(&events_table(&recent_events(events.clone(), EVENTS_SHOWN), now));
        }
    }
    out
}

/// `status -o json`: the account's status (an empty object before the operator wrote one).
pub fn status_json(account: &ConnectedAccount) -> Result<String, Error> {
    Ok(serde_json::to_string_pretty(
        &account.status.clone().unwrap_or_default(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::super::events::events_from_v1;
    use super::super::fixtures::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn status_of_an_active_account() {
        let a = active();
        let view = StatusView {
            account: &a,
            namespace: "agents",
            connection: ConnectionInfo::Ready,
            secret_exists: Ok(true),
            events: Ok(events_from_v1(&a, &v1_events())),
        };
        let text = status_text(&view, now());
        let expected = "\
Account:            alice
Namespace:          agents
Connection:         gmail (Ready)
Identifier:         alice@example.com
State:              ACTIVE
Ready:              True (Active: credentials are valid and published)
TokenRefresh:       True (Renewed: token renewal is on schedule)
Secret:             alice-credentials (exists)
Expires At:         2026-05-01T10:45:00Z (in 45m)
Next Refresh At:    2026-05-01T10:30:00Z (in 30m)
Last Refreshed At:  2026-05-01T09:45:00Z (15m ago)
Granted Scopes:     openid, email
Link:               <none>
Events:
  TYPE     REASON           AGE       MESSAGE
  Normal   LinkIssued       60m       new authorization link in status.authorizationLink
  Normal   Refreshed        15m (x3)  access token renewed
  Warning  RefreshRejected  10m       state EXPIRED: the provider rejected the refresh token
";
        assert_eq!(text, expected);
    }

    #[test]
    fn status_of_a_pending_account_shows_the_link_expiry_but_not_the_link() {
        let a = pending();
        let view = StatusView {
            account: &a,
            namespace: "agents",
            connection: ConnectionInfo::NotReady {
                reason: "ClientSecretNotFound".into(),
                message: "secret gmail-oauth not found".into(),
            },
            secret_exists: Ok(false),
            events: Ok(vec![]),
        };
        let text = status_text(&view, now());
        assert!(!text.contains("SECRET-LINK-TOKEN"), "{text}");
        assert!(text.contains(
            "Link:               pending, expires at 2026-05-02T09:00:00Z (in 23h); \
             print it with `kubectl agentauth link alice -n agents`"
        ));
        assert!(text.contains("State:              PENDING_AUTH\n"));
        assert!(text.contains(
            "Connection:         gmail (not Ready: ClientSecretNotFound: secret gmail-oauth not found)"
        ));
        assert!(text.contains("Secret:             alice-credentials (does not exist)\n"));
        assert!(text.contains("Expires At:         <none>\n"));
        assert!(text.contains("Granted Scopes:     <none>\n"));
        assert!(text.ends_with("Events:             <none>\n"), "{text}");
    }

    #[test]
    fn status_without_status_or_permissions() {
        let a: ConnectedAccount = serde_json::from_value(json!({
            "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount",
            "metadata": {"name": "bob"},
            "spec": {"connectionRef": {"name": "gone"}, "identifier": "bob", "secretName": "bob-token"},
        }))
        .unwrap();
        let view = StatusView {
            account: &a,
            namespace: "default",
            connection: ConnectionInfo::Missing,
            secret_exists: Err("forbidden".into()),
            events: Err("forbidden".into()),
        };
        let text = status_text(&view, now());
        assert!(text.contains("State:              <none> (no status yet: is the operator running?)"));
        assert!(text.contains("Connection:         gone (not found)"));
        assert!(text.contains("Secret:             bob-token (cannot check: forbidden)"));
        assert!(text.ends_with("Events:             <cannot list Events: forbidden>\n"));
    }

    #[test]
    fn connection_readiness() {
        let conn = |status: serde_json::Value| -> Connection {
            serde_json::from_value(json!({
                "apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection",
                "metadata": {"name": "gmail"},
                "spec": {"authType": "OAuth2", "provider": "google", "oauth2": {"clientId": "x"}},
                "status": status,
            }))
            .unwrap()
        };
        let ready = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Valid",
            "message": "", "lastTransitionTime": "2026-05-01T09:00:00Z"}]});
        assert_eq!(ConnectionInfo::of(&conn(ready)), ConnectionInfo::Ready);
        let not = json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Invalid",
            "message": "bad", "lastTransitionTime": "2026-05-01T09:00:00Z"}]});
        assert_eq!(
            ConnectionInfo::of(&conn(not)),
            ConnectionInfo::NotReady {
                reason: "Invalid".into(),
                message: "bad".into()
            }
        );
        assert_eq!(ConnectionInfo::of(&conn(json!({}))), ConnectionInfo::NoStatus);
    }

    #[test]
    fn json_output_is_the_status() {
        let text = status_json(&active()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["state"], "ACTIVE");
        assert_eq!(v["secretName"], "alice-credentials");
        let none = account(serde_json::Value::Null);
        assert_eq!(status_json(&none).unwrap(), "{}");
    }
}

//! What `kubectl agentauth` prints: pure functions of the objects read from the cluster.
//!
//! Nothing here reads credentials: the plugin only ever fetches the Secret's metadata, and the
//! human-readable status shows the link's expiry, never the link.

use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::{core::v1 as core, events::v1 as events};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use serde_json::json;

use super::Error;
use crate::api::conditions::{self, READY};
use crate::api::{AccountState, ConnectedAccount, Connection, REAUTHORIZE_ANNOTATION};

/// How many Events `status` shows.
pub const EVENTS_SHOWN: usize = 5;

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

/// One Event about the account, from either Events API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    pub type_: String,
    pub reason: String,
    /// When it last happened.
    pub last_seen: Option<Timestamp>,
    /// How often it happened (series count).
    pub count: i32,
    pub message: String,
}

/// The account's Events among `list` (events.k8s.io/v1): those regarding a ConnectedAccount of this
/// name and, when both are known, this UID (not a deleted namesake).
pub fn events_from_v1(account: &ConnectedAccount, list: &[events::Event]) -> Vec<EventLine> {
    list.iter()
        .filter(|e| e.regarding.as_ref().is_some_and(|r| regards(account, r)))
        .map(|e| EventLine {
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            last_seen: e
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
                .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0))
                .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0)),
            count: e
                .series
                .as_ref()
                .map(|s| s.count)
                .or(e.deprecated_count)
                .unwrap_or(1),
            message: e.note.clone().unwrap_or_default(),
        })
        .collect()
}

/// [`events_from_v1`] for core/v1 Events (clusters without events.k8s.io/v1).
pub fn events_from_core(account: &ConnectedAccount, list: &[core::Event]) -> Vec<EventLine> {
    list.iter()
        .filter(|e| regards(account, &e.involved_object))
        .map(|e| EventLine {
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            last_seen: e
                .series
                .as_ref()
                .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
                .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
                .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0)),
            count: e.series.as_ref().and_then(|s| s.count).or(e.count).unwrap_or(1),
            message: e.message.clone().unwrap_or_default(),
        })
        .collect()
}

fn regards(account: &ConnectedAccount, r: &core::ObjectReference) -> bool {
    let uid_matches = match (r.uid.as_deref(), account.metadata.uid.as_deref()) {
        (Some(a), Some(b)) if !a.is_empty() => a == b,
        _ => true,
    };
    r.name.as_deref() == Some(account.name_any().as_str())
        && r.kind.as_deref().is_none_or(|k| k == "ConnectedAccount")
        && uid_matches
}

/// The most recent `n` Events, oldest first (the order `kubectl describe` uses).
pub fn recent_events(mut events: Vec<EventLine>, n: usize) -> Vec<EventLine> {
    events.sort_by_key(|e| e.last_seen);
    let skip = events.len().saturating_sub(n);
    events.split_off(skip)
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

/// `ACTIVE`, `PENDING_AUTH`, ... as in the CRD; `None` before the operator wrote a status.
pub fn state_name(state: Option<AccountState>) -> Option<String> {
    let value = serde_json::to_value(state?).ok()?;
    value.as_str().map(str::to_owned)
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

fn events_table(events: &[EventLine], now: Timestamp) -> String {
    let rows: Vec<[String; 4]> = events
        .iter()
        .map(|e| {
            let age = e
                .last_seen
                .map(|t| human_duration(now.duration_since(t)))
                .unwrap_or_else(|| "<unknown>".into());
            let age = if e.count > 1 {
                format!("{age} (x{})", e.count)
            } else {
                age
            };
            [
                e.type_.clone(),
                e.reason.clone(),
                age,
                e.message.split_whitespace().collect::<Vec<_>>().join(" "),
            ]
        })
        .collect();
    let header = ["TYPE", "REASON", "AGE", "MESSAGE"].map(str::to_owned);
    let mut widths = [0usize; 3];
    for r in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "  {:<w0$}  {:<w1$}  {:<w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn condition_text(c: &Condition) -> String {
    format!("{} ({})", c.status, reason_message(&c.reason, &c.message))
}

fn reason_message(reason: &str, message: &str) -> String {
    if message.is_empty() {
        reason.to_owned()
    } else {
        format!("{reason}: {message}")
    }
}

fn time_text(t: Option<&Time>, now: Timestamp) -> String {
    let Some(Time(t)) = t else {
        return "<none>".into();
    };
    let when = t.strftime("%Y-%m-%dT%H:%M:%SZ");
    let d = t.duration_since(now);
    if d.is_negative() {
        format!("{when} ({} ago)", human_duration(-d))
    } else {
        format!("{when} (in {})", human_duration(d))
    }
}

/// A duration the way kubectl prints ages: `45s`, `3m20s`, `25m`, `5h10m`, `30h`, `3d4h`, `20d`, `1y30d`.
pub fn human_duration(d: SignedDuration) -> String {
    if d < SignedDuration::from_secs(-1) {
        return "<invalid>".into();
    }
    let seconds = d.as_secs().max(0);
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let days = hours / 24;
    let years = days / 365;
    let with_rest = |big: i64, unit: &str, rest: i64, rest_unit: &str| {
        if rest == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{rest}{rest_unit}")
        }
    };
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        with_rest(minutes, "m", seconds % 60, "s")
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        with_rest(hours, "h", minutes % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        with_rest(days, "d", hours % 24, "h")
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        with_rest(years, "y", days % 365, "d")
    } else {
        format!("{years}y")
    }
}

/// `status -o json`: the account's status (an empty object before the operator wrote one).
pub fn status_json(account: &ConnectedAccount) -> Result<String, Error> {
    Ok(serde_json::to_string_pretty(
        &account.status.clone().unwrap_or_default(),
    )?)
}

/// `link`: the current authorization link, or why there is none and what to do.
pub fn current_link(account: &ConnectedAccount, namespace: &str) -> Result<String, Error> {
    let status = account.status.clone().unwrap_or_default();
    if let Some(link) = status.authorization_link {
        return Ok(link);
    }
    let name = account.name_any();
    let ns = ns_flag(namespace);
    let why = conditions::find(&status.conditions, READY)
        .map(|c| reason_message(&c.reason, &c.message))
        .unwrap_or_default();
    let state = state_name(status.state).unwrap_or_default();
    Err(Error::NoLink(match status.state {
        None => format!(
            "{name} has no status yet, so no link; is the operator running? (kubectl agentauth status {name}{ns})"
        ),
        Some(AccountState::Active | AccountState::Expired) => format!(
            "{name} is {state} and has no pending link; use `kubectl agentauth reauthorize {name}{ns}`"
        ),
        Some(AccountState::PendingAuth | AccountState::PendingVerification) => format!(
            "{name} is {state} but has no link yet; the operator issues one shortly \
             (kubectl agentauth status {name}{ns})"
        ),
        Some(AccountState::Disconnected) => {
            format!("{name} is DISCONNECTED and has no link; set spec.disconnected to false to issue one")
        }
        Some(AccountState::Error) => {
            format!("{name} is ERROR ({why}) and has no link; fix the cause first")
        }
    }))
}

/// A warning to print next to the link when it has already expired.
pub fn link_warning(account: &ConnectedAccount, now: Timestamp) -> Option<String> {
    let exp = account.status.as_ref()?.authorization_link_expires_at.as_ref()?;
    (exp.0 <= now).then(|| {
        format!(
            "warning: this link expired at {}; the operator replaces it shortly",
            exp.0.strftime("%Y-%m-%dT%H:%M:%SZ")
        )
    })
}

/// Refuses `reauthorize` where the annotation cannot produce a link.
pub fn check_reauthorizable(account: &ConnectedAccount) -> Result<(), Error> {
    let name = account.name_any();
    if account.spec.disconnected == Some(true) {
        return Err(Error::NotReauthorizable(format!(
            "{name} is disconnected (spec.disconnected: true); set spec.disconnected to false to issue a new link"
        )));
    }
    Ok(())
}

/// The merge patch that asks for a new link: the reauthorize annotation set to `value`.
pub fn reauthorize_patch(value: &str) -> serde_json::Value {
    json!({"metadata": {"annotations": {REAUTHORIZE_ANNOTATION: value}}})
}

/// What `reauthorize` without `--wait` prints.
pub fn reauthorize_requested(name: &str, namespace: &str, value: &str) -> String {
    format!(
        "connectedaccount/{name} annotated {REAUTHORIZE_ANNOTATION}={value}; \
         print the new link with `kubectl agentauth link {name}{}` once the operator issued it",
        ns_flag(namespace)
    )
}

/// The link the operator issued for the reauthorize request `value`, once it did.
pub fn link_for_request(account: &ConnectedAccount, value: &str) -> Option<String> {
    let status = account.status.as_ref()?;
    if status.reauthorize_request.as_deref() != Some(value) {
        return None;
    }
    status.authorization_link.clone()
}

/// Why `reauthorize --wait` is still waiting.
pub fn wait_detail(account: &ConnectedAccount) -> String {
    let status = account.status.clone().unwrap_or_default();
    let state = state_name(status.state).unwrap_or_else(|| "<none>".into());
    let ready = conditions::find(&status.conditions, READY)
        .map(condition_text)
        .unwrap_or_else(|| "<none>".into());
    format!(
        "the operator has not acted on the request yet (state {state}, Ready {ready}); \
         is the operator running? The annotation stays set and is acted on later"
    )
}

fn ns_flag(namespace: &str) -> String {
    if namespace == "default" {
        String::new()
    } else {
        format!(" -n {namespace}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-05-01T10:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    fn account(status: serde_json::Value) -> ConnectedAccount {
        serde_json::from_value(json!({
            "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount",
            "metadata": {"name": "alice", "namespace": "agents", "uid": "uid-1",
                         "annotations": {"agentauth.dev/reauthorize": "r1"}},
            "spec": {"connectionRef": {"name": "gmail"}, "identifier": "alice@example.com"},
            "status": status,
        }))
        .unwrap()
    }

    fn active() -> ConnectedAccount {
        account(json!({
            "state": "ACTIVE",
            "secretName": "alice-credentials",
            "expiresAt": "2026-05-01T10:45:00Z",
            "nextRefreshAt": "2026-05-01T10:30:00Z",
            "lastRefreshedAt": "2026-05-01T09:45:00Z",
            "grantedScopes": ["openid", "email"],
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Active",
                 "message": "credentials are valid and published", "lastTransitionTime": "2026-05-01T09:45:00Z"},
                {"type": "TokenRefresh", "status": "True", "reason": "Renewed",
                 "message": "token renewal is on schedule", "lastTransitionTime": "2026-05-01T09:45:00Z"},
            ],
        }))
    }

    fn pending() -> ConnectedAccount {
        account(json!({
            "state": "PENDING_AUTH",
            "secretName": "alice-credentials",
            "authorizationLink": "https://connect.example.com/connect/SECRET-LINK-TOKEN",
            "authorizationLinkExpiresAt": "2026-05-02T09:00:00Z",
            "conditions": [{"type": "Ready", "status": "False", "reason": "AwaitingAuthorization",
                "message": "waiting for the user to open status.authorizationLink",
                "lastTransitionTime": "2026-05-01T09:00:00Z"}],
        }))
    }

    fn v1_events() -> Vec<events::Event> {
        serde_json::from_value(json!([
            {"metadata": {"name": "e1"}, "type": "Normal", "reason": "LinkIssued",
             "note": "new authorization link in status.authorizationLink",
             "eventTime": "2026-05-01T09:00:00.000000Z",
             "regarding": {"kind": "ConnectedAccount", "name": "alice", "uid": "uid-1"}},
            {"metadata": {"name": "e2"}, "type": "Normal", "reason": "Refreshed",
             "note": "access token renewed", "eventTime": "2026-05-01T09:10:00.000000Z",
             "series": {"count": 3, "lastObservedTime": "2026-05-01T09:45:00.000000Z"},
             "regarding": {"kind": "ConnectedAccount", "name": "alice", "uid": "uid-1"}},
            {"metadata": {"name": "e3"}, "type": "Normal", "reason": "OldIncarnation",
             "note": "x", "eventTime": "2026-05-01T09:20:00.000000Z",
             "regarding": {"kind": "ConnectedAccount", "name": "alice", "uid": "uid-0"}},
            {"metadata": {"name": "e4"}, "type": "Normal", "reason": "OtherKind",
             "note": "x", "eventTime": "2026-05-01T09:20:00.000000Z",
             "regarding": {"kind": "Secret", "name": "alice", "uid": "uid-1"}},
            {"metadata": {"name": "e5"}, "type": "Warning", "reason": "RefreshRejected",
             "note": "state EXPIRED:\n  the provider rejected the refresh token",
             "eventTime": "2026-05-01T09:50:00.000000Z",
             "regarding": {"kind": "ConnectedAccount", "name": "alice", "uid": "uid-1"}},
        ]))
        .unwrap()
    }

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
    fn an_expired_link_is_called_expired() {
        let mut a = pending();
        if let Some(s) = a.status.as_mut() {
            s.authorization_link_expires_at = Some(Time("2026-05-01T09:59:00Z".parse().unwrap()));
        }
        let view = StatusView {
            account: &a,
            namespace: "agents",
            connection: ConnectionInfo::Ready,
            secret_exists: Ok(false),
            events: Ok(vec![]),
        };
        assert!(
            status_text(&view, now())
                .contains("Link:               expired at 2026-05-01T09:59:00Z (60s ago)")
        );
        assert_eq!(
            link_warning(&a, now()).as_deref(),
            Some("warning: this link expired at 2026-05-01T09:59:00Z; the operator replaces it shortly")
        );
        assert_eq!(link_warning(&pending(), now()), None);
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
    fn events_are_filtered_to_the_account_and_the_latest_five_kept() {
        let a = active();
        let lines = events_from_v1(&a, &v1_events());
        let reasons: Vec<&str> = lines.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["LinkIssued", "Refreshed", "RefreshRejected"]);
        assert_eq!(lines[1].count, 3);
        assert_eq!(lines[1].last_seen, Some("2026-05-01T09:45:00Z".parse().unwrap()));

        let many: Vec<EventLine> = (0..8)
            .rev()
            .map(|i| EventLine {
                type_: "Normal".into(),
                reason: format!("R{i}"),
                last_seen: Some(Timestamp::from_second(1_000 + i).unwrap()),
                count: 1,
                message: String::new(),
            })
            .collect();
        let kept: Vec<String> = recent_events(many, EVENTS_SHOWN)
            .into_iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(kept, ["R3", "R4", "R5", "R6", "R7"]);
    }

    #[test]
    fn core_events_are_read_too() {
        let a = active();
        let list: Vec<core::Event> = serde_json::from_value(json!([
            {"metadata": {"name": "e1"}, "type": "Warning", "reason": "RevocationFailed",
             "message": "revocation endpoint answered 500", "count": 2,
             "lastTimestamp": "2026-05-01T09:58:00Z",
             "involvedObject": {"kind": "ConnectedAccount", "name": "alice", "uid": "uid-1"}},
            {"metadata": {"name": "e2"}, "type": "Normal", "reason": "Scheduled", "message": "x",
             "involvedObject": {"kind": "Pod", "name": "alice"}},
        ]))
        .unwrap();
        assert_eq!(
            events_from_core(&a, &list),
            vec![EventLine {
                type_: "Warning".into(),
                reason: "RevocationFailed".into(),
                last_seen: Some("2026-05-01T09:58:00Z".parse().unwrap()),
                count: 2,
                message: "revocation endpoint answered 500".into(),
            }]
        );
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

    #[test]
    fn link_is_printed_or_explained() {
        assert_eq!(
            current_link(&pending(), "agents").unwrap(),
            "https://connect.example.com/connect/SECRET-LINK-TOKEN"
        );
        let err = current_link(&active(), "default").unwrap_err();
        assert_eq!(
            err.to_string(),
            "alice is ACTIVE and has no pending link; use `kubectl agentauth reauthorize alice`"
        );
        let err = current_link(&active(), "agents").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("`kubectl agentauth reauthorize alice -n agents`")
        );
        let disconnected = account(json!({"state": "DISCONNECTED"}));
        assert!(
            current_link(&disconnected, "agents")
                .unwrap_err()
                .to_string()
                .contains("set spec.disconnected to false")
        );
        let error = account(
            json!({"state": "ERROR", "conditions": [{"type": "Ready", "status": "False",
            "reason": "ConnectionNotFound", "message": "Connection gmail not found",
            "lastTransitionTime": "2026-05-01T09:00:00Z"}]}),
        );
        assert_eq!(
            current_link(&error, "agents").unwrap_err().to_string(),
            "alice is ERROR (ConnectionNotFound: Connection gmail not found) and has no link; fix the cause first"
        );
        let fresh = account(serde_json::Value::Null);
        assert!(
            current_link(&fresh, "agents")
                .unwrap_err()
                .to_string()
                .contains("is the operator running?")
        );
    }

    #[test]
    fn reauthorize_patch_and_wait() {
        assert_eq!(
            reauthorize_patch("2026-05-01T10:00:00Z"),
            json!({"metadata": {"annotations": {"agentauth.dev/reauthorize": "2026-05-01T10:00:00Z"}}})
        );
        // The link counts only once the operator recorded that it acted on this request.
        let mut a = pending();
        assert_eq!(link_for_request(&a, "r2"), None);
        if let Some(s) = a.status.as_mut() {
            s.reauthorize_request = Some("r2".into());
        }
        assert_eq!(
            link_for_request(&a, "r2").as_deref(),
            Some("https://connect.example.com/connect/SECRET-LINK-TOKEN")
        );
        assert_eq!(link_for_request(&active(), "r1"), None);
        assert!(wait_detail(&active()).contains("state ACTIVE, Ready True (Active"));
        assert!(reauthorize_requested("alice", "agents", "v").contains("agentauth.dev/reauthorize=v"));

        let mut disconnected = active();
        disconnected.spec.disconnected = Some(true);
        assert!(matches!(
            check_reauthorizable(&disconnected),
            Err(Error::NotReauthorizable(_))
        ));
        assert!(check_reauthorizable(&active()).is_ok());
    }

    #[test]
    fn durations_read_like_kubectl() {
        let s = SignedDuration::from_secs;
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600 + 600, "3h10m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (2 * 86400 + 3600, "2d1h"),
            (8 * 86400, "8d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(s(secs)), want, "{secs}s");
        }
        assert_eq!(human_duration(s(-5)), "<invalid>");
        assert_eq!(human_duration(SignedDuration::from_millis(-500)), "0s");
    }
}

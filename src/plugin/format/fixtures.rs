//! Accounts and Events the format tests share.

use jiff::Timestamp;
use k8s_openapi::api::events::v1 as events;
use serde_json::json;

use crate::api::ConnectedAccount;

pub const NOW: &str = "2026-05-01T10:00:00Z";

pub fn now() -> Timestamp {
    NOW.parse().unwrap()
}

pub fn account(status: serde_json::Value) -> ConnectedAccount {
    serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount",
        "metadata": {"name": "alice", "namespace": "agents", "uid": "uid-1",
                     "annotations": {"agentauth.dev/reauthorize": "r1"}},
        "spec": {"connectionRef": {"name": "gmail"}, "identifier": "alice@example.com"},
        "status": status,
    }))
    .unwrap()
}

pub fn active() -> ConnectedAccount {
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

pub fn pending() -> ConnectedAccount {
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

pub fn v1_events() -> Vec<events::Event> {
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

"""ConnectedAccount from the object the API server returns (no network)."""

from __future__ import annotations

from datetime import datetime, timezone

from agentauth import ConnectedAccount
from agentauth.models import parse_time

OBJECT = {
    "apiVersion": "agentauth.dev/v1alpha1",
    "kind": "ConnectedAccount",
    "metadata": {
        "name": "gmail-alice",
        "namespace": "agents",
        "uid": "u-1",
        "annotations": {"agentauth.dev/reauthorize": "2026-12-01T10:00:00Z"},
    },
    "spec": {"connectionRef": {"name": "gmail"}, "identifier": "alice", "delivery": "Broker"},
    "status": {
        "state": "PENDING_AUTH",
        "authorizationLink": "https://auth.example.com/connect/x",
        "authorizationLinkExpiresAt": "2026-12-01T11:00:00Z",
        "reauthorizeRequest": "2026-12-01T10:00:00Z",
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "AwaitingAuthorization", "message": "open the link"}
        ],
    },
}


def test_fields() -> None:
    a = ConnectedAccount.from_object(OBJECT)
    assert (a.name, a.namespace, a.uid, a.id) == ("gmail-alice", "agents", "u-1", "agents/gmail-alice")
    assert (a.connection, a.connection_kind, a.identifier, a.delivery) == ("gmail", "Connection", "alice", "Broker")
    assert a.state == "PENDING_AUTH" and not a.is_active and not a.disconnected
    assert a.authorization_link == "https://auth.example.com/connect/x"
    assert a.authorization_link_expires_at == datetime(2026, 12, 1, 11, tzinfo=timezone.utc)
    assert a.secret_name is None and a.expires_at is None
    assert (a.reason, a.message) == ("AwaitingAuthorization", "open the link")
    assert a.reauthorize_request == a.reauthorize_annotation == "2026-12-01T10:00:00Z"
    assert a.describe() == "agents/gmail-alice (PENDING_AUTH; AwaitingAuthorization: open the link)"


def test_a_new_object_without_status() -> None:
    a = ConnectedAccount.from_object({"metadata": {"name": "x"}, "spec": {"connectionRef": {"name": "c", "kind": "ClusterConnection"}}})
    assert a.state is None and a.conditions == [] and a.ready is None and a.connection_kind == "ClusterConnection"
    assert a.describe().endswith("(no status yet; no Ready condition yet)")


def test_times() -> None:
    assert parse_time("2026-11-27T11:00:00Z") == datetime(2026, 11, 27, 11, tzinfo=timezone.utc)
    assert parse_time(None) is None and parse_time("soon") is None and parse_time("") is None

"""Broker mode: the sidecar picks the user's account per call, by connection + identifier or by
``namespace/name``, and the broker's answers become typed errors."""

from __future__ import annotations

import pytest

from agentauth import AgentAuth, ConnectedAccount, ForbiddenError
from conftest import when_ready


@pytest.fixture(autouse=True)
def _broker(broker_mode: bool) -> None:
    if not broker_mode:
        pytest.skip("the sidecar mounts accounts (AGENTAUTH_TEST_BROKER unset)")


def test_tools_by_connection_and_identifier(auth: AgentAuth, connection: str, alice: ConnectedAccount) -> None:
    result = when_ready(
        lambda: auth.execute_tool(
            "gmail_fetch_mails", {"query": "is:unread"}, connection_name=connection, identifier=alice.identifier
        )
    )
    assert [m["subject"] for m in result["messages"]] == ["Lunch", "Invoice 42"]
    qualified = auth.execute_tool("gmail_fetch_mails", {}, connected_account=f"{auth.namespace}/{alice.name}")
    assert len(qualified["messages"]) == 2


def test_the_proxy_by_connection_and_identifier(auth: AgentAuth, connection: str, alice: ConnectedAccount) -> None:
    resp = auth.request(
        "GET", "gmail/v1/users/me/messages/m2", connection_name=connection, identifier=alice.identifier
    )
    assert resp.status_code == 200 and resp.json()["snippet"] == "Your invoice"


def test_an_account_the_pod_may_not_use(auth: AgentAuth, connection: str) -> None:
    nina = auth.get_or_create_connected_account(connection, "nina")
    try:
        # The sidecar's ServiceAccount may `use` the test's users' accounts only.
        with pytest.raises(ForbiddenError) as e:
            auth.execute_tool("gmail_fetch_mails", {}, connection_name=connection, identifier="nina")
        assert e.value.status == 403 and e.value.code == "forbidden"
        with pytest.raises(ForbiddenError):
            auth.request("GET", "gmail/v1/users/me/messages", connection_name=connection, identifier="nina")
    finally:
        auth.delete_connected_account(nina)


def test_a_user_without_an_account(auth: AgentAuth, connection: str) -> None:
    # To a pod that may use some accounts only, a missing account looks like one it may not use:
    # the broker tells whether an account exists only to those who may use it.
    with pytest.raises(ForbiddenError) as e:
        auth.execute_tool("gmail_fetch_mails", {}, connection_name=connection, identifier="nobody-at-all")
    assert e.value.code == "forbidden" and "nobody-at-all" in str(e.value)

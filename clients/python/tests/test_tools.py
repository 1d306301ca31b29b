"""Tool calls and the proxy through the sidecar, and the errors they raise."""

from __future__ import annotations

import pytest

from agentauth import (
    PENDING_AUTH,
    AgentAuth,
    AgentAuthError,
    ConnectedAccount,
    ForbiddenError,
    InvalidInputError,
    NotActiveError,
    NotFoundError,
    ProviderError,
)
from conftest import when_ready

SUBJECTS = ["Lunch", "Invoice 42"]


def subjects(result: dict[str, list[dict[str, str]]]) -> list[str]:
    return [m["subject"] for m in result["messages"]]


def test_execute_tool_names_the_account_every_way(auth: AgentAuth, alice: ConnectedAccount) -> None:
    unread = {"query": "is:unread", "max_results": 5}
    result = when_ready(lambda: auth.execute_tool("gmail_fetch_mails", unread, connected_account=alice))
    assert subjects(result) == SUBJECTS
    assert result["messages"][0] == {
        "id": "m1",
        "thread_id": "t",
        "from": "Bob <bob@example.com>",
        "to": "user@example.com",
        "subject": "Lunch",
        "date": "Thu, 26 Nov 2026 10:00:00 +0000",
        "labels": ["UNREAD", "INBOX"],
        "snippet": "Lunch tomorrow?",
    }
    for ref in [alice.name, alice.id]:
        assert subjects(auth.execute_tool("gmail_fetch_mails", unread, connected_account=ref)) == SUBJECTS
    # The hosted SDKs' spelling, and the tool input's defaults.
    by_id = auth.execute_tool(tool="gmail_fetch_mails", tool_input={}, connected_account_id=alice.id)
    assert subjects(by_id) == SUBJECTS


def test_request_through_the_proxy(auth: AgentAuth, connection: str, alice: ConnectedAccount) -> None:
    resp = when_ready(
        lambda: auth.request("GET", "gmail/v1/users/me/messages", connected_account=alice, params={"q": "is:unread"})
    )
    assert resp.status_code == 200
    assert [m["id"] for m in resp.json()["messages"]] == ["m1", "m2"]
    one = auth.request("get", "/gmail/v1/users/me/messages/m2", connected_account=alice.name)
    assert one.json()["snippet"] == "Your invoice"


def test_provider_errors(auth: AgentAuth, alice: ConnectedAccount) -> None:
    # The Gmail-shaped API knows no labels endpoint and no send: it answers 404.
    with pytest.raises(ProviderError) as e:
        when_ready(lambda: auth.request("GET", "gmail/v1/users/me/labels", connected_account=alice))
    assert (e.value.status, e.value.provider_status) == (404, 404)
    assert e.value.details == {"message": "Not Found"} and "Not Found" in str(e.value)
    raw = auth.request("GET", "gmail/v1/users/me/labels", connected_account=alice, raise_for_status=False)
    assert raw.status_code == 404
    mail = {"to": ["bob@example.com"], "subject": "Hi", "body": "Hello"}
    with pytest.raises(ProviderError) as t:
        auth.execute_tool("gmail_send_mail", mail, connected_account=alice)
    assert (t.value.status, t.value.provider_status, t.value.code) == (404, 404, "provider_error")
    assert "404" in str(t.value)


def test_sidecar_errors(auth: AgentAuth, alice: ConnectedAccount, broker_mode: bool) -> None:
    with pytest.raises(NotFoundError) as unknown:
        auth.execute_tool("no_such_tool", {}, connected_account=alice)
    assert unknown.value.code == "unknown_tool" and "no_such_tool" in str(unknown.value)
    # Mounted: no such account; broker mode: not one this pod may use (whether it exists is not
    # told to a pod without the grant).
    with pytest.raises(ForbiddenError if broker_mode else NotFoundError) as account:
        auth.execute_tool("gmail_fetch_mails", {}, connected_account="not-mounted")
    assert account.value.code == ("forbidden" if broker_mode else "unknown_account")
    with pytest.raises(InvalidInputError) as bad:
        auth.execute_tool("gmail_fetch_mails", {"max_results": 500}, connected_account=alice)
    assert bad.value.code == "invalid_input" and "max_results" in str(bad.value)
    with pytest.raises(InvalidInputError) as ambiguous:
        auth.execute_tool("gmail_fetch_mails", {})
    # Mounted: several accounts could run it; broker mode: the call must name one.
    assert ambiguous.value.code in ("ambiguous_account", "invalid_account_selection")
    with pytest.raises(InvalidInputError):
        auth.execute_tool("gmail_fetch_mails", {}, connected_account=alice, connection_name="gmail")
    with pytest.raises(InvalidInputError):
        auth.execute_tool("gmail_fetch_mails", {}, connection_name="gmail")
    with pytest.raises(InvalidInputError):
        auth.request("GET", "gmail/v1/users/me/messages")


def test_not_active_carries_the_link(
    auth: AgentAuth, nobody: AgentAuth, connection: str, mounted: list[str]
) -> None:
    link = auth.get_authorization_link(connection, mounted[1])
    bob = link.account
    with pytest.raises(NotActiveError) as e:
        auth.execute_tool("gmail_fetch_mails", {}, connected_account=bob)
    assert e.value.state == PENDING_AUTH and e.value.authorization_link == link.url
    assert e.value.account == bob.name and bob.name in str(e.value)
    with pytest.raises(NotActiveError) as proxied:
        auth.request("GET", "gmail/v1/users/me/messages", connected_account=bob)
    assert proxied.value.authorization_link == link.url
    # A caller that may not read the account still learns that it is not active.
    with pytest.raises(NotActiveError) as blind:
        nobody.execute_tool("gmail_fetch_mails", {}, connected_account=bob.name)
    assert blind.value.authorization_link is None
    # Mounted: the Secret is not there; broker mode: the broker says why.
    assert blind.value.code in ("credential_unavailable", "account_not_active")


def test_an_unreachable_sidecar(auth: AgentAuth, alice: ConnectedAccount) -> None:
    elsewhere = AgentAuth(namespace=auth.namespace, sidecar_url="http://127.0.0.1:9", api_client=auth.api_client)
    with pytest.raises(AgentAuthError) as e:
        elsewhere.execute_tool("gmail_fetch_mails", {}, connected_account=alice)
    assert e.value.code == "sidecar_unreachable" and "127.0.0.1:9" in str(e.value)

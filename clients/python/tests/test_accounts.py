"""ConnectedAccounts through the SDK: get-or-create, get, list, links, waits, delete, and the
Kubernetes errors (not found, forbidden)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s

from agentauth import (
    ACTIVE,
    ConflictError,
    DISCONNECTED,
    FIELD_MANAGER,
    PENDING_AUTH,
    REAUTHORIZE_ANNOTATION,
    AgentAuth,
    ConnectedAccount,
    ForbiddenError,
    NotActiveError,
    NotFoundError,
    WaitTimeout,
    account_name,
)
from agentauth.naming import hashed_name
from conftest import GROUP, PLURAL, VERSION, create_account, eventually, raw_account


def test_get_or_create_is_idempotent_server_side_apply(
    auth: AgentAuth, connection: str, objects: k8s.CustomObjectsApi, cleanup: list[str]
) -> None:
    first = auth.get_or_create_connected_account(connection, "grace@example.com")
    cleanup.append(first.name)
    assert first.name == account_name(connection, "grace@example.com")
    assert (first.namespace, first.connection, first.identifier) == (auth.namespace, connection, "grace@example.com")
    assert first.connection_kind == "Connection" and first.uid
    again = auth.get_or_create_connected_account(connection_name=connection, identifier="grace@example.com")
    assert (again.name, again.uid) == (first.name, first.uid)
    managers = raw_account(objects, auth.namespace, first.name)["metadata"]["managedFields"]
    assert any(m["manager"] == FIELD_MANAGER and m["operation"] == "Apply" for m in managers), managers

    # The operator publishes a link: the status fields come through.
    got = eventually(
        lambda: a if (a := auth.get_connected_account(first.name)).authorization_link else None, "a link"
    )
    assert got.state == PENDING_AUTH and got.authorization_link_expires_at is not None
    assert got.ready is not None and got.reason == "AwaitingAuthorization" and got.message
    assert not got.is_active and got.id == f"{auth.namespace}/{first.name}"


def test_an_existing_account_of_the_pair_is_returned_whatever_its_name(
    auth: AgentAuth, connection: str, objects: k8s.CustomObjectsApi, cleanup: list[str]
) -> None:
    create_account(objects, auth.namespace, "frank-custom", {"connectionRef": {"name": connection}, "identifier": "frank"})
    cleanup.append("frank-custom")
    found = auth.get_or_create_connected_account(connection, "frank")
    assert found.name == "frank-custom"
    assert [a.name for a in auth.list_connected_accounts(connection) if a.identifier == "frank"] == ["frank-custom"]


def test_a_name_taken_by_another_pair_gets_the_hashed_name(
    auth: AgentAuth, connection: str, objects: k8s.CustomObjectsApi, cleanup: list[str]
) -> None:
    taken = account_name(connection, "henry")
    create_account(objects, auth.namespace, taken, {"connectionRef": {"name": connection}, "identifier": "someone-else"})
    cleanup.append(taken)
    henry = auth.get_or_create_connected_account(connection, "henry")
    cleanup.append(henry.name)
    assert henry.name == hashed_name(connection, "henry") and henry.identifier == "henry"
    assert auth.get_or_create_connected_account(connection, "henry").uid == henry.uid


def test_cluster_connections(auth: AgentAuth, cleanup: list[str]) -> None:
    a = auth.get_or_create_connected_account("platform-mail", "ivy", cluster=True)
    cleanup.append(a.name)
    assert a.connection_kind == "ClusterConnection" and a.connection == "platform-mail"
    # A namespaced Connection of the same name is another pair.
    b = auth.get_or_create_connected_account("platform-mail", "ivy")
    cleanup.append(b.name)
    assert b.name != a.name and b.connection_kind == "Connection"


def test_delivery(auth: AgentAuth, connection: str, objects: k8s.CustomObjectsApi, cleanup: list[str]) -> None:
    kim = auth.get_or_create_connected_account(connection, "kim", delivery="SecretAndBroker")
    cleanup.append(kim.name)
    assert kim.delivery == "SecretAndBroker"
    assert auth.get_or_create_connected_account(connection, "kim").delivery == "SecretAndBroker"
    # The SDK owns the field it applied, so it may change it.
    assert auth.get_or_create_connected_account(connection, "kim", delivery="Broker").delivery == "Broker"
    # A field another manager set is not taken over: the apply conflicts.
    spec = {"connectionRef": {"name": connection}, "identifier": "liam", "delivery": "Secret"}
    create_account(objects, auth.namespace, "liam-by-hand", spec)
    cleanup.append("liam-by-hand")
    with pytest.raises(ConflictError) as e:
        auth.get_or_create_connected_account(connection, "liam", delivery="Broker")
    assert e.value.status == 409 and "spec.delivery" in str(e.value)
    assert auth.get_connected_account("liam-by-hand").delivery == "Secret"


def test_get_and_list(auth: AgentAuth, connection: str, alice: ConnectedAccount, broker_mode: bool) -> None:
    got = auth.get_connected_account(alice.name)
    assert got.state == ACTIVE and got.is_active and got.uid == alice.uid and got.expires_at is not None
    # `delivery: Broker` writes no agent Secret.
    assert got.secret_name == (None if broker_mode else f"{alice.name}-credentials")
    assert got.authorization_link is None, "the link is spent"
    names = [a.name for a in auth.list_connected_accounts()]
    assert alice.name in names and names == sorted(names)
    assert alice.name in [a.name for a in auth.list_connected_accounts(connection_name=connection)]
    assert alice.name in [a.name for a in auth.list_connected_accounts(state=ACTIVE)]
    assert all(a.state == ACTIVE for a in auth.list_connected_accounts(connection, state=ACTIVE))
    assert alice.name not in [a.name for a in auth.list_connected_accounts(state=PENDING_AUTH)]
    assert auth.list_connected_accounts(connection_name="no-such-connection") == []


def test_not_found(auth: AgentAuth) -> None:
    with pytest.raises(NotFoundError) as e:
        auth.get_connected_account("no-such-account")
    assert e.value.status == 404 and "no-such-account" in str(e.value)
    with pytest.raises(NotFoundError):
        auth.delete_connected_account("no-such-account")
    with pytest.raises(NotFoundError):
        auth.wait_for_active("no-such-account", timeout=1)


def test_delete(auth: AgentAuth, connection: str) -> None:
    erin = auth.get_or_create_connected_account(connection, "erin")
    auth.delete_connected_account(erin)

    def gone() -> bool | None:
        try:
            auth.get_connected_account(erin.name)
        except NotFoundError:
            return True
        return None

    eventually(gone, "the account to be deleted (the operator's finalizer)")


def test_wait_for_active_times_out_with_the_state(auth: AgentAuth, connection: str, cleanup: list[str]) -> None:
    carol = auth.get_or_create_connected_account(connection, "carol")
    cleanup.append(carol.name)
    auth.get_authorization_link(connection, "carol")  # PENDING_AUTH from here on
    with pytest.raises(WaitTimeout) as e:
        auth.wait_for_active(carol.name, timeout=1)
    assert e.value.state == PENDING_AUTH and isinstance(e.value, TimeoutError)
    assert "PENDING_AUTH" in str(e.value) and "AwaitingAuthorization" in str(e.value)


def test_the_current_link_is_returned_until_used(auth: AgentAuth, connection: str, cleanup: list[str]) -> None:
    first = auth.get_authorization_link(connection, "judy")
    cleanup.append(first.account.name)
    assert first.url.startswith("http") and "/connect/" in first.url and str(first) == first.url
    assert first.expires_at is not None
    assert auth.get_authorization_link(connection, "judy").url == first.url


def test_a_fresh_link_for_an_active_account(
    auth: AgentAuth, connection: str, alice: ConnectedAccount, sign_in: Callable[[str, int], None]
) -> None:
    link = auth.get_authorization_link(connection, alice.identifier)
    account = link.account
    assert account.reauthorize_annotation and account.reauthorize_request == account.reauthorize_annotation
    assert account.state == ACTIVE, "the credential keeps working meanwhile"
    again = auth.get_authorization_link(connection, alice.identifier)
    assert again.url == link.url, "an outstanding link is handed out again, not replaced"
    sign_in(link.url, 1)
    done = eventually(
        lambda: a if (a := auth.get_connected_account(alice.name)).authorization_link is None else None,
        "the link used",
    )
    assert done.state == ACTIVE


def test_disconnected_accounts_have_no_link(
    auth: AgentAuth, connection: str, objects: k8s.CustomObjectsApi, cleanup: list[str]
) -> None:
    dave = auth.get_or_create_connected_account(connection, "dave")
    cleanup.append(dave.name)
    patch: dict[str, Any] = {"spec": {"disconnected": True}}
    objects.patch_namespaced_custom_object(GROUP, VERSION, auth.namespace, PLURAL, dave.name, patch)
    eventually(lambda: auth.get_connected_account(dave.name).state == DISCONNECTED or None, "DISCONNECTED")
    with pytest.raises(NotActiveError) as e:
        auth.get_authorization_link(connection, "dave")
    assert e.value.state == DISCONNECTED and "spec.disconnected" in str(e.value)
    with pytest.raises(NotActiveError) as w:
        auth.wait_for_active(dave, timeout=30)
    assert w.value.state == DISCONNECTED


def test_reauthorize_annotation_name() -> None:
    assert REAUTHORIZE_ANNOTATION == "agentauth.dev/reauthorize"


def test_forbidden_without_rbac(nobody: AgentAuth, alice: ConnectedAccount) -> None:
    with pytest.raises(ForbiddenError) as e:
        nobody.get_connected_account(alice.name)
    assert e.value.status == 403 and "forbidden" in str(e.value).lower()
    with pytest.raises(ForbiddenError):
        nobody.list_connected_accounts()
    with pytest.raises(ForbiddenError):
        nobody.get_or_create_connected_account("gmail", "mallory")

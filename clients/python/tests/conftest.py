"""Fixtures of the SDK tests.

Unit tests (test_naming.py, test_errors.py) need nothing. The others run against the real stack
that tests/sdk.rs starts (control plane, Dex, operator, sidecar, a Gmail-shaped API) and describes
in the environment:

- KUBECONFIG, AGENTAUTH_NAMESPACE, AGENTAUTH_SIDECAR_URL: what AgentAuth() reads;
- AGENTAUTH_TEST_CONNECTION: the Connection (OAuth through Dex);
- AGENTAUTH_TEST_IDENTIFIERS: the users whose accounts the sidecar may use (comma-separated;
  mounted, or the only ones the sidecar's ServiceAccount may `use` in broker mode);
- AGENTAUTH_TEST_BROKER=1: the sidecar is in broker mode;
- AGENTAUTH_TEST_SIGNIN_URL: ``POST {"link", "user"}`` plays Dex user N through a link.

Without them the live tests are skipped (`cargo test --test sdk` runs them all).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import requests
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from agentauth import ACTIVE, AgentAuth, ConnectedAccount, NotActiveError

T = TypeVar("T")
LIVE_VARS = ("AGENTAUTH_NAMESPACE", "AGENTAUTH_TEST_CONNECTION", "AGENTAUTH_TEST_SIGNIN_URL")
GROUP, VERSION, PLURAL = "agentauth.dev", "v1alpha1", "connectedaccounts"


def _live() -> None:
    missing = [v for v in LIVE_VARS if not os.environ.get(v)]
    if missing and os.environ.get("AGENTAUTH_TEST_REQUIRE_LIVE"):
        pytest.fail(f"{', '.join(missing)} not set")
    if missing:
        pytest.skip(f"{', '.join(missing)} not set: tests/sdk.rs runs these against the stack")


@pytest.fixture(scope="session")
def auth() -> AgentAuth:
    _live()
    return AgentAuth()


@pytest.fixture(scope="session")
def connection() -> str:
    _live()
    return os.environ["AGENTAUTH_TEST_CONNECTION"]


@pytest.fixture(scope="session")
def mounted() -> list[str]:
    """Identifiers whose accounts the sidecar mounts: [alice, bob]."""
    _live()
    ids = [i for i in os.environ.get("AGENTAUTH_TEST_IDENTIFIERS", "").split(",") if i]
    assert len(ids) >= 2, "AGENTAUTH_TEST_IDENTIFIERS needs two identifiers"
    return ids


@pytest.fixture(scope="session")
def broker_mode() -> bool:
    """The sidecar fetches credentials from the token broker (Connection `delivery: Broker`);
    otherwise it mounts the accounts' Secrets."""
    _live()
    return os.environ.get("AGENTAUTH_TEST_BROKER") == "1"


@pytest.fixture(scope="session")
def admin() -> k8s.ApiClient:
    """An admin client, for what the SDK does not do (the test's own set-up and checks)."""
    _live()
    api: k8s.ApiClient = k8s_config.new_client_from_config()
    return api


@pytest.fixture(scope="session")
def objects(admin: k8s.ApiClient) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(admin)


@pytest.fixture(scope="session")
def sign_in() -> Callable[[str, int], None]:
    """Dex user ``n`` opens ``link`` and authorizes, as a person would."""
    _live()
    url = os.environ["AGENTAUTH_TEST_SIGNIN_URL"]
    http = requests.Session()
    http.trust_env = False

    def go(link: str, user: int) -> None:
        resp = http.post(url, json={"link": link, "user": user}, timeout=60)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"status": 200, "connected": True}, resp.text

    return go


@pytest.fixture(scope="session")
def alice(auth: AgentAuth, connection: str, mounted: list[str], sign_in: Callable[[str, int], None]) -> ConnectedAccount:
    """The first mounted user, authorized by Dex user 1 through get_authorization_link."""
    identifier = mounted[0]
    link = auth.get_authorization_link(connection, identifier)
    sign_in(link.url, 1)
    return auth.wait_for_active(link.account, timeout=60)


def eventually(check: Callable[[], T | None], what: str, limit: float = 30.0) -> T:
    """Polls ``check`` until it returns something other than None, or fails after ``limit``."""
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value is not None:
            return value
        assert time.monotonic() < deadline, f"timed out after {limit}s waiting for {what}"
        time.sleep(0.1)  # poll interval


def when_ready(call: Callable[[], T], limit: float = 30.0) -> T:
    """``call`` once the sidecar sees an ACTIVE account's credential: the test's kubelet copies the
    Secret into the mounted directory a moment after the operator writes it."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return call()
        except NotActiveError as e:
            if e.state != ACTIVE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # poll interval


def raw_account(objects: k8s.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    obj = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert isinstance(obj, dict)
    return obj


def create_account(objects: k8s.CustomObjectsApi, namespace: str, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ConnectedAccount", "metadata": {"name": name}, "spec": spec}
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


@pytest.fixture()
def cleanup(auth: AgentAuth) -> Iterator[list[str]]:
    """Names appended here are deleted after the test."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            auth.delete_connected_account(name)
        except Exception:  # already gone
            pass


@pytest.fixture(scope="session")
def nobody(admin: k8s.ApiClient, auth: AgentAuth) -> AgentAuth:
    """An SDK client authenticated as a fresh ServiceAccount that no Role grants anything."""
    core = k8s.CoreV1Api(admin)
    name = "sdk-test-nobody"
    sa = k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
    core.create_namespaced_service_account(auth.namespace, sa)
    spec = k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    request = core.create_namespaced_service_account_token(
        name, auth.namespace, k8s.AuthenticationV1TokenRequest(spec=spec)
    )
    assert request.status is not None
    cfg = k8s.Configuration()
    cfg.host = admin.configuration.host
    cfg.ssl_ca_cert = admin.configuration.ssl_ca_cert
    cfg.api_key = {"BearerToken": str(request.status.token)}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    return AgentAuth(namespace=auth.namespace, sidecar_url=auth.sidecar_url, api_client=k8s.ApiClient(cfg))

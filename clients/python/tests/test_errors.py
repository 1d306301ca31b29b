"""How answers of the sidecar and the Kubernetes API become typed errors (no network)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from kubernetes.client.exceptions import ApiException

from agentauth import (
    AgentAuthError,
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotActiveError,
    NotFoundError,
    ProviderError,
    WaitTimeout,
)
from agentauth.client import _kube_error
from agentauth.sidecar import error_from_response, is_sidecar_error


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = json.dumps(body).encode() if not isinstance(body, bytes) else body
    r.headers.update(headers or {})
    return r


def sidecar(status: int, code: str, message: str = "m", **extra: Any) -> requests.Response:
    return answer(status, {"error": {"code": code, "message": message, **extra}})


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (404, "unknown_tool", NotFoundError),
        (404, "unknown_account", NotFoundError),
        (404, "no_account", NotFoundError),
        (400, "invalid_input", InvalidInputError),
        (400, "ambiguous_account", InvalidInputError),
        (400, "wrong_account", InvalidInputError),
        (400, "invalid_account_selection", InvalidInputError),
        (403, "forbidden", ForbiddenError),
        (409, "account_not_active", NotActiveError),
        (503, "credential_unavailable", NotActiveError),
        (502, "provider_unreachable", ProviderError),
        (500, "untrusted_api_base", AgentAuthError),
        (503, "broker_unavailable", AgentAuthError),
    ],
)
def test_sidecar_codes(status: int, code: str, kind: type[AgentAuthError]) -> None:
    err = error_from_response(sidecar(status, code, "what happened"))
    assert type(err) is kind
    assert (err.code, err.status, str(err)) == (code, status, "what happened")


def test_provider_errors_keep_status_details_and_retry_after() -> None:
    resp = sidecar(
        429,
        "provider_error",
        "the provider answered 429: slow down",
        provider_status=429,
        details={"error": {"message": "slow down"}},
    )
    resp.headers["Retry-After"] = "7"
    err = error_from_response(resp)
    assert isinstance(err, ProviderError)
    assert (err.status, err.provider_status, err.retry_after) == (429, 429, "7")
    assert err.details == {"error": {"message": "slow down"}}


def test_not_active_carries_the_state() -> None:
    err = error_from_response(sidecar(409, "account_not_active", "not active", state="EXPIRED"))
    assert isinstance(err, NotActiveError) and err.state == "EXPIRED"


def test_answers_without_the_error_shape() -> None:
    assert isinstance(error_from_response(answer(404, b"nope")), NotFoundError)
    assert isinstance(error_from_response(answer(403, {"x": 1})), ForbiddenError)
    err = error_from_response(answer(502, b"<html>bad gateway</html>"))
    assert type(err) is AgentAuthError and err.status == 502 and "bad gateway" in str(err)


def test_provider_bodies_are_not_sidecar_errors() -> None:
    # Google's error body also has error.code, but a number: the proxy passed it through.
    assert not is_sidecar_error(answer(401, {"error": {"code": 401, "message": "Invalid Credentials"}}))
    assert not is_sidecar_error(answer(404, {"message": "Not Found"}))
    assert is_sidecar_error(sidecar(400, "bad_path"))


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [(404, "NotFound", NotFoundError), (403, "Forbidden", ForbiddenError), (409, "Conflict", ConflictError)],
)
def test_kubernetes_errors(status: int, reason: str, kind: type[AgentAuthError]) -> None:
    e = ApiException(status=status, reason=reason)
    e.body = json.dumps({"kind": "Status", "reason": reason, "message": f"it is {reason}"})
    err = _kube_error(e, "get connectedaccount ns/x")
    assert type(err) is kind
    assert str(err) == f"get connectedaccount ns/x: it is {reason}"
    assert (err.status, err.code) == (status, reason)
    other = _kube_error(ApiException(status=500, reason="Internal Server Error"), "list")
    assert type(other) is AgentAuthError and other.status == 500


def test_wait_timeout_is_a_timeout_error() -> None:
    err = WaitTimeout("timed out", account="a", state="PENDING_AUTH")
    assert isinstance(err, TimeoutError) and isinstance(err, AgentAuthError)
    assert err.state == "PENDING_AUTH"
    assert isinstance(InvalidInputError("x"), ValueError)

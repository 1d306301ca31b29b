"""The sidecar's loopback HTTP API (docs/sidecar.md): tool calls and the provider proxy.

The sidecar holds the credentials; this module only names the account a call runs as and turns the
sidecar's error JSON (``{"error": {"code", "message", ...}}``) into typed errors.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from .errors import (
    AgentAuthError,
    ForbiddenError,
    InvalidInputError,
    NotActiveError,
    NotFoundError,
    ProviderError,
)

#: Sidecar error codes and the error each becomes (others: AgentAuthError with the code).
_NOT_FOUND = {"unknown_tool", "unknown_account", "no_account", "not_found"}
_INVALID = {
    "invalid_input",
    "ambiguous_account",
    "wrong_account",
    "invalid_account_selection",
    "bad_path",
    "body_too_large",
}
_NOT_ACTIVE = {"account_not_active", "credential_unavailable"}
_FORBIDDEN = {"forbidden"}
_PROVIDER = {"provider_error", "provider_unreachable", "response_too_large"}


#: Every code the sidecar itself answers with; a proxied provider error has none of them.
SIDECAR_CODES = (
    _NOT_FOUND
    | _INVALID
    | _NOT_ACTIVE
    | _FORBIDDEN
    | _PROVIDER
    | {
        "credential_unavailable",
        "no_api_base",
        "tool_definition",
        "untrusted_api_base",
        "broker_not_configured",
        "broker_token_refused",
        "broker_token_unavailable",
        "broker_unavailable",
        "broker_error",
    }
)


def is_sidecar_error(resp: requests.Response) -> bool:
    """Whether an error answer of the proxy is the sidecar's own (not the provider's body)."""
    try:
        body = resp.json()
    except ValueError:
        return False
    err = body.get("error") if isinstance(body, dict) else None
    return isinstance(err, dict) and isinstance(err.get("code"), str) and err["code"] in SIDECAR_CODES


class Selection:
    """How a call names its account, as the sidecar's query parameters (docs/sidecar.md).

    ``account``: a bare name (a mounted account; in broker mode also the broker's account of that
    name in the sidecar's namespace); ``connected_account``: ``namespace/name`` (broker mode);
    ``connection`` + ``identifier``: the user's account of that Connection (broker mode).
    """

    def __init__(self, params: dict[str, str], label: str, name: str | None = None) -> None:
        self.params = params
        self.label = label
        #: The account's name when the caller gave it (used for the proxy path).
        self.name = name


def error_from_response(resp: requests.Response) -> AgentAuthError:
    """The typed error for a sidecar answer that is not 2xx."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        text = resp.text[:500] if resp.text else resp.reason
        return _by_status(resp.status_code, f"the sidecar answered {resp.status_code}: {text}", None)
    code = str(err.get("code") or "")
    message = str(err.get("message") or f"the sidecar answered {resp.status_code}")
    status = resp.status_code
    if code in _PROVIDER:
        ps = err.get("provider_status")
        return ProviderError(
            message,
            status=status,
            code=code,
            provider_status=ps if isinstance(ps, int) else None,
            details=err.get("details"),
            retry_after=resp.headers.get("Retry-After"),
        )
    if code in _NOT_ACTIVE:
        state = err.get("state")
        return NotActiveError(
            message, state=state if isinstance(state, str) else None, code=code, status=status
        )
    if code in _NOT_FOUND:
        return NotFoundError(message, code=code, status=status)
    if code in _INVALID:
        return InvalidInputError(message, code=code, status=status)
    if code in _FORBIDDEN:
        return ForbiddenError(message, code=code, status=status)
    return _by_status(status, message, code or None)


def _by_status(status: int, message: str, code: str | None) -> AgentAuthError:
    if status == 404:
        return NotFoundError(message, code=code, status=status)
    if status == 403:
        return ForbiddenError(message, code=code, status=status)
    if status == 400:
        return InvalidInputError(message, code=code, status=status)
    return AgentAuthError(message, code=code, status=status)


class SidecarClient:
    """HTTP calls to one sidecar. Proxy settings of the environment are ignored: the sidecar is
    on loopback, and a proxy in between would see every call."""

    def __init__(self, base_url: str, *, timeout: float = 90.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()
        self.http.trust_env = False

    def call_tool(self, tool: str, tool_input: dict[str, Any], selection: Selection) -> Any:
        url = f"{self.base_url}/v1/tools/{quote(tool, safe='')}"
        resp = self._send("POST", url, params=selection.params, json=tool_input)
        if not resp.ok:
            raise error_from_response(resp)
        return resp.json()

    def proxy(
        self,
        method: str,
        account: str,
        path: str,
        *,
        params: dict[str, Any] | None,
        headers: dict[str, str] | None,
        json: Any,
        data: bytes | str | None,
    ) -> requests.Response:
        # The path is passed as written (its own percent-encoding kept); the sidecar keeps it below
        # the account's API base.
        url = f"{self.base_url}/v1/proxy/{quote(account, safe='')}/{path.lstrip('/')}"
        return self._send(method, url, params=params, headers=headers, json=json, data=data)

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return self.http.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as e:
            raise AgentAuthError(
                f"cannot reach the sidecar at {self.base_url}: {e.__class__.__name__}; is it running "
                "(agent-auth-operator sidecar) and is AGENTAUTH_SIDECAR_URL right?",
                code="sidecar_unreachable",
            ) from None

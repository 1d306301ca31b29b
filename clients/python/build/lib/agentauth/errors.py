"""Typed errors of the SDK.

Every error is an :class:`AgentAuthError`, so ``except AgentAuthError`` catches all of them. Errors
from the sidecar keep its stable ``code`` (``unknown_tool``, ``provider_error``, ...) and HTTP
``status``; errors from the Kubernetes API keep its status. Messages never contain a credential:
the sidecar cleans provider errors before they reach the SDK.
"""

from __future__ import annotations

from typing import Any


class AgentAuthError(Exception):
    """Base class of every SDK error.

    ``code`` is the sidecar's error code or a Kubernetes reason (``NotFound``, ``Forbidden``...),
    ``status`` the HTTP status of the answer that caused it, when there was one.
    """

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class NotFoundError(AgentAuthError):
    """No such account, Connection, tool, or no account that can run the tool."""


class ForbiddenError(AgentAuthError):
    """Kubernetes RBAC (or the sidecar) refused the call."""


class ConflictError(AgentAuthError):
    """The Kubernetes API refused a write because of a conflicting change (HTTP 409)."""


class InvalidInputError(AgentAuthError, ValueError):
    """The call's input or account selection is wrong: refused by the sidecar (HTTP 400) or by
    the SDK before sending."""


class NotActiveError(AgentAuthError):
    """The account exists but cannot be used now: it is not ``ACTIVE``.

    ``state`` is its state (``PENDING_AUTH``, ``EXPIRED``, ``DISCONNECTED``, ``ERROR``...) when known;
    ``authorization_link`` the link to send to the user, when one is pending and the caller may read
    the account.
    """

    def __init__(
        self,
        message: str,
        *,
        account: str | None = None,
        state: str | None = None,
        authorization_link: str | None = None,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.account = account
        self.state = state
        self.authorization_link = authorization_link


class ProviderError(AgentAuthError):
    """The provider's API refused or failed the call, as the sidecar reports it.

    ``status`` is the HTTP status the sidecar answered (the provider's own for ``provider_error``),
    ``provider_status`` the provider's status, ``details`` its error body (cleaned of credentials),
    ``retry_after`` its ``Retry-After`` header on a 429.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        code: str | None = None,
        provider_status: int | None = None,
        details: Any = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.provider_status = provider_status
        self.details = details
        self.retry_after = retry_after


class WaitTimeout(AgentAuthError, TimeoutError):
    """A wait ended at its deadline; ``state`` is the last state seen."""

    def __init__(self, message: str, *, account: str | None = None, state: str | None = None) -> None:
        super().__init__(message, code="timeout")
        self.account = account
        self.state = state

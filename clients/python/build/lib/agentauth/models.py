"""What the SDK returns: plain dataclasses built from ConnectedAccount objects.

They never hold a credential: a ConnectedAccount's status has none (the credential is in the
Secret named by ``secret_name``, or behind the token broker).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: ``status.state`` values, as the operator (and hosted agent-auth services) spell them.
PENDING_AUTH = "PENDING_AUTH"
PENDING_VERIFICATION = "PENDING_VERIFICATION"
ACTIVE = "ACTIVE"
EXPIRED = "EXPIRED"
DISCONNECTED = "DISCONNECTED"
ERROR = "ERROR"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp of the API server (``2026-11-27T11:00:00Z``) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Condition:
    """One status condition (``Ready`` and others)."""

    type: str
    status: str
    reason: str
    message: str

    @classmethod
    def from_dict(cls, c: dict[str, Any]) -> Condition:
        return cls(
            type=str(c.get("type", "")),
            status=str(c.get("status", "")),
            reason=str(c.get("reason", "")),
            message=str(c.get("message", "")),
        )


@dataclass(frozen=True)
class ConnectedAccount:
    """One user's authorization to one Connection, with its status as last read."""

    name: str
    namespace: str
    uid: str
    connection: str
    #: ``Connection`` or ``ClusterConnection``.
    connection_kind: str
    identifier: str
    #: ``None`` until the operator has written a status.
    state: str | None
    authorization_link: str | None
    authorization_link_expires_at: datetime | None
    secret_name: str | None
    expires_at: datetime | None
    #: ``spec.delivery`` when set on the account (``Secret``, ``Broker``, ``SecretAndBroker``).
    delivery: str | None
    disconnected: bool
    conditions: list[Condition] = field(default_factory=list)
    reauthorize_request: str | None = None
    reauthorize_annotation: str | None = None

    @property
    def id(self) -> str:
        """``namespace/name``: what hosted SDKs call the connected account id."""
        return f"{self.namespace}/{self.name}"

    @property
    def is_active(self) -> bool:
        return self.state == ACTIVE

    @property
    def ready(self) -> Condition | None:
        """The ``Ready`` condition, if the operator wrote one."""
        return next((c for c in self.conditions if c.type == "Ready"), None)

    @property
    def reason(self) -> str | None:
        c = self.ready
        return c.reason if c else None

    @property
    def message(self) -> str | None:
        c = self.ready
        return c.message if c else None

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> ConnectedAccount:
        """From a ConnectedAccount as the Kubernetes API returns it (a dict)."""
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        ref = spec.get("connectionRef") or {}
        annotations = meta.get("annotations") or {}
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            uid=str(meta.get("uid", "")),
            connection=str(ref.get("name", "")),
            connection_kind=str(ref.get("kind") or "Connection"),
            identifier=str(spec.get("identifier", "")),
            state=status.get("state"),
            authorization_link=status.get("authorizationLink"),
            authorization_link_expires_at=parse_time(status.get("authorizationLinkExpiresAt")),
            secret_name=status.get("secretName"),
            expires_at=parse_time(status.get("expiresAt")),
            delivery=spec.get("delivery"),
            disconnected=spec.get("disconnected") is True,
            conditions=[Condition.from_dict(c) for c in status.get("conditions") or []],
            reauthorize_request=status.get("reauthorizeRequest"),
            reauthorize_annotation=annotations.get("agentauth.dev/reauthorize"),
        )

    def describe(self) -> str:
        """``name (STATE: Reason: message)`` for error messages."""
        why = f"{self.reason}: {self.message}" if self.ready else "no Ready condition yet"
        return f"{self.id} ({self.state or 'no status yet'}; {why})"


@dataclass(frozen=True)
class AuthorizationLink:
    """A one-time link to send to the user; ``str(link)`` is the URL."""

    url: str
    expires_at: datetime | None
    account: ConnectedAccount

    def __str__(self) -> str:
        return self.url

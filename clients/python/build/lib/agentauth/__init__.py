"""agentauth: the Python SDK of agent-auth-operator.

``AgentAuth`` manages ConnectedAccounts (``agentauth.dev/v1alpha1``) through the Kubernetes API and
runs tools through the sidecar; see docs/sdk-python.md.
"""

from .client import FIELD_MANAGER, REAUTHORIZE_ANNOTATION, AgentAuth
from .errors import (
    AgentAuthError,
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotActiveError,
    NotFoundError,
    ProviderError,
    WaitTimeout,
)
from .models import (
    ACTIVE,
    DISCONNECTED,
    ERROR,
    EXPIRED,
    PENDING_AUTH,
    PENDING_VERIFICATION,
    AuthorizationLink,
    Condition,
    ConnectedAccount,
)
from .naming import account_name

__all__ = [
    "ACTIVE",
    "DISCONNECTED",
    "ERROR",
    "EXPIRED",
    "FIELD_MANAGER",
    "PENDING_AUTH",
    "PENDING_VERIFICATION",
    "REAUTHORIZE_ANNOTATION",
    "AgentAuth",
    "AgentAuthError",
    "AuthorizationLink",
    "Condition",
    "ConflictError",
    "ConnectedAccount",
    "ForbiddenError",
    "InvalidInputError",
    "NotActiveError",
    "NotFoundError",
    "ProviderError",
    "WaitTimeout",
    "account_name",
]

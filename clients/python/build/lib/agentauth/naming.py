"""Deterministic ConnectedAccount names from a Connection and a user identifier.

``account_name("gmail", "alice")`` is ``gmail-alice``. Identifiers are free text (emails, UUIDs,
``user_123``), names are DNS-1123 labels: when the identifier had to be changed to fit, or the name
would be longer than 63 characters, an 8-hex-digit hash of the exact pair is appended, so two
identifiers that sanitize alike (``User_1``, ``user-1``) never share a name. The same pair always
gives the same name, on every machine, so concurrent get-or-create calls converge on one object.
"""

from __future__ import annotations

import hashlib
import re

#: Names stay DNS-1123 labels (63 characters), so that names derived from them (the Secret
#: ``<name>-credentials``, labels) fit too.
MAX_NAME = 63
_HASH_LEN = 8
_NOT_LABEL = re.compile(r"[^a-z0-9]+")


def sanitize(text: str) -> str:
    """Lower case, runs of anything but ``[a-z0-9]`` as one ``-``, no ``-`` at either end."""
    return _NOT_LABEL.sub("-", text.lower()).strip("-")


def pair_hash(connection: str, identifier: str) -> str:
    """A short, stable hash of the exact (connection, identifier) pair."""
    digest = hashlib.sha256(f"{connection}\0{identifier}".encode()).hexdigest()
    return digest[:_HASH_LEN]


def account_name(connection: str, identifier: str) -> str:
    """The name :meth:`AgentAuth.get_or_create_connected_account` gives a new account."""
    conn = sanitize(connection) or "account"
    ident = sanitize(identifier)
    base = f"{conn}-{ident}" if ident else conn
    if ident == identifier and conn == connection and len(base) <= MAX_NAME:
        return base
    return hashed_name(connection, identifier)


def hashed_name(connection: str, identifier: str) -> str:
    """``<connection>-<identifier>`` cut to fit, with the pair's hash: never the plain name."""
    conn = sanitize(connection) or "account"
    ident = sanitize(identifier)
    base = f"{conn}-{ident}" if ident else conn
    keep = MAX_NAME - _HASH_LEN - 1
    return f"{base[:keep].rstrip('-')}-{pair_hash(connection, identifier)}"

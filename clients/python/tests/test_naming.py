"""Account names: deterministic, DNS-1123, distinct for distinct pairs."""

from __future__ import annotations

import re

from agentauth import account_name
from agentauth.naming import MAX_NAME, hashed_name, pair_hash

LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_plain_identifiers_keep_their_name() -> None:
    assert account_name("gmail", "alice") == "gmail-alice"
    assert account_name("gmail", "4f1c-9a") == "gmail-4f1c-9a"


def test_changed_identifiers_get_the_pairs_hash() -> None:
    name = account_name("gmail", "user_123")
    assert name == f"gmail-user-123-{pair_hash('gmail', 'user_123')}"
    assert account_name("gmail", "user_123") == name, "deterministic"
    assert account_name("gmail", "alice@example.com").startswith("gmail-alice-example-com-")


def test_identifiers_that_sanitize_alike_do_not_collide() -> None:
    names = {account_name("gmail", i) for i in ["User_1", "user_1", "user-1", "USER 1", "user.1"]}
    assert len(names) == 5, names
    assert account_name("gmail", "a") != account_name("slack", "a")


def test_every_name_is_a_dns_label() -> None:
    for ident in ["x" * 300, "ÄÖÜ", "@@@", "-a-", "Alice Smith <alice@example.com>", "日本語"]:
        for conn in ["gmail", "google-calendar", "Team.Gmail"]:
            name = account_name(conn, ident)
            assert len(name) <= MAX_NAME and LABEL.match(name), (conn, ident, name)
    assert len(account_name("gmail", "a" * 100)) == MAX_NAME


def test_hashed_name_is_never_the_plain_one() -> None:
    assert hashed_name("gmail", "alice") != "gmail-alice"
    assert hashed_name("gmail", "alice").startswith("gmail-alice-")

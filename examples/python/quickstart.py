"""The three steps of a hosted agent-auth quickstart, on agent-auth-operator.

    pip install ./clients/python
    python examples/python/quickstart.py user_123

1. get or create the user's Gmail account;
2. if it is not ACTIVE yet, print the authorization link for the user and wait until they used it;
3. fetch the user's unread mail through the sidecar, and print it.

Configuration: KUBECONFIG (or run in a pod), AGENTAUTH_NAMESPACE, AGENTAUTH_SIDECAR_URL (default
http://127.0.0.1:8787), AGENTAUTH_CONNECTION (default gmail). See docs/sdk-python.md.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from agentauth import ACTIVE, AgentAuth, NotActiveError


def main() -> None:
    identifier = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AGENTAUTH_IDENTIFIER", "user_123")
    connection = os.environ.get("AGENTAUTH_CONNECTION", "gmail")
    auth = AgentAuth()

    # 1. The user's connected account (created on first use; the same one every time after).
    account = auth.get_or_create_connected_account(connection_name=connection, identifier=identifier)
    print(f"connected account {account.id}: {account.state or 'new'}")

    # 2. Not authorized yet: send the user the link, and wait until they used it.
    if account.state != ACTIVE:
        link = auth.get_authorization_link(connection_name=connection, identifier=identifier)
        print(f"Authorize Gmail for {identifier}: {link.url}")
        account = auth.wait_for_active(account, timeout=300)
        print(f"connected account {account.id}: {account.state}")

    # 3. The tool call. The sidecar makes it with the user's credential; this code never sees it.
    result = when_ready(
        lambda: auth.execute_tool(
            "gmail_fetch_mails", {"query": "is:unread", "max_results": 5}, connected_account=account
        )
    )
    for mail in result["messages"]:
        print(f"- {mail.get('from', '?')}: {mail.get('subject', '')} ({mail.get('snippet', '')})")


def when_ready(call: Any, limit: float = 90.0) -> Any:
    """Retries ``call`` while the account is ACTIVE but its mounted Secret has not reached the pod:
    the kubelet updates Secret volumes within about a minute (the broker has no such delay)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return call()
        except NotActiveError as e:
            if e.state != ACTIVE or time.monotonic() > deadline:
                raise
            time.sleep(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A minimal agent that acts in Gmail through the agent-auth-operator sidecar.

The agent never sees a token: the sidecar in the same pod reads the mounted credential Secrets and
makes the API calls. This script lists the tools the sidecar offers (the JSON an LLM takes as its
tool definitions), then calls `gmail_fetch_mails` and prints the unread mails. Standard library only.

Environment:
  AGENTAUTH_SIDECAR  the sidecar's URL (default http://127.0.0.1:8787)
  AGENT_INTERVAL     seconds between runs (default 60); 0 runs once and exits

With an LLM, hand `list_tools()` to the model as its tools (the objects already have the
`name`/`description`/`input_schema` shape of Anthropic's Messages API; `GET /v1/tools?format=openai`
gives OpenAI's) and pass each tool call the model makes to `call_tool(name, input)`.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

SIDECAR = os.environ.get("AGENTAUTH_SIDECAR", "http://127.0.0.1:8787").rstrip("/")


class ToolError(Exception):
    """A call the sidecar or the provider refused: `status` and the sidecar's error object."""

    def __init__(self, status, error):
        super().__init__(f"{status} {error.get('code', 'error')}: {error.get('message', '')}")
        self.status = status
        self.error = error


def request(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        SIDECAR + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        try:
            error = json.load(e).get("error", {})
        except ValueError:
            error = {"message": e.reason}
        raise ToolError(e.code, error) from None


def list_tools():
    """Tool definitions for the accounts mounted in this pod."""
    return request("GET", "/v1/tools")["tools"]


def call_tool(name, tool_input, account=None):
    """Runs a tool; `account` is needed only when several mounted accounts could run it."""
    path = "/v1/tools/" + urllib.parse.quote(name)
    if account:
        path += "?account=" + urllib.parse.quote(account)
    return request("POST", path, tool_input)


def wait_for_sidecar(timeout=60):
    """The sidecar starts with the pod; give it a moment (any HTTP answer means it is up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            request("GET", "/healthz")
            return
        except ToolError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def run_once():
    tools = list_tools()
    print("tools:", ", ".join(t["name"] for t in tools), flush=True)
    if not any(t["name"] == "gmail_fetch_mails" for t in tools):
        print("no Gmail account is mounted", flush=True)
        return
    result = call_tool("gmail_fetch_mails", {"query": "is:unread", "max_results": 5})
    messages = result.get("messages", [])
    print(f"{len(messages)} unread", flush=True)
    for m in messages:
        print(f"- {m.get('from', '?')}: {m.get('subject', '(no subject)')}", flush=True)


def main():
    interval = float(os.environ.get("AGENT_INTERVAL", "60"))
    wait_for_sidecar()
    while True:
        try:
            run_once()
        except ToolError as e:
            # e.g. 401 provider_error: the account needs re-authorization (kubectl get connectedaccount)
            print(f"tool call failed: {e}", file=sys.stderr, flush=True)
            if interval == 0:
                return 1
        if interval == 0:
            return 0
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())

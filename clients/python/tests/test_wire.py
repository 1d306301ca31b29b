"""What the SDK sends to the sidecar for each way of naming an account (a recording server on
loopback stands in for the sidecar; no cluster)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from kubernetes import client as k8s

from agentauth import AgentAuth, InvalidInputError, ProviderError

Seen = dict[str, Any]


class Recorder(BaseHTTPRequestHandler):
    seen: list[Seen] = []
    reply: tuple[int, Any] = (200, {"ok": True})

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        self.seen.append(
            {
                "method": self.command,
                "path": url.path,
                "query": dict(parse_qsl(url.query)),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": json.loads(body) if body else None,
            }
        )
        status, answer = self.reply
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def sidecar() -> Iterator[tuple[AgentAuth, list[Seen]]]:
    Recorder.seen = []
    Recorder.reply = (200, {"ok": True})
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # A client that never reaches a cluster: these calls name accounts without reading them.
    api = k8s.ApiClient(k8s.Configuration())
    auth = AgentAuth(namespace="agents", sidecar_url=f"http://127.0.0.1:{server.server_port}", api_client=api)
    try:
        yield auth, Recorder.seen
    finally:
        server.shutdown()
        server.server_close()


def test_tool_calls_name_the_account_in_the_query(sidecar: tuple[AgentAuth, list[Seen]]) -> None:
    auth, seen = sidecar
    auth.execute_tool("gmail_fetch_mails", {"query": "is:unread"}, connected_account="alice-gmail")
    auth.execute_tool("gmail_fetch_mails", connected_account="agents/alice-gmail")
    auth.execute_tool("gmail_fetch_mails", connected_account_id="team-b/bob-gmail")
    auth.execute_tool("gmail_fetch_mails", connection_name="gmail", identifier="user_123")
    auth.execute_tool("gmail_fetch_mails")
    assert [(s["method"], s["path"]) for s in seen] == [("POST", "/v1/tools/gmail_fetch_mails")] * 5
    assert [s["query"] for s in seen] == [
        {"account": "alice-gmail"},
        {"account": "alice-gmail"},
        {"connected_account": "team-b/bob-gmail"},
        {"connection": "gmail", "identifier": "user_123"},
        {},
    ]
    assert seen[0]["body"] == {"query": "is:unread"} and seen[1]["body"] == {}


def test_the_proxy_names_the_account_in_the_path_or_beside_it(sidecar: tuple[AgentAuth, list[Seen]]) -> None:
    auth, seen = sidecar
    auth.request("GET", "gmail/v1/users/me/messages", connected_account="alice-gmail", params={"q": "is:unread"})
    auth.request("POST", "/gmail/v1/users/me/drafts", connected_account="team-b/bob", json={"a": 1})
    auth.request("get", "gmail/v1/users/me/profile", connection_name="gmail", identifier="alice@example.com")
    auth.request("GET", "x", connection_name="gmail", identifier="jürgen")
    assert [(s["method"], s["path"]) for s in seen] == [
        ("GET", "/v1/proxy/alice-gmail/gmail/v1/users/me/messages"),
        ("POST", "/v1/proxy/_/gmail/v1/users/me/drafts"),
        ("GET", "/v1/proxy/_/gmail/v1/users/me/profile"),
        ("GET", "/v1/proxy/_/x"),
    ]
    assert seen[0]["query"] == {"q": "is:unread"}
    assert seen[1]["headers"]["x-agentauth-connected-account"] == "team-b/bob" and seen[1]["body"] == {"a": 1}
    assert seen[2]["headers"]["x-agentauth-connection"] == "gmail"
    assert seen[2]["headers"]["x-agentauth-identifier"] == "alice@example.com" and seen[2]["query"] == {}
    # A value a header cannot carry goes in the query.
    assert seen[3]["query"] == {"identifier": "jürgen"} and seen[3]["headers"]["x-agentauth-connection"] == "gmail"


def test_the_account_is_named_one_way(sidecar: tuple[AgentAuth, list[Seen]]) -> None:
    auth, seen = sidecar
    for kwargs in [
        {"connected_account": "a", "connection_name": "gmail"},
        {"connected_account": "a", "identifier": "u"},
        {"connection_name": "gmail"},
        {"identifier": "u"},
    ]:
        with pytest.raises(InvalidInputError):
            auth.execute_tool("gmail_fetch_mails", **kwargs)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            auth.request("GET", "x", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        auth.execute_tool("t", connected_account="a", connected_account_id="a")
    with pytest.raises(InvalidInputError):
        auth.request("GET", "x")
    assert seen == [], "nothing was sent"


def test_proxied_provider_errors(sidecar: tuple[AgentAuth, list[Seen]]) -> None:
    auth, _ = sidecar
    Recorder.reply = (401, {"error": {"code": 401, "message": "Invalid Credentials"}})
    with pytest.raises(ProviderError) as e:
        auth.request("GET", "gmail/v1/users/me/profile", connected_account="a")
    assert (e.value.status, e.value.details) == (401, {"error": {"code": 401, "message": "Invalid Credentials"}})
    assert str(e.value) == "the provider answered 401: Invalid Credentials"
    assert auth.request("GET", "x", connected_account="a", raise_for_status=False).status_code == 401

"""``AgentAuth``: ConnectedAccounts through the Kubernetes API, tool calls through the sidecar.

The calls are named after the hosted agent-auth services' SDKs (``get_or_create_connected_account``,
``get_authorization_link``, ``execute_tool``...) so code written for them moves over with few
changes. Accounts are ordinary ``agentauth.dev/v1alpha1`` ConnectedAccounts: the SDK writes them
with server-side apply (field manager ``agentauth-python``) and reads their status; the operator
does the rest. Credentials never pass through the SDK: the sidecar holds them and makes the calls.
"""

from __future__ import annotations

import json as jsonlib
import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import requests
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from . import naming
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
    PENDING_VERIFICATION,
    AuthorizationLink,
    ConnectedAccount,
)
from .sidecar import Selection, SidecarClient, error_from_response, is_sidecar_error

GROUP = "agentauth.dev"
VERSION = "v1alpha1"
PLURAL = "connectedaccounts"
#: The server-side apply field manager of every write of the SDK.
FIELD_MANAGER = "agentauth-python"
#: Setting it to a new value asks the operator for a fresh authorization link (src/api).
REAUTHORIZE_ANNOTATION = "agentauth.dev/reauthorize"
DEFAULT_SIDECAR_URL = "http://127.0.0.1:8787"
_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
#: A link this close to its expiry is not handed out: the user would not get to use it.
_LINK_MARGIN = timedelta(seconds=30)
#: The proxy's headers for each way of naming an account (docs/sidecar.md).
_SELECTION_HEADERS = {
    "account": "X-Agentauth-Account",
    "connected_account": "X-Agentauth-Connected-Account",
    "connection": "X-Agentauth-Connection",
    "identifier": "X-Agentauth-Identifier",
}

AccountRef = str | ConnectedAccount


class AgentAuth:
    """One namespace's ConnectedAccounts, and the sidecar that runs tools with them.

    - ``namespace``: where accounts are (default: ``$AGENTAUTH_NAMESPACE``, else the pod's own
      namespace in a cluster, else the kubeconfig context's, else ``default``).
    - ``sidecar_url``: the sidecar (default: ``$AGENTAUTH_SIDECAR_URL``, else
      ``$AGENTAUTH_SIDECAR``, else ``http://127.0.0.1:8787``).
    - Kubernetes configuration: ``kubeconfig``/``context`` when given, else in-cluster when running
      in a pod, else ``$KUBECONFIG`` or ``~/.kube/config``; or pass a ready ``api_client``.
    - ``timeout``: seconds for one sidecar call (tool calls wait for the provider; the sidecar
      itself gives up after 60 s per provider request).
    """

    def __init__(
        self,
        namespace: str | None = None,
        sidecar_url: str | None = None,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        api_client: k8s.ApiClient | None = None,
        timeout: float = 90.0,
    ) -> None:
        self.api_client = api_client or _load_api_client(kubeconfig, context)
        self.namespace = namespace or _default_namespace(kubeconfig, context)
        self.sidecar_url = (
            sidecar_url
            or os.environ.get("AGENTAUTH_SIDECAR_URL")
            or os.environ.get("AGENTAUTH_SIDECAR")
            or DEFAULT_SIDECAR_URL
        )
        self._objects = k8s.CustomObjectsApi(self.api_client)
        self._sidecar = SidecarClient(self.sidecar_url, timeout=timeout)

    # ------------------------------------------------------------------------------ accounts

    def get_or_create_connected_account(
        self,
        connection_name: str,
        identifier: str,
        *,
        cluster: bool = False,
        delivery: str | None = None,
    ) -> ConnectedAccount:
        """The account of ``identifier`` (your user's ID) on Connection ``connection_name``,
        created when there is none.

        An existing account of the pair is returned whatever its name (one made with kubectl
        counts); a new one is named by :func:`agentauth.naming.account_name` and written with
        server-side apply, so concurrent calls for one user converge on one account.
        ``cluster=True`` refers to a ClusterConnection; ``delivery`` (``Secret``, ``Broker``,
        ``SecretAndBroker``) sets the account's ``spec.delivery``, also on an existing account.
        """
        kind = "ClusterConnection" if cluster else "Connection"
        existing, taken = self._find(connection_name, identifier, kind)
        if existing is not None:
            if delivery is None or existing.delivery == delivery:
                return existing
            name = existing.name
        else:
            name = naming.account_name(connection_name, identifier)
            if name in taken:
                name = naming.hashed_name(connection_name, identifier)
        ref: dict[str, str] = {"name": connection_name}
        if cluster:
            ref["kind"] = kind
        spec: dict[str, Any] = {"connectionRef": ref, "identifier": identifier}
        if delivery is not None:
            spec["delivery"] = delivery
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ConnectedAccount",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }
        obj = self._kube(
            f"apply connectedaccount {self.namespace}/{name}",
            lambda: self._objects.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                body,
                field_manager=FIELD_MANAGER,
                _content_type="application/apply-patch+yaml",
            ),
        )
        if not isinstance(obj, dict):
            # Generated clients map only 200 to a body; an apply that created the object got 201.
            obj = self._get(name)
        return ConnectedAccount.from_object(obj)

    def get_connected_account(self, name: str) -> ConnectedAccount:
        """The account ``name`` of the namespace, with its current status."""
        return ConnectedAccount.from_object(self._get(name))

    def list_connected_accounts(
        self, connection_name: str | None = None, state: str | None = None
    ) -> list[ConnectedAccount]:
        """The namespace's accounts, optionally only those of one Connection or in one state
        (``ACTIVE``, ``PENDING_AUTH``...), by name."""
        accounts = [
            a
            for a in self._list()
            if (connection_name is None or a.connection == connection_name)
            and (state is None or a.state == state)
        ]
        return sorted(accounts, key=lambda a: a.name)

    def delete_connected_account(self, account: AccountRef) -> None:
        """Deletes the account; the operator revokes its credentials and removes its Secret."""
        name = _name_of(account)
        self._kube(
            f"delete connectedaccount {self.namespace}/{name}",
            lambda: self._objects.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            ),
        )

    def get_authorization_link(
        self, connection_name: str, identifier: str, *, timeout: float = 60.0
    ) -> AuthorizationLink:
        """A link to send to the user so they authorize (creating the account if needed).

        The current ``status.authorizationLink`` when there is one that does not expire within
        30 s; otherwise a fresh one, asked for through the ``agentauth.dev/reauthorize`` annotation
        (an ``ACTIVE`` account keeps working meanwhile), waiting up to ``timeout`` seconds for the
        operator to issue it. A DISCONNECTED account, or one waiting for the platform's
        verification, has no link: :class:`NotActiveError`.
        """
        account = self.get_or_create_connected_account(connection_name, identifier)
        link = _current_link(account)
        if link is not None:
            return link
        if account.disconnected or account.state == DISCONNECTED:
            raise NotActiveError(
                f"{account.id} is DISCONNECTED (spec.disconnected: true): set spec.disconnected to "
                "false to issue a new link",
                account=account.name,
                state=DISCONNECTED,
            )
        if account.state == PENDING_VERIFICATION:
            raise NotActiveError(
                f"{account.id} is PENDING_VERIFICATION: the user authorized, the platform has yet "
                "to confirm who they are; there is no link to send",
                account=account.name,
                state=PENDING_VERIFICATION,
            )
        if account.state is None:
            # A new account: the operator issues its first link by itself.
            done = self._wait(
                account.name, lambda a: _current_link(a) is not None, timeout, "an authorization link"
            )
        else:
            value = datetime.now(timezone.utc).isoformat(timespec="microseconds")
            patch = {"metadata": {"annotations": {REAUTHORIZE_ANNOTATION: value}}}
            self._kube(
                f"annotate connectedaccount {account.id}",
                lambda: self._objects.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    account.name,
                    patch,
                    field_manager=FIELD_MANAGER,
                    _content_type="application/merge-patch+json",
                ),
            )
            done = self._wait(
                account.name,
                lambda a: a.reauthorize_request == value and _current_link(a) is not None,
                timeout,
                "the operator to issue a new authorization link",
            )
        link = _current_link(done)
        assert link is not None  # the wait's condition
        return link

    def wait_for_active(self, account: AccountRef, timeout: float = 300.0) -> ConnectedAccount:
        """Waits (watching the account) until it is ``ACTIVE`` and returns it.

        :class:`WaitTimeout` after ``timeout`` seconds, with the last state;
        :class:`NotActiveError` at once when it is DISCONNECTED (no user can change that);
        :class:`NotFoundError` when it is deleted meanwhile.
        """

        def disconnected(a: ConnectedAccount) -> None:
            if a.state == DISCONNECTED:
                raise NotActiveError(
                    f"{a.describe()}: it will not become ACTIVE until spec.disconnected is false",
                    account=a.name,
                    state=a.state,
                )

        return self._wait(
            _name_of(account), lambda a: a.state == ACTIVE, timeout, "state ACTIVE", disconnected
        )

    # ------------------------------------------------------------------------------ the sidecar

    def execute_tool(
        self,
        tool: str,
        tool_input: dict[str, Any] | None = None,
        *,
        connected_account: AccountRef | None = None,
        connection_name: str | None = None,
        identifier: str | None = None,
        connected_account_id: str | None = None,
    ) -> Any:
        """Runs catalog tool ``tool`` (``gmail_fetch_mails``...) through the sidecar and returns
        its compact JSON result.

        The account is ``connected_account`` (a :class:`ConnectedAccount`, a name, or
        ``namespace/name``; ``connected_account_id`` is the hosted SDKs' spelling of it), or
        ``connection_name`` + ``identifier`` (the user's account, sidecar in broker mode), or
        nothing: the only account the sidecar has for the tool's provider.
        """
        if connected_account_id is not None:
            if connected_account is not None:
                raise InvalidInputError("give connected_account or connected_account_id, not both")
            connected_account = connected_account_id
        selection = self._selection(connected_account, connection_name, identifier)
        try:
            return self._sidecar.call_tool(tool, tool_input or {}, selection)
        except NotActiveError as e:
            raise self._not_active(e, selection) from None

    def request(
        self,
        method: str,
        path: str,
        *,
        connected_account: AccountRef | None = None,
        connection_name: str | None = None,
        identifier: str | None = None,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | str | None = None,
        raise_for_status: bool = True,
    ) -> requests.Response:
        """Any call to the account's provider API through the sidecar's proxy
        (``/v1/proxy/{account}/{path}``): the sidecar adds the credential.

        ``path`` is below the provider's API base (``gmail/v1/users/me/profile``). The account is
        named as for :meth:`execute_tool`: an account of the SDK's namespace by name in the path;
        ``namespace/name`` and ``connection_name`` + ``identifier`` (broker mode) beside it, as
        ``/v1/proxy/_/...`` with the ``X-Agentauth-*`` headers. The provider's answer is returned
        as a ``requests.Response``; with
        ``raise_for_status`` (default) a provider error becomes :class:`ProviderError`. Errors of
        the sidecar itself always raise.
        """
        selection = self._selection(connected_account, connection_name, identifier)
        params_out: dict[str, Any] = dict(params or {})
        extra: dict[str, str] = {}
        if selection.name is not None:
            segment = selection.name
        elif selection.params:
            # `_`: the account is named beside the path (broker mode), in headers when they can
            # carry the values, else in the query (the sidecar takes it out before forwarding).
            segment = "_"
            for key, value in selection.params.items():
                if value.isascii() and value.isprintable():
                    extra[_SELECTION_HEADERS[key]] = value
                else:
                    params_out[key] = value
        else:
            raise InvalidInputError(
                "request() needs the account: connected_account, or connection_name + identifier"
            )
        resp = self._sidecar.proxy(
            method.upper(),
            segment,
            path,
            params=params_out or None,
            headers={**(headers or {}), **extra},
            json=json,
            data=data,
        )
        if resp.status_code < 400:
            return resp
        if is_sidecar_error(resp):
            err = error_from_response(resp)
            if isinstance(err, NotActiveError):
                raise self._not_active(err, selection) from None
            raise err
        if not raise_for_status:
            return resp
        try:
            details: Any = resp.json()
        except ValueError:
            details = resp.text[:2000]
        raise ProviderError(
            f"the provider answered {resp.status_code}: {_provider_message(details, resp)}",
            status=resp.status_code,
            code="provider_error",
            provider_status=resp.status_code,
            details=details,
            retry_after=resp.headers.get("Retry-After"),
        )

    # ------------------------------------------------------------------------------ internals

    def _selection(
        self,
        connected_account: AccountRef | None,
        connection_name: str | None,
        identifier: str | None,
    ) -> Selection:
        if connected_account is not None:
            if connection_name is not None or identifier is not None:
                raise InvalidInputError(
                    "name the account one way: connected_account, or connection_name + identifier"
                )
            if isinstance(connected_account, ConnectedAccount):
                ns, name = connected_account.namespace, connected_account.name
            elif "/" in connected_account:
                ns, _, name = connected_account.partition("/")
            else:
                ns, name = self.namespace, connected_account
            if ns == self.namespace:
                # A bare name: a mounted account of that name, else (broker mode) the broker's.
                return Selection({"account": name}, name, name)
            return Selection({"connected_account": f"{ns}/{name}"}, f"{ns}/{name}", None)
        if connection_name is not None or identifier is not None:
            if connection_name is None or identifier is None:
                raise InvalidInputError("connection_name and identifier go together")
            return Selection(
                {"connection": connection_name, "identifier": identifier},
                f"{connection_name}/{identifier}",
            )
        return Selection({}, "the sidecar's only account for the tool")

    def _not_active(self, err: NotActiveError, selection: Selection) -> NotActiveError:
        """The sidecar's not-active error with the account's state and pending link, when the
        caller may read the account."""
        account: ConnectedAccount | None = None
        try:
            if selection.name is not None:
                account = self.get_connected_account(selection.name)
            elif "connection" in selection.params:
                account, _ = self._find(
                    selection.params["connection"], selection.params["identifier"], None
                )
        except AgentAuthError:
            account = None
        if account is None:
            return err
        link = _current_link(account)
        hint = (
            "send the user its authorization link"
            if link
            else "get a link with get_authorization_link()"
        )
        return NotActiveError(
            f"{account.describe()} cannot be used ({err.message}); {hint}",
            account=account.name,
            state=account.state or err.state,
            authorization_link=link.url if link else None,
            code=err.code,
            status=err.status,
        )

    def _find(
        self, connection: str, identifier: str, kind: str | None
    ) -> tuple[ConnectedAccount | None, set[str]]:
        """The account of (connection, identifier), and the derived names other accounts hold.

        The derived names are tried first (one GET each); only when neither holds the pair is the
        namespace listed, for an account someone else named.
        """

        def matches(a: ConnectedAccount) -> bool:
            return (
                a.connection == connection
                and a.identifier == identifier
                and (kind is None or a.connection_kind == kind)
            )

        taken: set[str] = set()
        names = dict.fromkeys(
            [naming.account_name(connection, identifier), naming.hashed_name(connection, identifier)]
        )
        for name in names:
            try:
                a = self.get_connected_account(name)
            except NotFoundError:
                continue
            if matches(a):
                return a, taken
            taken.add(name)
        found = sorted((a for a in self._list() if matches(a)), key=lambda a: a.name)
        return (found[0] if found else None), taken

    def _get(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self._kube(
            f"get connectedaccount {self.namespace}/{name}",
            lambda: self._objects.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            ),
        )
        return obj

    def _list(self) -> list[ConnectedAccount]:
        out: list[ConnectedAccount] = []
        cont: str | None = None
        while True:
            page = self._kube(
                f"list connectedaccounts in {self.namespace}",
                lambda: self._objects.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, limit=500, _continue=cont
                ),
            )
            out.extend(ConnectedAccount.from_object(o) for o in page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return out

    def _wait(
        self,
        name: str,
        done: Callable[[ConnectedAccount], bool],
        timeout: float,
        what: str,
        check: Callable[[ConnectedAccount], None] | None = None,
    ) -> ConnectedAccount:
        """Watches account ``name`` until ``done`` holds (``check`` may raise to stop early)."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self._get(name)
            last = ConnectedAccount.from_object(obj)
            if done(last):
                return last
            if check is not None:
                check(last)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(
                    f"timed out after {timeout:g}s waiting for {what} of {last.describe()}",
                    account=name,
                    state=last.state,
                )
            version = (obj.get("metadata") or {}).get("resourceVersion")
            w = k8s_watch.Watch()
            try:
                for event in w.stream(
                    self._objects.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    field_selector=f"metadata.name={name}",
                    resource_version=version,
                    timeout_seconds=max(1, int(remaining + 0.999)),
                    _request_timeout=remaining + 10,
                ):
                    kind, changed = event.get("type"), event.get("object")
                    if kind == "DELETED":
                        raise NotFoundError(
                            f"connectedaccount {self.namespace}/{name} was deleted while waiting "
                            f"for {what}",
                            code="NotFound",
                        )
                    if kind not in ("ADDED", "MODIFIED") or not isinstance(changed, dict):
                        break  # an ERROR event (resource version too old): GET and watch again
                    last = ConnectedAccount.from_object(changed)
                    if done(last):
                        return last
                    if check is not None:
                        check(last)
                    if time.monotonic() >= deadline:
                        break
            except ApiException as e:
                if e.status != 410:
                    raise _kube_error(e, f"watch connectedaccount {self.namespace}/{name}") from None
            except (requests.RequestException, OSError) as e:
                # urllib3 read timeouts and dropped connections end a watch; the loop starts anew.
                if time.monotonic() >= deadline:
                    raise WaitTimeout(
                        f"timed out after {timeout:g}s waiting for {what} of {last.describe()} "
                        f"({e.__class__.__name__})",
                        account=name,
                        state=last.state,
                    ) from None
            finally:
                w.stop()

    def _kube(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ApiException as e:
            raise _kube_error(e, what) from None


# ---------------------------------------------------------------------------------- helpers


def _name_of(account: AccountRef) -> str:
    return account.name if isinstance(account, ConnectedAccount) else account


def _current_link(account: ConnectedAccount) -> AuthorizationLink | None:
    url = account.authorization_link
    if not url:
        return None
    exp = account.authorization_link_expires_at
    if exp is not None and exp <= datetime.now(timezone.utc) + _LINK_MARGIN:
        return None
    return AuthorizationLink(url=url, expires_at=exp, account=account)


def _provider_message(details: Any, resp: requests.Response) -> str:
    if isinstance(details, dict):
        err = details.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        for key in ("message", "error_description", "error"):
            if isinstance(details.get(key), str):
                return str(details[key])
    return resp.reason or "error"


def _kube_error(e: ApiException, what: str) -> AgentAuthError:
    """An ApiException as a typed error whose message says what was attempted and why it failed."""
    message, reason = e.reason or "", None
    try:
        body = jsonlib.loads(e.body) if e.body else {}
        message = body.get("message") or message
        reason = body.get("reason")
    except (ValueError, TypeError, AttributeError):
        pass
    text = f"{what}: {message}"
    if e.status == 404:
        return NotFoundError(text, code=reason or "NotFound", status=404)
    if e.status == 403:
        return ForbiddenError(text, code=reason or "Forbidden", status=403)
    if e.status == 409:
        return ConflictError(text, code=reason or "Conflict", status=409)
    return AgentAuthError(text, code=reason, status=e.status)


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(_SA_NAMESPACE)


def _load_api_client(kubeconfig: str | None, context: str | None) -> k8s.ApiClient:
    try:
        if kubeconfig is None and context is None and _in_cluster():
            cfg = k8s.Configuration()
            k8s_config.load_incluster_config(client_configuration=cfg)
            return k8s.ApiClient(cfg)
        api: k8s.ApiClient = k8s_config.new_client_from_config(config_file=kubeconfig, context=context)
        return api
    except (ConfigException, OSError) as e:
        raise AgentAuthError(
            f"no Kubernetes configuration: {e} (run in a pod, set KUBECONFIG, or pass kubeconfig=)",
            code="no_kubeconfig",
        ) from None


def _default_namespace(kubeconfig: str | None, context: str | None) -> str:
    env = os.environ.get("AGENTAUTH_NAMESPACE")
    if env:
        return env
    if kubeconfig is None and context is None and _in_cluster():
        with open(_SA_NAMESPACE, encoding="utf-8") as f:
            ns = f.read().strip()
        if ns:
            return ns
    try:
        contexts, active = k8s_config.list_kube_config_contexts(kubeconfig)
        chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
        found = ((chosen or {}).get("context") or {}).get("namespace")
        if found:
            return str(found)
    except (ConfigException, OSError):
        pass
    return "default"

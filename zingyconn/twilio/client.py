"""The brokered Twilio client: the real ``twilio.rest.Client`` class, whose HTTP goes through the host's broker.

Inside a snippet's process there is no secret to steal: a client holds the account SID (and API key SID), a
placeholder password, and a :class:`BrokeredHttpClient` that turns each request into an ``OP_HTTP`` message on the
run's channel. The host's :class:`~zingyconn.egress.broker.EgressBroker` checks it, adds the real credentials and
sends it. The same classes serve host-side callers (connection commands), with a broker session as the channel.

This module is imported by the sandbox zygote, so it must stay light: twilio and the standard library only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Protocol

from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client

# The operations are named in modules the host imports without twilio; they are re-exported here.
from zingyconn.egress.protocol import OP_ACCESS_TOKEN
from zingyconn.egress.protocol import OP_CONNECT as OP_CONNECT
from zingyconn.egress.protocol import OP_CREDENTIALS as OP_CREDENTIALS
from zingyconn.egress.protocol import OP_HTTP as OP_HTTP
from zingyconn.twilio.operations import DIRECTORY_CONTEXT_KEY as DIRECTORY_CONTEXT_KEY

#: The password every brokered client holds. Not a secret: the broker never forwards it, it injects the real one.
PLACEHOLDER_PASSWORD: Final = "zingyconn-placeholder-secret-held-by-the-host"  # noqa: S105  # deliberately not a secret

#: Stands in for ``os.environ``: twilio's ``ClientBase`` falls back to ``os.environ`` for credentials, edge and
#: region when its ``environment`` argument is empty, so an explicit non-empty mapping keeps it from reading it.
NO_ENVIRONMENT: Final[Mapping[str, str]] = {"ZINGYCONN_BROKERED": "1"}

#: Edge and region are spliced into the host name unchecked by twilio (``get_hostname``); an edge of
#: ``"x@evil.example#"`` would redirect credentials. Only plain DNS labels are accepted.
_LOCATION: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")

_LOGGER: Final = logging.getLogger(__name__)


class Channel(Protocol):
    """Anything that answers ``request(op, payload)``: the run's host channel, or a broker session in the host."""

    def request(self, op: str, payload: Mapping[str, Any]) -> Any:
        """Send one request named *op* and return the answer's JSON payload."""
        ...


def _pairs(values: Mapping[str, object] | None) -> list[list[str]]:
    """Flatten twilio's parameter dict into ``[name, value]`` pairs; list values become repeated names (MediaUrl)."""
    pairs: list[list[str]] = []
    for name, value in (values or {}).items():
        items = value if isinstance(value, list | tuple) else [value]
        pairs.extend([str(name), str(item)] for item in items if item is not None)
    return pairs


class BrokeredHttpClient(HttpClient):  # type: ignore[misc]  # twilio ships no type information
    """A twilio ``HttpClient`` that sends every request over a :class:`Channel` instead of the network.

    The ``auth`` twilio passes (username and the placeholder password) is never sent; the broker authenticates
    from *connection* (a stored connection of the run's tenant) or *credential* (credentials the snippet
    registered with ``twilio.Client(sid, token)``).
    """

    def __init__(self, channel: Channel, *, connection: str | None = None, credential: int | None = None) -> None:
        super().__init__(logger=_LOGGER, is_async=False, timeout=None)
        self._channel = channel
        self._connection = connection
        self._credential = credential

    def request(
        self,
        method: str,
        uri: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Send one request through the broker and return twilio's ``Response``."""
        del auth, timeout, allow_redirects  # the broker decides credentials and time budget and never redirects
        payload = {
            "method": str(method).upper(),
            "url": str(uri),
            "params": _pairs(params),
            "data": _pairs(data),
            "headers": {str(name): str(value) for name, value in (headers or {}).items()},
            "connection": self._connection,
            "credential": self._credential,
        }
        answer = self._channel.request(OP_HTTP, payload)
        return Response(int(answer["status"]), str(answer["text"]), dict(answer.get("headers") or {}))


def _check_location(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _LOCATION.fullmatch(value):
        raise ValueError(f"Client {name} {value!r} is not allowed: use a Twilio {name} name such as 'sydney' or 'au1'.")
    return value


class BrokeredClient(Client):  # type: ignore[misc]  # twilio ships no type information
    """``twilio.rest.Client`` for snippets: same API, requests brokered by the host, environment never read.

    ``Client(username, password, account_sid=None, region=None, edge=None)`` registers the credentials with the
    host (so they are masked in the run's output) and keeps only the placeholder password. Subclassed per run by
    :func:`client_class`, which binds the run's channel.
    """

    _channel: ClassVar[Channel]
    #: The stored connection this client stands for (``zingyConn.twilio(name)``); ``None`` for ``Client(sid, token)``.
    _connection_name: str | None = None

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        account_sid: str | None = None,
        region: str | None = None,
        http_client: object = None,
        environment: object = None,
        edge: str | None = None,
        user_agent_extensions: list[str] | None = None,
        credential_provider: object = None,
    ) -> None:
        del environment  # never consulted: there is nothing to read in a snippet's environment
        if http_client is not None or credential_provider is not None:
            raise TypeError("Client(http_client=...) and Client(credential_provider=...) are not supported here.")
        if not isinstance(username, str) or not username or not isinstance(password, str) or not password:
            raise ValueError(
                "Client(sid, token) needs an Account SID (or API key SID) and its token; it never reads environment "
                "variables. Use zingyConn.twilio('name') for a stored connection."
            )
        if account_sid is not None and not isinstance(account_sid, str):
            raise TypeError("Client account_sid must be a string.")
        answer = self._channel.request(OP_CREDENTIALS, {"username": username, "password": password})
        _init_client(
            self,
            username=username,
            account_sid=account_sid,
            http_client=BrokeredHttpClient(self._channel, credential=int(answer["credential"])),
            region=_check_location("region", region),
            edge=_check_location("edge", edge),
            user_agent_extensions=user_agent_extensions,
        )

    def access_token(self, identity: str, grants: list[dict[str, Any]] | None = None, ttl: int | None = None) -> str:
        """Return a Twilio access token (a JWT) for *identity*, minted and signed by the host.

        Args:
            identity: Who the token is for (the client SDK's identity).
            grants: Plain dicts, one per grant: ``{"type": "voice", "outgoing_application_sid": "AP...",
                "incoming_allow": True}``, ``{"type": "video", "room": "r1"}``, ``{"type": "chat"}`` (or
                ``"conversations"``) and ``{"type": "sync"}`` with ``service_sid``, ``endpoint_id``...
            ttl: Lifetime in seconds (default one hour, at most 24 hours).

        Raises:
            ValueError: This client was built with ``Client(sid, token)``, not from a stored connection.
            EgressDeniedError: The host refused: a connection without an API key, or a bad identity, grant or ttl.
            QuotaExceededError: The run already minted its share of tokens.
        """
        if self._connection_name is None:
            raise ValueError(
                "access_token needs a stored connection with an API key: "
                "use zingyConn.twilio('name').access_token(...)."
            )
        payload = {
            "connection": self._connection_name,
            "identity": identity,
            "grants": [dict(grant) for grant in grants or ()],
            "ttl": ttl,
        }
        return str(self._channel.request(OP_ACCESS_TOKEN, payload)["token"])


def _init_client(
    client: Client, *, username: str, account_sid: str | None, http_client: HttpClient, **options: Any
) -> None:
    Client.__init__(
        client,
        username,
        PLACEHOLDER_PASSWORD,
        account_sid,
        http_client=http_client,
        environment=dict(NO_ENVIRONMENT),
        **options,
    )


def client_class(channel: Channel) -> type[BrokeredClient]:
    """Return a ``Client`` class bound to *channel* (one per run, so no channel is shared between runs)."""
    return type(
        "Client", (BrokeredClient,), {"_channel": channel, "__module__": "twilio.rest", "__qualname__": "Client"}
    )


def connection_client(
    channel: Channel,
    name: str,
    *,
    cls: type[BrokeredClient] | None = None,
    directory: Mapping[str, Mapping[str, str]] | None = None,
) -> BrokeredClient:
    """Return a client for the run tenant's connection *name*, looked up by the host.

    Args:
        directory: The tenant's connections as the host knew them when the run started (name -> ``username``
            and ``account_sid``, never a secret): a name found there needs no request. Any other name is asked
            of the host, which may know a connection added since.

    Raises:
        TypeError: *name* is not a string.
        LookupError: The tenant has no connection of that name (the message never lists other names).
    """
    if type(name) is not str:
        raise TypeError(f"A connection name must be a string, not {type(name).__name__}.")
    answer: Mapping[str, Any] | None = (directory or {}).get(name)
    if answer is None:
        answer = channel.request(OP_CONNECT, {"connection": name})
        if not answer.get("found"):
            raise LookupError(f"No Twilio connection named {name!r}.")
    client_type = cls if cls is not None else client_class(channel)
    client = client_type.__new__(client_type)
    _init_client(
        client,
        username=str(answer["username"]),
        account_sid=str(answer["account_sid"]),
        http_client=BrokeredHttpClient(channel, connection=name),
    )
    client._connection_name = name
    return client

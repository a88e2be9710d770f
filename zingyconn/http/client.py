"""The snippet's side of HTTP connections: ``zingyConn.http(name)`` and the small response it returns.

Runs in the child and holds no secret: each call is one ``http.request`` operation over the run's channel, which
the host answers (:mod:`zingyconn.http.broker`) with the status, the kept headers and the text, the connection's
secret masked in all of them. Imports nothing but the standard library and the protocol's declarations.
"""

from __future__ import annotations

import json as json_module
from collections.abc import Mapping
from typing import Any, Final, Protocol

from zingyconn.egress.protocol import OP_CONNECT, OP_HTTP_REQUEST
from zingyconn.http import CONNECTION_TYPE

#: Longest connection name sent to the host (the store's names are shorter).
MAX_NAME_CHARS: Final = 200


class Channel(Protocol):
    """What the client sends its requests over: the run's channel to the host."""

    def request(self, op: str, payload: Any) -> Any:
        """Send one operation to the host and return its answer (refusals raise)."""
        ...


class HttpResponse:
    """An HTTP connection's answer: ``status_code``, ``headers`` (lower-case names), ``text``, ``json()``, ``ok``."""

    __slots__ = ("headers", "status_code", "text")

    def __init__(self, status_code: int, headers: Mapping[str, str], text: str) -> None:
        self.status_code = status_code
        self.headers = dict(headers)
        self.text = text

    @property
    def ok(self) -> bool:
        """Whether the status is below 400."""
        return self.status_code < 400

    def json(self) -> Any:
        """Return the body parsed as JSON.

        Raises:
            ValueError: The body is not JSON.
        """
        return json_module.loads(self.text)

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status_code}>"


class HttpApi:
    """One HTTP connection of the run's tenant, as a snippet uses it: ``get``, ``post``, ``put``, ``patch``,
    ``delete`` and ``request``. Paths are under the connection's base URL (``"/notes"``); the host adds the
    credential and refuses what the connection does not allow."""

    __slots__ = ("_channel", "_name")

    def __init__(self, channel: Channel, name: str) -> None:
        if type(name) is not str or not name or len(name) > MAX_NAME_CHARS:
            raise TypeError("zingyConn.http() takes the connection's name, a non-empty string.")
        self._channel = channel
        self._name = name

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        data: Any = None,
        headers: Any = None,
    ) -> HttpResponse:
        """Send *method* to *path* with optional query *params*, a *json* or *data* body and extra *headers*.

        Raises:
            EgressDeniedError: The host refused the request (not allowed, no such connection) or got no answer.
            QuotaExceededError: The run's or the tenant's request quota is spent.
        """
        payload = {
            "connection": self._name,
            "method": method,
            "path": path,
            "params": _pairs(params),
            "headers": _pairs(headers),
            "json": json,
            "data": data if data is None or isinstance(data, str) else _pairs(data),
        }
        answer = self._channel.request(OP_HTTP_REQUEST, payload)
        return HttpResponse(int(answer["status"]), answer.get("headers") or {}, str(answer.get("text", "")))

    def get(self, path: str, *, params: Any = None, headers: Any = None) -> HttpResponse:
        """``GET`` *path*."""
        return self.request("GET", path, params=params, headers=headers)

    def post(self, path: str, *, json: Any = None, data: Any = None, params: Any = None, headers: Any = None
             ) -> HttpResponse:  # fmt: skip
        """``POST`` *json* or *data* to *path*."""
        return self.request("POST", path, params=params, json=json, data=data, headers=headers)

    def put(self, path: str, *, json: Any = None, data: Any = None, params: Any = None, headers: Any = None
            ) -> HttpResponse:  # fmt: skip
        """``PUT`` *json* or *data* to *path*."""
        return self.request("PUT", path, params=params, json=json, data=data, headers=headers)

    def patch(self, path: str, *, json: Any = None, data: Any = None, params: Any = None, headers: Any = None
              ) -> HttpResponse:  # fmt: skip
        """``PATCH`` *path* with *json* or *data*."""
        return self.request("PATCH", path, params=params, json=json, data=data, headers=headers)

    def delete(self, path: str, *, params: Any = None, headers: Any = None) -> HttpResponse:
        """``DELETE`` *path*."""
        return self.request("DELETE", path, params=params, headers=headers)

    def __repr__(self) -> str:
        return f"<zingyConn.http {self._name!r}>"


def _pairs(value: Any) -> list[list[Any]] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return [[key, item] for key, item in value.items()]
    return [list(item) for item in value]


def connection_client(channel: Channel, name: str, *, directory: Mapping[str, Any] | None = None) -> HttpApi:
    """Return the client of the run tenant's HTTP connection *name* over *channel*, as Twilio's are looked up.

    Args:
        directory: The tenant's HTTP connections as the host knew them when the run started (name -> entry): a
            name found there needs no request. Any other name is asked of the host, which may know one added since.

    Raises:
        TypeError: *name* is not a non-empty string.
        LookupError: The tenant has no HTTP connection of that name (the message never lists other names).
    """
    api = HttpApi(channel, name)
    if directory is None or name not in directory:
        answer = channel.request(OP_CONNECT, {"connection": name, "type": CONNECTION_TYPE})
        if not isinstance(answer, Mapping) or not answer.get("found"):
            raise LookupError(f"No HTTP connection named {name!r}.")
    return api

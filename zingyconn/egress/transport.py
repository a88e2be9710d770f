"""The broker's HTTP transport: resolve once, refuse private addresses, connect to exactly the address checked.

Checking a host name and then letting an HTTP library resolve it again is a DNS-rebinding hole (the second answer
can be ``169.254.169.254``). Here the check and the connect are one step: :class:`PinnedBackend` is the
``httpcore`` network backend, so every new TCP connection resolves the name, refuses it unless *every* address is
public, and connects to the first checked address; TLS still verifies the certificate against the original host
name (``httpcore`` passes it as SNI). ``httpcore`` never reads proxy variables or ``.netrc`` from the environment.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import httpcore

from sandbox.errors import EgressDeniedError
from zingyconn.egress.outcome import HttpAnswer, Outcome, OutcomeUnknownError, RequestFailedError

#: Resolves a host name to IP address strings (``socket.getaddrinfo`` by default; injectable for tests).
Resolver = Callable[[str, int], Sequence[str]]

#: The loopback origin (host, port) that is exempt from the address check: the configured emulator, or nothing.
Origin = tuple[str, int]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def resolve_host(host: str, port: int) -> Sequence[str]:
    """Return every address *host* resolves to (TCP), in resolver order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_public_address(address: IPAddress) -> bool:
    """Return True when *address* is a globally routable unicast address.

    Refuses the SSRF targets: loopback, RFC 1918, link-local (``169.254.169.254`` cloud metadata), carrier-grade NAT,
    reserved, multicast and unspecified addresses, also when hidden in IPv4-mapped, 6to4 or Teredo IPv6 forms.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            return is_public_address(embedded)
    return address.is_global and not address.is_multicast


class PinnedBackend(httpcore.NetworkBackend):
    """An ``httpcore`` backend that connects only to checked public addresses (or to the one allowed origin)."""

    def __init__(self, *, resolver: Resolver = resolve_host, allowed_origin: Origin | None = None) -> None:
        self._inner = httpcore.SyncBackend()
        self._resolver = resolver
        self._allowed_origin = allowed_origin

    def pin(self, host: str, port: int) -> str:
        """Return the address to connect to for *host*, or raise :class:`EgressDeniedError`."""
        if self._allowed_origin is not None:
            if (host, port) == self._allowed_origin:
                return host
            raise EgressDeniedError(
                f"Connecting to {host}:{port} is not allowed; only the configured Twilio base URL is."
            )
        try:
            addresses = [ipaddress.ip_address(address.split("%", 1)[0]) for address in self._resolver(host, port)]
        except (OSError, ValueError) as exc:
            raise EgressDeniedError(f"Could not resolve {host!r}: {exc}.") from None
        if not addresses:
            raise EgressDeniedError(f"Could not resolve {host!r}: no addresses.")
        refused = [address for address in addresses if not is_public_address(address)]
        if refused:
            # One private answer poisons the whole name: a mixed answer is how rebinding attacks start.
            raise EgressDeniedError(f"Connecting to {host!r} is not allowed: it resolves to non-public {refused[0]}.")
        return str(addresses[0])

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Connect to the pinned address of *host* (TLS, if any, is started by ``httpcore`` with the host name)."""
        return self._inner.connect_tcp(self.pin(host, port), port, timeout, local_address, socket_options)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Refuse: the broker never talks to Unix sockets."""
        raise EgressDeniedError("Unix sockets are not allowed.")


#: Answer headers passed back to the snippet; the rest (cookies, tracing ids) is dropped.
ANSWER_HEADERS: Final = frozenset({"content-type", "twilio-request-id", "retry-after", "x-rate-limit-remaining"})


class HttpTransport:
    """A pooled HTTP/1.1 client on :class:`PinnedBackend` with a response-size cap; never follows redirects.

    *answer_headers* are the answer's headers kept (lower case); the rest is dropped.
    """

    def __init__(
        self,
        backend: PinnedBackend,
        *,
        max_response_bytes: int,
        max_connections: int = 20,
        answer_headers: frozenset[str] = ANSWER_HEADERS,
    ) -> None:
        self._pool = httpcore.ConnectionPool(
            network_backend=backend, max_connections=max_connections, keepalive_expiry=30.0, retries=0
        )
        self._max_response_bytes = max_response_bytes
        self._answer_headers = answer_headers

    def send(
        self, method: str, url: str, *, headers: list[tuple[str, str]], body: bytes, timeout_seconds: float
    ) -> HttpAnswer:
        """Send one request and read at most ``max_response_bytes`` of the answer.

        Raises:
            OutcomeUnknownError: The request may have reached the server, but no (whole) answer came back.
            RequestFailedError: No connection could be made (in time): the request never left.
            EgressDeniedError: The address was refused, or the answer was too big.
        """
        timeouts = {
            "connect": timeout_seconds,
            "read": timeout_seconds,
            "write": timeout_seconds,
            "pool": timeout_seconds,
        }
        deadline = time.monotonic() + timeout_seconds
        try:
            with self._pool.stream(
                method, url, headers=headers, content=body, extensions={"timeout": timeouts}
            ) as resp:
                length = _header(resp.headers, b"content-length")
                if length is not None and length.isdigit() and int(length) > self._max_response_bytes:
                    raise EgressDeniedError(self._too_big())
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_stream():
                    size += len(chunk)
                    if size > self._max_response_bytes:
                        raise EgressDeniedError(self._too_big())
                    if time.monotonic() > deadline:  # the server has it: whether it acted is unknown
                        raise OutcomeUnknownError(_timed_out(timeout_seconds), outcome=Outcome.TIMED_OUT)
                    chunks.append(chunk)
                headers_out = {
                    key.decode("latin-1").lower(): value.decode("latin-1")
                    for key, value in resp.headers
                    if key.decode("latin-1").lower() in self._answer_headers
                }
                return HttpAnswer(resp.status, b"".join(chunks).decode("utf-8", errors="replace"), headers_out)
        except (httpcore.ConnectTimeout, httpcore.PoolTimeout):  # no connection: the request never left
            raise RequestFailedError(_timed_out(timeout_seconds), outcome=Outcome.TIMED_OUT) from None
        except httpcore.ConnectError as exc:
            raise RequestFailedError(_failed(exc), outcome=Outcome.NO_ANSWER) from None
        except httpcore.TimeoutException:
            raise OutcomeUnknownError(_timed_out(timeout_seconds), outcome=Outcome.TIMED_OUT) from None
        except httpcore.UnsupportedProtocol as exc:
            raise EgressDeniedError(_failed(exc)) from None
        except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
            raise OutcomeUnknownError(_failed(exc), outcome=Outcome.NO_ANSWER) from None

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.close()

    def _too_big(self) -> str:
        return f"The answer was larger than the {self._max_response_bytes} byte limit and was dropped."


def _timed_out(timeout_seconds: float) -> str:
    return f"The request timed out after {timeout_seconds:.1f} s."


def _failed(exc: Exception) -> str:
    return f"The request failed: {type(exc).__name__}: {exc}".rstrip(": ") + "."


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None

"""The host side of HTTP connections: check a snippet's request, add the credential, send it, mask the answer.

A snippet's ``zingyConn.http(name).post("/notes", json=...)`` arrives as one ``http.request`` operation. The host
(:class:`RunHttpRequests`, one per run) refuses a method or a path the connection does not allow, joins the path to
the base URL, adds the credential and sends through the egress transport (:mod:`zingyconn.egress.transport`): one
DNS answer, checked and pinned, no private, loopback or link-local address unless the connection is a local test
target. It follows a redirect only to a path the connection allows on the same origin, and replaces every form of
the secret in the answer (body, headers) and in error messages before the snippet sees them: an API that echoes the
credential back does not hand it to the snippet.

Refusals raise :class:`~sandbox.errors.EgressDeniedError`; quotas raise :class:`~sandbox.errors.QuotaExceededError`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, unquote, urlencode, urljoin, urlsplit

from sandbox.errors import EgressDeniedError, QuotaExceededError
from zingyconn.connection_types import Profile
from zingyconn.egress.outcome import HttpAnswer, Outcome, RequestFailedError
from zingyconn.egress.policy import EgressCall
from zingyconn.egress.transport import HttpTransport, PinnedBackend, Resolver, resolve_host
from zingyconn.http.profile import HttpProfile
from zingyconn.http.rules import DEFAULT_HTTP_RATE, HTTP_BUCKET, QUOTA_VARIABLE
from zingyconn.secrets.masking import Masker

if TYPE_CHECKING:
    from zingyconn.egress.broker import EgressSession

#: Largest answer read. Threat: an API (or a redirect) streaming gigabytes into the host's memory.
MAX_RESPONSE_BYTES: Final = 2 * 1024 * 1024

#: Largest request body a snippet may send, and the most headers and query parameters it may add.
MAX_REQUEST_BYTES: Final = 1024 * 1024
MAX_REQUEST_HEADERS: Final = 32
MAX_QUERY_PARAMS: Final = 64

#: The longest a request may take when the run's own deadline is further away.
REQUEST_TIMEOUT_SECONDS: Final = 15.0

#: Redirects followed (each to an allowed path of the same origin). Threat: a redirect loop holding the run.
MAX_REDIRECTS: Final = 3

#: Answer headers passed back to the snippet; the rest (cookies, tracing ids) is dropped.
ANSWER_HEADERS: Final = frozenset(
    {"content-type", "location", "retry-after", "etag", "last-modified", "link", "x-request-id",
     "x-ratelimit-remaining", "x-ratelimit-reset", "www-authenticate"}
)  # fmt: skip

#: Request headers a snippet may not set. Threat: smuggling or retargeting the request (``Host``, framing headers),
#: or replacing the host's credential with one the snippet chose (then the host would send it somewhere else).
FORBIDDEN_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "te", "upgrade", "authorization",
     "proxy-authorization", "cookie", "expect", "keep-alive"}
)  # fmt: skip

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request a snippet asked for, checked.

    Attributes:
        method: Upper-case HTTP method.
        path: The path under the connection's base URL (``/notes``).
        params: Query parameters, in order.
        body: The body bytes (JSON or form), possibly empty.
        headers: The snippet's own headers (already checked), without the credential.
    """

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> HttpRequest:
        """Read an ``http.request`` payload; raise :class:`EgressDeniedError` naming the first bad part."""
        method, path = payload.get("method"), payload.get("path")
        if type(method) is not str or type(path) is not str:
            raise EgressDeniedError("An HTTP request needs a method and a path, both strings.")
        params = _pairs(payload.get("params"), what="params", limit=MAX_QUERY_PARAMS)
        headers = _pairs(payload.get("headers"), what="headers", limit=MAX_REQUEST_HEADERS)
        body, content_type = b"", None
        if payload.get("json") is not None:
            body, content_type = json.dumps(payload["json"]).encode(), "application/json"
        elif payload.get("data") is not None:
            data = payload["data"]
            if type(data) is str:
                body, content_type = data.encode(), "text/plain; charset=utf-8"
            else:
                body = urlencode(_pairs(data, what="data", limit=MAX_QUERY_PARAMS)).encode()
                content_type = "application/x-www-form-urlencoded"
        if len(body) > MAX_REQUEST_BYTES:
            raise EgressDeniedError(f"The request body is over {MAX_REQUEST_BYTES} bytes; send less at a time.")
        for name, _ in headers:
            if name.lower() in FORBIDDEN_HEADERS:
                raise EgressDeniedError(f"A snippet may not set the {name!r} header; the host sets it.")
        if content_type is not None and not any(name.lower() == "content-type" for name, _ in headers):
            headers = (*headers, ("Content-Type", content_type))
        return cls(method=method.upper(), path=path, params=params, body=body, headers=headers)


def _pairs(value: Any, *, what: str, limit: int) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    items = list(value.items()) if isinstance(value, Mapping) else value
    if not isinstance(items, list | tuple) or len(items) > limit:
        raise EgressDeniedError(f"{what} must be a dict (or a list of pairs) of at most {limit} entries.")
    pairs: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise EgressDeniedError(f"{what} must be a dict (or a list of [name, value] pairs).")
        name, entry = item
        if type(name) is not str or not isinstance(entry, str | int | float | bool):
            raise EgressDeniedError(f"{what} names must be strings and values strings or numbers.")
        text = entry if type(entry) is str else json.dumps(entry)
        if any(char in "\r\n\0" for char in name + text):
            raise EgressDeniedError(f"{what} may not contain line breaks or NUL characters.")
        pairs.append((name, text))
    return tuple(pairs)


def allowed_path(profile: HttpProfile, path: str) -> bool:
    """Whether *path* (under the base URL's path) is one of *profile*'s allowed prefixes, segment by segment."""
    return any(
        path == prefix.rstrip("/") or path.startswith(prefix.rstrip("/") + "/") or prefix == "/"
        for prefix in profile.allowed_prefixes
    )


def check_path(profile: HttpProfile, path: str) -> None:
    """Refuse a *path* that is not a plain path under one of *profile*'s allowed prefixes.

    Raises:
        EgressDeniedError: A URL instead of a path, dot segments (also percent-encoded), or another prefix.
    """
    if not path.startswith("/") or path.startswith("//") or any(char in path for char in "?#\\\r\n\0 "):
        raise EgressDeniedError(
            f"{path!r} is not a path under the connection's base URL; give a path like '/notes' and the query "
            "as params=."
        )
    decoded = unquote(path)
    if "//" in decoded or any(segment in (".", "..") for segment in decoded.split("/")) or "\\" in decoded:
        raise EgressDeniedError(f"Path {path!r} has empty, '.' or '..' segments; give the path itself.")
    if not allowed_path(profile, decoded):
        raise EgressDeniedError(
            f"Path {path!r} is not allowed by this connection (allowed: {', '.join(profile.allowed_prefixes)}); "
            "ask the tenant admin to add the prefix (connections add --allow-prefix)."
        )


def send(
    profile: HttpProfile,
    request: HttpRequest,
    *,
    resolver: Resolver = resolve_host,
    timeout_seconds: float = REQUEST_TIMEOUT_SECONDS,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
) -> HttpAnswer:
    """Send *request* with *profile*'s credential and return the answer with every form of the secret masked.

    An ``oauth2`` connection's access token comes from the token cache (fetched when missing or about to expire);
    when the API answers 401 to a cached token, a fresh one is fetched and the request sent once more.

    Raises:
        EgressDeniedError: The method, the path, the address or a redirect was refused, the token endpoint refused
            the client, or no answer came (its subclasses say whether the request may have arrived); the message
            never holds the secret nor the access token.
    """
    masker = Masker(profile.secrets())
    try:
        if profile.auth != "oauth2":
            return _send(profile, request, resolver, timeout_seconds, max_response_bytes, masker, token=None)
        token, fresh = access_token(profile, resolver=resolver, timeout_seconds=timeout_seconds)
        masker = Masker([*profile.secrets(), token])
        answer = _send(profile, request, resolver, timeout_seconds, max_response_bytes, masker, token=token)
        if answer.status != 401 or fresh:
            return answer
        token, _ = access_token(profile, resolver=resolver, timeout_seconds=timeout_seconds, refresh=True)
        masker = Masker([*profile.secrets(), token])
        return _send(profile, request, resolver, timeout_seconds, max_response_bytes, masker, token=token)
    except EgressDeniedError as exc:
        exc.args = (masker.mask_text(str(exc)),)
        raise


#: Access tokens of ``oauth2`` connections: (token URL, client id, client secret digest) -> (token, expiry on the
#: monotonic clock). Process-wide, so the runs of one worker share a token until it is about to expire.
_TOKENS: dict[tuple[str, str, str], tuple[str, float]] = {}
_TOKENS_LOCK: Final = threading.Lock()

#: A token is replaced this long before it expires, so that a request never leaves with one about to lapse.
TOKEN_REFRESH_MARGIN_SECONDS: Final = 30.0
#: A token's assumed lifetime when the endpoint names none, and the longest one is kept. Threat: a token revoked at
#: the API but cached for days; a re-issued one is at most an hour away.
DEFAULT_TOKEN_SECONDS: Final = 300.0
MAX_TOKEN_SECONDS: Final = 3600.0
#: Largest token endpoint answer read.
MAX_TOKEN_RESPONSE_BYTES: Final = 64 * 1024


def access_token(
    profile: HttpProfile, *, resolver: Resolver, timeout_seconds: float, refresh: bool = False
) -> tuple[str, bool]:
    """Return *profile*'s OAuth 2 access token (cached, or fetched now) and whether it was fetched now.

    Raises:
        EgressDeniedError: The token endpoint was refused, did not answer, or answered without a token.
    """
    key = (profile.token_url or "", profile.client_id or "", hashlib.sha256(profile.secret.encode()).hexdigest())
    with _TOKENS_LOCK:
        cached = _TOKENS.get(key)
    if cached is not None and not refresh and cached[1] - TOKEN_REFRESH_MARGIN_SECONDS > time.monotonic():
        return cached[0], False
    url = urlsplit(profile.token_url or "")
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    backend = PinnedBackend(resolver=resolver, allowed_origin=(host, port) if profile.local_test_target else None)
    transport = HttpTransport(backend, max_response_bytes=MAX_TOKEN_RESPONSE_BYTES)
    auth, body = profile.token_request()
    headers = [("Host", url.netloc), ("Accept-Encoding", "identity"), ("Accept", "application/json"), *auth,
               ("Content-Type", "application/x-www-form-urlencoded"), ("Content-Length", str(len(body)))]  # fmt: skip
    try:
        answer = transport.send("POST", profile.token_url or "", headers=headers, body=body,
                                timeout_seconds=timeout_seconds)  # fmt: skip
    finally:
        transport.close()
    try:
        document = json.loads(answer.text) if answer.status == 200 else {}
    except ValueError:
        document = {}
    token = document.get("access_token") if isinstance(document, dict) else None
    if type(token) is not str or not token:
        hint = " Check the client id and secret (connections add --replace)." if answer.status in (400, 401) else ""
        raise EgressDeniedError(
            f"The OAuth 2 token endpoint {url.scheme}://{url.netloc}{url.path} answered HTTP {answer.status} without "
            f"an access token; the request was not sent.{hint}"
        )
    lifetime = document.get("expires_in")
    seconds = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else DEFAULT_TOKEN_SECONDS
    with _TOKENS_LOCK:
        _TOKENS[key] = (token, time.monotonic() + min(seconds, MAX_TOKEN_SECONDS))
    return token, True


def _send(
    profile: HttpProfile,
    request: HttpRequest,
    resolver: Resolver,
    timeout_seconds: float,
    max_response_bytes: int,
    masker: Masker,
    *,
    token: str | None,
) -> HttpAnswer:
    if request.method not in profile.allowed_methods:
        raise EgressDeniedError(
            f"Method {request.method} is not allowed by this connection (allowed: "
            f"{', '.join(profile.allowed_methods)}); ask the tenant admin to add it (connections add --allow-method)."
        )
    base = urlsplit(profile.base_url)
    host, port = base.hostname or "", base.port or (443 if base.scheme == "https" else 80)
    backend = PinnedBackend(resolver=resolver, allowed_origin=(host, port) if profile.local_test_target else None)
    transport = HttpTransport(backend, max_response_bytes=max_response_bytes, answer_headers=ANSWER_HEADERS)
    deadline = time.monotonic() + timeout_seconds
    method, path, params, body = request.method, request.path, list(request.params), request.body
    try:
        for _ in range(MAX_REDIRECTS + 1):
            check_path(profile, path)
            url = _url(profile, path, params)
            headers = [("Host", base.netloc), ("Accept-Encoding", "identity"), *request.headers]
            headers += [*profile.auth_headers(), ("Content-Length", str(len(body)))]
            if token is not None:
                headers.append(("Authorization", f"Bearer {token}"))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EgressDeniedError(f"The request ran out of its {timeout_seconds:.1f} s.")
            answer = transport.send(method, url, headers=headers, body=body, timeout_seconds=remaining)
            if answer.status not in _REDIRECTS or "location" not in answer.headers:
                return HttpAnswer(answer.status, masker.mask_text(answer.text), masker.mask(answer.headers))
            path, params = _redirect_target(profile, url, answer.headers["location"])
            if answer.status == 303 or (answer.status in (301, 302) and method == "POST"):
                method, body = "GET", b""
        raise EgressDeniedError(f"The API redirected more than {MAX_REDIRECTS} times; not followed further.")
    finally:
        transport.close()


def _url(profile: HttpProfile, path: str, params: Sequence[tuple[str, str]]) -> str:
    query = [*params]
    if profile.credential_query is not None:
        query = [pair for pair in query if pair[0] != profile.credential_query]
        query.append((profile.credential_query, profile.secret))
    return profile.base_url.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")


def _redirect_target(profile: HttpProfile, url: str, location: str) -> tuple[str, list[tuple[str, str]]]:
    """Return the path and query a redirect points to, or refuse one that leaves the connection's allowed paths."""
    target = urlsplit(urljoin(url, location))
    base = urlsplit(profile.base_url)
    root = base.path.rstrip("/")
    inside = (target.scheme, target.netloc) == (base.scheme, base.netloc) and (
        target.path == root or target.path.startswith(root + "/")
    )
    path = target.path[len(root) :] or "/"
    if not inside or not allowed_path(profile, unquote(path)):
        raise EgressDeniedError(
            f"The API redirected to {target.scheme}://{target.netloc}{target.path}, outside this connection's base "
            "URL and allowed prefixes; the redirect was not followed (the credential goes nowhere else)."
        )
    params = [(key, value) for key, value in parse_qsl(target.query) if key != profile.credential_query]
    return path, params


class RunHttpRequests:
    """The HTTP connection requests of one run: looks up the connection, counts the run's requests, sends.

    Args:
        profile_of: Returns the run tenant's HTTP connection by name, or ``None`` when there is none.
        session: The run's egress session: its tenant, deadline, request limit, and the broker's rate limiter and
            resolver.
    """

    def __init__(self, profile_of: Callable[[str], Profile | None], session: EgressSession) -> None:
        self._profile_of = profile_of
        self._session = session

    def answer(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one ``http.request`` with ``{"status", "headers", "text"}`` (the secret masked in all three).

        Every request, answered or refused, is recorded on the run's egress session beside its Twilio requests:
        method, the base URL's host, the full path (never the query, where a ``query:`` credential goes), status,
        outcome and duration.

        Raises:
            EgressDeniedError: No such connection, or the request was refused or failed.
            QuotaExceededError: The run's request limit, or the tenant's HTTP quota, is spent.
        """
        session = self._session
        started = session.broker.clock()
        name = payload.get("connection")
        profile = self._profile_of(name) if type(name) is str else None
        method, host, path = str(payload.get("method", "")).upper(), "", str(payload.get("path", ""))
        try:
            if not isinstance(profile, HttpProfile):
                raise EgressDeniedError(f"This tenant has no HTTP connection named {name!r}.")
            base = urlsplit(profile.base_url)
            host, path = base.netloc, base.path.rstrip("/") + path
            request = HttpRequest.from_payload(payload)
            answer = self._send(profile, request)
        except (EgressDeniedError, QuotaExceededError) as exc:
            outcome = exc.outcome if isinstance(exc, RequestFailedError) else Outcome.REFUSED
            shown = EgressDeniedError.__name__ if isinstance(exc, EgressDeniedError) else type(exc).__name__
            self._record(method, host, path, started, error=f"{shown}: {exc}", outcome=outcome)
            raise
        self._record(method, host, path, started, status=answer.status, request_id=answer.headers.get("x-request-id"))
        return {"status": answer.status, "headers": answer.headers, "text": answer.text}

    def _send(self, profile: HttpProfile, request: HttpRequest) -> HttpAnswer:
        session = self._session
        if len(session.calls) >= session.max_requests:
            raise QuotaExceededError(
                f"A run may make at most {session.max_requests} HTTP and Twilio requests (its egress_requests limit)."
            )
        limiter = session.broker.rate_limiter
        rate = session.broker.quotas.get(HTTP_BUCKET, DEFAULT_HTTP_RATE)
        if limiter is not None and not limiter.acquire(session.tenant, HTTP_BUCKET, rate):
            raise QuotaExceededError(
                f"HTTP connection requests are limited to {rate.per_second:g} per second (bursts of {rate.burst}) "
                "per tenant; this request was not sent. Make fewer, spread them out, or ask the platform admin to "
                f"raise {QUOTA_VARIABLE}."
            )
        return send(profile, request, resolver=session.broker.resolver, timeout_seconds=self._timeout())

    def _record(
        self,
        method: str,
        host: str,
        path: str,
        started: float,
        *,
        status: int | None = None,
        error: str | None = None,
        outcome: Outcome = Outcome.ANSWERED,
        request_id: str | None = None,
    ) -> None:
        """Add one request to the run's egress record (the runtime masks every secret of the tenant in it)."""
        duration_ms = (self._session.broker.clock() - started) * 1000
        self._session.calls.append(
            EgressCall(method[:10], host[:200], path.partition("?")[0][:300], status, duration_ms, error,
                       outcome=outcome, request_id=None if request_id is None else request_id[:64])
        )  # fmt: skip

    def _timeout(self) -> float:
        deadline = self._session.deadline
        if deadline is None:
            return REQUEST_TIMEOUT_SECONDS
        remaining = deadline - self._session.broker.clock()
        if remaining <= 0.01:
            raise EgressDeniedError("The run has no time left for another HTTP request.")
        return min(REQUEST_TIMEOUT_SECONDS, remaining)


def check_connection(profile: HttpProfile, *, base_url: str | None = None, what: str = "the connection") -> str:
    """``connections test``: GET the base URL (its first allowed prefix) with the credential; describe the answer.

    *base_url* (the Twilio emulator's) does not apply to HTTP connections and is ignored.

    Raises:
        EgressDeniedError: The request was refused, or got no answer (RequestFailedError, naming the URL); the
            message names why, never the secret.
    """
    del base_url
    path = profile.allowed_prefixes[0] if profile.allowed_prefixes else "/"
    url = f"{profile.base_url.rstrip('/')}{path}"
    try:
        answer = send(profile, HttpRequest(method="GET", path=path))
    except RequestFailedError as exc:
        raise RequestFailedError(
            f"GET {url} for {what} got no answer: {exc} Check that the API is up and that the base URL is right.",
            outcome=exc.outcome,
        ) from None
    if answer.status >= 400:
        raise EgressDeniedError(
            f"{url} answered HTTP {answer.status} to {what}; check the secret and the base URL (re-add the "
            "connection with --replace)."
        )
    return f"{url} (HTTP {answer.status}, {profile.auth})"

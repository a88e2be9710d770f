"""The egress broker: the host-side end of every Twilio request a snippet (or a connection command) makes.

A snippet's client sends requests as data over its channel; one :class:`EgressSession` per run answers them:

- ``twilio.connect {"connection": name}`` -> ``{"found": true, "account_sid", "username"}`` or ``{"found": false}``:
  the name is looked up for the run's tenant (taken from the run, never from the snippet); another tenant's
  name is simply not found.
- ``twilio.credentials {"username", "password"}`` -> ``{"credential": n}``: a snippet's own ``Client(sid, token)``;
  the password joins the run's masking set and the child keeps only a placeholder.
- ``twilio.http {"method", "url", "params": [[k, v]...], "data": [[k, v]...], "headers", "connection" | null,
  "credential" | null}`` -> ``{"status", "text", "headers"}``: URL allowlist, credentials injected, per-run request
  cap, per-tenant rate limit on message creation, time budget, response cap; recorded as an :class:`EgressCall`.

Refusals raise :class:`~sandbox.errors.EgressDeniedError` or :class:`~sandbox.errors.QuotaExceededError`, which
the child re-raises inside the snippet.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from sandbox.errors import EgressDeniedError, QuotaExceededError
from zingyconn.egress.ledger import SendLedger, request_fingerprint
from zingyconn.egress.policy import (
    ALLOWED_METHODS,
    EgressCall,
    Target,
    UrlPolicy,
    form_pairs,
    request_headers,
    scrub_answer,
)
from zingyconn.egress.ratelimit import DEFAULT_MESSAGE_RATE, Rate, RateLimiter
from zingyconn.egress.transport import HttpAnswer, HttpTransport, PinnedBackend, Resolver, resolve_host
from zingyconn.errors import (
    ConnectionNotFoundError,
    IdempotencyConflictError,
    NotFoundError,
    ValidationError,
    ZingyConnError,
)
from zingyconn.secrets.masking import Masker
from zingyconn.secrets.store import ConnectionStore
from zingyconn.twilio.client import (
    OP_CONNECT,
    OP_CREDENTIALS,
    OP_HTTP,
    BrokeredClient,
    BrokeredHttpClient,
    connection_client,
)
from zingyconn.twilio.profile import TwilioProfile

#: Twilio answers of up to 4 MiB (a 1000-message list page is about 1 MiB); more is refused, not buffered.
MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024
#: Longest single request when the run's own deadline allows more.
REQUEST_TIMEOUT_SECONDS: Final = 30.0
#: Credentials one run may register with ``twilio.Client(sid, token)``.
MAX_CREDENTIALS_PER_RUN: Final = 20
#: Longest username or password ``twilio.Client(sid, token)`` may register (Twilio's are 34 and 32 characters).
#: Threat: a megabyte "password" joins the run's masking set, whose pattern then costs the host time and memory.
MAX_CREDENTIAL_CHARS: Final = 256
#: The rate-limit bucket of message creation.
MESSAGES_BUCKET: Final = "messages"
#: Every spelling of "create a message" the API answers: any extension (``.json``, ``.xml``) or none (Twilio then
#: answers XML), the legacy ``SMS/Messages``, a trailing slash, any letter case. Threat: a create spelled another
#: way skipping the rate limit and the send ledger (the URL policy already refuses escaped and dot-segment paths).
_CREATE_MESSAGE_PATH: Final = re.compile(
    r"/2010-04-01/Accounts/[^/]+/(?:SMS/)?Messages(?:\.[A-Za-z0-9]*)?/?", re.IGNORECASE
)

_LOGGER: Final = logging.getLogger("zingyconn.egress.broker")


class EgressBroker:
    """Send the Twilio requests of runs and commands, with the real credentials, under the allowlist and quotas.

    Args:
        store: Where connections are looked up (by tenant and name) and decrypted.
        base_url: ``ZINGYCONN_TWILIO_BASE_URL``: when set, the only origin reachable (``*.twilio.com`` URLs
            are mapped onto it); when ``None``, only ``https://*.twilio.com`` on public addresses.
        rate_limiter: Per-tenant token buckets for message creation (``None``: no rate limit).
        ledger: Send de-duplication for runs that carry an idempotency key (``None``: no de-duplication).
        resolver: DNS resolution for the address check (injectable for tests).
    """

    def __init__(
        self,
        store: ConnectionStore,
        *,
        base_url: str | None = None,
        rate_limiter: RateLimiter | None = None,
        message_rate: Rate = DEFAULT_MESSAGE_RATE,
        ledger: SendLedger | None = None,
        resolver: Resolver = resolve_host,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.policy = UrlPolicy(base_url)
        self.rate_limiter = rate_limiter
        self.message_rate = message_rate
        self.ledger = ledger
        self.clock = clock
        origin = self.policy.origin
        backend = PinnedBackend(resolver=resolver, allowed_origin=None if origin is None else (origin[1], origin[2]))
        self.transport = HttpTransport(backend, max_response_bytes=max_response_bytes)

    def session(
        self,
        tenant: str,
        *,
        max_requests: int = 50,
        deadline: float | None = None,
        idempotency_key: str | None = None,
        profiles: Mapping[str, TwilioProfile] | None = None,
    ) -> EgressSession:
        """Open the egress session of one run (or one command) of *tenant*.

        Args:
            max_requests: HTTP requests allowed in the session (the run's ``egress_requests`` limit).
            deadline: ``clock()`` value after which no request may still be running (the run's wall deadline).
            idempotency_key: When set, the n-th message created in the session is de-duplicated under
                ``f"{idempotency_key}:{n}"`` (a retried task run does not send its messages twice).
            profiles: *tenant*'s connections, already read (``ConnectionStore.profiles``), so that looking one up
                costs no query; ``None`` reads each from the store when first used.
        """
        session = EgressSession(
            self, tenant, max_requests=max_requests, deadline=deadline, idempotency_key=idempotency_key
        )
        if profiles is not None:
            session.preload(profiles)
        return session

    def client(self, tenant: str, connection: str, *, session: EgressSession | None = None) -> BrokeredClient:
        """Return a host-side ``twilio.rest.Client`` for *tenant*'s *connection*, brokered like a snippet's.

        Raises:
            LookupError: No such connection (a :class:`~zingyconn.errors.ConnectionNotFoundError`).
        """
        channel = session if session is not None else self.session(tenant, max_requests=1_000)
        try:
            return connection_client(channel, connection)
        except LookupError:
            raise channel.not_found(connection) from None

    def http_client(self, tenant: str, connection: str, *, session: EgressSession | None = None) -> BrokeredHttpClient:
        """Return a twilio ``HttpClient`` that sends through the broker with *tenant*'s *connection* credentials.

        For host-side ``twilio.rest.Client`` objects built by the caller (give them any placeholder password).
        """
        channel = session if session is not None else self.session(tenant, max_requests=1_000)
        if channel.request(OP_CONNECT, {"connection": connection}).get("found") is not True:
            raise channel.not_found(connection)
        return BrokeredHttpClient(channel, connection=connection)

    def close(self) -> None:
        """Close pooled connections."""
        self.transport.close()


class EgressSession:
    """The broker state of one run: resolved connections, registered credentials, counters, recorded calls.

    Its :meth:`request` is the run's host request handler (``Sandbox.run(on_request=session.request)``) and a
    :class:`~zingyconn.twilio.client.Channel` for host-side clients.
    """

    def __init__(
        self,
        broker: EgressBroker,
        tenant: str,
        *,
        max_requests: int,
        deadline: float | None,
        idempotency_key: str | None,
    ) -> None:
        self.broker = broker
        self.tenant = tenant
        self.max_requests = max_requests
        self.deadline = deadline
        self.idempotency_key = idempotency_key
        self.calls: list[EgressCall] = []
        self._profiles: dict[str, TwilioProfile | None] = {}  # the connections this session used (or missed)
        self._all_profiles: dict[str, TwilioProfile] | None = None
        self._credentials: list[tuple[str, str]] = []
        self._creates = 0

    @property
    def secrets(self) -> list[str]:
        """Secrets this session has seen: used connections' secrets and credentials the snippet registered."""
        found = [profile.secret for profile in self._profiles.values() if profile is not None]
        return found + [password for _, password in self._credentials]

    def egress(self) -> list[dict[str, Any]]:
        """Return the recorded calls as JSON."""
        return [call.to_json() for call in self.calls]

    def request(self, op: str, payload: Mapping[str, Any]) -> Any:
        """Answer one request of the run (see the module docstring for the operations)."""
        if op == OP_HTTP:
            return self._http(payload)
        if op == OP_CONNECT:
            name = payload.get("connection")
            profile = self._profile(name) if type(name) is str else None
            if profile is None:
                return {"found": False}
            return {"found": True, "account_sid": profile.account_sid, "username": profile.username}
        if op == OP_CREDENTIALS:
            return self._register(payload)
        raise EgressDeniedError(f"The host does not answer {op!r} requests.")

    def preload(self, profiles: Mapping[str, TwilioProfile]) -> None:
        """Use *profiles* (every connection of the tenant, by name) instead of reading the store per lookup."""
        self._all_profiles = dict(profiles)

    def not_found(self, name: str) -> ConnectionNotFoundError:
        """Return the error for a missing connection (the same for another tenant's names)."""
        return ConnectionNotFoundError(f"Tenant {self.tenant!r} has no connection named {name!r}.")

    def _profile(self, name: str) -> TwilioProfile | None:
        if name not in self._profiles and self._all_profiles is not None and name in self._all_profiles:
            self._profiles[name] = self._all_profiles[name]
        if name not in self._profiles:  # not preloaded: read it now (preloaded profiles may be a second old)
            try:
                self._profiles[name] = self.broker.store.get(self.tenant, name)
            except (NotFoundError, ValidationError):  # a name no connection can have is simply not found
                self._profiles[name] = None
            except ZingyConnError as exc:  # DecryptionError: the platform's problem; say so without details
                _LOGGER.error("Connection %r of tenant %r could not be opened: %s", name, self.tenant, exc)
                raise EgressDeniedError(f"Connection {name!r} could not be opened; ask the platform admin.") from None
        return self._profiles[name]

    def _register(self, payload: Mapping[str, Any]) -> dict[str, int]:
        username, password = payload.get("username"), payload.get("password")
        if type(username) is not str or type(password) is not str or not username or not password:
            raise EgressDeniedError("Client credentials must be two non-empty strings.")
        if len(username) > MAX_CREDENTIAL_CHARS or len(password) > MAX_CREDENTIAL_CHARS:
            raise EgressDeniedError(f"Client credentials must be at most {MAX_CREDENTIAL_CHARS} characters each.")
        if len(self._credentials) >= MAX_CREDENTIALS_PER_RUN:
            raise QuotaExceededError(f"A run may create at most {MAX_CREDENTIALS_PER_RUN} twilio.Client objects.")
        self._credentials.append((username, password))
        return {"credential": len(self._credentials) - 1}

    def _auth(self, payload: Mapping[str, Any]) -> tuple[str, str] | None:
        connection, credential = payload.get("connection"), payload.get("credential")
        if connection is not None:
            profile = self._profile(connection) if type(connection) is str else None
            if profile is None:
                raise EgressDeniedError(f"No Twilio connection named {connection!r}.")
            return profile.username, profile.secret
        if credential is not None:
            if type(credential) is not int or not 0 <= credential < len(self._credentials):
                raise EgressDeniedError("The request names credentials this run did not register.")
            return self._credentials[credential]
        return None

    def _http(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        started = self.broker.clock()
        method = str(payload.get("method", "")).upper()
        url = payload.get("url")
        host, path = _best_effort_host_path(url)
        try:
            if len(self.calls) >= self.max_requests:
                raise QuotaExceededError(
                    f"This run already made {self.max_requests} Twilio requests, its limit (egress_requests)."
                )
            if method not in ALLOWED_METHODS:
                raise EgressDeniedError(f"HTTP method {method!r} is not allowed.")
            target = self.broker.policy.target(str(url), method=method)
            host, path = target.host, target.path
            answer = self._send(method, target, payload)
        except (EgressDeniedError, QuotaExceededError, IdempotencyConflictError) as exc:
            self._record(method, host, path, None, started, error=f"{type(exc).__name__}: {exc}")
            _LOGGER.info("Refused %s %s%s for tenant %r: %s", method, host, path, self.tenant, exc)
            if isinstance(exc, IdempotencyConflictError):
                raise EgressDeniedError(str(exc)) from None
            raise
        self._record(method, host, path, answer.status, started)
        # The child holds no secret, and the API must not hand it one: credential fields are scrubbed, and any
        # known secret left in the text (a message body quoting it, say) is masked.
        text = Masker(self.secrets).mask_text(scrub_answer(answer.text))
        return {"status": answer.status, "text": text, "headers": answer.headers}

    def _send(self, method: str, target: Target, payload: Mapping[str, Any]) -> HttpAnswer:
        params = form_pairs(payload.get("params"), what="query parameters")
        data = form_pairs(payload.get("data"), what="form data")
        auth = self._auth(payload)
        url = target.url + (("&" if "?" in target.url else "?") + urlencode(params) if params else "")
        is_create = method == "POST" and _CREATE_MESSAGE_PATH.fullmatch(target.path) is not None
        ledger_key = self._claim(target, data) if is_create else None
        if isinstance(ledger_key, HttpAnswer):
            return ledger_key  # already sent by an earlier attempt: replay it, spend no rate-limit token
        if is_create:
            try:
                self._take_message_token()
            except QuotaExceededError:
                if ledger_key is not None and self.broker.ledger is not None:
                    self.broker.ledger.release(self.tenant, ledger_key)  # nothing was sent
                raise
        body = urlencode(data).encode() if method == "POST" else b""
        headers = request_headers(payload.get("headers"))
        headers += [("Host", urlsplit(target.url).netloc), ("Accept-Encoding", "identity")]
        headers.append(("Content-Length", str(len(body))))
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers.append(("Authorization", f"Basic {token}"))
        try:
            answer = self.broker.transport.send(
                method, url, headers=headers, body=body, timeout_seconds=self._timeout()
            )
        except EgressDeniedError:
            if ledger_key is not None:  # outcome unknown: keep the claim so a retry does not double-send
                _LOGGER.warning("Send with idempotency key %r has an unknown outcome.", ledger_key)
            raise
        if 300 <= answer.status < 400:
            raise EgressDeniedError(f"Twilio answered {answer.status} (a redirect); redirects are not followed.")
        if ledger_key is not None and self.broker.ledger is not None:
            self._settle(ledger_key, answer)
        return answer

    def _take_message_token(self) -> None:
        limiter, rate = self.broker.rate_limiter, self.broker.message_rate
        if limiter is not None and not limiter.acquire(self.tenant, MESSAGES_BUCKET, rate):
            raise QuotaExceededError(
                f"Message creation is rate limited to {rate.per_second:g} per second (bursts of {rate.burst}) per "
                "tenant; this message was not sent. Send fewer messages per run, or spread them over time."
            )

    def _claim(self, target: Target, data: list[tuple[str, str]]) -> str | HttpAnswer | None:
        ledger = self.broker.ledger
        if ledger is None or self.idempotency_key is None:
            return None
        self._creates += 1
        key = f"{self.idempotency_key}:{self._creates}"
        first = ledger.claim(self.tenant, key, request_fingerprint({"path": target.path, "data": sorted(data)}))
        if first is not None:
            return HttpAnswer(201, json.dumps(first), {"content-type": "application/json"})
        return key

    def _settle(self, key: str, answer: HttpAnswer) -> None:
        ledger = self.broker.ledger
        assert ledger is not None
        if 200 <= answer.status < 300:
            try:
                ledger.complete(self.tenant, key, json.loads(answer.text))
            except ValueError:
                ledger.complete(self.tenant, key, {"raw": answer.text})
        else:
            ledger.release(self.tenant, key)  # Twilio refused it: nothing was sent, a retry may send

    def _timeout(self) -> float:
        if self.deadline is None:
            return REQUEST_TIMEOUT_SECONDS
        remaining = self.deadline - self.broker.clock()
        if remaining <= 0.01:
            raise EgressDeniedError("The run has no time left for another Twilio request.")
        return min(REQUEST_TIMEOUT_SECONDS, remaining)

    def _record(
        self, method: str, host: str, path: str, status: int | None, started: float, *, error: str | None = None
    ) -> None:
        duration_ms = (self.broker.clock() - started) * 1000
        self.calls.append(EgressCall(method[:10], host[:200], path[:300], status, duration_ms, error))


def _best_effort_host_path(url: object) -> tuple[str, str]:
    """Return the host and path of *url* for the record of a refused request (empty when it cannot be parsed)."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        parts = None
    return (parts.netloc, parts.path) if parts is not None else ("", "")

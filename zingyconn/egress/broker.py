"""The egress broker: the host-side end of every Twilio request a snippet (or a connection command) makes.

A snippet's client sends requests as data over its channel; one :class:`EgressSession` per run answers the
``twilio.*`` operations of :mod:`zingyconn.egress.protocol`:

- ``twilio.connect {"connection": name}`` -> ``{"found": true, "account_sid", "username"}`` or ``{"found": false}``:
  the name is looked up for the run's tenant (taken from the run, never from the snippet); another tenant's
  name is simply not found. With ``"type": "http"`` it looks up a connection of that type (its directory entry).
- ``twilio.credentials {"username", "password"}`` -> ``{"credential": n}``: a snippet's own ``Client(sid, token)``;
  the password joins the run's masking set and the child keeps only a placeholder.
- ``twilio.http {"method", "url", "params": [[k, v]...], "data": [[k, v]...], "headers", "connection" | null,
  "credential" | null}`` -> ``{"status", "text", "headers"}``: URL allowlist, credentials injected, per-run request
  cap, the deny list and per-tenant quotas of the channel's connection type (:mod:`zingyconn.connection_types`;
  Twilio's are :mod:`zingyconn.twilio.billing`: one bucket per billable product, one for the other writes), time
  budget, response cap; recorded as an :class:`EgressCall`.

Refusals raise :class:`~sandbox.errors.EgressDeniedError` or :class:`~sandbox.errors.QuotaExceededError`, which
the child re-raises inside the snippet.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode, urlsplit

from sandbox.errors import EgressDeniedError, QuotaExceededError
from zingyconn.connection_types import ConnectionType, Profile, WriteRules, basic_auth, connection_type
from zingyconn.database import is_storage_fault
from zingyconn.egress.ledger import (
    CLOCK_SKEW_SECONDS,
    Claim,
    SendLedger,
    SentQuery,
    created_seconds,
    find_sent,
    request_fingerprint,
)
from zingyconn.egress.outcome import HttpAnswer, Outcome, OutcomeUnknownError, RequestFailedError
from zingyconn.egress.policy import (
    ALLOWED_METHODS,
    EgressCall,
    Target,
    UrlPolicy,
    form_pairs,
    request_headers,
    scrub_answer,
)
from zingyconn.egress.protocol import CHANNEL_TYPE, OP_CONNECT, OP_CREDENTIALS, OP_HTTP
from zingyconn.egress.ratelimit import DEFAULT_MESSAGE_RATE, Rate, RateLimiter
from zingyconn.errors import (
    ConnectionNotFoundError,
    IdempotencyConflictError,
    NotFoundError,
    ValidationError,
    ZingyConnError,
)
from zingyconn.secrets.masking import Masker
from zingyconn.secrets.store import ConnectionStore

if TYPE_CHECKING:
    from zingyconn.egress.transport import HttpTransport, Resolver

#: Twilio answers of up to 4 MiB (a 1000-message list page is about 1 MiB); more is refused, not buffered.
MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024
#: Longest single request when the run's own deadline allows more.
REQUEST_TIMEOUT_SECONDS: Final = 30.0
#: Credentials one run may register with ``twilio.Client(sid, token)``.
MAX_CREDENTIALS_PER_RUN: Final = 20
#: Longest username or password ``twilio.Client(sid, token)`` may register (Twilio's are 34 and 32 characters).
#: Threat: a megabyte "password" joins the run's masking set, whose pattern then costs the host time and memory.
MAX_CREDENTIAL_CHARS: Final = 256
#: Twilio's id of one API request, kept on the run's call record so an operator can quote it to Twilio support.
REQUEST_ID_HEADER: Final = "twilio-request-id"
#: The quota bucket of message creation (the one product whose creates also go through the send ledger).
MESSAGES_BUCKET: Final = "messages"
#: Every spelling of "create a message" the API answers: any extension (``.json``, ``.xml``) or none (Twilio then
#: answers XML), the legacy ``SMS/Messages``, a trailing slash, any letter case. Threat: a create spelled another
#: way skipping the rate limit and the send ledger (the URL policy already refuses escaped and dot-segment paths).
_CREATE_MESSAGE_PATH: Final = re.compile(
    r"/2010-04-01/Accounts/[^/]+/(?:SMS/)?Messages(?:\.[A-Za-z0-9]*)?/?", re.IGNORECASE
)

#: The end of a Messages path, swapped for ``/Messages.json`` to list what a create may have created.
_CREATE_MESSAGE_PATH_TAIL: Final = re.compile(r"/(?:SMS/)?Messages(?:\.[A-Za-z0-9]*)?/?$", re.IGNORECASE)
#: Messages per page, and pages at most, read when reconciling a send of unknown outcome (newest first; the window
#: is minutes, so more pages means another sender floods that number, and the search gives up: not re-sent).
RECONCILE_PAGE_SIZE: Final = 100
RECONCILE_MAX_PAGES: Final = 5
#: Longest wait for a message-rate token before the send is refused; and for one Twilio ``Retry-After``.
MAX_RATE_WAIT_SECONDS: Final = 10.0
MAX_RETRY_AFTER_SECONDS: Final = 10.0
#: Twilio 429 answers to one create waited out before the 429 is handed to the snippet.
MAX_TOO_MANY_RETRIES: Final = 3
#: Time a run must have left after a wait to still make its request.
MIN_REQUEST_SECONDS: Final = 1.0

_LOGGER: Final = logging.getLogger(__name__)


class EgressBroker:
    """Send the Twilio requests of runs and commands, with the real credentials, under the allowlist and quotas.

    Args:
        store: Where connections are looked up (by tenant and name) and decrypted.
        base_url: ``ZINGYCONN_TWILIO_BASE_URL``: when set, the only origin reachable (``*.twilio.com`` URLs
            are mapped onto it); when ``None``, only ``https://*.twilio.com`` on public addresses.
        rate_limiter: Per-tenant token buckets for billable writes (``None``: no quotas).
        message_rate: The messages quota (kept apart from *quotas* for callers that only tune messages).
        quotas: Per-tenant rate of each product bucket of *writes*; a bucket without a rate here uses the
            connection type's default (its ``quota_rates``).
        writes: The deny list and product classification of writes (default: the connection type's).
        channel_type: The connection type whose connections the ``twilio.*`` operations reach (default: the
            registered :data:`~zingyconn.egress.protocol.CHANNEL_TYPE`): its write rules, quotas and clients.
        ledger: Send de-duplication for runs that carry an idempotency key (``None``: no de-duplication).
        resolver: DNS resolution for the address check (injectable for tests; ``None``: the system's).
        max_rate_wait_seconds: How long a billable write waits for a quota token before it is refused.
    """

    def __init__(
        self,
        store: ConnectionStore,
        *,
        base_url: str | None = None,
        rate_limiter: RateLimiter | None = None,
        message_rate: Rate = DEFAULT_MESSAGE_RATE,
        quotas: Mapping[str, Rate] | None = None,
        writes: WriteRules | None = None,
        channel_type: ConnectionType | None = None,
        ledger: SendLedger | None = None,
        resolver: Resolver | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        clock: Callable[[], float] = time.monotonic,
        max_rate_wait_seconds: float = MAX_RATE_WAIT_SECONDS,
    ) -> None:
        self.store = store
        self.channel_type = channel_type if channel_type is not None else connection_type(CHANNEL_TYPE)
        self.max_rate_wait_seconds = max_rate_wait_seconds
        self.policy = UrlPolicy(base_url, writes=writes if writes is not None else self.channel_type.writes)
        self.rate_limiter = rate_limiter
        self.quotas: dict[str, Rate] = {
            **self.channel_type.quota_rates({}),
            MESSAGES_BUCKET: message_rate,
            **(quotas or {}),
        }
        self.ledger = ledger
        self.clock = clock
        self._resolver = resolver
        self._max_response_bytes = max_response_bytes
        self._transport: HttpTransport | None = None
        self._transport_lock = threading.Lock()

    @property
    def resolver(self) -> Resolver:
        """The DNS resolution the address check uses (the injected one, else the system's)."""
        from zingyconn.egress.transport import resolve_host

        return self._resolver or resolve_host

    @property
    def transport(self) -> HttpTransport:
        """The pooled HTTP client, made on the first request: ``httpcore`` loads only when a run sends one."""
        with self._transport_lock:
            if self._transport is None:
                from zingyconn.egress.transport import HttpTransport, PinnedBackend, resolve_host

                origin = self.policy.origin
                backend = PinnedBackend(
                    resolver=self._resolver or resolve_host,
                    allowed_origin=None if origin is None else (origin[1], origin[2]),
                )
                self._transport = HttpTransport(backend, max_response_bytes=self._max_response_bytes)
            return self._transport

    def session(
        self,
        tenant: str,
        *,
        max_requests: int = 50,
        deadline: float | None = None,
        idempotency_key: str | None = None,
        profiles: Mapping[str, Profile] | None = None,
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

    def client(self, tenant: str, connection: str, *, session: EgressSession | None = None) -> Any:
        """Return a host-side client (Twilio's: a ``twilio.rest.Client``) for *tenant*'s *connection*, brokered like
        a snippet's (the channel type's ``host_client``, whose library is imported only now).

        Raises:
            LookupError: No such connection (a :class:`~zingyconn.errors.ConnectionNotFoundError`).
        """
        connection_client = self.channel_type.load(self.channel_type.host_client)
        channel = session if session is not None else self.session(tenant, max_requests=1_000)
        try:
            return connection_client(channel, connection)
        except LookupError:
            raise channel.not_found(connection) from None

    def close(self) -> None:
        """Close pooled connections."""
        with self._transport_lock:
            if self._transport is not None:
                self._transport.close()


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
        self._profiles: dict[str, Profile | None] = {}  # the connections this session used (or missed)
        self._all_profiles: dict[str, Profile] | None = None
        self._credentials: list[tuple[str, str]] = []
        self._creates = 0

    @property
    def secrets(self) -> list[str]:
        """Secrets this session has seen: used connections' secrets and credentials the snippet registered."""
        found = [secret for profile in self._profiles.values() if profile is not None for secret in profile.secrets()]
        return found + [password for _, password in self._credentials]

    def egress(self) -> list[dict[str, Any]]:
        """Return the recorded calls as JSON."""
        return [call.to_json() for call in self.calls]

    def request(self, op: str, payload: Mapping[str, Any]) -> Any:
        """Answer one request of the run (see the module docstring for the operations)."""
        if op == OP_HTTP:
            return self._http(payload)
        if op == OP_CONNECT:
            name, wanted = payload.get("connection"), payload.get("type")  # the type: default the channel's
            wanted = wanted if type(wanted) is str else None
            profile = self._profile(name, type_name=wanted) if type(name) is str else None
            if profile is None:
                return {"found": False}
            return {"found": True, **profile.directory_entry()}
        if op == OP_CREDENTIALS:
            return self._register(payload)
        raise EgressDeniedError(f"The host does not answer {op!r} requests.")

    def preload(self, profiles: Mapping[str, Profile]) -> None:
        """Use *profiles* (every connection of the tenant, by name) instead of reading the store per lookup."""
        self._all_profiles = dict(profiles)

    def not_found(self, name: str) -> ConnectionNotFoundError:
        """Return the error for a missing connection (the same for another tenant's names)."""
        return ConnectionNotFoundError(f"Tenant {self.tenant!r} has no connection named {name!r}.")

    def profile(self, name: str, *, type_name: str | None = None) -> Profile | None:
        """Return the run tenant's connection *name* (preloaded, else read now), or ``None`` if there is none.

        Only a connection of *type_name* is found (default: the broker's channel type).

        Raises:
            EgressDeniedError: The connection exists but could not be opened (the platform's fault; logged).
        """
        return self._profile(name, type_name=type_name)

    def _profile(self, name: str, *, type_name: str | None = None) -> Profile | None:
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
        found = self._profiles[name]
        # A connection of another type is not this channel's: zingyConn.twilio(name) does not find it.
        wanted = type_name or self.broker.channel_type.name
        return found if found is not None and found.connection_type == wanted else None

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

    def _auth(self, payload: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Return the request's auth headers: its connection's (its type's scheme), or the snippet's credentials."""
        connection, credential = payload.get("connection"), payload.get("credential")
        if connection is not None:
            profile = self._profile(connection) if type(connection) is str else None
            if profile is None:
                raise EgressDeniedError(f"No Twilio connection named {connection!r}.")
            return profile.auth_headers()
        if credential is not None:
            if type(credential) is not int or not 0 <= credential < len(self._credentials):
                raise EgressDeniedError("The request names credentials this run did not register.")
            return [basic_auth(*self._credentials[credential])]
        return []

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
            shown = EgressDeniedError.__name__ if isinstance(exc, EgressDeniedError) else type(exc).__name__
            self._record(method, host, path, None, started, error=f"{shown}: {exc}", outcome=_outcome_of(exc))
            _LOGGER.info("Refused %s %s%s for tenant %r: %s", method, host, path, self.tenant, exc)
            if isinstance(exc, QuotaExceededError):
                raise
            raise EgressDeniedError(str(exc)) from None  # the child knows the sandbox's classes, not ours
        self._record(method, host, path, answer.status, started, request_id=answer.headers.get(REQUEST_ID_HEADER))
        # The child holds no secret, and the API must not hand it one: credential fields are scrubbed, and any
        # known secret left in the text (a message body quoting it, say) is masked.
        text = Masker(self.secrets).mask_text(scrub_answer(answer.text))
        return {"status": answer.status, "text": text, "headers": answer.headers}

    def _send(self, method: str, target: Target, payload: Mapping[str, Any]) -> HttpAnswer:
        params = form_pairs(payload.get("params"), what="query parameters")
        data = form_pairs(payload.get("data"), what="form data")
        auth = self._auth(payload)
        url = target.url + (("&" if "?" in target.url else "?") + urlencode(params) if params else "")
        body = urlencode(data).encode() if method == "POST" else b""
        headers = request_headers(payload.get("headers"))
        headers += _base_headers(target.url, auth)
        headers.append(("Content-Length", str(len(body))))
        bucket = self.broker.policy.writes.product(method, target.service_host, target.path)
        if not (method == "POST" and _CREATE_MESSAGE_PATH.fullmatch(target.path) is not None):
            if bucket is not None:
                self._take_token(bucket)
            return self._exchange(method, url, headers, body)
        bucket = MESSAGES_BUCKET
        claim = self._claim(target, data)
        if isinstance(claim, HttpAnswer):
            return claim  # already sent by an earlier attempt: replay it, spend no rate-limit token
        if claim is None:
            self._take_token(bucket)
            return self._create(url, headers, body)
        ledger = self.broker.ledger
        assert ledger is not None
        try:
            if claim.reconcile_since is not None:
                found = self._reconcile(claim, target, data, auth)
                if found is not None:
                    return found
            self._take_token(bucket)
            with _storage_guard("record this send"):
                ledger.start(claim)
        except BaseException:
            _settle_quietly(ledger.release if claim.reconcile_since is None else ledger.unknown, claim)
            raise
        try:
            answer = self._create(url, headers, body)
        except OutcomeUnknownError:
            _LOGGER.warning("Send with idempotency key %r has an unknown outcome; a retry reconciles.", claim.key)
            _settle_quietly(ledger.unknown, claim)
            raise
        except BaseException:  # refused before it left (address, connection): nothing was sent
            _settle_quietly(ledger.release, claim)
            raise
        if 200 <= answer.status < 300:
            _settle_quietly(ledger.complete, claim, _message_of(answer))
        elif answer.status >= 500:  # Twilio failed mid-way: it may have created the message
            _settle_quietly(ledger.unknown, claim)
        else:  # Twilio refused it (4xx): nothing was sent, a retry may send
            _settle_quietly(ledger.release, claim)
        return answer

    def _create(self, url: str, headers: list[tuple[str, str]], body: bytes) -> HttpAnswer:
        """POST a message, waiting out Twilio's 429s (``Retry-After``, bounded by the run's time) a few times."""
        for _ in range(MAX_TOO_MANY_RETRIES):
            answer = self._exchange("POST", url, headers, body)
            wait_seconds = _retry_after_seconds(answer)
            if wait_seconds is None or not self._can_wait(wait_seconds):
                return answer
            _LOGGER.info("Twilio answered 429 to a message create of tenant %r; retrying in %.1f s.", self.tenant,
                         wait_seconds)  # fmt: skip
            time.sleep(wait_seconds)
        return self._exchange("POST", url, headers, body)

    def _exchange(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> HttpAnswer:
        answer = self.broker.transport.send(method, url, headers=headers, body=body, timeout_seconds=self._timeout())
        if 300 <= answer.status < 400:
            raise EgressDeniedError(f"Twilio answered {answer.status} (a redirect); redirects are not followed.")
        return answer

    def _reconcile(
        self, claim: Claim, target: Target, data: list[tuple[str, str]], auth: list[tuple[str, str]]
    ) -> HttpAnswer | None:
        """Look for the message an earlier attempt under *claim* may have created; record and return it if found."""
        ledger = self.broker.ledger
        assert ledger is not None
        assert claim.reconcile_since is not None
        query = SentQuery.from_form(data, claim.reconcile_since)
        filters = [("To", query.to), ("PageSize", str(RECONCILE_PAGE_SIZE))]
        if query.from_ is not None:
            filters.append(("From", query.from_))
        parts = urlsplit(target.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        path: str | None = _CREATE_MESSAGE_PATH_TAIL.sub("/Messages.json", parts.path) + "?" + urlencode(filters)
        headers = [*_base_headers(target.url, auth), ("Content-Length", "0")]
        for _ in range(RECONCILE_MAX_PAGES):
            if path is None:
                break
            try:
                answer = self._exchange("GET", origin + path, headers, b"")
            except EgressDeniedError as exc:
                outcome = exc.outcome if isinstance(exc, RequestFailedError) else Outcome.NO_ANSWER
                raise ReconcileError(
                    f"{exc} The earlier attempt's outcome is still unknown; not sent again.", outcome=outcome
                ) from None
            try:
                page = json.loads(answer.text) if answer.status == 200 else {}
                messages = list(page["messages"])
                next_path = page.get("next_page_uri")
            except (ValueError, KeyError, TypeError):
                raise ReconcileError(
                    f"Twilio answered {answer.status} when asked for recent messages; the earlier attempt's outcome "
                    "is still unknown, so the message was not sent again.",
                    outcome=Outcome.NO_ANSWER,
                ) from None
            known = ledger.recorded_sids(claim.tenant, [str(message.get("sid") or "") for message in messages])
            found = find_sent(messages, query, known)
            if found is not None:
                _LOGGER.warning("Send with idempotency key %r had reached Twilio (%s); not sent again.", claim.key,
                                found.get("sid"))  # fmt: skip
                ledger.complete(claim, found)
                return HttpAnswer(201, json.dumps(found), {"content-type": "application/json"})
            oldest = min((created_seconds(message) or 0.0 for message in messages), default=None)
            if oldest is None or oldest < claim.reconcile_since - CLOCK_SKEW_SECONDS:
                break  # pages are newest first: the rest is older than the window
            path = next_path if isinstance(next_path, str) and next_path.startswith("/") else None
        return None

    def _take_token(self, bucket: str) -> None:
        """Take one token of the tenant's *bucket*, waiting for one as far as the run's time allows."""
        limiter = self.broker.rate_limiter
        if limiter is None:
            return
        rate = self.broker.quotas.get(bucket) or self.broker.quotas[self.broker.channel_type.other_writes]
        waited = 0.0
        while True:
            with _storage_guard(f"check the {bucket} quota"):
                if limiter.acquire(self.tenant, bucket, rate):
                    return
            step = 1.0 / rate.per_second
            if waited + step > self.broker.max_rate_wait_seconds or not self._can_wait(step):
                variable = self.broker.channel_type.quota_variable(bucket)
                raise QuotaExceededError(
                    f"Twilio {bucket} are rate limited to {rate.per_second:g} per second (bursts of {rate.burst}) "
                    f"per tenant, and no quota came free in {waited:.1f} s; this request was not sent. Make fewer, "
                    f"spread them over time, or ask the platform admin to raise {variable}."
                )
            time.sleep(step)
            waited += step

    def _can_wait(self, seconds: float) -> bool:
        """True when waiting *seconds* still leaves the run time for a request (and its answer)."""
        if self.deadline is None:
            return True
        return self.deadline - self.broker.clock() - seconds > MIN_REQUEST_SECONDS

    def _claim(self, target: Target, data: list[tuple[str, str]]) -> Claim | HttpAnswer | None:
        ledger = self.broker.ledger
        if ledger is None or self.idempotency_key is None:
            return None
        self._creates += 1
        key = f"{self.idempotency_key}:{self._creates}"
        fingerprint = request_fingerprint({"path": target.path, "data": sorted(data)})
        # Another attempt of the same work still sending means its process is dying or about to answer: wait for
        # it (a dead owner's lease runs out within LEASE_SECONDS), as far as this run's time allows.
        wait_seconds = 0.0 if self.deadline is None else self.deadline - self.broker.clock() - MIN_REQUEST_SECONDS
        with _storage_guard("record this send"):
            first = ledger.claim(self.tenant, key, fingerprint, wait_seconds=max(0.0, wait_seconds))
        if isinstance(first, Claim):
            return first
        return HttpAnswer(201, json.dumps(first), {"content-type": "application/json"})

    def _timeout(self) -> float:
        if self.deadline is None:
            return REQUEST_TIMEOUT_SECONDS
        remaining = self.deadline - self.broker.clock()
        if remaining <= 0.01:
            raise EgressDeniedError("The run has no time left for another Twilio request.")
        return min(REQUEST_TIMEOUT_SECONDS, remaining)

    def _record(
        self,
        method: str,
        host: str,
        path: str,
        status: int | None,
        started: float,
        *,
        error: str | None = None,
        outcome: Outcome = Outcome.ANSWERED,
        request_id: str | None = None,
    ) -> None:
        duration_ms = (self.broker.clock() - started) * 1000
        request_id = None if request_id is None else request_id[:64]
        self.calls.append(
            EgressCall(
                method[:10],
                host[:200],
                path[:300],
                status,
                duration_ms,
                error,
                outcome=outcome,
                request_id=request_id,
            )
        )


def _base_headers(url: str, auth: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [("Host", urlsplit(url).netloc), ("Accept-Encoding", "identity"), *auth]


def _message_of(answer: HttpAnswer) -> dict[str, Any]:
    try:
        message = json.loads(answer.text)
    except ValueError:
        return {"raw": answer.text}
    return message if isinstance(message, dict) else {"raw": answer.text}


def _retry_after_seconds(answer: HttpAnswer) -> float | None:
    """Return how long Twilio asked us to wait before retrying (bounded), or None when it is not a 429."""
    if answer.status != 429:
        return None
    try:
        seconds = float(answer.headers.get("retry-after", "1"))
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.1), MAX_RETRY_AFTER_SECONDS)


class ReconcileError(RequestFailedError):
    """Raised when Twilio could not be asked whether an earlier attempt of a send went out (so it is not re-sent)."""


@contextlib.contextmanager
def _storage_guard(action: str) -> Iterator[None]:
    """Turn the store or Redis failing into an egress refusal the snippet (and the retry rules) understand."""
    try:
        yield
    except Exception as exc:
        if not is_storage_fault(exc):
            raise
        _LOGGER.error("Could not %s: %s: %s", action, type(exc).__name__, exc)
        raise PlatformFaultError(
            f"The platform could not {action} (StorageUnavailable: its database or queue is unavailable); the "
            "message was not sent. It is safe to retry later."
        ) from None


class PlatformFaultError(EgressDeniedError):
    """Raised to a snippet when the platform's own storage failed around a send; nothing was sent."""


def _settle_quietly(settle: Callable[..., None], *args: Any) -> None:
    """Record a send's outcome; if the store is down, leave the row to its lease (a later claim reconciles)."""
    try:
        settle(*args)
    except Exception as exc:
        if not is_storage_fault(exc):
            raise
        _LOGGER.error("Could not record a send's outcome (%s: %s); a later attempt reconciles.", type(exc).__name__,
                      exc)  # fmt: skip


def _outcome_of(refusal: Exception) -> Outcome:
    """Return how a request that raised *refusal* ended, from the refusal's type."""
    if isinstance(refusal, RequestFailedError):
        return refusal.outcome
    if isinstance(refusal, PlatformFaultError):
        return Outcome.PLATFORM_FAULT
    return Outcome.REFUSED


def _best_effort_host_path(url: object) -> tuple[str, str]:
    """Return the host and path of *url* for the record of a refused request (empty when it cannot be parsed)."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        parts = None
    return (parts.netloc, parts.path) if parts is not None else ("", "")

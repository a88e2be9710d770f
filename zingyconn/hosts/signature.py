"""Twilio webhook signatures: which URL Twilio signed, which secret, and whether a request's signature holds.

Twilio signs ``X-Twilio-Signature = base64(HMAC(secret, url + sorted form params))`` (HMAC-SHA1; HMAC-SHA256 when
the request carries ``X-Twilio-Webhooks-Signature-Settings: key=...,algorithm=HMAC_SHA256``). For a JSON (or any
non-form) body Twilio adds ``bodySHA256=<hex>`` to the URL's query, signs the URL alone, and the body is checked
against that hash. The signature itself is computed by ``twilio.request_validator.RequestValidator``, over the URL
without and with its default port as its ``validate`` does (Twilio signs either form), and compared in constant time.

The URL is the one *Twilio* requested, which behind a TLS-terminating proxy is not the one we see: it comes from
``--public-url`` when set, else from ``X-Forwarded-Proto``/``X-Forwarded-Host`` only when the TCP peer is a trusted
proxy, else from the request itself.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple
from urllib.parse import parse_qs, urlparse

from starlette.requests import Request
from twilio.request_validator import (
    HMAC_SHA1,
    HMAC_SHA256,
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    add_port,
    get_signature_algorithm,
    remove_port,
)

from zingyconn.connection_types import Profile
from zingyconn.errors import ZingyConnError
from zingyconn.twilio.profile import TwilioProfile

#: Algorithms we accept. Anything else named in the settings header is refused rather than "best-effort" checked:
#: an attacker must not be able to pick an algorithm we do not verify.
ALGORITHMS: Final = frozenset({HMAC_SHA1, HMAC_SHA256})

FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"


class SignatureError(ZingyConnError):
    """Raised when a webhook's ``X-Twilio-Signature`` is missing, wrong, or cannot be checked (HTTP 403)."""

    http_status = 403


class FormParams(dict[str, list[str]]):
    """Form fields with every value of a repeated name, in the ``getall`` shape RequestValidator understands."""

    def getall(self, name: str) -> list[str]:
        """Return every value of *name*."""
        return self[name]


class PublicUrl:
    """How to rebuild the URL Twilio signed.

    Args:
        base_url: ``--public-url`` (scheme, host and optional path prefix), or ``None`` to derive it per request.
        trusted_proxies: Addresses or networks (``10.0.0.0/8``) whose ``X-Forwarded-Proto``/``-Host`` are believed.

    Raises:
        ValueError: A trusted proxy that is not an IP address or network (fails at start-up, never trusts nobody).
    """

    def __init__(self, base_url: str | None = None, trusted_proxies: Iterable[str] = ()) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.trusted_proxies = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)

    def is_trusted(self, client_host: str | None) -> bool:
        """Return True when *client_host* (the TCP peer) is one of the trusted proxies."""
        if not client_host or not self.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(client_host)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)

    def client_address(self, request: Request) -> str:
        """Return the client's address: the peer, or the address a trusted proxy says it forwarded for."""
        peer = request.client.host if request.client else ""
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded and self.is_trusted(peer):
            # The proxy appends the address it saw: the last entry; earlier ones are the client's own claims.
            return forwarded.rsplit(",", 1)[-1].strip() or peer
        return peer or "unknown"

    def url_for(self, request: Request) -> str:
        """Return the full URL (with query) that the sender of *request* requested."""
        scope = request.scope
        raw_path = scope.get("raw_path") or request.url.path.encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        query = scope.get("query_string", b"").decode("latin-1")
        suffix = path + (f"?{query}" if query else "")
        if self.base_url is not None:
            return self.base_url + suffix
        # The scope's scheme and the Host header as they are; request.url (which parses and rebuilds the whole
        # URL) only for a request without a Host header.
        host = request.headers.get("host")
        scheme = scope.get("scheme") or "http"
        if host is None:
            scheme, host = request.url.scheme, request.url.netloc
        if self.is_trusted(request.client.host if request.client else None):
            scheme = _first(request.headers.get("x-forwarded-proto")) or scheme
            host = _first(request.headers.get("x-forwarded-host")) or host
        return f"{scheme}://{host}{suffix}"


def _first(value: str | None) -> str | None:
    # Proxies append: "X-Forwarded-Proto: https, http" -> the client-facing hop is the first one.
    return value.split(",", 1)[0].strip() or None if value else None


def auth_token_of(profile: Profile, *, connection: str) -> str:
    """Return the Auth Token with which Twilio signs webhooks for *profile*'s account.

    Twilio signs webhooks with the account's Auth Token, never with an API key secret. A connection whose client
    authenticates with an API key holds no Auth Token, so it cannot check signatures: it is refused (fail closed)
    rather than letting unsigned requests through, which is what peers do for API-key credentials. The same
    account may have two connections: one with an API key to send, one with the Auth Token to verify.

    Raises:
        SignatureError: The connection holds no Auth Token.
    """
    if not isinstance(profile, TwilioProfile):
        raise SignatureError(
            f"Connection {connection!r} is a {profile.connection_type} connection; Twilio signs webhooks with an "
            "Auth Token, so signatures must be checked with a Twilio connection that holds it."
        )
    token = getattr(profile, "auth_token", None) or (profile.secret if profile.api_key is None else None)
    if not token:
        raise SignatureError(
            f"Connection {connection!r} uses an API key and holds no Auth Token; Twilio signs webhooks with the "
            "Auth Token, so signatures must be checked with a connection that holds it."
        )
    return str(token)


def parse_form(body: bytes) -> FormParams:
    """Parse an ``application/x-www-form-urlencoded`` body, keeping blank values and repeated names."""
    return FormParams(parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def verify(
    *,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    form: FormParams | None,
    secrets: Iterable[str],
) -> str:
    """Check the request's ``X-Twilio-Signature`` against each of *secrets*; return the algorithm that matched.

    Args:
        url: The URL Twilio requested (see :meth:`PublicUrl.url_for`).
        headers: Request headers (case-insensitive mapping).
        body: The raw body.
        form: The parsed form when the body is form-encoded, else ``None``.
        secrets: Candidate signing secrets (the connection's Auth Token; more than one while it is rotated).

    Raises:
        SignatureError: No signature, an unsupported algorithm, a body the signature does not cover, or no match.
    """
    signature = headers.get(SIGNATURE_HEADER)
    if not signature:
        raise SignatureError(f"The request has no {SIGNATURE_HEADER} header; this hook only accepts signed requests.")
    algorithm = str(get_signature_algorithm(headers.get(SIGNATURE_SETTINGS_HEADER))).upper()
    if algorithm not in ALGORITHMS:
        raise SignatureError(f"Signature algorithm {algorithm!r} is not supported; use HMAC_SHA1 or HMAC_SHA256.")
    signed = _signed_url(url)
    params: FormParams = FormParams()
    if form is not None:
        params = form
    elif signed.body_sha256 is not None:
        # The URL alone is signed; the body must be the one whose hash it carries.
        body_hash = RequestValidator("").compute_hash(body.decode("utf-8", errors="replace"))
        if not hmac.compare_digest(body_hash.encode(), signed.body_sha256.encode()):
            raise SignatureError(f"The {SIGNATURE_HEADER} does not match this request; it was not signed by Twilio.")
    elif body:
        # A non-form body without bodySHA256 is not covered by the signature: whoever replays a signed URL could
        # attach any body. Refuse instead of running the hook on unauthenticated input.
        raise SignatureError("The request body is not covered by the signature (no bodySHA256 in the URL).")
    expected = signature.encode()
    for secret in secrets:
        validator = RequestValidator(secret)
        for candidate in signed.urls:
            computed = validator.compute_signature(candidate, params, algorithm=algorithm)
            if hmac.compare_digest(computed.encode(), expected):
                return algorithm
    raise SignatureError(f"The {SIGNATURE_HEADER} does not match this request; it was not signed by Twilio.")


class _SignedUrl(NamedTuple):
    """What the signature check needs of a URL: the forms Twilio may have signed, and its ``bodySHA256``."""

    urls: tuple[str, str]
    body_sha256: str | None


@functools.lru_cache(maxsize=1024)
def _signed_url(url: str) -> _SignedUrl:
    """Return the URL without and with its default port (what ``RequestValidator.validate`` checks) and its body hash.

    Cached: a pure function of the URL, and a hook's requests come to one URL. A caller varying the query only
    turns the cache over, at the cost of the parse it saves.
    """
    parsed = urlparse(url)
    hashes = parse_qs(parsed.query).get("bodySHA256")
    return _SignedUrl((remove_port(parsed), add_port(parsed)), hashes[0] if hashes else None)

"""What the egress broker lets through: the URL allowlist, the header allowlist, and the calls it records.

Every Twilio request a snippet makes arrives at the host as plain data (method, URL, form pairs). Before anything is
sent, :class:`UrlPolicy` turns the URL into a :class:`Target` or refuses it: only ``https://*.twilio.com`` (default
port, no user info, no fragment, a plain DNS name), or, when ``ZINGYCONN_TWILIO_BASE_URL`` names an emulator,
exactly that origin, onto which ``*.twilio.com`` URLs are mapped (and nothing else is reachable).
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from sandbox.errors import EgressDeniedError
from zingyconn.connection_types import WriteRules
from zingyconn.egress.outcome import Outcome

#: A host name as DNS spells it: labels of letters, digits and inner hyphens. Anything else (``@``, ``#``, ``\``,
#: ``%``, spaces, a trailing dot, IP literals in odd notations) is how URL-parser confusion attacks begin.
_HOST_NAME: Final = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
#: Control characters and whitespace have no place in a Twilio URL (request smuggling, header injection).
_UNSAFE_URL_CHARACTERS: Final = re.compile(r"[\x00-\x20\x7f\\]")
#: Control characters in a header value would let a snippet inject headers into the broker's request.
_CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x1f\x7f]")
TWILIO_SUFFIX: Final = ".twilio.com"
#: Path spellings a server may read differently from how the broker matched them: servers decode ``%2E`` to ``.``
#: and ``%2F`` to ``/`` before routing, and some resolve ``.``/``..`` segments and merge ``//``. Threat: POST
#: ``/Messages%2Ejson`` creates a message that the broker's rate limit and send ledger did not recognise.
_DOT_OR_EMPTY_SEGMENT: Final = re.compile(r"//|/\.\.?(?:/|$)")
_PERCENT_ESCAPE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
#: Characters that never need escaping in a path (RFC 3986 unreserved), plus the separators and ``%`` itself.
_PLAIN_PATH_CHARACTERS: Final = frozenset(string.ascii_letters + string.digits + "-._~/\\%")

#: Request headers the snippet's client may set; everything else (Authorization, Host, Cookie, Proxy-*) is dropped:
#: the broker alone decides where a request goes and with which credentials.
ALLOWED_REQUEST_HEADERS: Final = frozenset(
    {"user-agent", "x-twilio-client", "accept-charset", "content-type", "accept", "i-twilio-idempotency-token"}
)
ALLOWED_METHODS: Final = frozenset({"GET", "POST", "DELETE"})
#: Parameter names some frameworks read as the request's real method (Rails' ``_method``, the override headers spelled
#: as fields). Threat: ``GET …/Calls.json?_method=POST`` read by a server as a create that the write rules classified
#: by its written method: a free read, outside the calls quota and the deny list.
METHOD_OVERRIDE_NAMES: Final = frozenset({"_method", "x-http-method-override", "x-http-method", "x-method-override"})
#: Caps on what a request may carry (the whole request also passes the channel's own size cap).
MAX_URL_CHARACTERS: Final = 4096
MAX_FORM_PAIRS: Final = 200


@dataclass(frozen=True, slots=True)
class Target:
    """Where one checked request goes.

    Attributes:
        url: The URL actually requested (the emulator's origin when one is configured).
        host: The host (``host`` or ``host:port``) the request went to, as recorded on the run.
        path: The request path, without the query string.
        service_host: The service host the URL named (``verify.twilio.com``), also when the request goes to the
            emulator (``api.twilio.com`` for a URL on the emulator's own origin): what the write rules classify.
    """

    url: str
    host: str
    path: str
    service_host: str = "api.twilio.com"


class UrlPolicy:
    """Check request URLs against the Twilio allowlist and deny list (or map them onto the configured emulator origin).

    Args:
        base_url: The emulator origin, or ``None`` for the real API.
        writes: The deny list the target must pass (the connection type's: Twilio's is
            ``zingyconn.twilio.billing.TWILIO_WRITES``).
    """

    def __init__(self, base_url: str | None, *, writes: WriteRules) -> None:
        self.writes = writes
        self.base_url = base_url.rstrip("/") if base_url else None
        self.origin: tuple[str, str, int] | None = None
        self._base_netloc = ""
        if self.base_url is not None:
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
                raise ValueError(f"Twilio base URL must be a bare origin like http://127.0.0.1:8765, got {base_url!r}.")
            self.origin = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
            self._base_netloc = parts.netloc

    def target(self, url: object, *, method: str = "GET") -> Target:
        """Return where a *method* request to *url* may go, or raise :class:`EgressDeniedError` naming why not."""
        if not isinstance(url, str) or len(url) > MAX_URL_CHARACTERS or _UNSAFE_URL_CHARACTERS.search(url):
            raise EgressDeniedError("The request URL is not allowed: it is too long or contains unsafe characters.")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  # parses the port now: "host:99999" or "host:x" raise ValueError here
        except ValueError:
            raise EgressDeniedError("The request URL is not allowed: it cannot be parsed.") from None
        query = f"?{parts.query}" if parts.query else ""
        _refuse_method_override(name for name, _ in parse_qsl(parts.query, keep_blank_values=True))
        path = parts.path or "/"
        if _is_ambiguous_path(path):
            raise EgressDeniedError(
                "The request URL is not allowed: its path has '.' or '..' segments, '//', or percent-escaped "
                "letters, digits or '-._~/' (a server could read it as another resource)."
            )
        if self.origin is not None and self._is_base_origin(parts.scheme, parts.netloc):
            self.writes.refuse(method, "api.twilio.com", path)
            return Target(url=f"{self.base_url}{path}{query}", host=parts.netloc, path=path)
        host = self._twilio_host(parts.scheme, parts.netloc, parts.fragment, url)
        self.writes.refuse(method, host, path)
        if self.origin is not None:
            return Target(url=f"{self.base_url}{path}{query}", host=self._base_netloc, path=path, service_host=host)
        return Target(url=f"https://{host}{path}{query}", host=host, path=path, service_host=host)

    def _is_base_origin(self, scheme: str, netloc: str) -> bool:
        return f"{scheme}://{netloc}" == self.base_url

    @staticmethod
    def _twilio_host(scheme: str, netloc: str, fragment: str, url: str) -> str:
        shown = url.split("?", 1)[0][:200]
        if scheme != "https":
            raise EgressDeniedError(f"Requests to {shown!r} are not allowed: only https://*.twilio.com is reachable.")
        host = netloc.lower()
        if host.endswith(":443"):
            host = host[: -len(":443")]
        if "@" in netloc or fragment or not _HOST_NAME.fullmatch(host) or not host.endswith(TWILIO_SUFFIX):
            raise EgressDeniedError(
                f"Requests to {shown!r} are not allowed: only https://*.twilio.com is reachable "
                "(no user info, ports or fragments)."
            )
        return host


def _is_ambiguous_path(path: str) -> bool:
    """Return True when a server could route *path* as another path than the one written."""
    if _DOT_OR_EMPTY_SEGMENT.search(path):
        return True
    return any(chr(int(code, 16)) in _PLAIN_PATH_CHARACTERS for code in _PERCENT_ESCAPE.findall(path))


#: Answer fields that carry a credential. Threat: the API itself hands secrets to whoever holds the connection's
#: credentials: ``GET /Accounts/{sid}.json`` answers the Auth Token, ``POST /Keys.json`` mints an API key and answers
#: its secret, ``POST /v1/AuthTokens/Secondary`` a second token, ``POST /Tokens.json`` TURN credentials. The child
#: never holds a secret, so it gets these fields as :data:`SCRUBBED` (every other field is passed on).
SECRET_FIELDS: Final = frozenset({"auth_token", "secondary_auth_token", "secret", "password", "credential"})
SCRUBBED: Final = "[removed by zingyconn]"


def scrub_answer(text: str) -> str:
    """Return the JSON answer *text* with :data:`SECRET_FIELDS` replaced, or ``""`` when it is not JSON.

    Twilio's client reads JSON only; an answer in another format (``Accounts/{sid}.xml``, an HTML error page) is
    dropped rather than searched for secrets, since its secrets cannot be told apart from the rest.
    """
    if not text:
        return text
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return ""
    stack: list[object] = [document]
    while stack:  # iterative: an answer may nest deeper than the recursion limit
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and key.lower() in SECRET_FIELDS and value is not None:
                    node[key] = SCRUBBED
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return json.dumps(document, ensure_ascii=False)


def form_pairs(value: Any, *, what: str) -> list[tuple[str, str]]:
    """Validate *value* as a list of ``[name, value]`` string pairs (form or query parameters)."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_FORM_PAIRS:
        raise EgressDeniedError(f"The request's {what} must be a list of at most {MAX_FORM_PAIRS} [name, value] pairs.")
    pairs: list[tuple[str, str]] = []
    for pair in value:
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(type(item) is str for item in pair)):
            raise EgressDeniedError(f"The request's {what} must be a list of [name, value] string pairs.")
        pairs.append((pair[0], pair[1]))
    _refuse_method_override(name for name, _ in pairs)
    return pairs


def _refuse_method_override(names: Iterable[str]) -> None:
    """Raise :class:`EgressDeniedError` when one of *names* is a :data:`METHOD_OVERRIDE_NAMES` parameter."""
    for name in names:
        if name.strip().lower() in METHOD_OVERRIDE_NAMES:
            raise EgressDeniedError(
                f"The request parameter {name[:40]!r} is not allowed: it overrides the HTTP method, which a server "
                "could read as another request than the one checked. Use the method itself."
            )


def request_headers(value: Any) -> list[tuple[str, str]]:
    """Keep the allowed headers of *value* (a JSON object of strings); drop the rest."""
    if not isinstance(value, dict):
        return []
    return [
        (name, header)
        for name, header in value.items()
        if type(name) is str
        and type(header) is str
        and name.lower() in ALLOWED_REQUEST_HEADERS
        and not _CONTROL_CHARACTERS.search(header)
    ]


@dataclass(frozen=True, slots=True)
class EgressCall:
    """One request a run made through the broker, as recorded on the run.

    Attributes:
        method: HTTP method.
        host: Where it went (``api.twilio.com``, or the emulator's ``127.0.0.1:8765``); the refused URL's host
            when it was refused.
        path: Request path (no query string: queries carry phone numbers).
        status: The HTTP status, or ``None`` when the broker refused the request or it failed.
        duration_ms: Time spent by the broker on it.
        error: Why it was refused or failed, else ``None`` (for people: code reads ``outcome``).
        outcome: How it ended (``answered`` when ``status`` is set).
        request_id: Twilio's ``Twilio-Request-Id`` of the answer (what Twilio support asks for), if it sent one.
    """

    method: str
    host: str
    path: str
    status: int | None
    duration_ms: float
    error: str | None = None
    outcome: Outcome = Outcome.ANSWERED
    request_id: str | None = None

    @property
    def retryable(self) -> bool:
        """True when it failed for a reason outside the snippet and the same run later may succeed."""
        return self.outcome.retryable

    def to_json(self) -> dict[str, Any]:
        """Return the record as JSON (one item of a run's ``egress``)."""
        data: dict[str, Any] = {
            "method": self.method,
            "host": self.host,
            "path": self.path,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
        }
        if self.error is not None:
            data["error"] = self.error
        if self.outcome is not Outcome.ANSWERED:
            data["outcome"] = self.outcome.value
        if self.retryable:
            data["retryable"] = True
        if self.request_id is not None:
            data["request_id"] = self.request_id
        return data

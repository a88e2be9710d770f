"""Twilio's writes as the egress broker sees them: which are refused outright, and which product's quota each spends.

Two tables, both matched on a *normalised* request (:func:`normalise_host`, :func:`normalise_path`) so that no
spelling of a URL a server would route to the same resource reads differently here:

- :data:`DENIED_WRITES`: writes a snippet never needs (managing the account, its keys and sub-accounts, buying or
  releasing numbers, SIP and credential lists, account settings, deploying code, event sinks, add-ons). Refused with
  :class:`~sandbox.errors.EgressDeniedError` before any credential is looked up.
- :data:`PRODUCTS`: the billable creates by product (messages, calls, verifications, ...). Each spends one token of
  the tenant's bucket for that product; a write that no row classifies spends one of :data:`OTHER_WRITES`, so an
  unlisted paid create is metered too, never free.

A host pattern is a *service label* (``api``, ``verify``, ``accounts``...) followed by any edge and region labels
and ``.twilio.com``: ``accounts.twilio.com`` and ``accounts.sydney.au1.twilio.com`` are the same service. The
tables are Twilio's; the broker only asks :class:`TwilioWrites` (the seam a connection-type registry plugs into).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

from sandbox.errors import EgressDeniedError
from zingyconn.config import QUOTA_PREFIX
from zingyconn.egress.ratelimit import DEFAULT_MESSAGE_RATE, Rate
from zingyconn.errors import ConfigurationError

#: Methods that change something at Twilio; anything else (GET) reads. HEAD and PUT never pass the URL policy.
WRITE_METHODS: Final = frozenset({"POST", "DELETE", "PUT", "PATCH"})
#: The bucket of writes that no row of :data:`PRODUCTS` classifies.
OTHER_WRITES: Final = "other_writes"
#: Times a path is percent-decoded at most: ``%252E`` is ``%2E`` once and ``.`` twice; a server that decodes twice
#: must not see a resource this table did not.
_MAX_DECODE_ROUNDS: Final = 4
#: A format extension: everything from a last segment's first dot (``.json``, ``.xml``, ``.json.json``, any other: a
#: router matching ``Keys.*`` reads ``Keys.json.json`` and ``Keys..x`` as ``Keys``); a last segment that is only one
#: (``/Accounts/AC1/.json``) is routed as its parent.
_EXTENSION: Final = re.compile(r"\..*$", re.DOTALL)
#: Path parameters (``Keys.json;v=1``): servlet containers drop them from a segment before routing.
_PATH_PARAMETERS: Final = re.compile(r";.*$", re.DOTALL)


def normalise_host(host: str) -> str:
    """Return *host* lower-cased, without a trailing dot, user info or the default port (``API.twilio.com.:443``)."""
    host = host.rsplit("@", 1)[-1].strip().lower()
    if host.endswith(":443"):
        host = host[: -len(":443")]
    return host.rstrip(".")


def normalise_path(path: str) -> str:
    """Return *path* as a router would resolve it, case-folded, without a format suffix or trailing ``/``.

    Percent-escapes are decoded (repeatedly), compatibility characters folded (NFKC: fullwidth ``\\uff2b`` is
    ``k``), ``\\`` read as ``/``, path parameters (``;v=1``) dropped, repeated slashes merged, ``.`` and ``..``
    segments resolved, and a trailing format suffix (or a last segment that is only one) dropped:
    ``/2010-04-01//Accounts/AC1/%2E/Keys/SK1/.json`` is ``/2010-04-01/accounts/ac1/keys/sk1``.
    """
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    segments: list[str] = []
    for raw in unicodedata.normalize("NFKC", path).replace("\\", "/").split("/"):
        segment = _PATH_PARAMETERS.sub("", raw)
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment.casefold())
    while segments and not _EXTENSION.sub("", segments[-1]):
        segments.pop()
    if segments:
        segments[-1] = _EXTENSION.sub("", segments[-1])
    return "/" + "/".join(segments)


def _service(label: str) -> str:
    """Return the host pattern of Twilio service *label* at any edge and region (``verify.dublin.ie1.twilio.com``)."""
    return rf"{re.escape(label)}(?:\.[a-z0-9-]+)*\.twilio\.com"


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    """Return *pattern* compiled, once per process: on the first classification, not when the module loads.

    Why: the tables hold about fifty patterns; a run that sends no Twilio write (most ``zingyconn run`` calls, every
    other command) would otherwise pay their compilation at start-up.
    """
    return re.compile(pattern)


#: An account's resources under any dated version of the REST API (``2010-04-01``, and the legacy ``2008-08-01``
#: that still routes ``SMS/Messages``).
_ACCOUNT: Final = r"/[0-9]{4}-[0-9]{2}-[0-9]{2}/accounts/[^/]+"
_CONVERSATION: Final = r"/v1/(?:services/[^/]+/)?conversations(?:/[^/]+/(?:messages|participants))?"


@dataclass(frozen=True, slots=True)
class DeniedWrite:
    """One row of the deny list.

    Attributes:
        host: Service host pattern, a regular expression's source (see the module docstring).
        path: Pattern (a regular expression's source) the whole normalised path must match.
        methods: Methods refused (every method when empty: the service itself is off limits).
        what: What such a request does, for the refusal message.
    """

    host: str
    path: str
    methods: frozenset[str]
    what: str


def _deny(host: str, path: str, what: str, *, methods: frozenset[str] = WRITE_METHODS) -> DeniedWrite:
    return DeniedWrite(_service(host), path, methods, what)


#: Writes a snippet never needs. Threat: a snippet holding a connection's power locks the tenant out or keeps access
#: after the tenant rotated its secret (minting API keys, promoting an Auth Token, creating sub-accounts), closes or
#: suspends the account, buys numbers or add-ons billed monthly, opens SIP routes and credential lists that outlive the
#: run, deploys a Serverless function given the account's credentials (which reads the Auth Token the run never
#: sees, and keeps working after a rotation), or points an event sink or a short code at its own server.
DENIED_WRITES: Final = (
    _deny("accounts", r"/.*", "manages the account's credentials (auth tokens, API keys)", methods=frozenset()),
    _deny("iam", r"/.*", "manages the account's API keys", methods=frozenset()),
    _deny("api", r"/[0-9]{4}-[0-9]{2}-[0-9]{2}/accounts", "creates a sub-account"),
    _deny("api", _ACCOUNT, "changes, suspends or closes the account"),
    _deny("api", _ACCOUNT + r"/(?:keys|signingkeys)(?:/.*)?", "mints or deletes API or signing keys"),
    _deny("api", _ACCOUNT + r"/(?:incomingphonenumbers|availablephonenumbers)(?:/.*)?", "buys or releases numbers"),
    _deny("api", _ACCOUNT + r"/sip(?:/.*)?", "changes SIP domains, credential lists or IP access lists"),
    _deny("api", _ACCOUNT + r"/(?:outgoingcallerids|addresses)(?:/.*)?", "changes verified caller ids or addresses"),
    _deny(
        "api", _ACCOUNT + r"/(?:applications|connectapps|authorizedconnectapps)(?:/.*)?", "changes the account's apps"
    ),
    _deny("numbers", r"/.*", "buys, ports or registers numbers"),
    _deny("trunking", r"/.*", "changes SIP trunks"),
    _deny(
        "voice",
        r"/v1/(?:dialingpermissions|settings|sourceipmappings|ipranges|credentiallists)(?:/.*)?",
        "changes the account's voice settings or credential lists",
    ),
    _deny("api", _ACCOUNT + r"/(?:sms/)?shortcodes(?:/.*)?", "changes where a short code's messages and calls go"),
    _deny(
        "messaging",
        r"/v1/a2p(?:/.*)?|/v1/tollfree(?:/.*)?|/v1/services/[^/]+/compliance(?:/.*)?|/v1/services/preregisteredusa2p",
        "registers brands, campaigns or toll-free numbers",
    ),
    _deny("trusthub", r"/.*", "registers the business behind the account (customer profiles, trust products)"),
    _deny("voice", r"/v1/(?:byoctrunks|connectionpolicies)(?:/.*)?", "changes the account's SIP trunks"),
    _deny("routes", r"/.*", "changes where the account's numbers, SIP domains and trunks are routed"),
    _deny("serverless", r"/.*", "deploys code that runs with the account's credentials outside this run"),
    _deny("events", r"/.*", "streams the account's events to a sink that outlives this run"),
    _deny("preview-iam", r"/.*", "manages the organisation's users, roles and tokens"),
    _deny("oauth", r"/.*", "mints the account's OAuth tokens"),
    _deny("marketplace", r"/.*", "installs add-ons billed monthly"),
    _deny("preview", r"/(?:marketplace|hostednumbers)(?:/.*)?", "installs add-ons or orders hosted numbers"),
)


@dataclass(frozen=True, slots=True)
class Product:
    """One billable create.

    Attributes:
        name: The product's bucket name (``calls``); ``ZINGYCONN_QUOTA_<NAME>`` sets its rate.
        host: Service host pattern, a regular expression's source.
        path: Pattern (a regular expression's source) the whole normalised path must match.
        method: The method that creates (Lookup bills reads).
    """

    name: str
    host: str
    path: str
    method: str = "POST"


def _product(name: str, host: str, path: str, *, method: str = "POST") -> Product:
    return Product(name, _service(host), path, method)


#: Billable creates by product, first match wins. Threat: a snippet stuck in a loop (or a flood of webhooks)
#: placing calls, starting verifications or sending conversation messages, each billed to the tenant's account,
#: after the message quota has stopped its SMS.
PRODUCTS: Final = (
    _product("messages", "api", _ACCOUNT + r"/(?:sms/)?messages"),
    _product("calls", "api", _ACCOUNT + r"/calls|" + _ACCOUNT + r"/conferences/[^/]+/participants"),
    _product("verifications", "verify", r"/v2/services/[^/]+/(?:verifications|entities/[^/]+/factors)"),
    _product(
        "conversations", "conversations", r"/v1/(?:services/[^/]+/)?conversations(?:/[^/]+/(?:messages|participants))?"
    ),
    _product("notify", "notify", r"/v1/services/[^/]+/notifications"),
    _product("video_rooms", "video", r"/v1/rooms"),
    _product("studio_executions", "studio", r"/v[12]/flows/[^/]+/executions"),
    _product("lookups", "lookups", r"/v[12]/phonenumbers/[^/]+", method="GET"),
)

PRODUCT_NAMES: Final = (*dict.fromkeys(product.name for product in PRODUCTS), OTHER_WRITES)


#: Default quotas per tenant. They stop runaway loops and floods, not real traffic: messages keep their long-standing
#: 10/s in bursts of 100; a call or a verification costs several times a message, so their buckets are smaller.
DEFAULT_RATES: Final[Mapping[str, Rate]] = {
    "messages": DEFAULT_MESSAGE_RATE,
    "calls": Rate(1.0, 20),
    "verifications": Rate(1.0, 20),
    "conversations": Rate(5.0, 50),
    "notify": Rate(1.0, 20),
    "video_rooms": Rate(0.2, 10),
    "studio_executions": Rate(1.0, 20),
    "lookups": Rate(5.0, 50),
    OTHER_WRITES: Rate(5.0, 50),
}


def quota_variable(product: str) -> str:
    """Return the environment variable that sets *product*'s quota (``ZINGYCONN_QUOTA_CALLS``)."""
    return f"{QUOTA_PREFIX}{product.upper()}"


def quota_rates(configured: Mapping[str, tuple[float, int]]) -> dict[str, Rate]:
    """Return :data:`DEFAULT_RATES` with the *configured* ``{product: (per_second, burst)}`` applied.

    Raises:
        ConfigurationError: A configured product is not one of :data:`PRODUCT_NAMES`.
    """
    rates = dict(DEFAULT_RATES)
    for product, (per_second, burst) in configured.items():
        if product not in rates:
            raise ConfigurationError(
                f"{quota_variable(product)} names no Twilio product; the quotas are "
                f"{', '.join(quota_variable(name) for name in PRODUCT_NAMES)}."
            )
        rates[product] = Rate(per_second=per_second, burst=burst)
    return rates


class TwilioWrites:
    """The broker's view of Twilio writes: :meth:`refuse` denied ones, :meth:`product` the bucket a request spends."""

    def refuse(self, method: str, host: str, path: str) -> None:
        """Raise :class:`~sandbox.errors.EgressDeniedError` when *method* *host* *path* is on the deny list."""
        service, resource, verb = normalise_host(host), normalise_path(path), method.upper()
        for row in DENIED_WRITES:
            if (
                (not row.methods or verb in row.methods)
                and _compiled(row.host).fullmatch(service)
                and _compiled(row.path).fullmatch(resource)
            ):
                raise EgressDeniedError(
                    f"{verb} {host}{path} is not allowed: it {row.what}. Snippets and commands may use the account "
                    "(messages, calls, verifications, lookups, ...) but not manage it; see the egress page of the docs."
                )

    def product(self, method: str, host: str, path: str) -> str | None:
        """Return the quota bucket a request spends (:data:`OTHER_WRITES` for an unlisted write), or None (free)."""
        service, resource, verb = normalise_host(host), normalise_path(path), method.upper()
        for row in PRODUCTS:
            if (
                verb == row.method
                and _compiled(row.host).fullmatch(service)
                and _compiled(row.path).fullmatch(resource)
            ):
                return row.name
        return OTHER_WRITES if verb in WRITE_METHODS and verb != "DELETE" else None


TWILIO_WRITES: Final = TwilioWrites()

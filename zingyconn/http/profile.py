"""The HTTP connection profile: a base URL, what a snippet may call under it, and the one credential the host adds.

A snippet names the connection and a path; the host joins the path to :attr:`HttpProfile.base_url`, checks the
method and the path against the allowed lists, and adds the credential in the scheme :attr:`HttpProfile.auth` names:

- ``bearer``: ``Authorization: Bearer <secret>``;
- ``basic``: ``Authorization: Basic base64(<secret>)``, the secret being ``user:password``;
- ``header:NAME``: ``NAME: <secret>`` (an API key in a header, ``header:X-Api-Key``);
- ``query:NAME``: ``?NAME=<secret>`` appended to every request's query string;
- ``oauth2``: the OAuth 2 client credentials grant (RFC 6749): the host posts :attr:`HttpProfile.client_id` and
  the secret (the client secret) to :attr:`HttpProfile.token_url`, caches the access token until shortly before
  it expires, and sends ``Authorization: Bearer <access token>`` (:mod:`zingyconn.http.broker`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from zingyconn.connection_types import basic_auth
from zingyconn.errors import InvalidConnectionError
from zingyconn.http import CONNECTION_TYPE

#: Methods a connection allows when none are named.
DEFAULT_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")

#: Every method a connection may allow. Threat: ``CONNECT`` and ``TRACE`` turn the host into a tunnel or echo the
#: injected credential back to the snippet.
KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: The auth schemes a connection may use (``header:`` and ``query:`` take a name).
AUTH_SCHEMES: Final = ("bearer", "basic", "header:NAME", "query:NAME", "oauth2")

#: Request headers the credential may not be carried in. Threat: a header the HTTP layer itself sets (``Host``,
#: ``Content-Length``) would let the credential retarget or smuggle the request.
RESERVED_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-type", "cookie", "te", "upgrade"}
)

#: The longest secret accepted (API tokens are well under this; a JWT may be a few KiB).
MAX_SECRET_CHARS: Final = 8192

_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name or a query key (RFC 9110 token)
_PREFIX: Final = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
_MASKED_SECRET: Final = "********"  # noqa: S105  # what a masked secret shows, not a secret


def _invalid(message: str, *, field_name: str) -> InvalidConnectionError:
    return InvalidConnectionError(message, field=field_name)


@dataclass(frozen=True, slots=True)
class HttpProfile:
    """The base URL, the allowed calls and the credential of one HTTP connection.

    Attributes:
        base_url: ``https://host[:port][/path]``; every request goes under it (``http://`` only for a local test
            target).
        auth: ``bearer``, ``basic``, ``header:NAME`` or ``query:NAME``.
        secret: The token, ``user:password`` for ``basic``, or the API key. Never in ``repr``.
        allowed_methods: The methods a snippet may use.
        allowed_prefixes: Path prefixes under the base URL's path a snippet may call (``/`` is all of them).
        local_test_target: The one switch that lets the base URL be a loopback or private address (a local echo
            server, a test API). Threat it guards: without it, a base URL or a DNS answer pointing inside the
            network (cloud metadata, an admin port) is refused before any connection is made.
        token_url: ``oauth2`` only: the token endpoint (on the base URL's origin for a local test target).
        client_id: ``oauth2`` only: the client id (not a secret); the secret is the client secret.
        scope: ``oauth2`` only: the scope asked for, or ``None``.
    """

    base_url: str
    auth: str
    secret: str = field(default="", repr=False)
    allowed_methods: tuple[str, ...] = DEFAULT_METHODS
    allowed_prefixes: tuple[str, ...] = ("/",)
    local_test_target: bool = False
    token_url: str | None = None
    client_id: str | None = None
    scope: str | None = None

    def validate(self) -> HttpProfile:
        """Check every field and return ``self``.

        Raises:
            InvalidConnectionError: With ``field`` set to the first bad field; the message never echoes the secret.
        """
        self._validate_base_url()
        self._validate_auth()
        bad_methods = [method for method in self.allowed_methods if method not in KNOWN_METHODS]
        if not self.allowed_methods or bad_methods:
            raise _invalid(
                f"allowed_methods must name some of {', '.join(sorted(KNOWN_METHODS))} in upper case "
                f"({', '.join(map(repr, bad_methods)) or 'none'} given).",
                field_name="allowed_methods",
            )
        for prefix in self.allowed_prefixes or ("",):
            if (
                not _PREFIX.fullmatch(prefix)
                or "//" in prefix
                or any(segment in (".", "..") for segment in prefix.split("/"))
            ):
                raise _invalid(
                    f"allowed prefix {prefix!r} must be a path starting with '/' (like /v1/contacts), without "
                    "'.', '..' or empty segments.",
                    field_name="allowed_prefixes",
                )
        if not self.secret:
            raise _invalid("secret is required: give the token, the API key or user:password.", field_name="secret")
        if len(self.secret) > MAX_SECRET_CHARS or any(ord(char) < 0x20 or ord(char) == 0x7F for char in self.secret):
            raise _invalid(
                f"secret must be at most {MAX_SECRET_CHARS} printable characters; check what was piped in.",
                field_name="secret",
            )
        if self.auth == "basic" and ":" not in self.secret:
            raise _invalid("secret of a basic connection must be user:password.", field_name="secret")
        return self

    def _validate_base_url(self) -> None:
        parts = urlsplit(self.base_url)
        schemes = ("https", "http") if self.local_test_target else ("https",)
        if parts.scheme not in schemes or not parts.hostname:
            raise _invalid(
                f"base_url must be an https:// URL with a host ({self.base_url!r} given); http:// only with "
                "--local-test-target.",
                field_name="base_url",
            )
        if parts.username or parts.password or parts.query or parts.fragment or "\\" in self.base_url:
            raise _invalid(
                "base_url may not carry a user, a query or a fragment; give the credential as the secret.",
                field_name="base_url",
            )
        try:
            parts.port  # noqa: B018  # urlsplit checks the port only when it is read
        except ValueError:
            raise _invalid(f"base_url has a bad port ({self.base_url!r}).", field_name="base_url") from None
        if not self.local_test_target and _is_private_literal(parts.hostname):
            raise _invalid(
                f"base_url {self.base_url!r} is a private, loopback or link-local address; only a connection marked "
                "--local-test-target may reach one.",
                field_name="base_url",
            )

    def _validate_auth(self) -> None:
        kind, _, name = self.auth.partition(":")
        if self.auth == "oauth2":
            self._validate_oauth2()
            return
        if self.token_url is not None or self.client_id is not None or self.scope is not None:
            raise _invalid("token_url, client_id and scope are for --auth oauth2 only.", field_name="auth")
        if kind in ("bearer", "basic") and not name:
            return
        if kind in ("header", "query") and _TOKEN.fullmatch(name):
            if kind == "header" and (name.lower() in RESERVED_HEADERS):
                raise _invalid(f"auth header {name!r} is set by the host itself; name another.", field_name="auth")
            return
        raise _invalid(f"auth must be one of {', '.join(AUTH_SCHEMES)} ({self.auth!r} given).", field_name="auth")

    def _validate_oauth2(self) -> None:
        token = urlsplit(self.token_url or "")
        base = urlsplit(self.base_url)
        if token.scheme not in (("https", "http") if self.local_test_target else ("https",)) or not token.hostname:
            raise _invalid(
                "token_url must be the https:// URL of the OAuth 2 token endpoint (--token-url).",
                field_name="token_url",
            )
        if token.username or token.password or token.fragment:
            raise _invalid("token_url may not carry a user or a fragment.", field_name="token_url")
        if self.local_test_target and (token.scheme, token.netloc) != (base.scheme, base.netloc):
            raise _invalid(
                "token_url of a local test target must be on the base URL's origin (the only one it may reach).",
                field_name="token_url",
            )
        if not self.local_test_target and token.hostname and _is_private_literal(token.hostname):
            raise _invalid("token_url is a private or loopback address.", field_name="token_url")
        if not self.client_id or not _TOKEN.fullmatch(self.client_id):
            raise _invalid("client_id is required with --auth oauth2 (--client-id).", field_name="client_id")
        if self.scope is not None and any(ord(char) < 0x20 for char in self.scope):
            raise _invalid("scope may not contain control characters.", field_name="scope")

    @property
    def connection_type(self) -> str:
        """``"http"``: the store's ``type`` column of this profile."""
        return CONNECTION_TYPE

    @property
    def credential_header(self) -> str | None:
        """The lower-case name of the header the credential travels in, or ``None`` for ``query:``."""
        kind, _, name = self.auth.partition(":")
        if kind == "query":
            return None
        return "authorization" if kind in ("bearer", "basic", "oauth2") else name.lower()

    @property
    def credential_query(self) -> str | None:
        """The query key the credential travels in (``query:NAME``), else ``None``."""
        kind, _, name = self.auth.partition(":")
        return name if kind == "query" else None

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for the run masker (which adds their base64, URL- and JSON-encoded forms).

        A basic connection's ``user:password`` is listed whole (the Basic header is its base64) and its password
        alone (an API may echo it apart from the user).
        """
        if not self.secret:
            return ()
        if self.auth == "basic":
            password = self.secret.partition(":")[2]
            return (self.secret, password) if password else (self.secret,)
        return (self.secret,)

    def directory_entry(self) -> dict[str, str]:
        """What a run's child knows of the connection: its base URL (never the secret)."""
        return {"base_url": self.base_url}

    def auth_headers(self) -> list[tuple[str, str]]:
        """The headers that carry the credential (none for ``query:``, which rides in the query string, nor for
        ``oauth2``, whose access token the broker fetches)."""
        kind, _, name = self.auth.partition(":")
        if kind == "bearer":
            return [("Authorization", f"Bearer {self.secret}")]
        if kind == "basic":
            user, _, password = self.secret.partition(":")
            return [basic_auth(user, password)]
        if kind == "header":
            return [(name, self.secret)]
        return []

    def token_request(self) -> tuple[list[tuple[str, str]], bytes]:
        """``oauth2``: the client-authentication header and form body of a client-credentials token request."""
        form = [("grant_type", "client_credentials"), *([("scope", self.scope)] if self.scope else [])]
        return [basic_auth(self.client_id or "", self.secret)], urlencode(form).encode()

    def masked(self) -> dict[str, str | None]:
        """Return the profile for display: everything but the secret, which is replaced entirely."""
        return {
            "base_url": self.base_url,
            "auth": self.auth,
            "allowed_methods": ",".join(self.allowed_methods),
            "allowed_prefixes": ",".join(self.allowed_prefixes),
            "local_test_target": "yes" if self.local_test_target else "no",
            **(
                {"token_url": self.token_url, "client_id": self.client_id, "scope": self.scope}
                if self.auth == "oauth2"
                else {}
            ),
            "secret": _MASKED_SECRET if self.secret else None,
        }

    def to_json(self) -> dict[str, Any]:
        """Return the plaintext fields (only ever serialized into a sealed record)."""
        return {
            "base_url": self.base_url,
            "auth": self.auth,
            "secret": self.secret,
            "allowed_methods": list(self.allowed_methods),
            "allowed_prefixes": list(self.allowed_prefixes),
            "local_test_target": self.local_test_target,
            "token_url": self.token_url,
            "client_id": self.client_id,
            "scope": self.scope,
        }

    @classmethod
    def from_options(
        cls,
        *,
        base_url: str,
        auth: str,
        secret: str,
        methods: Iterable[str] = (),
        prefixes: Iterable[str] = (),
        local_test_target: bool = False,
        token_url: str | None = None,
        client_id: str | None = None,
        scope: str | None = None,
    ) -> HttpProfile:
        """Build a profile from what an operator typed (CLI options, console fields): items stripped, methods in
        upper case, comma-separated items split, the defaults for empty lists. Call :meth:`validate` on it."""
        method_list = [item.strip().upper() for text in methods for item in text.split(",") if item.strip()]
        prefix_list = [item.strip() for text in prefixes for item in text.split(",") if item.strip()]
        return cls(
            base_url=base_url.strip(),
            auth=auth.strip(),
            secret=secret,
            allowed_methods=tuple(method_list) or DEFAULT_METHODS,
            allowed_prefixes=tuple(prefix_list) or ("/",),
            local_test_target=local_test_target,
            token_url=token_url.strip() if token_url else None,
            client_id=client_id.strip() if client_id else None,
            scope=scope.strip() if scope else None,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HttpProfile:
        """Rebuild a profile from :meth:`to_json` output."""
        return cls(
            base_url=str(data["base_url"]),
            auth=str(data["auth"]),
            secret=str(data["secret"]),
            allowed_methods=tuple(str(method) for method in data.get("allowed_methods") or DEFAULT_METHODS),
            allowed_prefixes=tuple(str(prefix) for prefix in data.get("allowed_prefixes") or ("/",)),
            local_test_target=bool(data.get("local_test_target", False)),
            token_url=data.get("token_url"),
            client_id=data.get("client_id"),
            scope=data.get("scope"),
        )


def _is_private_literal(host: str) -> bool:
    """Whether *host* is an IP literal that is not public (a name is checked when it resolves, on every connect)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or host.endswith(".localhost")
    return not address.is_global

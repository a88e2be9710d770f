"""The Twilio connection profile: Account SID, optional API Key, and the secret that goes with them.

With an API Key the client authenticates as ``Client(api_key, secret, account_sid)``; without one the secret is the
Account's Auth Token and the client is ``Client(account_sid, auth_token)`` (Twilio's documented forms).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from zingyconn.errors import InvalidConnectionError, TwilioError, ZingyConnError

#: The ``type`` column of a Twilio connection.
CONNECTION_TYPE: Final = "twilio"
ACCOUNT_SID_PATTERN: Final = re.compile(r"AC[0-9a-f]{32}")
API_KEY_PATTERN: Final = re.compile(r"SK[0-9a-f]{32}")
AUTH_TOKEN_PATTERN: Final = re.compile(r"[0-9a-f]{32}")
API_KEY_SECRET_PATTERN: Final = re.compile(r"[A-Za-z0-9]{32}")
MASK: Final = "…"
# How long `connections test` waits for Twilio before giving up.
TEST_TIMEOUT_SECONDS: Final = 10.0


def mask_sid(sid: str) -> str:
    """Show enough of a SID to recognise it (``AC12…cdef``), not enough to copy it."""
    return f"{sid[:4]}{MASK}{sid[-4:]}" if len(sid) > 8 else MASK


def _check_sid(value: str, *, field_name: str, prefix: str, pattern: re.Pattern[str], where: str) -> None:
    if pattern.fullmatch(value):
        return
    other = {"AC": "an Account SID (account_sid)", "SK": "an API Key SID (api_key)"}
    hint = ""
    if value[:2] in other and value[:2] != prefix:
        hint = f" {value[:2]!r} starts {other[value[:2]]}; did you swap the options?"
    elif value != value.strip():
        hint = " Remove the surrounding whitespace."
    elif value[:2] == prefix and value[2:].lower() != value[2:]:
        hint = " Twilio SIDs use lowercase hex digits."
    raise InvalidConnectionError(
        f"{field_name} must be {prefix!r} followed by 32 hex digits ({len(value)} characters given).{hint} {where}",
        field=field_name,
    )


@dataclass(frozen=True, slots=True)
class TwilioProfile:
    """The credentials of one Twilio connection.

    Attributes:
        account_sid: The Account SID (``AC`` + 32 hex digits).
        api_key: An API Key SID (``SK`` + 32 hex digits), or ``None`` to authenticate with the Auth Token.
        secret: The API Key Secret when ``api_key`` is set, else the Account's Auth Token. Never in ``repr``.
    """

    account_sid: str
    api_key: str | None = None
    secret: str = field(default="", repr=False)

    def validate(self) -> TwilioProfile:
        """Check every field's format and return ``self``.

        Raises:
            InvalidConnectionError: With ``field`` set to the first bad field; the message never echoes the secret.
        """
        _check_sid(
            self.account_sid,
            field_name="account_sid",
            prefix="AC",
            pattern=ACCOUNT_SID_PATTERN,
            where="Copy it from Account Info on the Twilio Console dashboard.",
        )
        if self.api_key is not None:
            _check_sid(
                self.api_key,
                field_name="api_key",
                prefix="SK",
                pattern=API_KEY_PATTERN,
                where="Copy it from Account > API keys & tokens in the Twilio Console, or leave it out.",
            )
        self._validate_secret()
        return self

    def _validate_secret(self) -> None:
        if self.api_key is None:
            what, pattern, rule = "the Auth Token", AUTH_TOKEN_PATTERN, "32 hex digits"
            where = "Copy it from Account Info on the Twilio Console dashboard."
        else:
            what, pattern, rule = "the API Key Secret", API_KEY_SECRET_PATTERN, "32 letters and digits"
            where = "Twilio shows it once, when the API key is created; if it is lost, create a new API key."
        if not self.secret:
            raise InvalidConnectionError(f"secret is required: give {what}. {where}", field="secret")
        if self.secret[:2] in ("AC", "SK") and len(self.secret) == 34:
            raise InvalidConnectionError(
                f"secret looks like a SID, not {what}; give the secret value itself. {where}", field="secret"
            )
        if not pattern.fullmatch(self.secret):
            raise InvalidConnectionError(
                f"secret must be {what}: {rule} ({len(self.secret)} characters given). {where}", field="secret"
            )

    @property
    def username(self) -> str:
        """The HTTP Basic user: the API Key SID if set, else the Account SID."""
        return self.api_key or self.account_sid

    def secrets(self) -> tuple[str, ...]:
        """Every secret value of this profile, for masking output."""
        return (self.secret,) if self.secret else ()

    def masked(self) -> dict[str, str | None]:
        """Return the profile for display: SIDs shortened, the secret replaced entirely."""
        return {
            "account_sid": mask_sid(self.account_sid),
            "api_key": None if self.api_key is None else mask_sid(self.api_key),
            "secret": "********" if self.secret else None,
        }

    def to_json(self) -> dict[str, str | None]:
        """Return the plaintext fields (only ever serialized into a sealed record)."""
        return {"account_sid": self.account_sid, "api_key": self.api_key, "secret": self.secret}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TwilioProfile:
        """Rebuild a profile from :meth:`to_json` output."""
        return cls(account_sid=str(data["account_sid"]), api_key=data.get("api_key"), secret=str(data["secret"]))

    def build_client(self, http_client: TwilioHttpClient | None = None) -> Client:
        """Return a ``twilio.rest.Client`` authenticated with this profile."""
        if self.api_key is not None:
            return Client(self.api_key, self.secret, self.account_sid, http_client=http_client)
        return Client(self.account_sid, self.secret, http_client=http_client)


class BaseUrlHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no type information
    """A Twilio HTTP client that sends every ``https://*.twilio.com`` request to *base_url* instead (the emulator)."""

    def __init__(self, base_url: str, *, timeout: float = TEST_TIMEOUT_SECONDS) -> None:
        super().__init__(timeout=timeout)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        """Rewrite the Twilio origin in *url* to the base URL, then send the request."""
        parts, base = urlsplit(url), urlsplit(self.base_url)
        if parts.hostname and parts.hostname.endswith(".twilio.com"):
            url = urlunsplit((base.scheme, base.netloc, base.path + parts.path, parts.query, parts.fragment))
        return super().request(method, url, *args, **kwargs)


def check_credentials(profile: TwilioProfile, *, base_url: str | None = None, what: str = "the connection") -> str:
    """Make one authenticated read against Twilio (or *base_url*) and describe what answered.

    The read is ``GET /2010-04-01/Accounts/{sid}/Messages.json?PageSize=1``: it works for Auth Tokens and for
    standard API keys alike (standard keys may not read the Accounts resource itself) and sends nothing.

    Raises:
        TwilioError: Twilio answered with an error (e.g. 401 for wrong credentials).
        ZingyConnError: Twilio could not be reached.
    """
    http_client = BaseUrlHttpClient(base_url) if base_url else TwilioHttpClient(timeout=TEST_TIMEOUT_SECONDS)
    url = f"https://api.twilio.com/2010-04-01/Accounts/{profile.account_sid}/Messages.json"
    target = base_url or "https://api.twilio.com"
    try:
        response = profile.build_client(http_client).request("GET", url, params={"PageSize": 1})
    except OSError as exc:  # requests' ConnectionError/Timeout are OSErrors
        raise ZingyConnError(f"Could not reach {target} to test {what}: {exc}.") from None
    if response.status_code != 200:
        raise _twilio_error(response, what=what)
    if profile.api_key is None:
        return f"account {mask_sid(profile.account_sid)} (Auth Token)"
    return f"API key {mask_sid(profile.api_key)} on account {mask_sid(profile.account_sid)}"


def _twilio_error(response: Response, *, what: str) -> TwilioError:
    try:
        body = json.loads(response.text)
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    status, code = int(response.status_code), body.get("code")
    hint = " Check the secret (re-add the connection with --replace)." if status in (401, 403) else ""
    message = str(body.get("message") or "no error message")
    return TwilioError(
        f"Twilio rejected {what} (HTTP {status}, code {code}): {message}.{hint}",
        status=status,
        code=code if isinstance(code, int) else None,
        more_info=body.get("more_info"),
    )

"""The Twilio connection profile: Account SID, optional API Key, and the secret that goes with them.

With an API Key the client authenticates as ``Client(api_key, secret, account_sid)``; without one the secret is the
Account's Auth Token and the client is ``Client(account_sid, auth_token)`` (Twilio's documented forms).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from zingyconn.connection_types import basic_auth
from zingyconn.errors import InvalidConnectionError
from zingyconn.twilio import CONNECTION_TYPE

if TYPE_CHECKING:
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

ACCOUNT_SID_PATTERN: Final = re.compile(r"AC[0-9a-f]{32}")
API_KEY_PATTERN: Final = re.compile(r"SK[0-9a-f]{32}")
AUTH_TOKEN_PATTERN: Final = re.compile(r"[0-9a-f]{32}")
API_KEY_SECRET_PATTERN: Final = re.compile(r"[A-Za-z0-9]{32}")
MASK: Final = "…"


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
    def connection_type(self) -> str:
        """``"twilio"``: the store's ``type`` column of this profile."""
        return CONNECTION_TYPE

    @property
    def username(self) -> str:
        """The HTTP Basic user: the API Key SID if set, else the Account SID."""
        return self.api_key or self.account_sid

    def secrets(self) -> tuple[str, ...]:
        """Every secret value of this profile, for masking output."""
        return (self.secret,) if self.secret else ()

    def directory_entry(self) -> dict[str, str]:
        """What a run's child knows of the connection: the HTTP Basic user and the Account SID (never the secret)."""
        return {"username": self.username, "account_sid": self.account_sid}

    def auth_headers(self) -> list[tuple[str, str]]:
        """The broker's ``Authorization`` header: HTTP Basic with :attr:`username` and the secret (Twilio's scheme)."""
        return [basic_auth(self.username, self.secret)]

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
    def from_json(cls, data: Mapping[str, Any]) -> TwilioProfile:
        """Rebuild a profile from :meth:`to_json` output."""
        return cls(account_sid=str(data["account_sid"]), api_key=data.get("api_key"), secret=str(data["secret"]))

    def build_client(self, http_client: TwilioHttpClient | None = None) -> Client:
        """Return a ``twilio.rest.Client`` authenticated with this profile."""
        from twilio.rest import Client  # imported by the callers that talk to Twilio, not by the store

        if self.api_key is not None:
            return Client(self.api_key, self.secret, self.account_sid, http_client=http_client)
        return Client(self.account_sid, self.secret, http_client=http_client)

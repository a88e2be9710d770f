"""Twilio access tokens minted on the host: ``zingyConn.twilio(name).access_token(identity=..., grants=[...])``.

An access token (for the Voice, Video, Conversations and Sync client SDKs) is a JWT signed with an API key's secret.
A snippet must never hold that secret, so it asks the host: the request names the connection, the identity, the
grants as plain dicts (``{"type": "video", "room": "r1"}``) and a lifetime; the host checks them, signs with the
connection's API key secret (``twilio.jwt.access_token``, imported here, never in a child) and answers the JWT alone.

Refusals raise :class:`~sandbox.errors.EgressDeniedError` (bad input, no such connection, a connection without an
API key) or :class:`~sandbox.errors.QuotaExceededError` (too many tokens in one run), which the snippet sees.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import AccessTokenGrant, ChatGrant, SyncGrant, VideoGrant, VoiceGrant

from sandbox.errors import EgressDeniedError, QuotaExceededError
from zingyconn.twilio.profile import TwilioProfile

#: A token's lifetime when the snippet names none (Twilio's own default).
DEFAULT_TTL_SECONDS: Final = 3600

#: The longest lifetime a token may have (Twilio's own ceiling). Threat: a token leaks with the page or app it was
#: handed to; it then grants its rooms and calls until it expires, so a snippet cannot mint one that lives for weeks.
MAX_TTL_SECONDS: Final = 24 * 3600

#: Tokens one run may mint. Threat: a runaway loop signing tokens for thousands of identities in one run.
MAX_ACCESS_TOKENS_PER_RUN: Final = 20

#: Longest identity accepted (Twilio's client SDKs take far shorter ones); and most grants in one token.
MAX_IDENTITY_CHARS: Final = 256
MAX_GRANTS: Final = 8

#: Each grant ``type`` a snippet may name, the twilio class it becomes, and the fields it accepts (snake_case,
#: as twilio's grant classes name them). ``chat`` and ``conversations`` are the same grant (Conversations uses it).
GRANT_TYPES: Final[Mapping[str, tuple[type[AccessTokenGrant], frozenset[str]]]] = {
    "voice": (
        VoiceGrant,
        frozenset(
            {
                "incoming_allow",
                "outgoing_application_sid",
                "outgoing_application_params",
                "push_credential_sid",
                "endpoint_id",
            }
        ),
    ),
    "video": (VideoGrant, frozenset({"room"})),
    "chat": (ChatGrant, frozenset({"service_sid", "endpoint_id", "deployment_role_sid", "push_credential_sid"})),
    "conversations": (
        ChatGrant,
        frozenset({"service_sid", "endpoint_id", "deployment_role_sid", "push_credential_sid"}),
    ),
    "sync": (SyncGrant, frozenset({"service_sid", "endpoint_id"})),
}

#: Fields whose value is not a string: ``incoming_allow`` is a bool, ``outgoing_application_params`` a dict.
_BOOL_FIELDS: Final = frozenset({"incoming_allow"})
_DICT_FIELDS: Final = frozenset({"outgoing_application_params"})
_MAX_FIELD_CHARS: Final = 256


def parse_grant(index: int, grant: object) -> AccessTokenGrant:
    """Return the twilio grant described by *grant* (``{"type": ..., field: value...}``), the *index*-th given.

    Raises:
        EgressDeniedError: Not a dict, an unknown type or field, or a value of the wrong type.
    """
    where = f"grants[{index}]"
    if not isinstance(grant, dict):
        raise EgressDeniedError(f"{where} must be a dict such as {{'type': 'video', 'room': 'r1'}}.")
    kind = grant.get("type")
    if not isinstance(kind, str) or kind not in GRANT_TYPES:
        raise EgressDeniedError(f"{where} has type {kind!r}; use one of {sorted(GRANT_TYPES)}.")
    cls, fields = GRANT_TYPES[kind]
    options: dict[str, Any] = {}
    for name, value in grant.items():
        if name == "type":
            continue
        if name not in fields:
            raise EgressDeniedError(f"{where} ({kind}) has no field {name!r}; its fields are {sorted(fields)}.")
        options[name] = _field_value(where, name, value)
    return cls(**options)


def _field_value(where: str, name: str, value: object) -> object:
    if name in _BOOL_FIELDS:
        if type(value) is not bool:
            raise EgressDeniedError(f"{where}.{name} must be True or False.")
        return value
    if name in _DICT_FIELDS:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) + len(v) <= _MAX_FIELD_CHARS for k, v in value.items()
        ):
            raise EgressDeniedError(f"{where}.{name} must be a dict of short strings.")
        return dict(value)
    if not isinstance(value, str) or not value or len(value) > _MAX_FIELD_CHARS:
        raise EgressDeniedError(f"{where}.{name} must be a non-empty string of at most {_MAX_FIELD_CHARS} characters.")
    return value


def mint(profile: TwilioProfile, *, identity: object, grants: object, ttl_seconds: object, now: float) -> str:
    """Return an access token (a JWT) for *identity* with *grants*, signed with *profile*'s API key secret.

    Raises:
        EgressDeniedError: The profile has no API key, or the identity, grants or lifetime are not acceptable.
    """
    if profile.api_key is None:
        raise EgressDeniedError(
            "Access tokens are signed with an API key: this connection authenticates with the Auth Token. Save it "
            "with --api-key SK... and that key's secret (zingyconn connections add NAME --api-key ... --replace)."
        )
    if not isinstance(identity, str) or not identity or len(identity) > MAX_IDENTITY_CHARS:
        raise EgressDeniedError(f"identity must be a non-empty string of at most {MAX_IDENTITY_CHARS} characters.")
    ttl = DEFAULT_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    if type(ttl) is not int or not 0 < ttl <= MAX_TTL_SECONDS:
        raise EgressDeniedError(
            f"ttl must be a whole number of seconds from 1 to {MAX_TTL_SECONDS} (MAX_TTL_SECONDS, 24 hours); "
            f"got {ttl!r}."
        )
    if not isinstance(grants, list) or len(grants) > MAX_GRANTS:
        raise EgressDeniedError(f"grants must be a list of at most {MAX_GRANTS} dicts.")
    token = AccessToken(
        profile.account_sid,
        profile.api_key,
        profile.secret,
        grants=[parse_grant(index, grant) for index, grant in enumerate(grants)],
        identity=identity,
        nbf=int(now),
        valid_until=int(now) + ttl,
    )
    return str(token.to_jwt())


class RunAccessTokens:
    """The access tokens of one run: looks up the run tenant's connection, counts the run's tokens, mints.

    Args:
        profile_of: Returns the run tenant's connection by name, or ``None`` when there is none.
        session: The run's egress session (unused: a token is signed here and sends nothing).
        clock: Time source for ``nbf`` and ``exp``.
    """

    def __init__(
        self,
        profile_of: Callable[[str], TwilioProfile | None],
        session: object = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._profile_of = profile_of
        self._clock = clock
        self.minted = 0

    def answer(self, payload: Mapping[str, Any]) -> dict[str, str]:
        """Answer one ``twilio.access_token`` request with ``{"token": jwt}``.

        Raises:
            EgressDeniedError: No such connection, or :func:`mint` refused.
            QuotaExceededError: The run already minted :data:`MAX_ACCESS_TOKENS_PER_RUN` tokens.
        """
        if self.minted >= MAX_ACCESS_TOKENS_PER_RUN:
            raise QuotaExceededError(
                f"A run may mint at most {MAX_ACCESS_TOKENS_PER_RUN} access tokens (MAX_ACCESS_TOKENS_PER_RUN)."
            )
        name = payload.get("connection")
        profile = self._profile_of(name) if type(name) is str else None
        if profile is None:
            raise EgressDeniedError(f"No Twilio connection named {name!r}.")
        token = mint(
            profile,
            identity=payload.get("identity"),
            grants=payload.get("grants"),
            ttl_seconds=payload.get("ttl"),
            now=self._clock(),
        )
        self.minted += 1
        return {"token": token}

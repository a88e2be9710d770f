"""Accounts, API keys and HTTP Basic authentication checked the way Twilio checks it.

The default credentials are fixed, documented constants so that the demo, the docs and the tests can use them. They
protect nothing: the emulator holds no real data and binds to loopback by default.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from zingyconn.twilio.emulator.errors import authenticate_error

DEFAULT_ACCOUNT_SID: Final = "ACc0ffee00000000000000000000000001"
DEFAULT_AUTH_TOKEN: Final = "deadbeefdeadbeefdeadbeefdeadbeef"  # noqa: S105  # public demo credential; 32 hex like a real one
DEFAULT_API_KEY: Final = "SKc0ffee00000000000000000000000001"
DEFAULT_API_SECRET: Final = "emulator0api0key0secret000000000"  # noqa: S105  # public demo credential

ACCOUNT_SID_PATTERN: Final = re.compile(r"AC[0-9a-fA-F]{32}")
API_KEY_PATTERN: Final = re.compile(r"SK[0-9a-fA-F]{32}")


@dataclass(frozen=True, slots=True)
class Account:
    """A Twilio account: its SID and its Auth Token (the token also signs status callbacks)."""

    sid: str
    auth_token: str

    def __post_init__(self) -> None:
        if not ACCOUNT_SID_PATTERN.fullmatch(self.sid):
            raise ValueError(f"Account SID {self.sid!r} is not 'AC' followed by 32 hex digits.")
        if not self.auth_token:
            raise ValueError(f"Account {self.sid!r} needs a non-empty Auth Token.")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key (``SK…`` + secret) that authenticates as the account it belongs to."""

    sid: str
    secret: str
    account_sid: str

    def __post_init__(self) -> None:
        if not API_KEY_PATTERN.fullmatch(self.sid):
            raise ValueError(f"API key SID {self.sid!r} is not 'SK' followed by 32 hex digits.")
        if not self.secret:
            raise ValueError(f"API key {self.sid!r} needs a non-empty secret.")


DEFAULT_ACCOUNT: Final = Account(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)
DEFAULT_KEY: Final = ApiKey(DEFAULT_API_KEY, DEFAULT_API_SECRET, DEFAULT_ACCOUNT_SID)


class Directory:
    """Who may call the emulator: accounts by SID and API keys by SID."""

    def __init__(self, accounts: Iterable[Account], api_keys: Iterable[ApiKey] = ()) -> None:
        self.accounts: dict[str, Account] = {account.sid: account for account in accounts}
        self.api_keys: dict[str, ApiKey] = {key.sid: key for key in api_keys}
        for key in self.api_keys.values():
            if key.account_sid not in self.accounts:
                raise ValueError(f"API key {key.sid!r} belongs to unknown account {key.account_sid!r}.")

    def authenticate(self, authorization: str | None, path_account_sid: str) -> Account:
        """Return the calling account, or raise 20003/401 like Twilio.

        Accepts ``Basic base64(AC…:auth_token)`` and ``Basic base64(SK…:secret)``; the account in the path must be the
        caller's own account (a key of account A cannot read account B).
        """
        username, password = _basic_credentials(authorization)
        account = self._account_for(username, password)
        if account is None or account.sid != path_account_sid:
            raise authenticate_error()
        return account

    def _account_for(self, username: str, password: str) -> Account | None:
        expected: str | None = None
        account_sid: str | None = None
        if username in self.accounts:
            expected, account_sid = self.accounts[username].auth_token, username
        elif username in self.api_keys:
            key = self.api_keys[username]
            expected, account_sid = key.secret, key.account_sid
        # Compare in constant time even for unknown users, so timing does not reveal which SIDs exist.
        is_match = hmac.compare_digest(password.encode(), (expected or "\0").encode())
        if expected is None or not is_match or account_sid is None:
            return None
        return self.accounts[account_sid]

    def to_json(self) -> Mapping[str, object]:
        """Describe the credentials (for the CLI banner); includes secrets, so show it only to the operator."""
        return {
            "accounts": [{"sid": a.sid, "auth_token": a.auth_token} for a in self.accounts.values()],
            "api_keys": [
                {"sid": k.sid, "secret": k.secret, "account_sid": k.account_sid} for k in self.api_keys.values()
            ],
        }


def _basic_credentials(authorization: str | None) -> tuple[str, str]:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise authenticate_error()
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise authenticate_error() from None
    username, colon, password = decoded.partition(":")
    if not colon:
        raise authenticate_error()
    return username, password

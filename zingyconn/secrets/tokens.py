"""Per-tenant API tokens for the command API (``/api/v1``); only a SHA-256 of each token is stored.

A token is shown once, when it is created. A stolen copy of the database therefore yields no usable token, and a
lookup by digest needs no constant-time compare (the digest is the primary key, not a secret).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.database import read_only
from zingyconn.errors import NotFoundError
from zingyconn.names import validate_name
from zingyconn.schema import api_tokens

#: Prefix that makes a leaked token recognisable to secret scanners and in logs.
TOKEN_PREFIX: Final = "zct_"  # noqa: S105  # a public prefix, not a secret
#: 32 random bytes: unguessable, so tokens need no rate limiting against brute force.
TOKEN_BYTES: Final = 32
#: Hex digits of the digest that name a token (``tokens list``, ``tokens revoke``, the actor of a command run).
TOKEN_ID_DIGITS: Final = 12


def token_id(token: str) -> str:
    """Return the id that names *token* in listings and in the run history (never the token itself)."""
    return digest(token)[:TOKEN_ID_DIGITS]


def digest(token: str) -> str:
    """Return the stored form of *token*: its SHA-256 in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A stored token, without the token.

    Attributes:
        token_id: The first 12 hex digits of the digest (enough to name it for ``tokens revoke``).
        tenant: The tenant it acts for.
        label: Free text given at creation.
        created_at: Unix time of creation.
    """

    token_id: str
    tenant: str
    label: str | None
    created_at: float


class TokenStore:
    """Create, look up, list and revoke API tokens."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        self._clock = clock

    def create(self, tenant: str, *, label: str | None = None) -> str:
        """Create a token for *tenant* and return it; this is the only time the token itself is available."""
        validate_name(tenant, field="tenant")
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        with self._engine.begin() as conn:
            conn.execute(
                api_tokens.insert().values(
                    token_sha256=digest(token), tenant=tenant, label=label, created_at=self._clock()
                )
            )
        return token

    def tenant_for(self, token: str) -> str | None:
        """Return the tenant *token* acts for, or None when it is unknown or revoked."""
        with self._reader.connect() as conn:
            tenant = conn.execute(
                sa.select(api_tokens.c.tenant).where(api_tokens.c.token_sha256 == digest(token))
            ).scalar()
        return None if tenant is None else str(tenant)

    def list(self, tenant: str) -> list[TokenInfo]:
        """Return *tenant*'s tokens (never the tokens themselves), oldest first."""
        query = sa.select(api_tokens).where(api_tokens.c.tenant == tenant).order_by(api_tokens.c.created_at)
        with self._reader.connect() as conn:
            return [
                TokenInfo(row.token_sha256[:TOKEN_ID_DIGITS], row.tenant, row.label, row.created_at)
                for row in conn.execute(query)
            ]

    def revoke(self, tenant: str, token_id: str) -> None:
        """Revoke *tenant*'s token whose id (digest prefix, at least 8 digits) is *token_id*."""
        if len(token_id) < 8 or not all(c in "0123456789abcdef" for c in token_id):
            raise NotFoundError(f"Tenant {tenant!r} has no token with id {token_id!r}.")
        condition = sa.and_(api_tokens.c.tenant == tenant, api_tokens.c.token_sha256.startswith(token_id))
        with self._engine.begin() as conn:
            if not conn.execute(api_tokens.delete().where(condition)).rowcount:
                raise NotFoundError(f"Tenant {tenant!r} has no token with id {token_id!r}.")

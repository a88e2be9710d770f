"""Console sessions kept in the database, bound to the token that opened them.

Threat: a console session outliving the right that made it. A session is a row in ``console_sessions``; the
browser's cookie carries only its random id (the row keeps the id's SHA-256). A session ends, for every copy of the
cookie at once, when:

- its owner signs out (the row is deleted);
- the token that signed in is revoked (``zingyconn tokens revoke``: every lookup checks that the tenant token still
  exists) or, for the operator, ``ZINGYCONN_ADMIN_TOKEN`` is changed (the row keeps the token's digest);
- it has been idle for :attr:`SessionPolicy.idle_seconds` or open for :attr:`SessionPolicy.absolute_seconds`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.schema import api_tokens, console_sessions
from zingyconn.secrets.tokens import digest

#: 32 random bytes: a session id cannot be guessed, only stolen (and a stolen one dies with its session).
SESSION_ID_BYTES: Final = 32
#: A session's last-seen time is written at most this often (each console page would otherwise write a row).
TOUCH_INTERVAL_SECONDS: Final = 30.0


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long a console session lasts.

    Attributes:
        idle_seconds: Ended after this long without a request (``ZINGYCONN_SESSION_IDLE_SECONDS``, 30 min).
        absolute_seconds: Ended this long after sign-in, however active (``ZINGYCONN_SESSION_MAX_SECONDS``, 8 h).
    """

    idle_seconds: float = 30 * 60
    absolute_seconds: float = 8 * 3600


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A live session.

    Attributes:
        tenant: The tenant it may manage, or ``None`` for the operator (every tenant).
        actor: Who it is, for the audit trail: ``"operator"`` or ``"token <id>"`` (the id ``tokens list`` shows).
        created_at: Unix time of sign-in.
    """

    tenant: str | None
    actor: str
    created_at: float


def actor_of(tenant: str | None, credential_sha256: str) -> str:
    """Return the audit name of whoever signed in with the token of digest *credential_sha256*."""
    return "operator" if tenant is None else f"token {credential_sha256[:12]}"


class SessionStore:
    """Start, resume and end console sessions.

    Args:
        engine: The store's database.
        admin_token: The operator token now configured (``None``: no operator sessions resume).
        policy: Idle and absolute timeouts.
        clock: Unix time (injected so tests move time instead of sleeping).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        admin_token: str | None,
        policy: SessionPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._operator_sha256 = None if admin_token is None else digest(admin_token)
        self.policy = policy or SessionPolicy()
        self._clock = clock

    def start(self, *, tenant: str | None, token: str) -> tuple[str, ConsoleSession]:
        """Open a session for whoever signed in with *token*; return its id (for the cookie) and the session.

        Expired sessions are deleted on the way, so the table holds only live ones (and those idle since).
        """
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        now, credential = self._clock(), digest(token)
        with self._engine.begin() as conn:
            conn.execute(console_sessions.delete().where(self._expired(now)))
            conn.execute(
                console_sessions.insert().values(
                    id_sha256=digest(session_id),
                    tenant=tenant,
                    credential_sha256=credential,
                    created_at=now,
                    last_seen_at=now,
                )
            )
        return session_id, ConsoleSession(tenant=tenant, actor=actor_of(tenant, credential), created_at=now)

    def resume(self, session_id: str) -> ConsoleSession | None:
        """Return the live session with *session_id*, or ``None`` when it ended (and delete it if it just did)."""
        key, now = digest(session_id), self._clock()
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(console_sessions).where(console_sessions.c.id_sha256 == key)).first()
            if row is None:
                return None
            if not self._is_live(conn, row, now):
                conn.execute(console_sessions.delete().where(console_sessions.c.id_sha256 == key))
                return None
            if now - row.last_seen_at >= TOUCH_INTERVAL_SECONDS:
                conn.execute(
                    console_sessions.update().where(console_sessions.c.id_sha256 == key).values(last_seen_at=now)
                )
        return ConsoleSession(
            tenant=row.tenant, actor=actor_of(row.tenant, row.credential_sha256), created_at=row.created_at
        )

    def end(self, session_id: str) -> None:
        """End the session (sign-out): every copy of its cookie stops working."""
        with self._engine.begin() as conn:
            conn.execute(console_sessions.delete().where(console_sessions.c.id_sha256 == digest(session_id)))

    def _is_live(self, conn: sa.Connection, row: sa.Row[tuple[object, ...]], now: float) -> bool:
        if now - row.created_at >= self.policy.absolute_seconds or now - row.last_seen_at >= self.policy.idle_seconds:
            return False
        if row.tenant is None:
            return self._operator_sha256 is not None and secrets.compare_digest(
                row.credential_sha256, self._operator_sha256
            )
        owner = conn.execute(
            sa.select(api_tokens.c.tenant).where(api_tokens.c.token_sha256 == row.credential_sha256)
        ).scalar()
        return bool(owner == row.tenant)

    def _expired(self, now: float) -> sa.ColumnElement[bool]:
        return sa.or_(
            console_sessions.c.created_at <= now - self.policy.absolute_seconds,
            console_sessions.c.last_seen_at <= now - self.policy.idle_seconds,
        )

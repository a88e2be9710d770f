"""Send de-duplication: the same idempotency key within 24 hours returns the first message instead of a second SMS.

A POST to Twilio's Messages resource is not idempotent (twilio-ruby#519: a retry after a timeout can double-send),
so a caller that may retry (a task attempt, a flaky network, a double-clicked button) passes a key, and the
``sent_messages`` table remembers what that key sent. Concurrency: the key is *claimed* with an INSERT before the
API call (the primary key makes the database pick exactly one winner among concurrent duplicates, on SQLite and
PostgreSQL alike); the row moves from ``"sending"`` to ``"sent"`` with the message once Twilio answered.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.errors import IdempotencyConflictError
from zingyconn.schema import sent_messages

#: How long a key is remembered; Stripe and Twilio's own webhook tokens use the same 24-hour horizon.
WINDOW_SECONDS: Final = 24 * 3600
SENDING: Final = "sending"
SENT: Final = "sent"


def request_fingerprint(request: Mapping[str, Any]) -> str:
    """Return the SHA-256 of *request* as canonical JSON (sorted keys; dates and other values via ``str``)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class SendLedger:
    """The ``sent_messages`` table: claim a key before sending, record the result after.

    Usage::

        first = ledger.claim(tenant, key, fingerprint)
        if first is not None:
            return first                      # already sent within the window
        try:
            message = send()
        except ...:
            ledger.release(tenant, key)      # Twilio refused: nothing was sent, a retry may send
            raise
        ledger.complete(tenant, key, message)
    """

    def __init__(
        self, engine: Engine, *, clock: Callable[[], float] = time.time, window_seconds: float = WINDOW_SECONDS
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._window_seconds = window_seconds

    def claim(self, tenant: str, key: str, fingerprint: str, *, shown_as: str | None = None) -> dict[str, Any] | None:
        """Claim *key* for a new send, or return the message it already sent (*shown_as* names it in errors).

        Returns:
            ``None`` when the caller now owns the key and must send; else the first send's message.

        Raises:
            IdempotencyConflictError: Another send with this key has not finished (or its outcome is unknown),
                or the key was used for a request with a different fingerprint.
        """
        for _ in range(3):  # insert, or expire a stale row and insert again; a third round only under a race
            if self._insert(tenant, key, fingerprint):
                return None
            with self._engine.begin() as conn:
                row = conn.execute(sa.select(sent_messages).where(*self._where(tenant, key))).one_or_none()
                if row is None:
                    continue  # released between our INSERT and SELECT: try to claim again
                if row.created_at <= self._clock() - self._window_seconds:
                    stale = sent_messages.c.created_at == row.created_at  # only the row we saw, not a new claim
                    conn.execute(sent_messages.delete().where(*self._where(tenant, key), stale))
                    continue
                return self._answer(row, key if shown_as is None else shown_as, fingerprint)
        raise IdempotencyConflictError(f"idempotencyKey {shown_as or key!r} is contended by concurrent sends; retry.")

    def complete(self, tenant: str, key: str, message: Mapping[str, Any]) -> None:
        """Record that the send of *key* produced *message*."""
        with self._engine.begin() as conn:
            conn.execute(
                sent_messages.update().where(*self._where(tenant, key)).values(state=SENT, message=dict(message))
            )

    def release(self, tenant: str, key: str) -> None:
        """Forget *key* after a send that certainly sent nothing, so that a retry can send."""
        with self._engine.begin() as conn:
            conn.execute(sent_messages.delete().where(*self._where(tenant, key), sent_messages.c.state == SENDING))

    def purge(self) -> int:
        """Delete every key older than the window; return how many were deleted."""
        with self._engine.begin() as conn:
            cutoff = self._clock() - self._window_seconds
            return conn.execute(sent_messages.delete().where(sent_messages.c.created_at <= cutoff)).rowcount

    def _insert(self, tenant: str, key: str, fingerprint: str) -> bool:
        values = {"tenant": tenant, "key": key, "state": SENDING, "created_at": self._clock()}
        try:
            with self._engine.begin() as conn:
                conn.execute(sent_messages.insert().values(**values, request_sha256=fingerprint))
        except sa.exc.IntegrityError:
            return False
        return True

    @staticmethod
    def _where(tenant: str, key: str) -> tuple[sa.ColumnElement[bool], ...]:
        return (sent_messages.c.tenant == tenant, sent_messages.c.key == key)

    @staticmethod
    def _answer(row: sa.Row[Any], key: str, fingerprint: str) -> dict[str, Any]:
        if row.request_sha256 not in (None, fingerprint):
            raise IdempotencyConflictError(
                f"idempotencyKey {key!r} was already used for a different message in the last 24 hours; "
                "use a new key for a new message."
            )
        if row.state != SENT or row.message is None:
            raise IdempotencyConflictError(
                f"A message with idempotencyKey {key!r} is still being sent, or its outcome is unknown (the "
                "connection to Twilio failed mid-request). Check listMessages before sending it with a new key."
            )
        return dict(row.message)

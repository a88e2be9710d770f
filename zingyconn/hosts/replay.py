"""Webhook de-duplication on ``I-Twilio-Idempotency-Token``: run once, replay the stored response afterwards.

Twilio retries a webhook (timeouts, 5xx, connection errors) with the same idempotency token. The first request
*claims* the token with an ``INSERT`` into ``webhook_responses``; the primary key makes that atomic across threads,
processes and machines sharing the database, so two concurrent duplicates never both run. The winner stores its
response; a duplicate waits for it (up to the hook's wall limit) and replays it byte for byte.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.schema import webhook_responses

#: Longest token stored (the column width); longer ones are not Twilio's and are refused.
MAX_TOKEN_LENGTH: Final = 200

#: How often a duplicate polls for the first request's response while it is still running.
POLL_SECONDS: Final = 0.05


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response kept for replay.

    Attributes:
        status_code: HTTP status.
        media_type: Content type.
        body: Body bytes.
        run_id: The run that produced it.
    """

    status_code: int
    media_type: str
    body: bytes
    run_id: str | None


class ReplayStore:
    """Claims idempotency tokens and stores the responses to replay."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    def claim(self, tenant: str, hook: str, token: str, *, stale_after_seconds: float) -> bool:
        """Try to become the one request that runs for *token*; return False if another request already has.

        A claim older than *stale_after_seconds* that never got a response (its process died mid-run) is taken
        over, so a crash does not block the token forever.
        """
        key = _key(tenant, hook, token)
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    webhook_responses.insert().values(
                        tenant=tenant, hook=hook, token=token, state="running", created_at=self._clock()
                    )
                )
        except sa.exc.IntegrityError:
            cutoff = self._clock() - stale_after_seconds
            with self._engine.begin() as conn:
                # Compare-and-set: of several requests that find the same stale claim, exactly one updates it.
                taken = conn.execute(
                    webhook_responses.update()
                    .where(key, webhook_responses.c.state == "running", webhook_responses.c.created_at < cutoff)
                    .values(created_at=self._clock())
                ).rowcount
            return bool(taken)
        return True

    def store(self, tenant: str, hook: str, token: str, response: StoredResponse) -> None:
        """Store the claimed token's response for replay."""
        with self._engine.begin() as conn:
            conn.execute(
                webhook_responses.update()
                .where(_key(tenant, hook, token))
                .values(
                    state="done",
                    status_code=response.status_code,
                    media_type=response.media_type,
                    body=response.body,
                    run_id=response.run_id,
                )
            )

    def release(self, tenant: str, hook: str, token: str) -> None:
        """Give up a claim without a response (our failure, not the snippet's), so Twilio's retry runs again."""
        with self._engine.begin() as conn:
            conn.execute(
                webhook_responses.delete().where(_key(tenant, hook, token), webhook_responses.c.state == "running")
            )

    def fetch(self, tenant: str, hook: str, token: str) -> StoredResponse | None:
        """Return the stored response for *token*, or None while it is still running (or was released)."""
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(webhook_responses).where(_key(tenant, hook, token), webhook_responses.c.state == "done")
            ).first()
        if row is None:
            return None
        return StoredResponse(
            status_code=row.status_code, media_type=row.media_type or "", body=row.body or b"", run_id=row.run_id
        )

    async def wait(self, tenant: str, hook: str, token: str, *, timeout_seconds: float) -> StoredResponse | None:
        """Wait until the first request stored its response; None if it did not within *timeout_seconds*."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            stored = await asyncio.to_thread(self.fetch, tenant, hook, token)
            if stored is not None or time.monotonic() >= deadline:
                return stored
            await asyncio.sleep(POLL_SECONDS)


def _key(tenant: str, hook: str, token: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        webhook_responses.c.tenant == tenant, webhook_responses.c.hook == hook, webhook_responses.c.token == token
    )

"""Webhook de-duplication on ``I-Twilio-Idempotency-Token``: run once, replay the stored response afterwards.

Twilio retries a webhook (timeouts, 5xx, connection errors) with the same idempotency token. The first request
*claims* the token with an ``INSERT`` into ``webhook_responses``; the primary key makes that atomic across threads,
processes and machines sharing the database, so two concurrent duplicates never both run. The winner stores its
response (in the same transaction as its run's history row when the host writes through a
:class:`~zingyconn.group_commit.GroupWriter`); a duplicate waits for it (up to the hook's wall limit) and replays
it byte for byte. The claim carries a lease its process renews while the run goes on (:mod:`zingyconn.leases`):
when the process dies, the lease runs out within seconds and the next retry (Twilio's first comes after about
15 s) takes the claim over and runs.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.database import DriverStatement, upsert_insert
from zingyconn.group_commit import GroupWriter
from zingyconn.leases import LeaseKeeper, process_owner, shared_keeper
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

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], float] = time.time,
        keeper: LeaseKeeper | None = None,
        writer: GroupWriter | None = None,
    ) -> None:
        self._engine = engine
        self._writer = writer
        self._clock = clock
        self._keeper = keeper if keeper is not None else shared_keeper()
        self._held: set[tuple[str, str, str]] = set()  # claims of this store still running: their leases renew
        self._held_lock = threading.Lock()
        self._keeper.register(self._renew)
        # Built and compiled once, with bound parameters: the group writer runs the stores of one batch as one
        # executemany. A taken token is no error (ON CONFLICT DO NOTHING inserts no row): in a
        # batch's transaction an error would undo the other requests' writes too (and abort the whole transaction on
        # PostgreSQL).
        self._insert_claim = DriverStatement(
            engine,
            upsert_insert(engine)(webhook_responses)
            .values(
                tenant=sa.bindparam("key_tenant"),
                hook=sa.bindparam("key_hook"),
                token=sa.bindparam("key_token"),
                state="running",
                created_at=sa.bindparam("now"),
                owner=sa.bindparam("owner"),
                lease_until=sa.bindparam("lease_until"),
            )
            .on_conflict_do_nothing(
                index_elements=[webhook_responses.c.tenant, webhook_responses.c.hook, webhook_responses.c.token]
            ),
        )
        self._take_over = DriverStatement(
            engine,
            webhook_responses.update()
            .where(
                _bound_key(),
                webhook_responses.c.state == "running",
                webhook_responses.c.lease_until < sa.bindparam("now"),
            )
            .values(owner=sa.bindparam("owner"), lease_until=sa.bindparam("lease_until")),
        )
        self._store_response = DriverStatement(
            engine,
            webhook_responses.update()
            .where(_bound_key())
            .values(
                state="done",
                status_code=sa.bindparam("status_code"),
                media_type=sa.bindparam("media_type"),
                body=sa.bindparam("body"),
                run_id=sa.bindparam("run_id"),
            ),
        )

    def claim(self, tenant: str, hook: str, token: str) -> bool:
        """Try to become the one request that runs for *token*; return False if a live request already has.

        A claim whose lease ran out without a response (its process died mid-run) is taken over. Committed when
        this returns (with a *writer*: in its next batch, a statement in a shared transaction).
        """
        if self._writer is not None:
            claimed = self._writer.call(functools.partial(self._claim, tenant=tenant, hook=hook, token=token))
        else:
            with self._engine.begin() as conn:
                claimed = self._claim(conn, tenant=tenant, hook=hook, token=token)
        if claimed:
            with self._held_lock:
                self._held.add((tenant, hook, token))
        return claimed

    def _claim(self, conn: sa.Connection, *, tenant: str, hook: str, token: str) -> bool:
        now = self._clock()
        row = {
            "key_tenant": tenant,
            "key_hook": hook,
            "key_token": token,
            "owner": process_owner(),
            "lease_until": now + self._keeper.lease_seconds,
            "now": now,
        }
        if self._insert_claim.execute(conn, [row]).rowcount:
            return True
        # Compare-and-set: of several requests that find the same stale claim, exactly one updates it.
        return bool(self._take_over.execute(conn, [row]).rowcount)

    def store(self, tenant: str, hook: str, token: str, response: StoredResponse) -> None:
        """Store the claimed token's response for replay (with a *writer*: in its next batch, waiting for it)."""
        self._drop(tenant, hook, token)
        row = {
            "key_tenant": tenant,
            "key_hook": hook,
            "key_token": token,
            "status_code": response.status_code,
            "media_type": response.media_type,
            "body": response.body,
            "run_id": response.run_id,
        }
        if self._writer is not None:
            self._writer.write((self._store_response, row))
            return
        with self._engine.begin() as conn:
            self._store_response.execute(conn, [row])

    def release(self, tenant: str, hook: str, token: str) -> None:
        """Give up a claim without a response (our failure, not the snippet's), so Twilio's retry runs again."""
        self._drop(tenant, hook, token)
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

    def _drop(self, tenant: str, hook: str, token: str) -> None:
        with self._held_lock:
            self._held.discard((tenant, hook, token))

    def _renew(self, _lease_until: float) -> None:
        with self._held_lock:
            held = sorted(self._held)
        if not held:
            return
        lease_until = self._clock() + self._keeper.lease_seconds
        with self._engine.begin() as conn:
            for tenant, hook, token in held:
                conn.execute(
                    webhook_responses.update()
                    .where(
                        _key(tenant, hook, token),
                        webhook_responses.c.state == "running",
                        webhook_responses.c.owner == process_owner(),
                    )
                    .values(lease_until=lease_until)
                )


def _bound_key() -> sa.ColumnElement[bool]:
    """The row of one token, by the bound parameters ``key_tenant``, ``key_hook`` and ``key_token``."""
    return sa.and_(
        webhook_responses.c.tenant == sa.bindparam("key_tenant"),
        webhook_responses.c.hook == sa.bindparam("key_hook"),
        webhook_responses.c.token == sa.bindparam("key_token"),
    )


def _key(tenant: str, hook: str, token: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        webhook_responses.c.tenant == tenant, webhook_responses.c.hook == hook, webhook_responses.c.token == token
    )

"""The send ledger: each idempotency key sends at most one message in 24 hours, and an unknown outcome is looked up.

A POST to Twilio's Messages resource is not idempotent (twilio-ruby#519: a retry after a timeout can double-send),
so work that may be retried (a task attempt, a replayed webhook, a command retried after a dropped connection)
passes a key, and the ``sent_messages`` table remembers what that key did. Each key moves through::

    (free) --claim--> claimed --start--> sending --complete--> sent      (replayed for 24 h)
                         |                  |---release-----> (free)     (Twilio refused it: nothing was sent)
                         |                  '---unknown-----> unknown    (no answer: it may or may not have gone)
                         '---release------> (free)                       (refused before the request left)

A ``claimed`` or ``sending`` row belongs to one process (``owner``) under a lease that process renews while it
lives (:mod:`zingyconn.leases`). A later claim takes over a row whose lease ran out or whose outcome is ``unknown``;
if a request may have left (``sending_at`` is set), the new owner first *reconciles*: it lists the account's
messages to the same number from the same sender created since then (:func:`find_sent`), and records a match as
the key's message instead of sending again. Only when Twilio has no such message is the message sent again.

Residual risk, documented for users: a message that matches (same recipient, sender and body, created in the
window) but was sent by other code (not through this ledger) is taken for ours, so ours is not sent; and a
process frozen longer than a lease that then resumes its request may race the reconciliation.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.errors import IdempotencyConflictError
from zingyconn.leases import LeaseKeeper, process_owner, shared_keeper
from zingyconn.schema import sent_messages

#: How long a key is remembered; Stripe and Twilio's own webhook tokens use the same 24-hour horizon.
WINDOW_SECONDS: Final = 24 * 3600
CLAIMED: Final = "claimed"
SENDING: Final = "sending"
SENT: Final = "sent"
UNKNOWN: Final = "unknown"
#: Reconciliation looks this far before the first attempt's ``sending_at``: Twilio's ``date_created`` has whole
#: seconds and its clock is not ours.
CLOCK_SKEW_SECONDS: Final = 120.0
#: What a Twilio trial account puts before every body.
TRIAL_PREFIX: Final = "Sent from your Twilio trial account - "
#: How often a claim waiting for another owner's send looks again.
_POLL_SECONDS: Final = 0.2


def request_fingerprint(request: Mapping[str, Any]) -> str:
    """Return the SHA-256 of *request* as canonical JSON (sorted keys; dates and other values via ``str``)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Claim:
    """A key this process now owns and must send, release or settle.

    Attributes:
        tenant: Owning tenant.
        key: The ledger key.
        shown_as: How errors name the key.
        reconcile_since: Unix time an earlier request under this key may have left; when set, ask Twilio
            (:func:`find_sent`) before sending again. ``None``: no request under this key ever left.
    """

    tenant: str
    key: str
    shown_as: str
    reconcile_since: float | None


@dataclass(frozen=True, slots=True)
class SentQuery:
    """What a message the reconciliation looks for has: recipient, sender or service, body; created since when."""

    to: str
    from_: str | None
    service: str | None
    body: str
    since: float

    @classmethod
    def from_form(cls, data: Iterable[tuple[str, str]], since: float) -> SentQuery:
        """Build the query from the form fields of a Messages POST (``To``, ``From``, ``MessagingServiceSid``...)."""
        form = dict(data)
        return cls(form.get("To", ""), form.get("From"), form.get("MessagingServiceSid"), form.get("Body", ""), since)


def find_sent(candidates: Iterable[Mapping[str, Any]], query: SentQuery, known_sids: set[str]) -> dict[str, Any] | None:
    """Return the oldest of *candidates* (Twilio message JSON) that is the message *query* describes, or ``None``.

    Messages whose SID is in *known_sids* are already the outcome of another key, and are never taken.
    """
    matches = []
    for message in candidates:
        created = created_seconds(message)
        body = str(message.get("body") or "")
        if (
            message.get("sid") not in known_sids
            and message.get("to") == query.to
            and (query.from_ is None or message.get("from") == query.from_)
            and (query.service is None or message.get("messaging_service_sid") == query.service)
            and body in (query.body, TRIAL_PREFIX + query.body)
            and created is not None
            and created >= query.since - CLOCK_SKEW_SECONDS
        ):
            matches.append((created, dict(message)))
    return min(matches, key=lambda match: match[0])[1] if matches else None


def created_seconds(message: Mapping[str, Any]) -> float | None:
    """Return a message's ``date_created`` (the API's RFC 2822, or ISO 8601) as Unix time; None if unreadable."""
    value = message.get("date_created")
    if not isinstance(value, str):
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()  # the API's RFC 2822 dates
    except (TypeError, ValueError, IndexError):
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()  # message_to_json's ISO dates
    except ValueError:
        return None


class SendLedger:
    """The ``sent_messages`` table: claim a key before sending, record what happened after.

    Usage::

        claim = ledger.claim(tenant, key, fingerprint)
        if not isinstance(claim, Claim):
            return claim                          # already sent within the window: its message
        if claim.reconcile_since is not None:
            found = find_sent(list_recent(), query, ledger.recorded_sids(tenant))
            if found: ledger.complete(claim, found); return found
        ledger.start(claim)                       # the request is about to leave
        try:
            message = send()
        except Refused:   ledger.release(claim)   # nothing was sent: a retry may send
        except NoAnswer:  ledger.unknown(claim)   # a retry reconciles first
        ledger.complete(claim, message)
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], float] = time.time,
        window_seconds: float = WINDOW_SECONDS,
        keeper: LeaseKeeper | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._window_seconds = window_seconds
        self._keeper = keeper if keeper is not None else shared_keeper()
        self._held: set[tuple[str, str]] = set()
        self._held_lock = threading.Lock()
        self._keeper.register(self._renew)

    def claim(
        self, tenant: str, key: str, fingerprint: str, *, shown_as: str | None = None, wait_seconds: float = 0.0
    ) -> dict[str, Any] | Claim:
        """Claim *key* for a send, or return the message it already sent (*shown_as* names it in errors).

        A key whose earlier owner died, or whose outcome is unknown, is taken over (see :class:`Claim`). A key
        another live process is sending is waited for, up to *wait_seconds*.

        Returns:
            The first send's message, or a :class:`Claim` when the caller must send.

        Raises:
            IdempotencyConflictError: Another live send holds the key, or the key was used for another request.
        """
        shown = key if shown_as is None else shown_as
        give_up = time.monotonic() + wait_seconds
        while True:
            if self._insert(tenant, key, fingerprint):
                return self._hold(Claim(tenant, key, shown, None))
            with self._engine.begin() as conn:
                row = conn.execute(sa.select(sent_messages).where(*self._where(tenant, key))).one_or_none()
                if row is None:
                    continue  # released between our INSERT and SELECT: try to claim again
                now = self._clock()
                if row.created_at <= now - self._window_seconds:
                    stale = sent_messages.c.created_at == row.created_at  # only the row we saw, not a new claim
                    conn.execute(sent_messages.delete().where(*self._where(tenant, key), stale))
                    continue
                if row.request_sha256 not in (None, fingerprint):
                    raise IdempotencyConflictError(
                        f"idempotencyKey {shown!r} was already used for a different message in the last 24 hours; "
                        "use a new key for a new message."
                    )
                if row.state == SENT and row.message is not None:
                    return dict(row.message)
                if row.state == UNKNOWN or row.lease_until is None or row.lease_until <= now:
                    if self._take_over(conn, row):
                        return self._hold(Claim(tenant, key, shown, row.sending_at))
                    continue
            if time.monotonic() >= give_up:
                raise IdempotencyConflictError(
                    f"A message with idempotencyKey {shown!r} is being sent by another request right now; retry "
                    "in a few seconds to get its outcome."
                )
            time.sleep(_POLL_SECONDS)

    def recorded_sids(self, tenant: str, sids: Iterable[str]) -> set[str]:
        """Return which of *sids* are already the recorded message of some key of *tenant*."""
        wanted = [sid for sid in sids if sid]
        if not wanted:
            return set()
        query = sa.select(sent_messages.c.sid).where(sent_messages.c.tenant == tenant, sent_messages.c.sid.in_(wanted))
        with self._engine.connect() as conn:
            return {str(sid) for sid in conn.execute(query).scalars()}

    def start(self, claim: Claim) -> None:
        """Record that the request of *claim* is about to leave (``claimed -> sending``).

        Raises:
            IdempotencyConflictError: The claim was lost (this process stalled past its lease and another took
                the key over): nothing must be sent.
        """
        now = self._clock()
        values = {"state": SENDING, "sending_at": sa.func.coalesce(sent_messages.c.sending_at, now)}
        with self._engine.begin() as conn:
            moved = conn.execute(
                sent_messages.update().where(*self._mine(claim), sent_messages.c.state == CLAIMED).values(**values)
            ).rowcount
        if not moved:
            self._drop(claim)
            raise IdempotencyConflictError(
                f"The claim of idempotencyKey {claim.shown_as!r} was taken over by another request; not sent."
            )

    def complete(self, claim: Claim, message: Mapping[str, Any]) -> None:
        """Record that *claim*'s key produced *message* (sent by this process, or found by reconciliation)."""
        sid = message.get("sid")
        values = {
            "state": SENT,
            "message": dict(message),
            "sid": str(sid)[:64] if sid else None,
            "owner": None,
            "lease_until": None,
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(sent_messages.update().where(*self._where(claim.tenant, claim.key)).values(**values))
        finally:
            self._drop(claim)

    def release(self, claim: Claim) -> None:
        """Free *claim*'s key after a send that certainly sent nothing, so that a retry can send."""
        try:
            with self._engine.begin() as conn:
                conn.execute(sent_messages.delete().where(*self._mine(claim), sent_messages.c.state != SENT))
        finally:
            self._drop(claim)

    def unknown(self, claim: Claim) -> None:
        """Record that *claim*'s request may or may not have reached Twilio: the next claim reconciles first."""
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    sent_messages.update()
                    .where(*self._mine(claim), sent_messages.c.state != SENT)
                    .values(state=UNKNOWN, owner=None, lease_until=None)
                )
        finally:
            self._drop(claim)

    def purge(self) -> int:
        """Delete every key older than the window; return how many were deleted."""
        with self._engine.begin() as conn:
            cutoff = self._clock() - self._window_seconds
            return conn.execute(sent_messages.delete().where(sent_messages.c.created_at <= cutoff)).rowcount

    def _insert(self, tenant: str, key: str, fingerprint: str) -> bool:
        values = {
            "tenant": tenant,
            "key": key,
            "state": CLAIMED,
            "created_at": self._clock(),
            "request_sha256": fingerprint,
            "owner": process_owner(),
            "lease_until": self._keeper.until(),
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(sent_messages.insert().values(**values))
        except sa.exc.IntegrityError:
            return False
        return True

    def _take_over(self, conn: sa.Connection, row: sa.Row[Any]) -> bool:
        # Compare-and-set on what we saw: of several claimers of one stale row, exactly one wins.
        seen = (
            sent_messages.c.state == row.state,
            sent_messages.c.owner.is_not_distinct_from(row.owner),
            sent_messages.c.lease_until.is_not_distinct_from(row.lease_until),
        )
        values = {"state": CLAIMED, "owner": process_owner(), "lease_until": self._keeper.until()}
        update = sent_messages.update().where(*self._where(row.tenant, row.key), *seen).values(**values)
        return bool(conn.execute(update).rowcount)

    def _hold(self, claim: Claim) -> Claim:
        with self._held_lock:
            self._held.add((claim.tenant, claim.key))
        return claim

    def _drop(self, claim: Claim) -> None:
        with self._held_lock:
            self._held.discard((claim.tenant, claim.key))

    def _renew(self, lease_until: float) -> None:
        with self._held_lock:
            held = sorted(self._held)
        if not held:
            return
        with self._engine.begin() as conn:
            for tenant, key in held:
                conn.execute(
                    sent_messages.update()
                    .where(
                        *self._where(tenant, key),
                        sent_messages.c.owner == process_owner(),
                        sent_messages.c.state.in_((CLAIMED, SENDING)),
                    )
                    .values(lease_until=lease_until)
                )

    def _mine(self, claim: Claim) -> tuple[sa.ColumnElement[bool], ...]:
        return (*self._where(claim.tenant, claim.key), sent_messages.c.owner == process_owner())

    @staticmethod
    def _where(tenant: str, key: str) -> tuple[sa.ColumnElement[bool], ...]:
        return (sent_messages.c.tenant == tenant, sent_messages.c.key == key)

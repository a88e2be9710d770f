"""The emulator's state: accounts, messages, the clock that drives their lifecycle, and logs for tests.

All mutation happens under one lock: the ASGI app (in uvicorn's thread) and a test (calling :meth:`advance` from its
own thread) share the state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from zingyconn.twilio.emulator.accounts import DEFAULT_ACCOUNT, DEFAULT_KEY, Account, ApiKey, Directory
from zingyconn.twilio.emulator.callbacks import Callback, CallbackAttempt, build_callback, deliver, is_loopback_url
from zingyconn.twilio.emulator.errors import ApiError, not_found
from zingyconn.twilio.emulator.message import IN_FLIGHT, STEP_SECONDS, Message, Transition, new_sid
from zingyconn.twilio.emulator.persistence import Persistence
from zingyconn.twilio.emulator.segments import count_segments
from zingyconn.twilio.emulator.services import MessagingService, Services
from zingyconn.twilio.emulator.validation import MAGIC_OUTCOMES, CreateRequest


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One HTTP request the emulator received: method, path, form (body or query pairs) and Basic username."""

    method: str
    path: str
    form: tuple[tuple[str, str], ...]
    username: str | None = None


class EmulatorState:
    """Everything the emulator knows.

    Args:
        accounts: Accounts that may call (default: the documented demo account).
        api_keys: API keys, each belonging to one of *accounts* (default: the documented demo key).
        clock: Epoch seconds now; tests pass a frozen clock and move it with :meth:`advance`.
        persistence: Where to keep messages across restarts (None: memory only).
        allow_callback: Which StatusCallback URLs may really be called (default: loopback only).
        services: Messaging Services with their sender pools (any other service SID has the default pool, see
            :mod:`zingyconn.twilio.emulator.services`).
    """

    def __init__(
        self,
        accounts: Iterable[Account] = (DEFAULT_ACCOUNT,),
        api_keys: Iterable[ApiKey] = (DEFAULT_KEY,),
        *,
        clock: Callable[[], float] = time.time,
        persistence: Persistence | None = None,
        allow_callback: Callable[[str], bool] = is_loopback_url,
        services: Iterable[MessagingService] = (),
    ) -> None:
        self.directory = Directory(accounts, api_keys)
        self.services = Services(services)
        self.requests: list[RequestRecord] = []
        self.callbacks: list[CallbackAttempt] = []
        self.allow_callback = allow_callback
        self._clock = clock
        self._offset = 0.0
        self._lock = threading.RLock()
        self._persistence = persistence
        self._messages: dict[str, Message] = {}
        self._seq_of: dict[str, int] = {}
        self._next_seq = 1
        if persistence is not None:
            for record in persistence.load():
                self._remember(Message.from_record(record))

    def now(self) -> float:
        """Return the emulator's current time (the clock plus every :meth:`advance`)."""
        return self._clock() + self._offset

    def advance(self, seconds: float) -> list[CallbackAttempt]:
        """Move time forward, apply every transition now due, and deliver their callbacks before returning."""
        if seconds < 0:
            raise ValueError(f"The emulator's clock only moves forward; got {seconds} seconds.")
        with self._lock:
            self._offset += seconds
            due = self.settle()
        attempts = deliver(due, allow=self.allow_callback)
        with self._lock:
            self.callbacks.extend(attempts)
        return attempts

    def record(self, request: RequestRecord) -> None:
        """Append to the request log (tests assert on it, e.g. that no request was made)."""
        with self._lock:
            self.requests.append(request)

    def settle(self) -> list[Callback]:
        """Apply every planned transition that is due; return the callbacks they call for, in order."""
        now, due = self.now(), []
        with self._lock:
            changed = False
            for message in self._messages.values():
                while message.plan and message.plan[0].at <= now:
                    message.apply(message.plan.pop(0))
                    changed = True
                    account = self.directory.accounts.get(message.account_sid)  # gone if a state file outlived it
                    callback = build_callback(message, account.auth_token) if account is not None else None
                    if callback is not None:
                        due.append(callback)
            if changed:
                self._save()
        return due

    def create(self, account: Account, request: CreateRequest) -> dict[str, Any]:
        """Store a new outbound message and plan its lifecycle; return its resource.

        Raises:
            ApiError: 21711 when the request names a sender and a Messaging Service whose pool lacks that sender.
        """
        sender = request.from_
        if request.messaging_service_sid is not None:
            service = self.services.get(request.messaging_service_sid)
            if sender is None:
                sender = service.first_sender()
            else:
                service.check_sender(sender)
        with self._lock:
            now = self.now()
            message = Message(
                sid=new_sid("MM" if request.media_urls else "SM"),
                account_sid=account.sid,
                seq=self._next_seq,
                to=request.to,
                from_=request.from_,
                body=request.body,
                status="queued",
                date_created=now,
                date_updated=now,
                num_segments=count_segments(request.body),
                media_urls=list(request.media_urls),
                messaging_service_sid=request.messaging_service_sid,
                status_callback=request.status_callback,
                sender=sender,
            )
            message.status, message.plan = _lifecycle(request, now)
            self._remember(message)
            self._save()
            return message.to_resource()

    def fetch(self, account_sid: str, sid: str, path: str) -> dict[str, Any]:
        """Return one message's resource (20404 if unknown, deleted or another account's)."""
        with self._lock:
            return self._get(account_sid, sid, path).to_resource()

    def update(self, account_sid: str, sid: str, path: str, form: list[tuple[str, str]]) -> dict[str, Any]:
        """Redact (``Body=""``) and/or cancel (``Status=canceled``, only while scheduled: 30409)."""
        fields = dict(form)
        with self._lock:
            message = self._get(account_sid, sid, path)
            if "Status" in fields:
                if fields["Status"] != "canceled":
                    raise ApiError(20001, f"Invalid Status {fields['Status']!r}: only 'canceled' is allowed.")
                if message.status != "scheduled":
                    raise ApiError(30409, "This message cannot be canceled: it is not scheduled.")
                message.plan.clear()
                message.status = "canceled"
            if "Body" in fields:
                if fields["Body"] != "":
                    raise ApiError(20001, "Body can only be updated to the empty string (redaction).")
                message.body = ""
            message.date_updated = self.now()
            self._save()
            return message.to_resource()

    def delete(self, account_sid: str, sid: str, path: str) -> None:
        """Delete a finished message (20009 while in flight)."""
        with self._lock:
            message = self._get(account_sid, sid, path)
            if message.status in IN_FLIGHT:
                raise ApiError(20009, "Cannot delete this resource before it is complete.")
            del self._messages[sid]
            self._save()

    def messages(self, account_sid: str) -> list[Message]:
        """Return an account's messages, newest first (live objects: read them while holding :attr:`lock`)."""
        with self._lock:
            found = [m for m in self._messages.values() if m.account_sid == account_sid]
            return sorted(found, key=lambda m: m.seq, reverse=True)

    def seq_of(self, sid: str) -> int | None:
        """Return the ordering position of any SID ever created (also deleted ones: page tokens stay valid)."""
        return self._seq_of.get(sid)

    @property
    def lock(self) -> threading.RLock:
        """The lock guarding messages; hold it while reading several of them."""
        return self._lock

    def _get(self, account_sid: str, sid: str, path: str) -> Message:
        message = self._messages.get(sid)
        if message is None or message.account_sid != account_sid:
            raise not_found(path)
        return message

    def _remember(self, message: Message) -> None:
        self._messages[message.sid] = message
        self._seq_of[message.sid] = message.seq
        self._next_seq = max(self._next_seq, message.seq + 1)

    def _save(self) -> None:
        if self._persistence is not None:
            records = [m.to_record() for m in sorted(self._messages.values(), key=lambda m: m.seq)]
            self._persistence.save(records)


def _lifecycle(request: CreateRequest, now: float) -> tuple[str, list[Transition]]:
    """Return the initial status and the planned transitions for a new message."""
    status, code, text = MAGIC_OUTCOMES.get(request.to, ("delivered", None, None))
    if request.send_at is not None:
        initial, start, steps = "scheduled", request.send_at, ["queued", "sending", "sent"]
    elif request.messaging_service_sid is not None:
        initial, start, steps = "accepted", now + STEP_SECONDS, ["queued", "sending", "sent"]
    else:
        initial, start, steps = "queued", now + STEP_SECONDS, ["sending", "sent"]
    if status == "failed":
        steps = steps[:-2]  # fails before it is sent
    plan = [Transition(start + i * STEP_SECONDS, step) for i, step in enumerate(steps)]
    plan.append(Transition(start + len(steps) * STEP_SECONDS, status, code, text))
    return initial, plan

"""Leases renewed while their process lives: how a claim of a dead process is told from a slow one.

A row a process works on (a send in flight, a running task, a webhook token being answered) carries the
process's :func:`process_owner` and a ``lease_until`` time. One daemon thread per process (:class:`LeaseKeeper`)
pushes every lease the process holds :data:`LEASE_SECONDS` ahead, every :data:`RENEW_EVERY_SECONDS`. When the
process dies (SIGKILL, OOM, power), renewals stop and its leases run out within :data:`LEASE_SECONDS`, on any
machine: no process-id check, which a zombie or a recycled pid defeats, and which only works on one machine.

Residual risk: a process frozen (SIGSTOP, a swap storm) longer than a lease that then resumes still believes it
holds its claims; every step that acts on a claim re-checks ownership in the same statement that moves the row.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Final

#: How long a lease lasts without renewal: how soon a dead process's claims can be taken over.
LEASE_SECONDS: Final = 10.0
#: How often the keeper renews: several renewals per lease, so one slow database round trip loses nothing.
RENEW_EVERY_SECONDS: Final = 2.0

_LOGGER: Final = logging.getLogger(__name__)

#: Renews the leases one store holds: called with the new ``lease_until``.
Renewer = Callable[[float], None]


def _new_owner() -> str:
    # host:pid names the process for people reading a row; the random part makes it unique across pid reuse.
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


_OWNER: str = _new_owner()


def process_owner() -> str:
    """Return who this process is in ``owner`` columns (a new name in a forked child)."""
    return _OWNER


def _after_fork() -> None:
    global _OWNER, _KEEPER
    _OWNER = _new_owner()
    _KEEPER = None  # the keeper's thread did not survive the fork


os.register_at_fork(after_in_child=_after_fork)


class LeaseKeeper:
    """Calls every registered renewer every :data:`RENEW_EVERY_SECONDS` from one daemon thread.

    Args:
        clock: Unix time now.
        lease_seconds: How far ahead a renewal pushes a lease.
        every_seconds: Time between renewals.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        lease_seconds: float = LEASE_SECONDS,
        every_seconds: float = RENEW_EVERY_SECONDS,
    ) -> None:
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._every_seconds = every_seconds
        self._renewers: list[weakref.WeakMethod[Renewer]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def until(self) -> float:
        """Return the ``lease_until`` of a lease taken or renewed now."""
        return self._clock() + self.lease_seconds

    def register(self, renewer: Renewer) -> None:
        """Have *renewer* (a bound method) called with a fresh ``lease_until`` every renewal while its object lives."""
        with self._lock:
            self._renewers = [ref for ref in self._renewers if ref() is not None]
            self._renewers.append(weakref.WeakMethod(renewer))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="zingyconn-leases", daemon=True)
                self._thread.start()

    def renew_now(self) -> None:
        """Run one renewal (the thread's step; tests call it directly)."""
        with self._lock:
            renewers = [renewer for renewer in (ref() for ref in self._renewers) if renewer is not None]
        for renewer in renewers:
            try:
                renewer(self.until())
            except Exception:  # the database is down: the next round tries again; the lease may lapse meanwhile
                _LOGGER.warning("Renewing leases failed; retrying in %.0f s.", self._every_seconds, exc_info=True)

    def _loop(self) -> None:
        while True:
            time.sleep(self._every_seconds)
            self.renew_now()


_KEEPER: LeaseKeeper | None = None
_KEEPER_LOCK: Final = threading.Lock()


def shared_keeper() -> LeaseKeeper:
    """Return this process's keeper (one renewal thread however many stores use it)."""
    global _KEEPER
    with _KEEPER_LOCK:
        if _KEEPER is None:
            _KEEPER = LeaseKeeper()
        return _KEEPER

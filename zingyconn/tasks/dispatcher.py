"""The task dispatcher: moves ready task rows onto the Huey queue, fairly across tenants, as workers free up.

The ``tasks`` table is the queue of record (:mod:`zingyconn.tasks.store`); Huey only carries ids the dispatcher
chose.
It keeps the queue short — no more messages than this process has idle workers — and picks the next task
round-robin across the tenants that have one ready (each tenant's oldest first). So a tenant with a backlog of
hundreds cannot push another tenant's task behind it: the other task goes on the queue as soon as a worker frees
up, a delay of about one task's run time. Every consumer process runs one dispatcher; several dispatchers share
the table with compare-and-set, so a row is dispatched once (and a duplicate message is harmless: claims dedupe).

It also recovers: tasks whose worker died (lease expired) are made ready again, and dispatched tasks whose queue
message was lost (Redis restarted empty) are dispatched again once the queue stands empty for a few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from zingyconn.database import is_storage_fault
from zingyconn.tasks.store import TaskStore

#: How often the dispatcher looks for ready tasks when nothing wakes it (a finished task, a local enqueue).
POLL_SECONDS: Final = 0.2
#: How often it looks for abandoned tasks and lost queue messages.
RECOVER_EVERY_SECONDS: Final = 1.0

_LOGGER: Final = logging.getLogger(__name__)


class Dispatcher:
    """Dispatch ready tasks round-robin across tenants into free worker capacity.

    Args:
        store: The task rows.
        push: Puts a task id on the Huey queue (raises when the queue is unreachable).
        pending: How many messages wait in the Huey queue.
        free_workers: How many of this process's workers are idle.
        clock: Monotonic seconds, for the recovery period.
    """

    def __init__(
        self,
        store: TaskStore,
        *,
        push: Callable[[str], None],
        pending: Callable[[], int],
        free_workers: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._push = push
        self._pending = pending
        self._free_workers = free_workers
        self._clock = clock
        self._served: dict[str, int] = {}  # tenant -> the turn it was last given a slot (round-robin order)
        self._turn = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_recovery = 0.0

    def wake(self) -> None:
        """Look for ready tasks now (a worker freed up, a task was enqueued in this process)."""
        self._wake.set()

    def dispatch(self) -> list[str]:
        """Put as many ready tasks on the queue as there is free capacity; return their ids."""
        slots = self._free_workers() - self._pending()
        dispatched: list[str] = []
        while slots > 0:
            tenants = self._store.ready_tenants()
            if not tenants:
                break
            # Round-robin: the tenant served longest ago (or never) goes first; ties keep the oldest-task order.
            tenant = min(tenants, key=lambda name: self._served.get(name, -1))
            task_id = self._store.dispatch_next(tenant)
            self._turn += 1
            self._served[tenant] = self._turn
            if task_id is None:
                continue  # another dispatcher took it: look again
            try:
                self._push(task_id)
            except Exception:
                self._store.undispatch(task_id)
                raise
            dispatched.append(task_id)
            slots -= 1
        return dispatched

    def recover(self) -> int:
        """Make abandoned tasks, and tasks whose queue message was lost, ready again; return how many."""
        reclaimed = self._store.reclaim()
        for record in reclaimed:
            _LOGGER.warning("Task %s (%s/%s): its worker stopped renewing its lease; it runs again.", record.id,
                            record.tenant, record.script)  # fmt: skip
        lost = self._store.redispatch_lost() if self._pending() == 0 else 0
        if lost:
            _LOGGER.warning("%d dispatched tasks were not on the queue (it lost its data); dispatching again.", lost)
        return len(reclaimed) + lost

    def step(self) -> None:
        """One round of the loop: recover when due, then dispatch; faults of the store or queue are logged."""
        try:
            if self._clock() >= self._next_recovery:
                self._next_recovery = self._clock() + RECOVER_EVERY_SECONDS
                self.recover()
            self.dispatch()
        except Exception as exc:
            if not is_storage_fault(exc):
                raise
            _LOGGER.error("Dispatching tasks failed (StorageUnavailable: %s: %s); retrying.", type(exc).__name__, exc)

    def start(self) -> None:
        """Run :meth:`step` in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="zingyconn-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (tasks already on the queue stay there)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # a bug: keep dispatching, the next round may work
                _LOGGER.exception("The task dispatcher failed; retrying.")
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

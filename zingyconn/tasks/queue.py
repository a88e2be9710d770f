"""Background tasks: enqueue scripts, run them in Huey workers, retry by cause, fire cron schedules.

A task is a row of the ``tasks`` table (:mod:`zingyconn.tasks.store`): creating it is one INSERT, so a task exists
(and will run) exactly when its caller was told so. Each consumer process runs a dispatcher
(:mod:`zingyconn.tasks.dispatcher`) that moves ready rows onto Huey (:mod:`zingyconn.tasks.backend`: SQLite by
default, Redis across machines) as its workers free up, round-robin across tenants. Huey carries task *ids* only.
The id is the run-level idempotency key of the task's message sends, and a task a snippet enqueues gets an id
derived from the enqueuing run's key, so a retried run or a replayed webhook enqueues nothing new.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Final, Protocol

from huey import Huey, crontab, signals
from huey.api import PeriodicTask, Task
from huey.consumer import Consumer
from sqlalchemy.engine import Engine

from sandbox.errors import EgressDeniedError, QuotaExceededError
from sandbox.limits import Limits
from zingyconn.catalog import Catalog, Script
from zingyconn.config import Settings
from zingyconn.database import create_engine, is_storage_fault
from zingyconn.egress.ratelimit import Rate, RateLimiter
from zingyconn.errors import (
    NotFoundError,
    StorageUnavailableError,
    TaskQueueFullError,
    TenantBusyError,
    ValidationError,
    ZingyConnError,
)
from zingyconn.kinds import limits_for
from zingyconn.tasks.backend import EmbeddedConsumer, consumer_options, create_huey
from zingyconn.tasks.dispatcher import Dispatcher
from zingyconn.tasks.retry import Backoff, is_transient
from zingyconn.tasks.schedule import parse_cron
from zingyconn.tasks.store import MAX_ATTEMPTS, Source, TaskExistsError, TaskRecord, TaskStore

_LOGGER: Final = logging.getLogger(__name__)

#: Largest task payload accepted (it is stored in the ``tasks`` row and becomes the run's ``event``).
MAX_PAYLOAD_BYTES: Final = 256 * 1024
#: How far back a scheduler catches up on minutes it missed (a stall, a restart); older minutes are skipped.
CATCH_UP: Final = dt.timedelta(minutes=5)
ONE_MINUTE: Final = dt.timedelta(minutes=1)

#: Threat: a task snippet that enqueues itself (or a webhook flood that enqueues per request) filling the queue.
#: Enqueues by snippets and the tenant API stop at this many in-flight tasks per tenant; admins (CLI, console) are
#: not limited. Fair dispatch keeps a full queue from delaying other tenants; this bounds the table and the bill.
MAX_WAITING_PER_TENANT: Final = 1_000
#: How fast one tenant's snippets may enqueue (a token bucket shared by every process): a loop of enqueues in a
#: busy webhook is refused with a clear error instead of growing the backlog at the speed of the host.
ENQUEUE_RATE: Final = Rate(per_second=10.0, burst=100)
#: The rate-limit bucket of snippet enqueues.
ENQUEUE_BUCKET: Final = "enqueue"
#: Sources that the per-tenant depth limit applies to (a tenant's own code and API), not the platform's admins.
LIMITED_SOURCES: Final = frozenset({"snippet", "api"})


class TaskRunner(Protocol):
    """What runs a task's snippet: :class:`zingyconn.runtime.Runtime` (a protocol, so tests and hosts can wrap it)."""

    def run(
        self,
        tenant: str,
        source: str,
        *,
        event: Any = None,
        kind: str = "console",
        limits: Limits | None = None,
        name: str | None = None,
        idempotency_key: str | None = None,
        attempt: int = 1,
        task_id: str | None = None,
        version: int | None = None,
        isolation: str = "run",
    ) -> Any:
        """Run *source* for *tenant*; return the run result (``ok``, ``error``, ``egress``, ``run_id``)."""


class TaskQueue:
    """Enqueue scripts as background tasks, and run them in Huey workers.

    Args:
        huey: From :func:`create_huey`.
        engine: The store's engine (scripts, tasks, run history).
        runner: Runs a snippet; usually the process's :class:`~zingyconn.runtime.Runtime`. ``None`` for a
            producer that only enqueues (it cannot run tasks).
        clock: Unix time now; tests advance it to make cron schedules fire.
        backoff: Delays between attempts after transient failures.
        max_waiting_per_tenant: Snippets and the tenant API cannot enqueue while the tenant has this many tasks in
            flight.
        enqueue_rate: How fast one tenant's snippets may enqueue.
        rate_limiter: Where the enqueue buckets live (default: the runner's broker's limiter, if any).
    """

    def __init__(
        self,
        huey: Huey,
        engine: Engine,
        *,
        runner: TaskRunner | None = None,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        max_waiting_per_tenant: int = MAX_WAITING_PER_TENANT,
        enqueue_rate: Rate = ENQUEUE_RATE,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.huey = huey
        self._max_waiting = max_waiting_per_tenant
        self._enqueue_rate = enqueue_rate
        broker = getattr(runner, "broker", None)
        self._rate_limiter = rate_limiter if rate_limiter is not None else getattr(broker, "rate_limiter", None)
        self.store = TaskStore(engine, clock=clock)
        self.catalog = Catalog(engine, clock=clock)
        self.runner = runner
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._last_tick: dt.datetime | None = None
        self._consumer: Consumer | None = None
        self._workers = 0
        self._busy = 0
        self._busy_lock = threading.Lock()
        self.dispatcher = Dispatcher(
            self.store, push=self._send, pending=self._pending, free_workers=self._free_workers
        )
        self._run_task = huey.task(name="run_task")(self._execute)
        huey.periodic_task(crontab(), name="cron_tick")(self.tick)
        huey.signal(signals.SIGNAL_INTERRUPTED)(self._on_interrupted)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        engine: Engine | None = None,
        runner: TaskRunner | None = None,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        max_waiting_per_tenant: int = MAX_WAITING_PER_TENANT,
        enqueue_rate: Rate = ENQUEUE_RATE,
    ) -> TaskQueue:
        """Return the queue *settings* configure (SQLite or Redis), on the store's *engine*."""
        engine = engine or create_engine(settings.db_url)
        return cls(
            create_huey(settings),
            engine,
            runner=runner,
            clock=clock,
            backoff=backoff,
            max_waiting_per_tenant=max_waiting_per_tenant,
            enqueue_rate=enqueue_rate,
        )

    # --- producing ---------------------------------------------------------------------------------------------

    def enqueue(
        self, tenant: str, script: str, payload: Any = None, *, source: Source = "api", task_id: str | None = None
    ) -> TaskRecord:
        """Queue a run of *script* with *payload* as its ``event``; return the task (its id is the run key).

        The task exists once this returns (one INSERT); a dispatcher puts it on the queue when a worker is free.

        Args:
            task_id: An id derived from the caller's own idempotency key: enqueueing it again returns the first
                task instead of a second one.

        Raises:
            NotFoundError: The tenant has no such script.
            ValidationError: The payload is not JSON or too large (``field="payload"``).
            TaskQueueFullError: A snippet or the tenant API enqueues while the tenant has too many tasks waiting.
            StorageUnavailableError: The store could not be written; no task was created.
        """
        self.catalog.get_script(tenant, script)
        _check_payload(payload)
        if source in LIMITED_SOURCES and self.store.count_waiting(tenant) >= self._max_waiting:
            raise TaskQueueFullError(
                f"Tenant {tenant!r} already has {self._max_waiting} tasks waiting; no more can be queued until "
                "some have run."
            )
        try:
            record = self.store.create(tenant, script, payload, source=source, task_id=task_id, existing_ok=True)
        except Exception as exc:
            if not is_storage_fault(exc):
                raise
            raise StorageUnavailableError(
                f"Could not record the task ({type(exc).__name__}): the store is unavailable or full. No task was "
                "queued; retry when it is back."
            ) from None
        self.dispatcher.wake()
        return record

    def enqueue_from_snippet(self, tenant: str, request: Any, call_key: str | None) -> dict[str, str]:
        """Answer a run's ``zingyConn.enqueue`` (``tasks.enqueue`` in :mod:`zingyconn.egress.protocol`): queue a script.

        The composition root registers it on the runtime (``runtime.register_op(OP_ENQUEUE, ...)``); *call_key*
        (the run's key, op and call count) makes the task id stable across retries of the run.
        """
        # The tenant is the running snippet's (passed by the runtime), never one the snippet names.
        script = request.get("script") if isinstance(request, dict) else None
        if type(script) is not str:
            raise EgressDeniedError("zingyConn.enqueue(script, payload) needs the script's name as a string.")
        task_id = None if call_key is None else "run-" + uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{call_key}").hex
        if task_id is not None:
            with contextlib.suppress(NotFoundError):  # this call already enqueued in an earlier attempt of the run
                existing = self.store.get(task_id)
                if existing.tenant == tenant:
                    return {"task_id": existing.id}
        self._take_enqueue_token(tenant)
        try:
            record = self.enqueue(tenant, script, request.get("payload"), source="snippet", task_id=task_id)
        except TaskQueueFullError as exc:
            raise QuotaExceededError(str(exc)) from None
        except ZingyConnError as exc:
            raise EgressDeniedError(str(exc)) from None
        return {"task_id": record.id}

    def _take_enqueue_token(self, tenant: str) -> None:
        limiter, rate = self._rate_limiter, self._enqueue_rate
        try:
            allowed = limiter is None or limiter.acquire(tenant, ENQUEUE_BUCKET, rate)
        except Exception as exc:
            if not is_storage_fault(exc):
                raise
            raise EgressDeniedError(
                "Could not check the enqueue rate limit (StorageUnavailable); no task was queued. Retry later."
            ) from None
        if not allowed:
            raise QuotaExceededError(
                f"Tenant {tenant!r} may enqueue at most {rate.per_second:g} tasks per second (bursts of "
                f"{rate.burst}); this task was not queued. Enqueue fewer tasks, or one task that does more."
            )

    def rerun(self, task_or_run_id: str) -> TaskRecord:
        """Queue a failed task again under its own id, so messages it already sent are not sent twice."""
        record = self.store.rerun(task_or_run_id)
        self.dispatcher.wake()
        return record

    def tick(self) -> list[TaskRecord]:
        """Fire the cron schedules due since the last tick; return the tasks it queued.

        Huey calls this every minute in every consumer; a minute fires at most once per script across all of
        them, because a cron task's id is derived from (tenant, script, minute) and ids are unique.
        """
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC).replace(second=0, microsecond=0, tzinfo=None)
        start = now if self._last_tick is None else max(self._last_tick + ONE_MINUTE, now - CATCH_UP)
        self._last_tick = now
        queued = []
        for script in self.catalog.list_scripts(scheduled_only=True):
            queued.extend(self._fire(script, start, now))
        if queued:
            self.dispatcher.wake()
        return queued

    def _fire(self, script: Script, start: dt.datetime, end: dt.datetime) -> list[TaskRecord]:
        try:
            schedule = parse_cron(script.cron or "", script.timezone)
        except ValidationError as exc:
            _LOGGER.error("Script %s/%s has an unusable cron schedule: %s", script.tenant, script.name, exc)
            return []
        fired = []
        for moment in schedule.fire_times(start.replace(tzinfo=dt.UTC), end.replace(tzinfo=dt.UTC)):
            stamp = moment.strftime("%Y-%m-%dT%H:%MZ")
            task_id = "cron-" + uuid.uuid5(uuid.NAMESPACE_URL, f"{script.tenant}/{script.name}/{stamp}").hex
            payload = {"scheduled_for": stamp, "cron": schedule.expression, "timezone": schedule.timezone}
            try:
                record = self.store.create(script.tenant, script.name, payload, source="cron", task_id=task_id)
            except TaskExistsError:
                pass  # another scheduler fired this minute already
            else:
                fired.append(record)
        return fired

    def _send(self, task_id: str) -> None:
        self.huey.enqueue(self._run_task.s(task_id))

    def _pending(self) -> int:
        return int(self.huey.pending_count())

    def _free_workers(self) -> int:
        with self._busy_lock:
            return self._workers - self._busy

    # --- consuming ---------------------------------------------------------------------------------------------

    def _execute(self, task_id: str) -> None:
        with self._busy_lock:
            self._busy += 1
        try:
            self._attempt(task_id)
        finally:
            with self._busy_lock:
                self._busy -= 1
            # Dispatch the next task from this worker thread, before it asks the queue again: no idle poll between.
            try:
                self.dispatcher.step()
            except Exception:  # the dispatcher thread tries again; this task's outcome is recorded already
                _LOGGER.exception("Dispatching after task %s failed.", task_id)

    def _attempt(self, task_id: str) -> None:
        try:
            record = self.store.get(task_id)
        except NotFoundError:  # a message that outlived its row (e.g. the store was reset): nothing to run
            _LOGGER.warning("Task %s has no row in the store; its queue message is dropped.", task_id)
            return
        try:
            script: Script | None = self.catalog.get_script(record.tenant, record.script)
        except NotFoundError:
            script = None
        limits = script.run_limits() if script is not None else limits_for("task")
        claimed = self.store.claim(task_id)
        if claimed is None:
            _LOGGER.info("Task %s is not claimable (duplicate delivery, or finished); skipped.", task_id)
            return
        try:
            self._settle(claimed, script, limits)
        finally:
            # Recording the outcome may have failed (the store went down): stop renewing the lease, so the task
            # is reclaimed when it runs out instead of staying "running" under this live process for good.
            self.store.abandon(task_id)

    def _settle(self, claimed: TaskRecord, script: Script | None, limits: Limits) -> None:
        """Run a claimed attempt and record its outcome: succeeded, retrying after a backoff, or failed."""
        task_id = claimed.id
        if script is None:
            gone = {"type": NotFoundError.__name__, "message": f"Script {claimed.script!r} was deleted."}
            self.store.finish(task_id, state="failed", run_id=None, error=gone)
            return
        try:
            run_id, error, transient = self._run(claimed, script, limits)
        except TenantBusyError as exc:  # nothing ran: wait for one of the tenant's runs to end, spend no attempt
            self.store.defer(task_id, delay_seconds=exc.retry_after_seconds)
            _LOGGER.info("Task %s waits: %s", task_id, exc, extra={"fields": {"task_id": task_id}})
            return
        if error is None:
            self.store.finish(task_id, state="succeeded", run_id=run_id)
        elif transient and claimed.attempts < MAX_ATTEMPTS:
            delay = self._backoff.delay(claimed.attempts)
            if self.store.retry_later(task_id, delay_seconds=delay, run_id=run_id, error=error):
                fields = _outcome_fields(claimed, run_id, error) | {"retry_in_seconds": round(delay, 1)}
                _LOGGER.warning(
                    "Task %s attempt %d failed transiently (%s); retrying in %.1f s.",
                    task_id, claimed.attempts, error.get("type"), delay, extra={"fields": fields},
                )  # fmt: skip
        else:
            self.store.finish(task_id, state="failed", run_id=run_id, error=error)
            _LOGGER.error(
                "Task %s failed on attempt %d: %s: %s",
                task_id, claimed.attempts, error.get("type"), error.get("message"),
                extra={"fields": _outcome_fields(claimed, run_id, error)},
            )  # fmt: skip

    def _run(
        self, record: TaskRecord, script: Script, limits: Limits
    ) -> tuple[str | None, dict[str, Any] | None, bool]:
        if self.runner is None:
            raise RuntimeError("This TaskQueue was created without a runner; it can enqueue but not run tasks.")
        try:
            result = self.runner.run(
                record.tenant,
                script.source,
                event=record.payload,
                kind="task",
                limits=limits,
                name=script.name,
                idempotency_key=record.id,
                task_id=record.id,
                attempt=record.attempts,
                version=script.version,
                isolation=script.isolation,
            )
        except TenantBusyError:
            raise
        except Exception as exc:  # the store or sandbox failed, not the snippet: retry later
            _LOGGER.exception("Task %s attempt %d could not run.", record.id, record.attempts)
            return None, {"type": type(exc).__name__, "message": str(exc)}, True
        error = None if result.error is None else result.error.to_json()
        return result.run_id, error, is_transient(error, list(result.egress))

    def _on_interrupted(self, _signal: str, task: Task) -> None:
        # A worker shut down before this task finished: hand it back to the queue now, instead of waiting for the
        # lease to run out. The run may still finish meanwhile; its outcome is then dropped (the claim is gone).
        if isinstance(task, PeriodicTask) or not task.args:
            return
        if self.store.release(str(task.args[0])):
            self.dispatcher.wake()

    def recover(self) -> int:
        """Make tasks abandoned by dead workers, or lost with the queue's data, ready again; return how many."""
        return self.dispatcher.recover()

    def start(self, *, workers: int = 2) -> None:
        """Start an in-process consumer (threads) for ``zingyconn serve``; the host keeps its signal handlers."""
        if self._consumer is not None:
            return
        self._workers = workers
        self._consumer = EmbeddedConsumer(self.huey, **consumer_options(workers))
        self._consumer.start()
        self.dispatcher.start()

    def stop(self, *, timeout_seconds: float = 10.0) -> None:
        """Stop the in-process consumer: running tasks get *timeout_seconds* to finish, then go back to the queue."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        self.dispatcher.stop()
        self._workers = 0  # nothing more is dispatched for this process's workers
        consumer.shutdown_timeout = timeout_seconds
        consumer.stop(graceful=True)
        self.huey.notify_interrupted_tasks()

    def run_worker(self, *, workers: int = 2, shutdown_timeout_seconds: float = 60.0) -> None:
        """Run a consumer in the foreground until SIGTERM (graceful: running tasks finish) or SIGINT (now).

        Tasks still running when the worker stops are handed back to the queue.
        """
        self._workers = workers
        options = consumer_options(workers) | {"graceful_signal": "TERM", "shutdown_timeout": shutdown_timeout_seconds}
        self.dispatcher.start()
        try:
            self.huey.create_consumer(**options).run()
        finally:
            self.dispatcher.stop()


def _outcome_fields(record: TaskRecord, run_id: str | None, error: dict[str, Any]) -> dict[str, Any]:
    """Return the log fields of a failed attempt: which task, run and attempt, and the error's type."""
    return {
        "task_id": record.id,
        "tenant": record.tenant,
        "script": record.script,
        "run_id": run_id,
        "attempt": record.attempts,
        "error_type": error.get("type"),
    }


def _check_payload(payload: Any) -> None:
    try:
        size = len(json.dumps(payload, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"The task payload must be JSON: {exc}.", field="payload") from None
    if size > MAX_PAYLOAD_BYTES:
        raise ValidationError(f"The task payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}.", field="payload")

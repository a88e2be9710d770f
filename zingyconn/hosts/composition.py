"""The composition root of the HTTP app: what ``serve``, ``demo`` and uvicorn's factory put around the runtime.

The task queue the server enqueues to, the lifespan hooks (the purge of old records, the in-process task
consumer), the extra mounts (the admin console) and the log setup. The CLI and :mod:`zingyconn.hosts.server` both
call these; this module imports neither of them.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.applications import Starlette

from zingyconn.egress.protocol import OP_ENQUEUE

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from zingyconn.runtime import Runtime
    from zingyconn.tasks.queue import TaskQueue

#: A start-up/shutdown hook of the app: ``(app) -> async context manager``, entered at start-up, exited at shutdown.
LifespanHook = Callable[[Starlette], AbstractAsyncContextManager[None]]

#: Environment variable that tells ``--workers N`` processes not to start a task consumer each.
ENV_NO_TASKS = "ZINGYCONN_SERVE_NO_TASKS"
#: Environment variable that turns on the JSON access log in every worker process.
ENV_ACCESS_LOG = "ZINGYCONN_SERVE_ACCESS_LOG"


def task_queue(runtime: Runtime) -> TaskQueue:
    """Return the task queue this server enqueues to and (unless ``--no-tasks``) consumes from.

    It also answers *runtime*'s ``zingyConn.enqueue`` (registered here, the one place that wires the two).
    """
    from zingyconn.tasks.queue import TaskQueue

    queue = TaskQueue.from_settings(runtime.settings, engine=runtime.engine, runner=runtime)
    runtime.register_op(OP_ENQUEUE, queue.enqueue_from_snippet)
    return queue


@contextlib.asynccontextmanager
async def freeze_start_up_heap(app: Starlette) -> AsyncIterator[None]:
    """Move every object alive after start-up into the collector's permanent generation; thaw it at shutdown.

    Why: the start-up heap (modules, the app, the runtime's caches) lives as long as the process, yet a full
    collection walks all of it. Under webhook load such a collection stopped the event loop for 50-80 ms, the p99 of
    the host ceiling row; once frozen, collections only see objects made since start-up (``benchmarks/
    webhook_load.py``: host ceiling p99 89 ms before, 45 ms after). Entered last, so it freezes what the other hooks
    built. The frozen heap is thawed at shutdown, so an embedding process that builds and drops apps (tests) can
    collect it again.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def default_lifespan_hooks(runtime: Runtime, *, queue: TaskQueue | None = None) -> list[LifespanHook]:
    """Return the start-up/shutdown hooks of ``serve``: the purge, the task consumer unless it is disabled, and
    :func:`freeze_start_up_heap` last."""
    from zingyconn.purge import schedule_for

    @contextlib.asynccontextmanager
    async def purge_old_records(app: Starlette) -> AsyncIterator[None]:
        schedule = schedule_for(runtime.engine, runtime.settings.retention)
        schedule.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(schedule.stop)

    if os.environ.get(ENV_NO_TASKS) or queue is None:
        return [purge_old_records, freeze_start_up_heap]

    @contextlib.asynccontextmanager
    async def consume_tasks(app: Starlette) -> AsyncIterator[None]:
        queue.start()
        try:
            yield
        finally:
            queue.stop()

    return [purge_old_records, consume_tasks, freeze_start_up_heap]


def default_mounts(
    runtime: Runtime,
    *,
    admin_token: str | None,
    queue: TaskQueue | None = None,
    public_url: str | None = None,
    trusted_proxies: Iterable[str] = (),
) -> list[BaseRoute]:
    """Return the extra mounts of ``serve``: the admin console at ``/console`` (Secure cookie behind https)."""
    from starlette.routing import Mount

    from zingyconn.hosts.console import console_state, create_console

    enqueue: Callable[[str, str, Any], str] | None = None
    if queue is not None:
        enqueue = lambda tenant, script, payload: queue.enqueue(tenant, script, payload, source="console").id  # noqa: E731
    https = bool(public_url and public_url.startswith("https://"))
    state = console_state(runtime, admin_token=admin_token, enqueue=enqueue, trusted_proxies=trusted_proxies)
    # Unnamed: the console names its own routes ("console_login", ...) and resolves them through this mount.
    return [Mount("/console", app=create_console(state, admin_token=admin_token, https_only=https))]


def configure_logging() -> None:
    """Send the server's logs (access log, task outcomes, Huey, uvicorn) to stderr as one stream."""
    from zingyconn.hosts.logs import configure_logging as configure_log_stream

    configure_log_stream(access_log=bool(os.environ.get(ENV_ACCESS_LOG)))

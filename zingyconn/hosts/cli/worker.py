"""``zingyconn worker``: run background tasks (and cron schedules) from the queue until stopped."""

from __future__ import annotations

import logging
from typing import Final

import click

from zingyconn.config import Settings
from zingyconn.hosts.composition import task_queue
from zingyconn.hosts.logs import configure_logging
from zingyconn.purge import schedule_for
from zingyconn.tasks.backend import describe

_LOGGER: Final = logging.getLogger(__name__)


@click.command()
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Tasks run at once.")
@click.option("--shutdown-timeout", default=60.0, show_default=True, help="Seconds running tasks get on SIGTERM.")
@click.option(
    "--store-wait",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to keep trying to open the database at start-up (it may be restarting) before giving up.",
)
def worker(workers: int, shutdown_timeout: float, store_wait: float) -> None:
    """Run queued tasks and cron schedules until SIGTERM (running tasks finish first) or SIGINT (they are re-queued).

    Also purges records older than their retention (ZINGYCONN_RETAIN_*), once per interval across all processes.

    Start as many as you like, on as many machines as share ZINGYCONN_DB_URL and ZINGYCONN_QUEUE_URL (Redis).
    """
    from zingyconn.database import create_engine
    from zingyconn.runtime import Runtime  # imported here: it starts nothing until used, but is heavy to import

    configure_logging()
    settings = Settings.from_env()
    # A worker started while the database restarts (a deploy, a failover) waits for it instead of exiting: a
    # worker that is not running cannot pick its tasks up once the database is back.
    with Runtime(settings, engine=create_engine(settings.db_url, wait_seconds=store_wait)) as runtime:
        queue = task_queue(runtime)
        _LOGGER.info("zingyconn worker: %d workers on %s; SIGTERM stops gracefully.", workers, describe(settings))
        purge = schedule_for(runtime.engine, settings.retention)  # old records go, here or in another process
        purge.start()
        try:
            queue.run_worker(workers=workers, shutdown_timeout_seconds=shutdown_timeout)
        finally:
            purge.stop()

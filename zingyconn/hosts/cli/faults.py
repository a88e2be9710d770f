"""Environmental faults at the CLI edge: a database, queue, file or port that is unusable, said in one line.

The command line's exit codes (one table, documented in ``docs/cli.md``):

====  ==========================================================================================================
code  meaning
====  ==========================================================================================================
0     ok
1     the run, command or task failed (the snippet raised or hit a limit, Twilio refused, an idempotency conflict)
2     usage or input error: a bad option or argument, invalid input or configuration, a name that does not exist
3     environment: something the command needs is unavailable (the database or Redis is down or locked, the data
      directory is not a writable directory, the disk is full, the port is in use)
====  ==========================================================================================================

Errors are classified by their type (and an :class:`OSError`'s ``errno``), never by their message text.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Final

from zingyconn.errors import StorageUnavailableError
from zingyconn.hosts.cli.listening import PortInUseError

#: Exit code of an environmental fault (see the table above).
ENVIRONMENT_EXIT_CODE: Final = StorageUnavailableError.exit_code

#: What to do about an OS error, by errno.
_OS_ADVICE: Final = {
    errno.ENOSPC: "free some disk space, then retry",
    errno.EDQUOT: "free some disk space (the disk quota is used up), then retry",
    errno.EACCES: "give this user access to it, or point ZINGYCONN_DATA_DIR at a directory it may write",
    errno.EPERM: "give this user access to it, or point ZINGYCONN_DATA_DIR at a directory it may write",
    errno.EROFS: "point ZINGYCONN_DATA_DIR at a writable file system",
    errno.ENOTDIR: "a file stands where a directory is needed: move it, or point ZINGYCONN_DATA_DIR elsewhere",
    errno.EEXIST: "a file stands where a directory is needed: move it, or point ZINGYCONN_DATA_DIR elsewhere",
    errno.EISDIR: "a directory stands where a file is needed: move it, or point ZINGYCONN_DATA_DIR elsewhere",
    errno.EADDRINUSE: "stop the process that uses it, or choose another port with --port",
    errno.EADDRNOTAVAIL: "choose an address of this machine with --host",
}


def describe_fault(exc: BaseException) -> str | None:
    """Return the one-line message for an environmental fault, or ``None`` when *exc* is not one.

    The heavy libraries are imported here, on the failure path only, so ``zingyconn --help`` stays light.
    """
    if isinstance(exc, PortInUseError):
        return (
            f"cannot listen on {exc.host}:{exc.port}: {exc.strerror}. Choose another port with {exc.option}, or stop "
            "the process that uses this one."
        )
    if isinstance(exc, OSError) and exc.errno in _OS_ADVICE:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}: {_OS_ADVICE[exc.errno]}."
    database = _database_fault(exc)
    if database is not None:
        return database
    return _queue_fault(exc)


def _database_fault(exc: BaseException) -> str | None:
    import sqlite3

    import sqlalchemy.exc

    from zingyconn.database import is_disk_full

    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        what = f"the database {_setting('db_url')}"
        cause = _clause(str(exc.orig)) if exc.orig is not None else type(exc).__name__
    elif isinstance(exc, sqlite3.OperationalError):  # the SQLite task queue: Huey uses sqlite3 directly
        what, cause = f"a SQLite file in the data directory {_setting('data_dir')}", _clause(str(exc))
    else:
        return None
    if is_disk_full(exc):
        return f"{what} could not be written: the disk is full ({cause}). Free some disk space, then retry."
    return (
        f"{what} could not be used: {cause}. Check that it is running, reachable, not locked by another program and "
        "not out of disk space (ZINGYCONN_DB_URL or ZINGYCONN_DATA_DIR), then retry."
    )


def _queue_fault(exc: BaseException) -> str | None:
    try:
        import redis.exceptions
    except ImportError:  # the Redis client is optional: without it no Redis fault can occur
        return None
    if not isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return None
    return (
        f"the task queue {_setting('queue_url')} could not be reached: {_clause(str(exc))}. Start Redis, or fix "
        "ZINGYCONN_QUEUE_URL (unset it to use the SQLite queue in the data directory), then retry."
    )


def _clause(text: str) -> str:
    """Return a library's error text as one clause: one line, no final period (the sentence goes on after it)."""
    return " ".join(text.split()).rstrip(".")


def _setting(name: str) -> str:
    """Return a setting for a message, with any password masked; a placeholder when the settings are unusable."""
    from sqlalchemy.engine import make_url

    from zingyconn.config import Settings
    from zingyconn.errors import ZingyConnError

    try:
        value = getattr(Settings.from_env(), name)
    except ZingyConnError:
        return "(from the environment)"
    if isinstance(value, Path):
        return repr(str(value))
    if not isinstance(value, str):
        return "(not configured)"
    try:
        return repr(make_url(value).render_as_string(hide_password=True))
    except (ValueError, TypeError):
        return repr(value)

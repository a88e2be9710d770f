"""Group commit on SQLite and PostgreSQL: writes commit in shared transactions, each caller gets its own error, a
``together`` block commits whole or not at all, and close writes what is queued."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from zingyconn.database import create_engine
from zingyconn.group_commit import GroupWriter
from zingyconn.schema import webhook_responses


@pytest.fixture
def engine(store_engine: sa.Engine) -> sa.Engine:
    """A migrated store: a SQLite file or a fresh PostgreSQL database."""
    return store_engine


def _claim(token: str) -> tuple[sa.Executable, dict[str, object]]:
    row = {"tenant": "acme", "hook": "sms", "token": token, "state": "running", "created_at": 0.0}
    return webhook_responses.insert().values(row), {}


def _tokens(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(webhook_responses.c.token)).scalars())


def test_concurrent_writes_commit_in_fewer_transactions_than_writes(engine: sa.Engine) -> None:
    """64 writers at once: every write is committed when it returns, in batches."""
    commits = []
    sa.event.listen(engine, "commit", lambda conn: commits.append(1))
    writer = GroupWriter(engine)
    tokens = [f"t{n:03d}" for n in range(64)]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda token: writer.write(_claim(token)), tokens))
    writer.close()

    assert _tokens(engine) == tokens
    assert len(commits) < len(tokens)


def test_a_failing_write_fails_alone_and_the_others_commit(engine: sa.Engine) -> None:
    """A duplicate key among concurrent writes raises IntegrityError in its own caller only."""
    writer = GroupWriter(engine)
    writer.write(_claim("taken"))
    tokens = ["taken", *(f"t{n:03d}" for n in range(31))]

    def write(token: str) -> str:
        try:
            writer.write(_claim(token))
        except sa.exc.IntegrityError:
            return "refused"
        return "written"

    with ThreadPoolExecutor(16) as pool:
        outcomes = dict(zip(tokens, pool.map(write, tokens), strict=True))
    writer.close()

    assert outcomes == {"taken": "refused"} | dict.fromkeys(tokens[1:], "written")
    assert _tokens(engine) == sorted(tokens)


def test_a_together_block_commits_whole_or_not_at_all(engine: sa.Engine) -> None:
    """Two writes in one block share a transaction: when the second fails, the first is not stored either."""
    writer = GroupWriter(engine)
    writer.write(_claim("taken"))
    with writer.together():
        writer.write(_claim("first"))
        writer.write(_claim("second"))
    block = writer.together()
    block.__enter__()
    writer.write(_claim("third"))
    writer.write(_claim("taken"))
    with pytest.raises(sa.exc.IntegrityError):
        block.__exit__(None, None, None)
    writer.close()

    assert _tokens(engine) == ["first", "second", "taken"]


def test_writes_after_close_use_their_own_transaction(engine: sa.Engine) -> None:
    """A closed writer still writes (directly), so a late caller at shutdown loses nothing."""
    writer = GroupWriter(engine)
    writer.write(_claim("before"))
    writer.close()
    writer.write(_claim("after"))

    assert _tokens(engine) == ["after", "before"]


def test_a_call_returns_its_own_result_once_its_shared_transaction_committed(engine: sa.Engine) -> None:
    """Calls and writes at once share transactions; each call gets what its function returned, committed, and a
    call that raises fails alone."""
    commits = []
    sa.event.listen(engine, "commit", lambda conn: commits.append(1))
    writer = GroupWriter(engine)

    def call(n: int) -> object:
        token = f"t{n:03d}"
        if n % 3 == 0:
            writer.write(_claim(token))
            return token
        statement, _ = _claim(token)

        def insert(conn: sa.Connection) -> object:
            if n == 7:
                raise LookupError("refused")
            return (conn.execute(statement.execution_options(preserve_rowcount=True)).rowcount, token)

        try:
            return writer.call(insert)
        except LookupError:
            return "refused"

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, range(64)))
    writer.close()

    stored = [f"t{n:03d}" for n in range(64) if n != 7]
    assert results == ["refused" if n == 7 else f"t{n:03d}" if n % 3 == 0 else (1, f"t{n:03d}") for n in range(64)]
    assert _tokens(engine) == stored
    assert len(commits) < len(stored)


def test_batches_of_two_servers_that_deadlock_are_written_again_one_write_at_a_time(postgres_url: str) -> None:
    """Two servers' batches taking the same two rows in opposite orders deadlock on PostgreSQL, which ends one of
    them (SQLSTATE 40P01). That batch's other write is not at fault: written again on its own, it commits."""
    engine = create_engine(postgres_url)
    writers = [GroupWriter(engine), GroupWriter(engine)]
    both_hold_one = threading.Barrier(2, timeout=10)
    first_attempt = [True, True]

    def take(side: int) -> Callable[[sa.Connection], None]:
        def action(conn: sa.Connection) -> None:
            # First row, wait until the other server holds its own, then the other's: a cycle on the first try.
            first, second = ("A", "B") if side == 0 else ("B", "A")
            conn.execute(*_claim(f"lock-{first}-{side}"))
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ord(first)})
            if first_attempt[side]:
                first_attempt[side] = False
                with contextlib.suppress(threading.BrokenBarrierError):
                    both_hold_one.wait()
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ord(second)})

        return action

    stall = [threading.Event(), threading.Event()]

    def hold(side: int) -> Callable[[sa.Connection], bool]:
        return lambda conn: stall[side].wait(10)

    with ThreadPoolExecutor(8) as pool:
        # Each writer's first batch waits, so that its next batch holds both a plain write and the locking action.
        held: list[Future[object]] = [pool.submit(writers[side].call, hold(side)) for side in (0, 1)]
        time.sleep(0.2)
        plain: list[Future[object]] = [pool.submit(writers[side].write, _claim(f"plain-{side}")) for side in (0, 1)]
        locking: list[Future[object]] = [pool.submit(writers[side].call, take(side)) for side in (0, 1)]
        time.sleep(0.2)
        for event in stall:
            event.set()
        for future in [*held, *plain, *locking]:
            future.result(timeout=30)  # before: the deadlocked batch's plain write raised DeadlockDetected
    for writer in writers:
        writer.close()

    assert {"plain-0", "plain-1"} <= set(_tokens(engine))
    assert first_attempt == [False, False]  # both actions did meet at the barrier: the cycle did form
    engine.dispose()

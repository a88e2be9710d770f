"""Group commit: one writer thread writes run history and replay records in small batches, one transaction each.

Every webhook run writes a history row and, with an idempotency token, its response for replay. Written by each
request in its own transaction, they queue for the store's write lock (SQLite has one; PostgreSQL serialises the
commits' WAL flushes) and the lock hand-over, not the writing, is what a request waits for. Here one thread takes
what the requests hand it from a bounded queue and writes up to :data:`MAX_BATCH` of them in one transaction.

What it guarantees:

- **Durable before the answer.** :meth:`GroupWriter.write` returns only once the transaction holding its statements
  has committed, so a server killed (``kill -9``) after it answered a request loses none of that request's records.
- **One statement, many rows.** The writes of a batch are grouped by statement object and each group runs as one
  ``executemany``: callers that pass the same statement with bound parameters (as the history and the replay store
  do, compiled once as a :class:`~zingyconn.database.DriverStatement`) share its compiled SQL. The writes of one
  batch must not depend on each other's order.
- **Together or not at all.** The statements of one :meth:`~GroupWriter.write`, or of one :meth:`~GroupWriter.together`
  block, commit in the same transaction: a webhook's history row and its replay record never exist one without the
  other.
- **The same errors.** A write fails with the error its statements would have raised in a transaction of their
  own: a store fault (down, locked, disk full) fails the whole batch, and each of its callers gets it; any other
  error (a constraint), or a conflict with another process's transaction (a PostgreSQL deadlock between two
  servers' batches), fails only the write that caused it (the batch is written again one write at a time).
- **Bounded memory.** At most :data:`MAX_QUEUED` writes wait; a caller beyond that waits for room (back-pressure).
- **Reads that must commit.** :meth:`~GroupWriter.call` runs a function on the batch's connection and returns its
  result once the batch committed: a compare-and-set whose answer the caller acts on (the idempotency claim) costs
  a statement in a shared transaction instead of a transaction, and a wait for the write lock, of its own.
- **Flushed on close.** :meth:`~GroupWriter.close` writes what is queued, then stops the thread; writes after it, or
  from inside the writer thread, use a transaction of their own.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import Executable

from zingyconn.database import DriverStatement, is_conflict, is_storage_fault

#: Writes one transaction takes at most: small enough that a batch commits in a few milliseconds.
MAX_BATCH: Final = 64
#: Writes waiting at most; beyond this a caller waits for room (memory stays bounded under any load).
MAX_QUEUED: Final = 1024

#: A statement and one row of its parameters; a :class:`~zingyconn.database.DriverStatement` skips SQLAlchemy's
#: per-row work.
Statement = tuple[Executable | DriverStatement, Mapping[str, Any]]
_Result = TypeVar("_Result")


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(slots=True, eq=False)  # compared by identity (the stop marker), never field by field
class _Write:
    statements: list[Statement]
    action: Callable[[Connection], Any] | None = None
    result: Any = None
    error: BaseException | None = None
    #: Held until the write's transaction has ended; its caller waits by acquiring it (a lock costs a tenth of an
    #: Event, whose condition variable is built and waited on in Python).
    pending: threading.Lock = field(default_factory=_held_lock)


_STOP: Final = _Write([])


class GroupWriter:
    """One writer thread for *engine* (started on the first write); thread-safe.

    Args:
        engine: The store the statements write to.
        max_batch: Writes per transaction at most.
        max_queued: Writes waiting at most (back-pressure beyond).
    """

    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH, max_queued: int = MAX_QUEUED) -> None:
        self._engine = engine
        self._max_batch = max_batch
        # A C queue with a semaphore for its bound: queue.Queue does the same with three condition variables in
        # Python, a few microseconds per write.
        self._queue: queue.SimpleQueue[_Write] = queue.SimpleQueue()
        self._room = threading.Semaphore(max_queued)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._collecting = threading.local()  # this thread's together() block, if any

    def write(self, *statements: Statement) -> None:
        """Execute *statements* in one transaction with other callers' and return once it committed.

        Inside a :meth:`together` block of this thread, they are kept for the block's transaction instead.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: What the statements' own transaction would have raised.
        """
        collected: list[Statement] | None = getattr(self._collecting, "statements", None)
        if collected is not None:
            collected.extend(statements)
            return
        self._submit(_Write(list(statements)))

    def call(self, action: Callable[[Connection], _Result]) -> _Result:
        """Run *action* with the connection of the next batch's transaction; return its result once that committed.

        Never kept for a :meth:`together` block: the caller acts on the result, so it must be committed now. Run
        again from the start when its batch is written again one write at a time (see the module docstring), so it
        must only use *conn*.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: What *action* or the transaction's commit raised.
        """
        write = _Write([], action)
        self._submit(write)
        return write.result  # type: ignore[no-any-return]  # what action returned, typed by call's signature

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Keep this thread's writes of the block, and write them in one transaction when it ends (also when it
        raises: what was done is recorded), waiting for the commit.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: The block's writes could not be committed (when the block itself did
                not raise).
        """
        if getattr(self._collecting, "statements", None) is not None:  # nested: the outer block writes
            yield
            return
        statements: list[Statement] = []
        self._collecting.statements = statements
        try:
            yield
        finally:
            self._collecting.statements = None
            if statements:
                self._submit(_Write(statements))

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        with self._lock:
            self._closed, thread = True, self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def _submit(self, write: _Write) -> None:
        # The writer thread itself never queues (it would wait for itself), and never takes the lock, which a caller
        # may hold while the queue is full.
        direct = threading.current_thread() is self._thread
        if not direct:
            with self._lock:
                direct = self._closed
                if not direct:
                    if self._thread is None:
                        self._thread = threading.Thread(target=self._run, name="zingyconn-group-commit", daemon=True)
                        self._thread.start()
                    # Queued under the lock, so that close() puts its stop after every write it did not refuse:
                    # a write queued behind the stop would wait for ever. Waits while the queue is full
                    # (back-pressure); the writer thread drains it without the lock.
                    self._room.acquire()
                    self._queue.put(write)
        if direct:
            self._commit([write])
        else:
            write.pending.acquire()
        if write.error is not None:
            raise write.error

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            writes = [write for write in batch if write is not _STOP]
            if writes:
                self._room.release(len(writes))
            self._commit(writes)
            if len(writes) < len(batch):
                self._commit(self._drain())
                return

    def _drain(self) -> list[_Write]:
        left: list[_Write] = []
        with contextlib.suppress(queue.Empty):
            while True:
                left.append(self._queue.get_nowait())
        return [write for write in left if write is not _STOP]

    def _commit(self, batch: list[_Write]) -> None:
        """Write *batch* in one transaction; on an error that is not a store fault (or is a conflict), each write in
        its own."""
        if not batch:
            return
        try:
            self._transaction(batch)
        except Exception as exc:  # noqa: BLE001  # handed to each caller, who raises it in its own thread
            # A conflict (two servers' batches claiming the same tokens in opposite orders deadlock on PostgreSQL)
            # is the batch's, not any one write's fault: written one at a time, no cycle can form.
            if len(batch) == 1 or (is_storage_fault(exc) and not is_conflict(exc)):
                for write in batch:
                    write.error = exc
            else:
                for write in batch:
                    try:
                        self._transaction([write])
                    except Exception as alone:  # noqa: BLE001  # as above
                        write.error = alone
        for write in batch:
            write.pending.release()

    def _transaction(self, batch: list[_Write]) -> None:
        # One executemany per statement object (a history upsert built once serves every run), in the order each
        # first appears: cheaper than a statement at a time, and writes of one batch never depend on each other's
        # order (the rows of one statement keep theirs).
        grouped: dict[int, tuple[Executable | DriverStatement, list[Mapping[str, Any]]]] = {}
        for write in batch:
            for statement, parameters in write.statements:
                grouped.setdefault(id(statement), (statement, []))[1].append(parameters)
        with self._engine.begin() as conn:
            for write in batch:
                if write.action is not None:
                    write.result = write.action(conn)
            for statement, rows in grouped.values():
                if isinstance(statement, DriverStatement):
                    statement.execute(conn, rows)
                else:
                    conn.execute(statement, rows if len(rows) > 1 else rows[0])

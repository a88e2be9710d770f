"""The durable task record: claims run a task once, leases and dead workers give it back, re-runs keep the id."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from zingyconn.database import create_engine
from zingyconn.errors import NotFoundError, ValidationError
from zingyconn.tasks.store import LEASE_SLACK_SECONDS, MAX_ATTEMPTS, QUEUED_GRACE_SECONDS, TaskExistsError, TaskStore


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated store: a SQLite file, or a fresh PostgreSQL database (what many machines share)."""
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    engine = create_engine(str(url))
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_claim_runs_a_task_once(engine: Engine, clock: Clock) -> None:
    """Two workers receiving the same task id: one claims it, the other is told to skip it."""
    first, second = TaskStore(engine, clock=clock, owner="a:1"), TaskStore(engine, clock=clock, owner="b:2")
    task = first.create("acme", "digest", {"n": 1}, source="api")
    claimed = first.claim(task.id, lease_seconds=10)
    assert claimed is not None
    assert (claimed.state, claimed.attempts, claimed.owner) == ("running", 1, "a:1")
    assert claimed.lease_until == clock.now + 10 + LEASE_SLACK_SECONDS
    assert second.claim(task.id, lease_seconds=10) is None


def test_finish_only_counts_for_the_claim_holder(engine: Engine, clock: Clock) -> None:
    """A worker whose claim was taken back cannot overwrite the task's outcome."""
    store, other = TaskStore(engine, clock=clock, owner="a:1"), TaskStore(engine, clock=clock, owner="b:2")
    task = store.create("acme", "digest", None, source="api")
    store.claim(task.id, lease_seconds=10)
    assert not other.finish(task.id, state="failed", run_id="r1")
    assert store.finish(task.id, state="succeeded", run_id="r1")
    assert store.get(task.id).state == "succeeded"
    assert store.get(task.id).run_id == "r1"


def test_expired_lease_is_reclaimed(engine: Engine, clock: Clock) -> None:
    """A running task whose lease ran out goes back to queued, keeping its attempt count."""
    store = TaskStore(engine, clock=clock, owner="elsewhere:1")
    task = store.create("acme", "digest", None, source="api")
    store.claim(task.id, lease_seconds=10)
    assert TaskStore(engine, clock=clock).reclaim() == []
    clock.now += 10 + LEASE_SLACK_SECONDS + 1
    [reclaimed] = TaskStore(engine, clock=clock).reclaim()
    assert (reclaimed.id, store.get(task.id).state, store.get(task.id).attempts) == (task.id, "queued", 1)


def test_task_of_a_dead_local_worker_is_reclaimed_at_once(engine: Engine, clock: Clock) -> None:
    """A worker on this machine that no longer exists (SIGKILLed) loses its claim without waiting for the lease."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    dead = TaskStore(engine, clock=clock, owner=f"{TaskStore(engine).owner.rpartition(':')[0]}:{process.pid}")
    task = dead.create("acme", "digest", None, source="api")
    dead.claim(task.id, lease_seconds=300)
    assert [r.id for r in TaskStore(engine, clock=clock).reclaim()] == [task.id]


def test_queued_task_whose_message_was_lost_is_requeued(engine: Engine, clock: Clock) -> None:
    """A queued task nobody claimed within the grace period is put on the queue again."""
    store = TaskStore(engine, clock=clock)
    task = store.create("acme", "digest", None, source="api")
    clock.now += QUEUED_GRACE_SECONDS + 1
    assert store.reclaim(include_waiting=False) == []  # the queue still holds messages: it is just waiting
    assert [r.id for r in store.reclaim()] == [task.id]


def test_task_that_keeps_losing_its_worker_fails(engine: Engine, clock: Clock) -> None:
    """After MAX_ATTEMPTS lost workers the task is failed, not re-queued forever."""
    store = TaskStore(engine, clock=clock, owner="elsewhere:1")
    task = store.create("acme", "digest", None, source="api")
    for _ in range(MAX_ATTEMPTS):
        assert store.claim(task.id, lease_seconds=1) is not None
        clock.now += 1 + LEASE_SLACK_SECONDS + 1
        store.reclaim()
    record = store.get(task.id)
    assert record.state == "failed"
    assert record.error is not None
    assert record.error["type"] == "WorkerLostError"


def test_rerun_requeues_a_failed_task_under_its_id(engine: Engine, clock: Clock) -> None:
    """Re-running keeps the task id (its idempotency key) and refuses tasks that did not fail."""
    store = TaskStore(engine, clock=clock)
    task = store.create("acme", "digest", None, source="api")
    store.claim(task.id, lease_seconds=1)
    with pytest.raises(ValidationError, match="only failed tasks"):
        store.rerun(task.id)
    store.finish(task.id, state="failed", run_id="r1", error={"type": "SnippetError", "message": "boom"})
    again = store.rerun(task.id)
    assert (again.id, again.state, again.source, again.error) == (task.id, "queued", "rerun", None)
    with pytest.raises(NotFoundError):
        store.rerun("nope")


def test_explicit_task_id_is_unique(engine: Engine, clock: Clock) -> None:
    """Creating a task under a taken id fails with TaskExistsError (how cron minutes fire once)."""
    store = TaskStore(engine, clock=clock)
    store.create("acme", "digest", None, source="cron", task_id="cron-1")
    with pytest.raises(TaskExistsError):
        store.create("acme", "digest", None, source="cron", task_id="cron-1")

"""The durable task record: claims run a task once, expired leases give it back, dispatch is fair, re-runs keep ids."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from zingyconn.database import create_engine
from zingyconn.errors import NotFoundError, ValidationError
from zingyconn.leases import LeaseKeeper
from zingyconn.tasks.store import LOST_AFTER_SECONDS, MAX_ATTEMPTS, TaskExistsError, TaskStore

LEASE_SECONDS = 10.0
#: A keeper that renews only when a test says so (``renew_now``): leases then run out on the test's clock.
QUIET = LeaseKeeper(every_seconds=24 * 3600)


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
    first, second = (
        TaskStore(engine, keeper=QUIET, clock=clock, owner="a:1"),
        TaskStore(engine, keeper=QUIET, clock=clock, owner="b:2"),
    )
    task = first.create("acme", "digest", {"n": 1}, source="api")
    claimed = first.claim(task.id)
    assert claimed is not None
    assert (claimed.state, claimed.attempts, claimed.owner) == ("running", 1, "a:1")
    assert claimed.lease_until == clock.now + LEASE_SECONDS
    assert second.claim(task.id) is None


def test_finish_only_counts_for_the_claim_holder(engine: Engine, clock: Clock) -> None:
    """A worker whose claim was taken back cannot overwrite the task's outcome."""
    store, other = (
        TaskStore(engine, keeper=QUIET, clock=clock, owner="a:1"),
        TaskStore(engine, keeper=QUIET, clock=clock, owner="b:2"),
    )
    task = store.create("acme", "digest", None, source="api")
    store.claim(task.id)
    assert not other.finish(task.id, state="failed", run_id="r1")
    assert store.finish(task.id, state="succeeded", run_id="r1")
    assert store.get(task.id).state == "succeeded"
    assert store.get(task.id).run_id == "r1"


def test_expired_lease_is_reclaimed(engine: Engine, clock: Clock) -> None:
    """A running task whose lease ran out goes back to queued, keeping its attempt count."""
    store = TaskStore(engine, keeper=QUIET, clock=clock, owner="elsewhere:1")
    task = store.create("acme", "digest", None, source="api")
    store.claim(task.id)
    assert TaskStore(engine, keeper=QUIET, clock=clock).reclaim() == []
    clock.now += LEASE_SECONDS + 1
    [reclaimed] = TaskStore(engine, keeper=QUIET, clock=clock).reclaim()
    assert (reclaimed.id, store.get(task.id).state, store.get(task.id).attempts) == (task.id, "queued", 1)


def test_a_live_workers_lease_is_renewed_and_a_dead_ones_runs_out(engine: Engine, clock: Clock) -> None:
    """While its process renews the lease, a long run is never taken back; once renewals stop, it is."""
    keeper = LeaseKeeper(clock=clock, every_seconds=3600)
    alive = TaskStore(engine, clock=clock, owner="alive:1", keeper=keeper)
    task = alive.create("acme", "digest", None, source="api")
    alive.claim(task.id)
    for _ in range(5):  # a run five leases long
        clock.now += LEASE_SECONDS - 1
        keeper.renew_now()
        assert TaskStore(engine, keeper=QUIET, clock=clock).reclaim() == []
    clock.now += LEASE_SECONDS + 1  # the process died: no renewal
    assert [record.id for record in TaskStore(engine, keeper=QUIET, clock=clock).reclaim()] == [task.id]
    assert not alive.finish(task.id, state="succeeded", run_id="late")  # the dead claim's outcome is not recorded


def test_dispatched_task_whose_message_was_lost_is_dispatched_again(engine: Engine, clock: Clock) -> None:
    """A dispatched task no worker claimed (the queue lost its data) becomes ready again after a few seconds."""
    store = TaskStore(engine, keeper=QUIET, clock=clock)
    task = store.create("acme", "digest", None, source="api")
    assert store.ready_tenants() == ["acme"]
    assert store.dispatch_next("acme") == task.id
    assert store.ready_tenants() == []
    assert store.redispatch_lost() == 0  # just dispatched: a worker may be about to claim it
    clock.now += LOST_AFTER_SECONDS + 1
    assert store.redispatch_lost() == 1
    assert store.dispatch_next("acme") == task.id


def test_retry_waits_its_backoff_before_it_is_ready(engine: Engine, clock: Clock) -> None:
    """A transient failure is dispatched again only after its backoff."""
    store = TaskStore(engine, keeper=QUIET, clock=clock)
    task = store.create("acme", "digest", None, source="api")
    store.dispatch_next("acme")
    store.claim(task.id)
    assert store.retry_later(task.id, delay_seconds=30, run_id="r1", error={"type": "X", "message": "x"})
    assert store.ready_tenants() == []
    clock.now += 31
    assert store.dispatch_next("acme") == task.id


def test_task_that_keeps_losing_its_worker_fails(engine: Engine, clock: Clock) -> None:
    """After MAX_ATTEMPTS lost workers the task is failed, not re-queued forever."""
    store = TaskStore(engine, keeper=QUIET, clock=clock, owner="elsewhere:1")
    task = store.create("acme", "digest", None, source="api")
    for _ in range(MAX_ATTEMPTS):
        assert store.claim(task.id) is not None
        clock.now += LEASE_SECONDS + 1
        store.reclaim()
    record = store.get(task.id)
    assert record.state == "failed"
    assert record.error is not None
    assert record.error["type"] == "WorkerLostError"


def test_rerun_requeues_a_failed_task_under_its_id(engine: Engine, clock: Clock) -> None:
    """Re-running keeps the task id (its idempotency key) and refuses tasks that did not fail."""
    store = TaskStore(engine, keeper=QUIET, clock=clock)
    task = store.create("acme", "digest", None, source="api")
    store.claim(task.id)
    with pytest.raises(ValidationError, match="only failed or cancelled tasks"):
        store.rerun(task.id)
    store.finish(task.id, state="failed", run_id="r1", error={"type": "SnippetError", "message": "boom"})
    again = store.rerun(task.id)
    assert (again.id, again.state, again.source, again.error) == (task.id, "queued", "rerun", None)
    with pytest.raises(NotFoundError):
        store.rerun("nope")


def test_explicit_task_id_is_unique(engine: Engine, clock: Clock) -> None:
    """Creating a task under a taken id fails with TaskExistsError (how cron minutes fire once)."""
    store = TaskStore(engine, keeper=QUIET, clock=clock)
    store.create("acme", "digest", None, source="cron", task_id="cron-1")
    with pytest.raises(TaskExistsError):
        store.create("acme", "digest", None, source="cron", task_id="cron-1")


def test_repeated_enqueue_under_one_id_returns_the_first_task(engine: Engine, clock: Clock) -> None:
    """An idempotent enqueue (a retried run, a replayed webhook) gets the first task back; another tenant does not."""
    store = TaskStore(engine, keeper=QUIET, clock=clock)
    first = store.create("acme", "digest", {"n": 1}, source="snippet", task_id="run-1")
    again = store.create("acme", "digest", {"n": 1}, source="snippet", task_id="run-1", existing_ok=True)
    assert again.id == first.id
    assert len(store.recent("acme")) == 1
    with pytest.raises(TaskExistsError):
        store.create("globex", "digest", None, source="snippet", task_id="run-1", existing_ok=True)

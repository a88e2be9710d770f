"""Every message exactly once through faults: killed workers, restarted Redis and PostgreSQL, dropped answers.

Few repetitions here (the suite stays short); ``benchmarks/delivery_faults.py`` repeats them for the figures.
"""

from __future__ import annotations

import random

import pytest

from tests.faults.delivery import Tally, dropped_answers, outage, stack, worker_kills


def _exactly_once(tally: Tally) -> None:
    assert (tally.sent, tally.duplicated, tally.lost, tally.failed_tasks) == (tally.expected, 0, 0, 0), tally


@pytest.mark.slow
def test_a_worker_killed_at_random_points_of_a_50_message_task_sends_each_once() -> None:
    """SIGKILL mid-task, restart: the task succeeds without a person, and every message went out exactly once."""
    with stack(backend="sqlite") as running:
        _exactly_once(worker_kills(running, runs=2, messages=50, rand=random.Random(7)))


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
def test_redis_and_postgres_killed_and_restarted_mid_burst_lose_and_double_nothing() -> None:
    """Redis (restarting empty) and then PostgreSQL die for 3 s during a burst: no message lost, none doubled."""
    with stack(backend="postgres+redis") as running:
        assert running.redis is not None
        assert running.postgres is not None
        redis, postgres = running.redis, running.postgres
        _exactly_once(outage(running, name="redis", tasks_count=6, messages=8, kill=redis.kill, restart=redis.start))
        _exactly_once(
            outage(running, name="postgres", tasks_count=6, messages=8, kill=postgres.kill, restart=postgres.start)
        )


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
def test_workers_started_while_postgres_is_down_run_the_tasks_once_it_is_back() -> None:
    """Workers that start during a PostgreSQL restart wait for it instead of exiting, then run every task once."""
    with stack(backend="postgres+redis") as running:
        assert running.postgres is not None
        postgres = running.postgres
        kill, restart = postgres.kill, postgres.start
        _exactly_once(
            outage(running, name="early", tasks_count=3, messages=4, kill=kill, restart=restart, kill_after_seconds=0)
        )


@pytest.mark.slow
def test_answers_dropped_after_forwarding_are_reconciled_not_resent() -> None:
    """A proxy forwards creates and drops their answers: the retries find the messages and send nothing twice."""
    with stack(backend="sqlite", through_proxy_drops=4) as running:
        _exactly_once(dropped_answers(running, tasks_count=4, messages=5))

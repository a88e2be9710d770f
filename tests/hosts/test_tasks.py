"""Background tasks end to end: real Huey queues (SQLite, Redis), real sandbox runs, the Twilio emulator."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from tests.emulator import MAGIC_SENDER, RECIPIENT, Emulator, EmulatorHttpClient
from tests.hosts.flaky_twilio import flaky_twilio
from tests.servers import start_worker
from zingyconn.egress.broker import MAX_TOO_MANY_RETRIES
from zingyconn.egress.protocol import OP_ENQUEUE
from zingyconn.egress.ratelimit import Rate
from zingyconn.hosts.console.runner import SAMPLE_EVENTS
from zingyconn.runtime import Runtime
from zingyconn.schema import runs, sent_messages
from zingyconn.tasks.queue import TaskQueue
from zingyconn.tasks.retry import Backoff
from zingyconn.tasks.store import TaskRecord
from zingyconn.twilio.profile import TwilioProfile

SEND = f"""
client = zingyConn.twilio("main")
message = client.messages.create(to=event["to"], from_="{MAGIC_SENDER}", body=event.get("body", "hello"))
return {{"sid": message.sid}}
"""
#: Sends, then works for a while: long enough to kill the worker after the send and before the task finishes.
SEND_THEN_WORK = SEND.replace("return", "import time\ntime.sleep(3)\nreturn")
TRIVIAL = "return event"
FINISHED = ("succeeded", "failed")


def _settings(data_dir: Path, base_url: str | None, queue_url: str | None = None) -> dict[str, str]:
    env = {"ZINGYCONN_DATA_DIR": str(data_dir)}
    if base_url is not None:
        env["ZINGYCONN_TWILIO_BASE_URL"] = base_url
    if queue_url is not None:
        env["ZINGYCONN_QUEUE_URL"] = queue_url
    return env


def _wait_for(predicate: Callable[[], Any], *, timeout_seconds: float = 60.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"Gave up waiting for {what} after {timeout_seconds} s.")


def _finished(queue: TaskQueue, task_id: str) -> Callable[[], TaskRecord | None]:
    def check() -> TaskRecord | None:
        record = queue.store.get(task_id)
        return record if record.state in FINISHED else None

    return check


def _runs_of(runtime: Runtime, task_id: str) -> list[tuple[int, str]]:
    query = sa.select(runs.c.attempt, runs.c.status).where(runs.c.task_id == task_id).order_by(runs.c.attempt)
    with runtime.engine.connect() as conn:
        return [(row.attempt, row.status) for row in conn.execute(query)]


def _sent(runtime: Runtime, key: str) -> bool:
    query = sa.select(sent_messages.c.state).where(sent_messages.c.key == key)
    with runtime.engine.connect() as conn:
        return conn.execute(query).scalar() == "sent"


def _messages(emulator: Emulator) -> list[Any]:
    return emulator.state.messages(emulator.account_sid)


@pytest.fixture
def runtime(tmp_path: Path, emulator: Emulator) -> Iterator[Runtime]:
    """A runtime on a fresh data dir whose tenant "acme" has connection "main" on the emulator."""
    with Runtime.from_env(_settings(tmp_path, emulator.base_url)) as runtime:
        profile = TwilioProfile(emulator.account_sid, emulator.api_key, emulator.api_secret)  # the token is not hex
        runtime.store.put("acme", "main", profile)
        yield runtime


def _queue(runtime: Runtime, **options: Any) -> TaskQueue:
    queue = TaskQueue.from_settings(runtime.settings, engine=runtime.engine, runner=runtime, **options)
    runtime.register_op(OP_ENQUEUE, queue.enqueue_from_snippet)  # as the composition root wires it
    return queue


def test_sqlite_queue_runs_a_task_that_sends_one_message(runtime: Runtime, emulator: Emulator) -> None:
    """enqueue -> in-process worker -> the message exists once, the run is in the history as attempt 1."""
    queue = _queue(runtime)
    queue.catalog.put_script("acme", "notify", SEND)
    task = queue.enqueue("acme", "notify", {"to": RECIPIENT, "body": "your order shipped"})
    queue.start(workers=1)
    try:
        done = _wait_for(_finished(queue, task.id), what="the task")
    finally:
        queue.stop()
    assert (done.state, done.attempts) == ("succeeded", 1)
    assert [m.body for m in _messages(emulator)] == ["your order shipped"]
    assert _runs_of(runtime, task.id) == [(1, "ok")]


def test_a_script_saved_as_instance_runs_its_tasks_in_one_warm_process(runtime: Runtime) -> None:
    """Two tasks of a script with isolation 'instance' both succeed and leave one warm process for its version."""
    queue = _queue(runtime)
    script = queue.catalog.put_script("acme", "tally", "return event['n'] * 2", isolation="instance")
    tasks = [queue.enqueue("acme", "tally", {"n": n}) for n in (1, 2)]
    queue.start(workers=1)
    try:
        done = [_wait_for(_finished(queue, task.id), what="a task") for task in tasks]
    finally:
        queue.stop()

    assert [record.state for record in done] == ["succeeded", "succeeded"]
    key = (("acme", "task", "tally", script.version), script.run_limits())
    assert len(runtime.sandbox.instances.idle_pids(key)) == 1


def test_transient_429_is_retried_and_the_message_is_sent_once(
    tmp_path: Path, emulator: Emulator, runtime: Runtime
) -> None:
    """Twilio answers 429 (20429) past what one run waits out: the task is retried after a backoff, sends once."""
    refusals = MAX_TOO_MANY_RETRIES + 1  # the run waits out the first Retry-Afters, then fails on the last 429
    with (
        flaky_twilio(emulator.base_url, fail_creates=refusals, retry_after_seconds=0.05) as flaky,
        Runtime.from_env(_settings(tmp_path, flaky.base_url)) as proxied,
    ):
        queue = _queue(proxied, backoff=Backoff(base_seconds=0.01))
        queue.catalog.put_script("acme", "notify", SEND)
        task = queue.enqueue("acme", "notify", {"to": RECIPIENT})
        queue.start(workers=1)
        try:
            done = _wait_for(_finished(queue, task.id), what="the task")
        finally:
            queue.stop()
        history = _runs_of(proxied, task.id)
    assert (done.state, done.attempts) == ("succeeded", 2)
    assert history == [(1, "failed"), (2, "ok")]
    assert flaky.refused == refusals
    assert len(_messages(emulator)) == 1


def test_snippet_error_fails_without_retry_and_a_rerun_does_not_resend(runtime: Runtime, emulator: Emulator) -> None:
    """A snippet that raises after sending fails at once; re-running it reuses its key, so no second SMS."""
    queue = _queue(runtime)
    queue.catalog.put_script("acme", "broken", SEND.replace("return", "1 / 0\nreturn"))
    task = queue.enqueue("acme", "broken", {"to": RECIPIENT})
    queue.start(workers=1)
    try:
        failed = _wait_for(_finished(queue, task.id), what="the task")
        assert (failed.state, failed.attempts) == ("failed", 1)
        assert failed.error is not None
        assert failed.error["exception"] == "ZeroDivisionError"
        assert failed.run_id is not None
        queue.rerun(failed.run_id)  # by the id of its run, as `zingyconn tasks rerun RUN_ID` does
        again = _wait_for(_finished(queue, task.id), what="the re-run")
    finally:
        queue.stop()
    assert (again.state, again.source) == ("failed", "rerun")
    assert len(_messages(emulator)) == 1


def test_cron_schedule_fires_once_per_minute_with_an_advanced_clock(runtime: Runtime, emulator: Emulator) -> None:
    """A script on '*/5 * * * *' fires at :05, once, even with two schedulers ticking; the task sends one SMS."""
    now = [dt.datetime(2026, 11, 26, 12, 3, 30, tzinfo=dt.UTC).timestamp()]
    first, second = (_queue(runtime, clock=lambda: now[0]) for _ in range(2))
    first.catalog.put_script("acme", "digest", SEND.replace('event["to"]', f'"{RECIPIENT}"'), cron="*/5 * * * *")
    assert first.tick() == []
    now[0] += 120  # 12:05:30
    [fired] = first.tick()
    assert second.tick() == []  # the other scheduler: the minute already fired
    assert first.tick() == []
    assert fired.source == "cron"
    assert fired.payload == {"scheduled_for": "2026-11-26T12:05Z", "cron": "*/5 * * * *", "timezone": "UTC"}
    first.start(workers=1)
    try:
        done = _wait_for(_finished(first, fired.id), what="the cron task")
    finally:
        first.stop()
    assert done.state == "succeeded"
    assert len(_messages(emulator)) == 1


def test_cron_schedule_in_a_time_zone_fires_at_its_local_time(runtime: Runtime) -> None:
    """A script on '0 9 * * MON-FRI' in Europe/Paris fires at 08:00 UTC on a winter Friday, not at 09:00 UTC."""
    now = [dt.datetime(2026, 11, 27, 7, 58, 30, tzinfo=dt.UTC).timestamp()]
    queue = _queue(runtime, clock=lambda: now[0])
    queue.catalog.put_script("acme", "standup", TRIVIAL, cron="0 9 * * MON-FRI", timezone="Europe/Paris")
    assert queue.tick() == []
    now[0] += 120  # 08:00:30 UTC, 09:00:30 in Paris
    [fired] = queue.tick()
    now[0] += 3600  # 09:00:30 UTC
    assert queue.tick() == []
    assert fired.payload == {
        "scheduled_for": "2026-11-27T08:00Z",
        "cron": "0 9 * * MON-FRI",
        "timezone": "Europe/Paris",
    }


def test_the_consoles_scheduled_tick_sample_is_what_a_schedule_sends(runtime: Runtime) -> None:
    """The runner's "Scheduled tick" sample event has the keys a cron run's event has, so a snippet tried with it
    reads the same fields in production."""
    now = [dt.datetime(2026, 11, 27, 7, 59, 30, tzinfo=dt.UTC).timestamp()]
    queue = _queue(runtime, clock=lambda: now[0])
    queue.catalog.put_script("acme", "tick", TRIVIAL, cron="* * * * *")
    [fired] = queue.tick()

    assert set(SAMPLE_EVENTS["Scheduled tick (task)"]) == set(fired.payload)


def test_enqueue_from_a_snippet_queues_a_script_of_the_same_tenant(runtime: Runtime) -> None:
    """zingyConn.enqueue(script, payload) queues the run's tenant's script and returns the task id."""
    queue = _queue(runtime)
    queue.catalog.put_script("acme", "follow_up", TRIVIAL)
    result = runtime.run("acme", 'return zingyConn.enqueue("follow_up", {"n": 1})', kind="webhook")
    assert result.ok, result.error
    record = queue.store.get(result.value)
    assert (record.tenant, record.script, record.payload, record.source) == ("acme", "follow_up", {"n": 1}, "snippet")
    missing = runtime.run("other", 'return zingyConn.enqueue("follow_up", {})', kind="webhook")
    assert missing.error is not None
    assert "has no script named 'follow_up'" in missing.error.message


def test_stopping_the_embedded_consumer_hands_a_running_task_back(runtime: Runtime, emulator: Emulator) -> None:
    """A server shutting down mid-task re-queues the task; the next consumer finishes it without a second SMS."""
    queue = _queue(runtime)
    queue.catalog.put_script("acme", "slow", SEND_THEN_WORK)
    task = queue.enqueue("acme", "slow", {"to": RECIPIENT})
    queue.start(workers=1)
    try:
        _wait_for(lambda: _sent(runtime, f"{task.id}:1"), what="the send")
    finally:
        queue.stop(timeout_seconds=0.1)
    assert queue.store.get(task.id).state == "queued"
    queue.start(workers=1)
    try:
        done = _wait_for(_finished(queue, task.id), what="the task")
    finally:
        queue.stop()
    assert (done.state, done.attempts) == ("succeeded", 2)
    assert len(_messages(emulator)) == 1


def test_snippet_enqueues_stop_at_the_tenant_cap(runtime: Runtime) -> None:
    """A snippet cannot fill the queue: past the tenant's in-flight cap, enqueue raises QuotaExceededError."""
    queue = _queue(runtime, max_waiting_per_tenant=2)
    queue.catalog.put_script("acme", "again", TRIVIAL)
    loop = 'return [zingyConn.enqueue("again", {"n": n}) for n in range(3)]'
    result = runtime.run("acme", loop, kind="webhook")
    assert result.error is not None
    assert result.error.type == "QuotaExceededError"
    assert "already has 2 tasks waiting" in result.error.message
    assert len(queue.store.recent("acme")) == 2


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group also holds the worker's sandbox processes
        os.killpg(process.pid, sig)
    process.wait(timeout=90)


@pytest.mark.slow
def test_sigkilled_worker_task_completes_once_after_restart(
    tmp_path: Path, emulator: Emulator, runtime: Runtime
) -> None:
    """A worker SIGKILLed after its task sent a message: the restarted worker re-runs it, and it sends nothing new."""
    env = _settings(tmp_path, emulator.base_url)
    queue = _queue(runtime)
    queue.catalog.put_script("acme", "slow", SEND_THEN_WORK)
    task = queue.enqueue("acme", "slow", {"to": RECIPIENT})
    worker = start_worker(env)
    try:
        _wait_for(lambda: _sent(runtime, f"{task.id}:1"), what="the first send to be recorded")
        _stop(worker, signal.SIGKILL)
        assert queue.store.get(task.id).state == "running"
        worker = start_worker(env)
        done = _wait_for(_finished(queue, task.id), what="the re-run")
    finally:
        _stop(worker)
    assert (done.state, done.attempts, done.error) == ("succeeded", 2, None)
    assert len(_messages(emulator)) == 1
    assert _runs_of(runtime, task.id) == [(2, "ok")]  # the killed attempt never finished, so it left no run


@pytest.mark.slow
def test_sigterm_lets_the_running_task_finish(tmp_path: Path, emulator: Emulator, runtime: Runtime) -> None:
    """SIGTERM stops a worker gracefully: the task it is running finishes (once) before the worker exits 0."""
    queue = _queue(runtime)
    queue.catalog.put_script("acme", "slow", SEND_THEN_WORK)
    task = queue.enqueue("acme", "slow", {"to": RECIPIENT})
    worker = start_worker(_settings(tmp_path, emulator.base_url))
    try:
        _wait_for(lambda: _sent(runtime, f"{task.id}:1"), what="the send")
        worker.send_signal(signal.SIGTERM)  # the worker only, as `kill PID` does
        assert worker.wait(timeout=60) == 0
    finally:
        _stop(worker)
    done = queue.store.get(task.id)
    assert (done.state, done.attempts) == ("succeeded", 1)
    assert len(_messages(emulator)) == 1


@pytest.mark.slow
@pytest.mark.redis
def test_two_redis_workers_run_each_of_200_tasks_exactly_once(tmp_path: Path, redis_url: str) -> None:
    """Two worker processes on one Redis queue share 200 tasks: every task runs once, none twice, none lost."""
    env = _settings(tmp_path, None, redis_url)
    with Runtime.from_env(env) as runtime:
        queue = _queue(runtime)
        queue.huey.flush()
        queue.catalog.put_script("acme", "count", TRIVIAL)
        ids = {queue.enqueue("acme", "count", {"n": n}).id for n in range(200)}
        workers = [start_worker(env, workers=2) for _ in range(2)]
        try:
            _wait_for(
                lambda: len(queue.store.recent("acme", state="succeeded", limit=500)) == 200,
                timeout_seconds=120,
                what="200 tasks",
            )
        finally:
            for process in workers:
                _stop(process)
        with runtime.engine.connect() as conn:
            ran = conn.execute(sa.select(runs.c.task_id, runs.c.attempt).where(runs.c.tenant == "acme")).all()
    assert sorted(task_id for task_id, _ in ran) == sorted(ids)
    assert {attempt for _, attempt in ran} == {1}
    assert {record.attempts for record in queue.store.recent("acme", limit=500)} == {1}


def test_flaky_twilio_refuses_then_forwards(emulator: Emulator) -> None:
    """The test proxy answers 429 with Twilio's error body, then forwards to the emulator."""
    with flaky_twilio(emulator.base_url, fail_creates=1) as flaky:
        client = Client(emulator.account_sid, emulator.auth_token, http_client=EmulatorHttpClient(flaky.base_url))
        with pytest.raises(TwilioRestException) as refused:
            client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="x")
        assert (refused.value.status, refused.value.code) == (429, 20429)
        assert client.messages.create(to=RECIPIENT, from_=MAGIC_SENDER, body="x").status == "queued"


def test_enqueue_under_retries_and_replays_queues_one_follow_up(runtime: Runtime) -> None:
    """A run that enqueues, repeated under its idempotency key (a task retry, a replayed webhook): one follow-up."""
    queue = _queue(runtime)
    queue.catalog.put_script("acme", "follow_up", TRIVIAL)
    source = 'return [zingyConn.enqueue("follow_up", {"n": 1}), zingyConn.enqueue("follow_up", {"n": 2})]'
    attempts = [runtime.run("acme", source, kind="task", idempotency_key="task-42") for _ in range(3)]
    replays = [runtime.run("acme", source, kind="webhook", idempotency_key="webhook:h:tok") for _ in range(2)]
    assert all(result.ok for result in attempts + replays)
    assert attempts[0].value == attempts[1].value == attempts[2].value
    assert replays[0].value == replays[1].value
    assert len(set(attempts[0].value + replays[0].value)) == 4
    assert len(queue.store.recent("acme")) == 4  # two per distinct run key, none per repetition
    unkeyed = [runtime.run("acme", source, kind="console").value for _ in range(2)]
    assert len(set(unkeyed[0] + unkeyed[1])) == 4  # without a key, each run is new work


def test_snippet_enqueues_are_rate_limited_per_tenant(runtime: Runtime) -> None:
    """A snippet enqueueing in a loop is stopped by the tenant's enqueue rate, with an error that says so."""
    queue = _queue(runtime, enqueue_rate=Rate(per_second=0.01, burst=3))
    queue.catalog.put_script("acme", "again", TRIVIAL)
    result = runtime.run("acme", 'return [zingyConn.enqueue("again", {"n": n}) for n in range(5)]', kind="webhook")
    assert result.error is not None
    assert result.error.type == "QuotaExceededError"
    assert "may enqueue at most 0.01 tasks per second (bursts of 3)" in result.error.message
    assert len(queue.store.recent("acme")) == 3


def _started_order(runtime: Runtime) -> list[str]:
    query = sa.select(runs.c.tenant).where(runs.c.kind == "task").order_by(runs.c.started_at)
    with runtime.engine.connect() as conn:
        return [str(tenant) for tenant in conn.execute(query).scalars()]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_one_tenants_backlog_does_not_delay_another_tenants_task(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """Tenant A queues six slow tasks; tenant B's one task runs next after A's current one, not after all six."""
    queue_url = None if backend == "sqlite" else str(request.getfixturevalue("redis_url"))
    with Runtime.from_env(_settings(tmp_path, None, queue_url)) as runtime:
        queue = _queue(runtime)
        queue.huey.flush()
        queue.catalog.put_script("acme", "slow", "import time\ntime.sleep(0.5)\nreturn 1")
        queue.catalog.put_script("globex", "quick", TRIVIAL)
        backlog = [queue.enqueue("acme", "slow", {"n": n}) for n in range(6)]
        queue.start(workers=1)
        try:
            _wait_for(lambda: queue.store.get(backlog[0].id).state == "running", what="the first slow task")
            quick = queue.enqueue("globex", "quick", None)
            _wait_for(_finished(queue, quick.id), what="the other tenant's task")
            still_waiting = [task.id for task in backlog if queue.store.get(task.id).state == "queued"]
        finally:
            queue.stop()
        order = _started_order(runtime)
    assert order.index("globex") <= 2  # after the running task and at most one already handed to the worker
    assert len(still_waiting) >= 3  # most of the backlog was still waiting when the other tenant's task ran


@pytest.mark.redis
def test_a_redis_queue_that_lost_its_data_is_rebuilt_from_the_table(tmp_path: Path, redis_url: str) -> None:
    """Redis loses every message (a restart without persistence): the dispatched tasks are dispatched again."""
    with Runtime.from_env(_settings(tmp_path, None, redis_url)) as runtime:
        queue = _queue(runtime)
        queue.huey.flush()
        queue.catalog.put_script("acme", "count", TRIVIAL)
        ids = [queue.enqueue("acme", "count", {"n": n}).id for n in range(5)]
        queue._workers = 5  # dispatch for five idle workers, then lose the messages before any runs
        assert len(queue.dispatcher.dispatch()) == 5
        queue._workers = 0
        queue.huey.flush()
        started = time.monotonic()
        queue.start(workers=2)
        try:
            _wait_for(lambda: all(queue.store.get(i).state == "succeeded" for i in ids), what="the lost tasks")
        finally:
            queue.stop()
    assert time.monotonic() - started < 30  # seconds, not the ten minutes a lost message used to wait

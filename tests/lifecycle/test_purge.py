"""Retention and the purge: old rows go on their own (injected clock), younger ones stay; batches beside writers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.engine import Engine

from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.errors import ConfigurationError, ValidationError
from zingyconn.history import RunHistory
from zingyconn.hosts.cli import main
from zingyconn.purge import TABLES, JobLeases, Purger, PurgeSchedule
from zingyconn.retention import DAY_SECONDS, RUN_KINDS, RetentionPolicy
from zingyconn.schema import runs, sent_messages, tasks, webhook_responses

NOW = 1_900_000_000.0
HOUR = 3600.0

#: Different retention per kind, so that a purge using the wrong one is caught.
POLICY = RetentionPolicy(
    runs_seconds={
        "webhook": 1 * DAY_SECONDS,
        "task": 2 * DAY_SECONDS,
        "console": 3 * DAY_SECONDS,
        "command": 4 * DAY_SECONDS,
    },
    replays_seconds=6 * HOUR,
    sends_seconds=2 * DAY_SECONDS,
    tasks_seconds=5 * DAY_SECONDS,
    purge_interval_seconds=0.05,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    """A migrated store on SQLite (a file) or PostgreSQL (a fresh database)."""
    if request.param == "sqlite":
        return create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    return create_engine(str(request.getfixturevalue("postgres_url")).replace("postgresql://", "postgresql+psycopg://"))


def _fill(engine: Engine, tenant: str = "acme") -> None:
    """Rows of every table on both sides of their retention (just inside: 1 s younger; just outside: 1 s older)."""
    history = RunHistory(engine)
    ages = {kind: POLICY.runs_seconds[kind] for kind in RUN_KINDS}
    for kind, age in ages.items():
        for label, started in (("old", NOW - age - 1), ("young", NOW - age + 1)):
            history.record(
                run_id=f"run_{tenant}_{kind}_{label}", tenant=tenant, kind=kind, status="ok", started_at=started
            )
    with engine.begin() as conn:
        for label, created in (("old", NOW - POLICY.replays_seconds - 1), ("young", NOW - POLICY.replays_seconds + 1)):
            conn.execute(
                webhook_responses.insert().values(
                    tenant=tenant, hook="h", token=label, state="done", created_at=created
                )
            )
        for label, created in (("old", NOW - POLICY.sends_seconds - 1), ("young", NOW - POLICY.sends_seconds + 1)):
            conn.execute(sent_messages.insert().values(tenant=tenant, key=label, state="sent", created_at=created))
        for label, state, updated in (
            ("old", "succeeded", NOW - POLICY.tasks_seconds - 1),
            ("old-failed", "failed", NOW - POLICY.tasks_seconds - 1),
            ("young", "succeeded", NOW - POLICY.tasks_seconds + 1),
            ("old-but-queued", "queued", NOW - 100 * DAY_SECONDS),
        ):
            conn.execute(
                tasks.insert().values(
                    id=f"{tenant}-{label}",
                    tenant=tenant,
                    script="s",
                    state=state,
                    created_at=updated,
                    updated_at=updated,
                )
            )


def _left(engine: Engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        return {
            "runs": sorted(conn.execute(sa.select(runs.c.id)).scalars()),
            "webhook_responses": sorted(conn.execute(sa.select(webhook_responses.c.token)).scalars()),
            "sent_messages": sorted(conn.execute(sa.select(sent_messages.c.key)).scalars()),
            "tasks": sorted(conn.execute(sa.select(tasks.c.id)).scalars()),
        }


YOUNG = {
    "runs": sorted(f"run_acme_{kind}_young" for kind in RUN_KINDS),
    "webhook_responses": ["young"],
    "sent_messages": ["young"],
    "tasks": ["acme-old-but-queued", "acme-young"],
}


def test_old_rows_go_on_their_own_and_younger_ones_stay(engine: Engine) -> None:
    """The schedule's thread purges every table by its own retention, per run kind; nothing younger goes."""
    _fill(engine)
    schedule = PurgeSchedule(
        Purger(engine, POLICY, clock=lambda: NOW),
        JobLeases(engine, clock=lambda: NOW),
        interval_seconds=POLICY.purge_interval_seconds,
        first_delay_seconds=0.0,
    )
    schedule.start()
    try:
        deadline = time.monotonic() + 20
        while _left(engine) != YOUNG and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        schedule.stop()

    assert _left(engine) == YOUNG


def test_one_process_purges_per_interval(engine: Engine) -> None:
    """Of several processes sharing the store, the one holding the lease purges; the others wait their turn."""
    clock = [NOW]
    first, second = (
        PurgeSchedule(Purger(engine, POLICY, clock=lambda: clock[0]), JobLeases(engine, clock=lambda: clock[0]),
                      interval_seconds=600, owner=owner)
        for owner in ("a:1", "b:2")
    )  # fmt: skip
    assert first.run_once() is not None
    assert second.run_once() is None
    assert JobLeases(engine, clock=lambda: clock[0]).holder("purge") == "a:1"
    clock[0] += 601
    assert second.run_once() is not None


def test_dry_run_counts_and_tenant_scope(engine: Engine) -> None:
    """A dry run counts and deletes nothing; --tenant touches that tenant only; --all forgets it whole."""
    _fill(engine, "acme")
    _fill(engine, "globex")
    purger = Purger(engine, POLICY, clock=lambda: NOW)

    counted = purger.purge(dry_run=True, tenant="acme")
    assert counted.counts == {"runs": 4, "webhook_responses": 1, "sent_messages": 1, "tasks": 2}
    assert purger.purge(tenant="acme").counts == counted.counts
    forgotten = purger.purge(tenant="acme", everything=True)
    assert forgotten.counts == {"runs": 4, "webhook_responses": 1, "sent_messages": 1, "tasks": 1}
    with engine.connect() as conn:
        for table in (runs, webhook_responses, sent_messages):
            assert set(conn.execute(sa.select(table.c.tenant)).scalars()) == {"globex"}
        assert list(conn.execute(sa.select(tasks.c.id).where(tasks.c.tenant == "acme")).scalars()) == [
            "acme-old-but-queued"  # work still to do is not history
        ]
    with pytest.raises(ValidationError, match="needs a tenant"):
        purger.purge(everything=True)


def test_older_than_never_goes_below_the_replay_and_ledger_floors(engine: Engine) -> None:
    """--older-than 1h purges runs of the last day, but keeps replay records under 4 h and ledger keys under 24 h."""
    _fill(engine)
    with engine.begin() as conn:
        conn.execute(
            webhook_responses.insert().values(
                tenant="acme", hook="h", token="2h", state="done", created_at=NOW - 2 * HOUR
            )
        )
        conn.execute(sent_messages.insert().values(tenant="acme", key="12h", state="sent", created_at=NOW - 12 * HOUR))
    report = Purger(engine, POLICY, clock=lambda: NOW).purge(older_than_seconds=HOUR)

    assert report.counts["runs"] == 8
    assert _left(engine)["webhook_responses"] == ["2h"]
    assert _left(engine)["sent_messages"] == ["12h"]


def test_purge_in_batches_beside_concurrent_writers(engine: Engine) -> None:
    """Thousands of old runs go in small batches while writers keep recording runs: no writer fails or waits long."""
    with engine.begin() as conn:
        conn.execute(
            runs.insert(),
            [{"id": f"run_old_{i}", "tenant": f"t{i % 7}", "kind": "webhook", "status": "ok", "started_at": 1.0 + i}
             for i in range(3000)],
        )  # fmt: skip
    history, stop, errors, written, waits = RunHistory(engine), threading.Event(), [], [], []

    def write(worker: int) -> None:
        n = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                history.record(run_id=f"run_new_{worker}_{n}", tenant="acme", kind="webhook", status="ok",
                               started_at=NOW, stdout="hello")  # fmt: skip
            except Exception as exc:  # noqa: BLE001  # any failure is the finding
                errors.append(exc)
                return
            waits.append(time.monotonic() - started)
            written.append(f"run_new_{worker}_{n}")
            n += 1

    writers = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in writers:
        thread.start()
    try:
        report = Purger(engine, POLICY, clock=lambda: NOW, batch_rows=100).purge()
    finally:
        stop.set()
        for thread in writers:
            thread.join()

    assert errors == []
    assert report.counts["runs"] == 3000
    assert written
    assert sorted(_left(engine)["runs"]) == sorted(written)
    assert max(waits) < 5.0


def test_retention_comes_from_the_environment_with_clear_errors() -> None:
    """ZINGYCONN_RETAIN_* set each retention; bad values and values below a floor are one-line errors."""
    policy = Settings.from_env({"ZINGYCONN_RETAIN_RUNS": "7d", "ZINGYCONN_RETAIN_COMMAND_RUNS": "90d"}).retention
    assert policy.runs_seconds == {**dict.fromkeys(RUN_KINDS, 7 * DAY_SECONDS), "command": 90 * DAY_SECONDS}
    assert Settings.from_env({}).retention == RetentionPolicy()
    assert RetentionPolicy().runs_seconds["webhook"] == 30 * DAY_SECONDS
    with pytest.raises(ConfigurationError, match="ZINGYCONN_RETAIN_TASKS must be a positive duration"):
        Settings.from_env({"ZINGYCONN_RETAIN_TASKS": "forever"})
    with pytest.raises(ConfigurationError, match="ZINGYCONN_RETAIN_SENDS=1h is shorter than 24 h"):
        Settings.from_env({"ZINGYCONN_RETAIN_SENDS": "1h"})
    with pytest.raises(ConfigurationError, match="ZINGYCONN_HISTORY_QUOTA_MB must be a positive number"):
        Settings.from_env({"ZINGYCONN_HISTORY_QUOTA_MB": "lots"})


def _cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, ["purge", *args], env=env, catch_exceptions=False)


def test_the_purge_command(tmp_path: Path) -> None:
    """`zingyconn purge` reports per table (text or JSON), dry runs delete nothing, bad usage exits 2."""
    env = {"ZINGYCONN_DATA_DIR": str(tmp_path)}
    engine = create_engine(Settings.from_env(env).db_url)
    now = time.time()
    history = RunHistory(engine)
    history.record(run_id="run_old", tenant="acme", kind="webhook", status="ok", started_at=now - 40 * DAY_SECONDS)
    history.record(run_id="run_week", tenant="acme", kind="webhook", status="ok", started_at=now - 8 * DAY_SECONDS)
    history.record(run_id="run_new", tenant="acme", kind="webhook", status="ok", started_at=now)

    dry = _cli(env, "--dry-run", "--json")
    assert json.loads(dry.stdout) == {
        "ok": True, "dry_run": True, "tenant": None, "deleted": {"runs": 1, **dict.fromkeys(TABLES[1:], 0)}
    }  # fmt: skip
    assert _cli(env).stdout.startswith("Deleted 1 runs, 0 webhook replay records")
    assert json.loads(_cli(env, "--older-than", "7d", "--tenant", "acme", "--json").stdout)["deleted"]["runs"] == 1
    assert [run.id for run in history.list("acme")] == ["run_new"]
    assert json.loads(_cli(env, "--tenant", "acme", "--all", "--json").stdout)["deleted"]["runs"] == 1
    for args, message in (
        (("--all",), "needs a tenant"),
        (("--older-than", "soon"), "--older-than must be a positive duration"),
    ):
        result = _cli(env, *args)
        assert result.exit_code == 2, result.output
        assert message in result.stderr
        assert "Traceback" not in result.output


def test_serve_purges_on_its_own(tmp_path: Path) -> None:
    """A server started as `serve` starts it deletes a run older than the retention within one interval."""
    from tests.hosts.live_server import live_server
    from zingyconn.hosts.composition import default_lifespan_hooks
    from zingyconn.runtime import Runtime

    env = {"ZINGYCONN_DATA_DIR": str(tmp_path), "ZINGYCONN_RETAIN_RUNS": "30d", "ZINGYCONN_PURGE_EVERY": "1s"}
    with Runtime(Settings.from_env(env)) as runtime:
        now = time.time()
        runtime.history.record(
            run_id="run_old", tenant="acme", kind="task", status="ok", started_at=now - 31 * DAY_SECONDS
        )
        runtime.history.record(
            run_id="run_new", tenant="acme", kind="task", status="ok", started_at=now - 29 * DAY_SECONDS
        )
        with live_server(runtime, lifespan_hooks=default_lifespan_hooks(runtime)):
            deadline = time.monotonic() + 30
            while len(runtime.history.list("acme")) > 1 and time.monotonic() < deadline:
                time.sleep(0.1)
        assert [run.id for run in runtime.history.list("acme")] == ["run_new"]


def test_a_worker_process_purges_on_its_own(tmp_path: Path) -> None:
    """`zingyconn worker` deletes a run older than the retention within an interval, and stops cleanly on SIGTERM."""
    env = {
        **os.environ,
        "ZINGYCONN_DATA_DIR": str(tmp_path),
        "ZINGYCONN_RETAIN_TASK_RUNS": "7d",
        "ZINGYCONN_PURGE_EVERY": "1s",
    }
    env.pop("ZINGYCONN_DB_URL", None)
    env.pop("ZINGYCONN_QUEUE_URL", None)
    history = RunHistory(create_engine(Settings.from_env(env).db_url))
    now = time.time()
    history.record(run_id="run_old", tenant="acme", kind="task", status="ok", started_at=now - 8 * DAY_SECONDS)
    history.record(run_id="run_hook", tenant="acme", kind="webhook", status="ok", started_at=now - 8 * DAY_SECONDS)
    worker = subprocess.Popen(
        [sys.executable, "-m", "zingyconn", "worker", "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(history.list("acme")) > 1 and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)

    assert [run.id for run in history.list("acme")] == ["run_hook"], stderr.decode()  # 30 days for webhooks
    assert worker.returncode == 0, stderr.decode()

"""Run history on SQLite and PostgreSQL: record, replace, filter, tenant scoping, purge."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from zingyconn.errors import NotFoundError
from zingyconn.history import MAX_STRING_CHARS, RunHistory, cap_value, new_run_id
from zingyconn.schema import runs


@pytest.fixture
def engine(store_engine: sa.Engine) -> sa.Engine:
    """A migrated store: a SQLite file or a fresh PostgreSQL database."""
    return store_engine


def test_record_then_get_round_trips_every_field(engine: sa.Engine) -> None:
    """A recorded run comes back with its JSON fields intact."""
    history = RunHistory(engine)
    run_id = new_run_id()
    history.record(
        run_id=run_id,
        tenant="acme",
        kind="task",
        status="ok",
        started_at=100.0,
        duration_ms=12.5,
        name="digest",
        event={"a": [1, 2]},
        result={"sent": 3},
        stdout="hi\n",
        logs=[{"level": "info", "message": "m", "fields": {}}],
        egress=[{"method": "POST", "host": "api.twilio.com", "path": "/x", "status": 201, "duration_ms": 1.0}],
        attempt=2,
        task_id="task_1",
        source="return 1",
    )
    record = history.get("acme", run_id)
    assert (record.kind, record.name, record.status, record.attempt, record.task_id) == (
        "task",
        "digest",
        "ok",
        2,
        "task_1",
    )
    assert (record.event, record.result, record.stdout) == ({"a": [1, 2]}, {"sent": 3}, "hi\n")
    assert record.egress[0]["status"] == 201
    assert record.ok


def test_json_fields_are_stored_as_json_dumps_writes_them(engine: sa.Engine) -> None:
    """The stored JSON text of every field is ``json.dumps`` of its value (what SQLAlchemy's JSON type writes), for
    plain ASCII, for text it escapes (accents, a lone surrogate a snippet can return) and for a capped string."""
    history = RunHistory(engine)
    results = {
        "ascii": {"Body": "hi", "n": [1, 2.5, None, True]},
        "escaped": {"Body": "héllo ☃ \ud800 \x00"},
        "capped": ["x" * (MAX_STRING_CHARS + 10)],
    }
    for run_id, result in results.items():
        history.record(run_id=run_id, tenant="acme", kind="task", status="ok", started_at=1.0, result=result)

    with engine.connect() as conn:
        stored: dict[str, str] = dict(conn.execute(sa.select(runs.c.id, sa.cast(runs.c.result, sa.Text))).all())
    assert stored == {run_id: json.dumps(cap_value(result)) for run_id, result in results.items()}


def test_recording_the_same_id_replaces_the_row(engine: sa.Engine) -> None:
    """Recording an id again (running -> failed) keeps one row with the latest values."""
    history = RunHistory(engine)
    run_id = new_run_id()
    history.record(run_id=run_id, tenant="acme", kind="task", status="running", started_at=1.0)
    history.record(run_id=run_id, tenant="acme", kind="task", status="failed", started_at=1.0, error={"type": "X"})
    assert [(r.id, r.status, r.error) for r in history.list("acme")] == [(run_id, "failed", {"type": "X"})]


def test_list_filters_orders_and_scopes_by_tenant(engine: sa.Engine) -> None:
    """Lists are newest first, filtered by kind/name/status/time, and never show another tenant's runs."""
    history = RunHistory(engine, clock=lambda: 1000.0)
    ids = []
    for index, (kind, status) in enumerate([("webhook", "ok"), ("task", "failed"), ("webhook", "failed")]):
        ids.append(new_run_id())
        history.record(run_id=ids[-1], tenant="acme", kind=kind, status=status, started_at=float(index), name="h")
    history.record(run_id=new_run_id(), tenant="globex", kind="webhook", status="ok", started_at=9.0)

    assert [r.id for r in history.list("acme")] == ids[::-1]
    assert [r.id for r in history.list("acme", kind="webhook", status="failed")] == [ids[2]]
    assert [r.id for r in history.list("acme", before=1.5)] == [ids[1], ids[0]]
    assert len(history.list("acme", limit=1)) == 1
    with pytest.raises(NotFoundError):
        history.get("globex", ids[0])
    assert history.purge(older_than_seconds=999.5) == 1  # started_at 0.0 only


def test_a_nul_in_printed_output_or_source_is_recorded(engine: sa.Engine) -> None:
    """PostgreSQL text cannot hold NUL: a snippet printing one is still recorded, the NUL shown as U+FFFD."""
    history = RunHistory(engine)
    run_id = new_run_id()
    history.record(
        run_id=run_id,
        tenant="acme",
        kind="task",
        status="ok",
        started_at=100.0,
        duration_ms=1.0,
        stdout="a\x00b\n",
        source="print('a\x00b')",
    )
    stored = history.get("acme", run_id)
    assert stored.stdout == "a\ufffdb\n"
    assert stored.source == "print('a\ufffdb')"

"""Bounded run history: an event stored once, every field capped with a visible marker, a per-tenant quota."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa

from tests.hosts.live_server import LiveServer, live_server
from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.history import (
    MAX_FIELD_CHARS,
    MAX_STRING_CHARS,
    TOO_DEEP_MARKER,
    RunHistory,
    cap_value,
    truncation_marker,
)
from zingyconn.runtime import Runtime
from zingyconn.schema import runs


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server whose tenant 'acme' has an unsigned hook 'open' that returns how much it was given."""
    with Runtime(Settings.from_env({"ZINGYCONN_DATA_DIR": str(tmp_path)})) as runtime:
        Catalog(runtime.engine).put_hook("acme", "open", "return len(event['body']) + len(event['form']['Body'])")
        with live_server(runtime) as live:
            yield live


def test_a_megabyte_form_post_is_stored_once_and_capped(server: LiveServer) -> None:
    """The snippet gets form and raw body in full; the history keeps the form only, its fields cut with a marker."""
    body = urlencode({"Body": "x" * (1024 * 1024 - 100), "From": "+15551234567"})
    response = httpx.post(
        server.url("/hooks/acme/open"), content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200, response.text
    assert int(response.text) == len(body) + 1024 * 1024 - 100  # the run saw everything

    (run,) = server.runtime.history.list("acme")
    assert run.event["body"] is None  # the raw body is not stored beside its parsed form
    stored_body = run.event["form"]["Body"]
    assert stored_body == "x" * MAX_STRING_CHARS + truncation_marker(1024 * 1024 - 100 - MAX_STRING_CHARS)
    assert run.event["form"]["From"] == "+15551234567"
    with server.runtime.engine.connect() as conn:
        row = conn.execute(sa.select(runs.c.event, runs.c.stored_bytes)).one()
    assert len(json.dumps(row.event)) < 2 * MAX_STRING_CHARS
    assert row.stored_bytes < 3 * MAX_STRING_CHARS


def test_a_field_with_many_small_strings_is_replaced_by_a_marked_preview() -> None:
    """Capping each string is not enough for thousands of them: the field becomes a marked preview."""
    capped = cap_value({f"field{i}": "y" * 100 for i in range(5000)})

    assert capped["truncated"].startswith("…[truncated: ")
    assert len(capped["preview"]) == MAX_FIELD_CHARS


def test_past_the_quota_runs_keep_only_their_outline_with_a_clear_message(tmp_path: Path) -> None:
    """Once a tenant's stored history reaches its quota, new runs are stored without payload, saying why."""
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    history = RunHistory(engine, quota_bytes=50_000)
    for i in range(10):
        history.record(run_id=f"run_{i}", tenant="acme", kind="webhook", status="ok", started_at=i, stdout="z" * 6000)
    history.record(run_id="run_other", tenant="globex", kind="webhook", status="ok", started_at=1, stdout="fine")

    stored = {run.id: run for run in history.list("acme", limit=20)}
    assert stored["run_0"].stdout == "z" * 6000
    assert stored["run_9"].status == "ok"
    assert stored["run_9"].stdout.startswith(
        "[not stored: tenant 'acme' has used its run-history quota of 0.0476837 MiB"
    )
    assert "zingyconn purge --tenant acme" in stored["run_9"].stdout
    assert history.usage_bytes("acme") <= 50_000 + 1000
    assert history.get("globex", "run_other").stdout == "fine"  # another tenant is not affected


def test_a_field_nested_too_deep_is_replaced_by_a_marker() -> None:
    """A value deeper than the stack (a webhook's JSON body) is stored as a marker; recording it never fails."""
    value: object = "x" * (MAX_STRING_CHARS + 1)
    for _ in range(100_000):
        value = [value]

    assert cap_value(value) == {"truncated": TOO_DEEP_MARKER}

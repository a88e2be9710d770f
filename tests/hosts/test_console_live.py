"""The live tail of runs: server-sent events of new runs, for a signed-in session only, and closed when it ends."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hosts.live_console import OPERATOR_TOKEN, Console, csrf_of, live_console, sign_in
from zingyconn.history import new_run_id
from zingyconn.hosts.console.auth import CSRF_FIELD


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    """A live console on a fresh store."""
    with live_console(tmp_path) as live:
        yield live


def _record_later(console: Console, run_id: str, *, tenant: str = "acme", delay_seconds: float = 1.5) -> None:
    def record() -> None:
        time.sleep(delay_seconds)
        console.runtime.history.record(
            run_id=run_id, tenant=tenant, kind="webhook", name="sms", status="ok", started_at=time.time(), version=2
        )

    threading.Thread(target=record, daemon=True).start()


def test_a_new_run_arrives_as_an_event(console: Console) -> None:
    """A run recorded after the stream opened is sent as a `run` event; the runs already stored (however many) and
    other tenants' are not."""
    for _ in range(60):  # more than one poll sends: every one of them is noted as already there, none sent
        console.runtime.history.record(
            run_id=new_run_id(), tenant="acme", kind="webhook", name="old", status="ok", started_at=time.time()
        )
    run_id, other = new_run_id(), new_run_id()
    with console.browser() as browser:
        sign_in(browser, OPERATOR_TOKEN)
        page = browser.get("/console/t/acme/runs/live")
        _record_later(console, other, tenant="globex", delay_seconds=1.0)
        _record_later(console, run_id)
        with browser.stream("GET", "/console/t/acme/runs/live/events", timeout=20) as stream:
            content_type = stream.headers["content-type"]
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line.removeprefix("data: "))
                    break

    assert page.status_code == 200
    assert 'data-events="' in page.text
    assert content_type.startswith("text/event-stream")
    assert (event["id"], event["name"], event["status"], event["version"]) == (run_id, "sms", "ok", 2)
    assert event["url"].endswith(f"/console/t/acme/runs/{run_id}")


def test_the_stream_needs_a_session_and_ends_with_it(console: Console) -> None:
    """Without a session the stream redirects to sign-in; signing out ends an open stream."""
    with console.browser() as anonymous:
        refused = anonymous.get("/console/t/acme/runs/live/events")
    with console.browser() as browser:
        sign_in(browser, OPERATOR_TOKEN)
        csrf = csrf_of(browser.get("/console/t/acme/runs").text)
        with browser.stream("GET", "/console/t/acme/runs/live/events", timeout=40) as stream:
            with console.browser() as other:
                other.cookies.update(browser.cookies)
                other.post("/console/logout", data={CSRF_FIELD: csrf})
            lines = list(stream.iter_lines())

    assert refused.status_code == 303
    assert "event: end" in lines

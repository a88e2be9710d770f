"""The console's workbench pages in a real browser: versions (save twice, history, diff, rollback), a schedule in a
time zone with its next runs, the Tasks page (retry, cancel), API tokens (shown once, revoke), paged run history
and the live tail (Playwright driving Debian's Chromium against a real ``zingyconn serve``, as in
``test_console.py``).

Screenshots go under ``test-artifacts/console/``; with ``ZINGYCONN_DOCS_SCREENSHOTS=1`` they refresh the docs'
copies in ``docs/img/``.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from tests.e2e.test_console import ARTIFACTS, Console, _sign_in, browser, console
from tests.e2e.test_console_editor import _type_source
from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.history import RunHistory
from zingyconn.schema import tasks
from zingyconn.tasks.store import TaskStore

__all__ = ["browser", "console"]  # fixtures shared with test_console.py (one server per module)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
#: Where the screenshots go: the docs' pictures only when asked, so a test run leaves the source tree as it was.
SHOTS = DOCS_IMG if os.environ.get("ZINGYCONN_DOCS_SCREENSHOTS") == "1" else ARTIFACTS


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    """A fresh browser context and page that accepts every confirm() (the pages ask before a change)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()


def _engine(console: Console) -> Engine:
    return create_engine(Settings.from_env({"ZINGYCONN_DATA_DIR": str(console.data_dir)}).db_url)


def _shot(page: object, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def _save_from_runner(page: object, console: Console, source: str, **fields: str) -> None:
    page.goto(console.url("/console/t/acme/runner"))  # type: ignore[attr-defined]
    page.wait_for_selector(".cm-editor .cm-content")  # type: ignore[attr-defined]
    _type_source(page, source)
    for name, value in fields.items():
        if name == "save_kind":
            page.select_option("select[name=save_kind]", value)  # type: ignore[attr-defined]
        else:
            page.fill(f"input[name={name}]", value)  # type: ignore[attr-defined]
    page.click("button[value=save]")  # type: ignore[attr-defined]
    page.wait_for_selector(".flash.ok")  # type: ignore[attr-defined]


def test_save_twice_then_history_diff_and_rollback(page: object, console: Console) -> None:
    """Two saves make v1 and v2; the history page diffs them; rolling back to v1 makes v3, which the hook runs."""
    _sign_in(page, console)
    _save_from_runner(page, console, "return 'one'", save_name="greet", message="first cut")
    _save_from_runner(page, console, "return 'two'", save_name="greet")

    page.goto(console.url("/console/t/acme/hooks"))  # type: ignore[attr-defined]
    page.click("#items a.history")  # type: ignore[attr-defined]
    assert "v2 (current)" in page.inner_text("#versions")  # type: ignore[attr-defined]
    assert "first cut" in page.inner_text("#versions")  # type: ignore[attr-defined]
    assert "-return 'one'" in page.inner_text("#diff")  # type: ignore[attr-defined]
    assert "+return 'two'" in page.inner_text("#diff")  # type: ignore[attr-defined]
    _shot(page, "console-versions")

    page.click("button.rollback")  # type: ignore[attr-defined]
    page.wait_for_selector(".flash.ok")  # type: ignore[attr-defined]
    assert "v3 (current)" in page.inner_text("#versions")  # type: ignore[attr-defined]
    assert "rolled back to version 1" in page.inner_text("#versions")  # type: ignore[attr-defined]
    assert httpx.get(console.url("/hooks/acme/greet"), timeout=30).text == "one"


def test_a_schedule_in_a_time_zone_shows_its_next_runs(page: object, console: Console) -> None:
    """A script saved with a cron and Europe/Paris lists the schedule, its zone and next runs in Paris time."""
    _sign_in(page, console)
    _save_from_runner(
        page, console, "return 1", save_kind="script", save_name="standup", cron="0 9 * * MON-FRI",
        timezone="Europe/Paris",
    )  # fmt: skip

    page.goto(console.url("/console/t/acme/scripts"))  # type: ignore[attr-defined]
    row = page.inner_text("#items tbody tr:has-text('standup')")  # type: ignore[attr-defined]

    assert "0 9 * * MON-FRI (Europe/Paris)" in row
    runs = re.findall(r"(Mon|Tue|Wed|Thu|Fri) \d{4}-\d\d-\d\d 09:00 (CET|CEST)", row)
    assert len(runs) == 3
    _shot(page, "console-scripts")


def test_tasks_page_cancels_and_retries(page: object, console: Console) -> None:
    """A task waiting to retry is cancelled, then retried, from the Tasks page; a failed one shows its error."""
    engine = _engine(console)
    store = TaskStore(engine)
    Catalog(engine).put_script("acme", "flaky", "return 1")
    # A task between attempts, its next one an hour away: written as a worker leaves it, so no worker takes it now.
    now = time.time()
    waiting_id = "task-waiting-" + uuid.uuid4().hex
    with engine.begin() as conn:
        conn.execute(
            tasks.insert().values(
                id=waiting_id, tenant="acme", script="flaky", payload={}, state="retrying", attempts=1,
                run_after=now + 3600, error={"type": "TwilioError", "message": "503"}, source="cli", created_at=now,
                updated_at=now,
            )
        )  # fmt: skip
    waiting = store.get(waiting_id)
    _sign_in(page, console)

    page.goto(console.url("/console/t/acme/tasks?state=retrying"))  # type: ignore[attr-defined]
    assert "TwilioError: 503" in page.inner_text("#tasks")  # type: ignore[attr-defined]
    _shot(page, "console-tasks")
    page.click(f"tr[data-task='{waiting.id}'] button.cancel")  # type: ignore[attr-defined]
    page.wait_for_selector(".flash.ok")  # type: ignore[attr-defined]
    assert store.get(waiting.id).state == "cancelled"
    page.goto(console.url("/console/t/acme/tasks?state=cancelled"))  # type: ignore[attr-defined]
    page.click(f"tr[data-task='{waiting.id}'] button.retry")  # type: ignore[attr-defined]
    page.wait_for_selector(".flash.ok")  # type: ignore[attr-defined]
    assert store.get(waiting.id).state in ("queued", "running", "succeeded")


def test_a_token_is_shown_once_and_revoked(page: object, console: Console) -> None:
    """Create shows the token once; the list does not; the token signs in to the API until revoked."""
    _sign_in(page, console)
    page.goto(console.url("/console/t/acme/tokens"))  # type: ignore[attr-defined]
    page.fill("input[name=label]", "zapier")  # type: ignore[attr-defined]
    page.click("#create-token")  # type: ignore[attr-defined]
    token = page.inner_text("#token-value").strip()  # type: ignore[attr-defined]
    _shot(page, "console-tokens")
    page.goto(console.url("/console/t/acme/tokens"))  # type: ignore[attr-defined]
    assert token not in page.content()  # type: ignore[attr-defined]
    assert "zapier" in page.inner_text("#tokens")  # type: ignore[attr-defined]

    page.click("#tokens tr:has-text('zapier') button.revoke")  # type: ignore[attr-defined]
    page.wait_for_selector(".flash.ok")  # type: ignore[attr-defined]
    assert "zapier" not in page.inner_text("#tokens")  # type: ignore[attr-defined]


def test_run_history_pages_to_older_runs(page: object, console: Console) -> None:
    """With more runs than a page holds, Older → shows the rest; searching an error finds the failing run."""
    history = RunHistory(_engine(console))
    for n in range(60):
        error = {"type": "KeyError", "message": "'missing-field'"} if n == 7 else None
        history.record(
            run_id=f"run_{n:032x}", tenant="paging", kind="task", name="bulk", status="failed" if error else "ok",
            started_at=1_700_000_000.0 + n, error=error,
        )  # fmt: skip
    _sign_in(page, console)

    page.goto(console.url("/console/t/paging/runs"))  # type: ignore[attr-defined]
    first = page.locator("#runs tbody tr").count()  # type: ignore[attr-defined]
    page.click("#older")  # type: ignore[attr-defined]
    second = page.locator("#runs tbody tr").count()  # type: ignore[attr-defined]
    page.goto(console.url("/console/t/paging/runs?q=missing-field"))  # type: ignore[attr-defined]

    assert (first, second) == (50, 10)
    assert page.locator("#runs tbody tr").count() == 1  # type: ignore[attr-defined]
    assert f"run_{7:032x}" in page.inner_text("#runs")  # type: ignore[attr-defined]


def test_the_live_tail_shows_a_new_run(page: object, console: Console) -> None:
    """With the live page open, a webhook call appears as a new row without a reload."""
    Catalog(_engine(console)).put_hook("acme", "ping", "return 'pong'")
    _sign_in(page, console)
    page.goto(console.url("/console/t/acme/runs/live"))  # type: ignore[attr-defined]
    page.wait_for_function("document.getElementById('live-status').textContent.startsWith('Live')")  # type: ignore[attr-defined]

    assert httpx.get(console.url("/hooks/acme/ping"), timeout=30).text == "pong"
    page.wait_for_selector("#live-runs tbody tr:has-text('ping')", timeout=15_000)  # type: ignore[attr-defined]

    assert "webhook" in page.inner_text("#live-runs tbody")  # type: ignore[attr-defined]
    _shot(page, "console-live")

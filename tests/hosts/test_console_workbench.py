"""The console's Tasks page (filter, attempts, retry, cancel), API tokens page (shown once, revoke) and the paged,
searchable run history: every change a CSRF-checked POST, recorded in the audit trail."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hosts.live_console import OPERATOR_TOKEN, Console, csrf_of, live_console, sign_in
from zingyconn.hosts.console.auth import CSRF_FIELD
from zingyconn.hosts.console.pages import RUNS_PER_PAGE
from zingyconn.secrets.tokens import TokenStore
from zingyconn.tasks.store import TaskStore


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    """A live console on a fresh store."""
    with live_console(tmp_path) as live:
        yield live


@pytest.fixture
def browser(console: Console) -> Iterator[httpx.Client]:
    """A browser signed in as the operator."""
    with console.browser() as client:
        assert sign_in(client, OPERATOR_TOKEN).status_code == 303
        yield client


def test_tasks_page_filters_shows_attempt_errors_and_retries_and_cancels(
    console: Console, browser: httpx.Client
) -> None:
    """A failed task shows its attempt's error and can be retried; a queued one can be cancelled; both audited."""
    store = TaskStore(console.runtime.engine)
    failed = store.create("acme", "digest", {}, source="cli")
    assert store.claim(failed.id) is not None
    console.runtime.history.record(
        run_id="run_" + "a" * 32, tenant="acme", kind="task", name="digest", status="failed", started_at=1.0,
        task_id=failed.id, error={"type": "ZeroDivisionError", "message": "division by zero"},
    )  # fmt: skip
    store.finish(failed.id, state="failed", run_id="run_" + "a" * 32, error={"type": "ZeroDivisionError"})
    queued = store.create("acme", "digest", {}, source="cli")
    store.create("globex", "other", {}, source="cli")

    everything = browser.get("/console/t/acme/tasks").text
    only_failed = browser.get("/console/t/acme/tasks?state=failed").text
    csrf = csrf_of(everything)
    forged = browser.post(f"/console/t/acme/tasks/{queued.id}", data={"action": "cancel", CSRF_FIELD: "x"})
    cancel = browser.post(f"/console/t/acme/tasks/{queued.id}", data={"action": "cancel", CSRF_FIELD: csrf})
    retry = browser.post(f"/console/t/acme/tasks/{failed.id}", data={"action": "retry", CSRF_FIELD: csrf})
    again = browser.post(f"/console/t/acme/tasks/{queued.id}", data={"action": "cancel", CSRF_FIELD: csrf})
    audit = browser.get("/console/t/acme/audit").text

    assert "ZeroDivisionError: division by zero" in everything
    assert failed.id in everything
    assert queued.id in everything
    assert "other" not in everything  # another tenant's task
    assert queued.id not in only_failed
    assert forged.status_code == 403
    assert (cancel.status_code, retry.status_code) == (303, 303)
    assert (store.get(queued.id).state, store.get(failed.id).state) == ("cancelled", "queued")
    assert again.status_code == 303  # a second cancel is refused with a message, and changes nothing
    assert "task.cancel" in audit
    assert "task.retry" in audit


def test_a_task_of_another_tenant_is_not_found(console: Console, browser: httpx.Client) -> None:
    """Cancelling another tenant's task from this tenant's page changes nothing."""
    other = TaskStore(console.runtime.engine).create("globex", "x", {}, source="cli")
    csrf = csrf_of(browser.get("/console/t/acme/tasks").text)

    browser.post(f"/console/t/acme/tasks/{other.id}", data={"action": "cancel", CSRF_FIELD: csrf})

    assert TaskStore(console.runtime.engine).get(other.id).state == "queued"


def test_tokens_page_shows_a_new_token_once_and_revokes(console: Console, browser: httpx.Client) -> None:
    """Create shows the token in that answer only; the list shows ids and labels; revoke ends it; both audited."""
    page = browser.get("/console/t/acme/tokens").text
    created = browser.post("/console/t/acme/tokens/new", data={"label": "ci", CSRF_FIELD: csrf_of(page)}).text
    token = re.search(r'<pre id="token-value">([^<]+)</pre>', created)
    assert token is not None
    listed = browser.get("/console/t/acme/tokens").text
    tokens = TokenStore(console.runtime.engine)
    [info] = tokens.list("acme")

    assert tokens.tenant_for(token.group(1)) == "acme"
    assert token.group(1) not in listed
    assert info.token_id in listed
    assert "ci" in listed
    revoked = browser.post(f"/console/t/acme/tokens/{info.token_id}/revoke", data={CSRF_FIELD: csrf_of(listed)})
    assert revoked.status_code == 303
    assert tokens.tenant_for(token.group(1)) is None
    audit = browser.get("/console/t/acme/audit").text
    assert "token.create" in audit
    assert "token.revoke" in audit
    assert token.group(1) not in audit


def test_run_history_pages_by_cursor_and_searches_errors(console: Console, browser: httpx.Client) -> None:
    """Runs come a page at a time, newest first, no run twice or missed; the error search finds the failing one."""
    history = console.runtime.history
    total = RUNS_PER_PAGE + 7
    for n in range(total):
        error = {"type": "KeyError", "message": f"'needle-{n}'"} if n == 3 else None
        history.record(
            run_id=f"run_{n:032x}", tenant="acme", kind="webhook", name="sms", status="failed" if error else "ok",
            started_at=1000.0 + n // 2, error=error,  # pairs share a start time: the cursor needs the id too
        )  # fmt: skip

    first = browser.get("/console/t/acme/runs")
    older = re.search(r'href="\?([^"]+)" id="older"', first.text)
    assert older is not None
    second = browser.get(f"/console/t/acme/runs?{older.group(1).replace('&amp;', '&')}")
    found = browser.get("/console/t/acme/runs", params={"q": "NEEDLE-3"}).text

    seen = re.findall(r"<code>(run_[0-9a-f]{32})</code>", first.text + second.text)
    assert len(seen) == total
    assert set(seen) == {f"run_{n:032x}" for n in range(total)}
    assert 'id="older"' not in second.text
    assert re.findall(r"<code>(run_[0-9a-f]{32})</code>", found) == [f"run_{3:032x}"]

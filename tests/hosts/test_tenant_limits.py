"""Aggregate limits per tenant, through the real surfaces: runs at once and their memory, across kinds and processes.

A real server (uvicorn on loopback) runs hooks; the CLI and the task worker run in the same data directory; a
``zingyconn run`` in another process holds a slot until it is killed with SIGKILL.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.hosts.live_console import OPERATOR_TOKEN, csrf_of, live_console, sign_in
from tests.hosts.live_server import LiveServer, live_server
from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.hosts.console.auth import CSRF_FIELD
from zingyconn.runtime import Runtime
from zingyconn.tasks.queue import TaskQueue

SLOW = "import time\ntime.sleep(event['json']['seconds'])\nreturn 'slept'"
QUICK = "return 'quick'"
MIB = 1024 * 1024
T = TypeVar("T")


def _env(tmp_path: Path, **limits: str) -> dict[str, str]:
    return {
        "ZINGYCONN_DATA_DIR": str(tmp_path / "data"),
        "ZINGYCONN_DB_URL": "",
        "ZINGYCONN_QUEUE_URL": "",
        "ZINGYCONN_TWILIO_BASE_URL": "",
        "ZINGYCONN_KEYS": "k1:" + base64.b64encode(bytes(32)).decode(),
        # Short: the probes below are refused soon, yet a slow run racing a probe for a slot still gets in.
        "ZINGYCONN_TENANT_WAIT_SECONDS": "0.5",
        **limits,
    }


@contextlib.contextmanager
def _serving(env: dict[str, str]) -> Iterator[LiveServer]:
    """A server on *env* with hooks ``slow`` and ``quick`` for tenants acme and globex (the sandbox warmed up)."""
    with Runtime(Settings.from_env(env)) as runtime:
        catalog = Catalog(runtime.engine)
        for tenant in ("acme", "globex"):
            catalog.put_hook(tenant, "slow", SLOW)
            catalog.put_hook(tenant, "quick", QUICK)
        catalog.put_hook("acme", "big", SLOW, limits={"memory_bytes": 400 * MIB})
        with live_server(runtime) as live:
            assert httpx.post(live.url("/hooks/globex/quick"), timeout=30).status_code == 200
            yield live


def _wait_for(check: Callable[[], T | None], *, what: str, timeout_seconds: float = 30.0) -> T:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _refused(live: LiveServer, tenant: str, hook: str = "quick") -> Callable[[], httpx.Response | None]:
    def check() -> httpx.Response | None:
        answer = httpx.post(live.url(f"/hooks/{tenant}/{hook}"), timeout=30)
        return answer if answer.status_code == 429 else None

    return check


def _in_background(live: LiveServer, pool: concurrent.futures.Executor, path: str, count: int) -> list[Any]:
    return [pool.submit(httpx.post, live.url(path), json={"seconds": 4}, timeout=30) for _ in range(count)]


def test_a_tenant_at_its_run_cap_gets_429_and_another_tenant_is_unaffected(tmp_path: Path) -> None:
    """Two slow runs fill acme's cap of 2: acme's next hook is 429 with Retry-After; globex's runs at once."""
    with _serving(_env(tmp_path, ZINGYCONN_TENANT_MAX_RUNS="2")) as live:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            slow = _in_background(live, pool, "/hooks/acme/slow", 2)
            refused = _wait_for(_refused(live, "acme"), what="acme's third run to be refused")
            other = httpx.post(live.url("/hooks/globex/quick"), timeout=30)
            assert [future.result().status_code for future in slow] == [200, 200]
        after = httpx.post(live.url("/hooks/acme/quick"), timeout=30)

    assert refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert error["type"] == "TenantBusyError"
    assert "ZINGYCONN_TENANT_MAX_RUNS=2" in error["message"]
    assert (other.status_code, other.text) == (200, "quick")
    assert after.status_code == 200  # the slots came free with the runs


def test_a_tenants_runs_share_one_memory_budget(tmp_path: Path) -> None:
    """A 400 MiB run leaves 200 of acme's 600 MiB: a 256 MiB run is refused (though far below the run cap)."""
    env = _env(tmp_path, ZINGYCONN_TENANT_MAX_MEMORY_MB="600")
    with _serving(env) as live, concurrent.futures.ThreadPoolExecutor(1) as pool:
        big = _in_background(live, pool, "/hooks/acme/big", 1)
        refused = _wait_for(_refused(live, "acme"), what="acme's run over its memory budget")
        other = httpx.post(live.url("/hooks/globex/quick"), timeout=30)
        assert big[0].result().status_code == 200

    message = refused.json()["error"]["message"]
    assert "hold 400 MiB and this one needs 256 MiB" in message
    assert "ZINGYCONN_TENANT_MAX_MEMORY_MB=600" in message
    assert other.status_code == 200


def _cli(env: dict[str, str], *args: str, **options: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "zingyconn", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )


def test_a_run_in_another_process_counts_and_its_kill_frees_the_slot(tmp_path: Path) -> None:
    """A CLI run holds acme's only slot from another process; SIGKILL on it frees the slot at once."""
    env = _env(tmp_path, ZINGYCONN_TENANT_MAX_RUNS="1")
    (tmp_path / "slow.py").write_text("import time\ntime.sleep(60)")
    with _serving(env) as live:
        holder = _cli(env, "run", "--tenant", "acme", str(tmp_path / "slow.py"), start_new_session=True)
        try:
            refused = _wait_for(_refused(live, "acme"), what="the other process's run to hold acme's slot")
        finally:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(timeout=30)
        after = httpx.post(live.url("/hooks/acme/quick"), timeout=30)

    assert refused.json()["error"]["type"] == "TenantBusyError"
    assert after.status_code == 200


def test_the_cli_says_in_one_line_that_the_tenant_is_busy(tmp_path: Path) -> None:
    """With acme's only slot held by a webhook, `zingyconn run` for acme fails with one Error: line naming the limit."""
    env = _env(tmp_path, ZINGYCONN_TENANT_MAX_RUNS="1")
    (tmp_path / "quick.py").write_text(QUICK)
    with _serving(env) as live, concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = _in_background(live, pool, "/hooks/acme/slow", 1)
        _wait_for(_refused(live, "acme"), what="the webhook to hold acme's slot")
        done = _cli(env, "run", "--tenant", "acme", str(tmp_path / "quick.py"))
        _, stderr = done.communicate(timeout=60)
        assert slow[0].result().status_code == 200

    assert done.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: Tenant 'acme' cannot start another run now")
    assert "ZINGYCONN_TENANT_MAX_RUNS=1" in lines[0]


def test_a_task_waits_for_a_slot_instead_of_failing(tmp_path: Path) -> None:
    """acme's task finds the tenant busy: it waits (no attempt spent) and succeeds on its first attempt afterwards."""
    env = _env(tmp_path, ZINGYCONN_TENANT_MAX_RUNS="1")
    with _serving(env) as live, concurrent.futures.ThreadPoolExecutor(1) as pool:
        queue = TaskQueue.from_settings(live.runtime.settings, engine=live.runtime.engine, runner=live.runtime)
        queue.catalog.put_script("acme", "quick", QUICK)
        slow = _in_background(live, pool, "/hooks/acme/slow", 1)
        _wait_for(_refused(live, "acme"), what="the webhook to hold acme's slot")
        task = queue.enqueue("acme", "quick", None)
        queue.start(workers=1)
        try:
            waited = _wait_for(
                lambda: queue.store.get(task.id) if queue.store.get(task.id).state == "retrying" else None,
                what="the task to be deferred",
            )
            assert slow[0].result().status_code == 200
            done = _wait_for(
                lambda: queue.store.get(task.id) if queue.store.get(task.id).state == "succeeded" else None,
                what="the task to run once the slot is free",
            )
        finally:
            queue.stop()

    assert waited.attempts == 0
    assert done.attempts == 1


def test_a_short_burst_over_the_cap_waits_instead_of_being_refused(tmp_path: Path) -> None:
    """With the default wait, a second run of a tenant whose only slot is busy for 0.3 s waits for it and runs."""
    env = _env(tmp_path, ZINGYCONN_TENANT_MAX_RUNS="1", ZINGYCONN_TENANT_WAIT_SECONDS="5")
    with _serving(env) as live, concurrent.futures.ThreadPoolExecutor(3) as pool:
        burst = [pool.submit(httpx.post, live.url("/hooks/acme/slow"), json={"seconds": 0.3}, timeout=30)]
        burst += [pool.submit(httpx.post, live.url("/hooks/acme/slow"), json={"seconds": 0.3}, timeout=30)]
        answers = [future.result() for future in burst]

    assert [answer.status_code for answer in answers] == [200, 200]


def test_the_console_runner_says_the_tenant_is_busy(tmp_path: Path) -> None:
    """With acme's only slot held by a webhook, the console's runner shows TenantBusyError instead of running."""
    limits = {"ZINGYCONN_TENANT_MAX_RUNS": "1", "ZINGYCONN_TENANT_WAIT_SECONDS": "0.5"}
    with live_console(tmp_path / "data", **limits) as console, concurrent.futures.ThreadPoolExecutor(1) as pool:
        Catalog(console.runtime.engine).put_hook("acme", "slow", SLOW)
        held = pool.submit(httpx.post, f"{console.base_url}/hooks/acme/slow", json={"seconds": 4}, timeout=30)
        with console.browser() as browser:
            sign_in(browser, OPERATOR_TOKEN)
            csrf = csrf_of(browser.get("/console/t/acme/runner").text)
            form = {CSRF_FIELD: csrf, "source": "return 'ran'", "event": "{}"}
            page = _wait_for(
                lambda: page if "TenantBusyError" in (page := browser.post("/console/t/acme/runner", data=form)).text
                else None,
                what="the runner to find acme busy",
            )  # fmt: skip
        assert held.result().status_code == 200

    assert page.status_code == 200
    assert "ZINGYCONN_TENANT_MAX_RUNS=1" in page.text

"""A run that fails by its own input is the snippet's failure everywhere: tasks do not retry it, webhook replays
do not run it again (a crash of the platform still is retried and re-run)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hosts.live_server import live_server
from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.runtime import Runtime
from zingyconn.tasks.queue import TaskQueue

LONE_SURROGATE = "return {'text': 'caf\\udce9'}"
DEEP_HASH = "nested = ()\nfor _ in range(1000000):\n    nested = (nested,)\nreturn hash(nested)"
ROOMY = {"memory_bytes": 512 * 1024 * 1024}
OWN_FAULTS = [
    pytest.param(LONE_SURROGATE, "InvalidResultTextError", id="lone-surrogate"),
    pytest.param(DEEP_HASH, "SnippetCrashedError", id="c-recursion-segfault"),
]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    data_dir: Path = tmp_path_factory.mktemp("faults")
    with Runtime(Settings.from_env({"ZINGYCONN_DATA_DIR": str(data_dir)})) as rt:
        yield rt


@pytest.mark.parametrize(("source", "error_type"), OWN_FAULTS)
def test_a_task_failing_by_its_own_input_is_not_retried(runtime: Runtime, source: str, error_type: str) -> None:
    """The task fails after one attempt with the snippet's error type (a WorkerCrashedError would retry 5 times)."""
    queue = TaskQueue.from_settings(runtime.settings, engine=runtime.engine, runner=runtime)
    name = f"own-{error_type.lower()}"
    queue.catalog.put_script("acme", name, source, limits=ROOMY)
    task = queue.enqueue("acme", name, {})
    queue.start(workers=1)
    try:
        deadline = time.monotonic() + 60
        while (record := queue.store.get(task.id)).state not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, "the task did not finish"
            time.sleep(0.05)
    finally:
        queue.stop()

    assert (record.state, record.attempts) == ("failed", 1)
    assert record.error is not None
    assert record.error["type"] == error_type


@pytest.mark.parametrize(("source", "error_type"), OWN_FAULTS)
def test_a_webhook_failing_by_its_own_input_is_replayed_not_rerun(
    runtime: Runtime, source: str, error_type: str
) -> None:
    """Twilio's retry with the same idempotency token gets the stored failure; the hook ran once."""
    name = f"hook-{error_type.lower()}"
    Catalog(runtime.engine).put_hook("acme", name, source, limits=ROOMY)
    with live_server(runtime) as server:
        url, headers = server.url(f"/hooks/acme/{name}"), {"I-Twilio-Idempotency-Token": f"tok-{name}"}
        first = httpx.post(url, headers=headers, timeout=60)
        again = httpx.post(url, headers=headers, timeout=60)
        runs = server.run_count("acme", name)

    assert first.status_code == 500
    assert first.json()["error"]["type"] == error_type
    assert (again.status_code, again.headers.get("x-zingy-replayed")) == (500, "true")
    assert runs == 1

"""``zingyconn serve --workers N``: N uvicorn worker processes, each with a sandbox zygote of its own."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.cluster import running_cluster
from zingyconn.catalog import Catalog
from zingyconn.database import create_engine

WORKERS = 2
#: Slow enough that requests overlap, so more than one worker is likely to take some.
HOOK = "import time\ntime.sleep(0.05)\nreturn {'n': event['query']['n']}"


def _cmdline(process: psutil.Process) -> list[str]:
    """The process's command line, or nothing if it has exited (a run child may exit while the tree is read)."""
    try:
        return process.cmdline()
    except psutil.NoSuchProcess:  # ZombieProcess is a subclass: an exited run child not yet reaped by its zygote
        return []


def _ppid(process: psutil.Process) -> int | None:
    """The process's parent pid, or None if it has exited and been reaped."""
    try:
        return process.ppid()
    except psutil.NoSuchProcess:
        return None


def _is_zygote(process: psutil.Process) -> bool:
    return "sandbox.zygote" in _cmdline(process)


def _is_worker(process: psutil.Process) -> bool:
    return any("spawn_main" in part for part in _cmdline(process))


@pytest.mark.slow
@pytest.mark.postgres
def test_serve_with_two_workers_answers_and_gives_each_worker_its_own_zygote(postgres_url: str, tmp_path: Path) -> None:
    """Every request is answered correctly; each zygote belongs to one worker; stopping serve stops them all."""
    engine = create_engine(postgres_url)
    Catalog(engine).put_hook("acme", "echo", HOOK)
    engine.dispose()
    env = {"ZINGYCONN_DB_URL": postgres_url, "ZINGYCONN_DATA_DIR": str(tmp_path / "data")}
    with running_cluster(env, tmp_path / "logs") as cluster:
        server = cluster.start_server("serve", "--workers", str(WORKERS))
        cluster.wait_until_serving()

        def ask(n: int) -> tuple[int, object]:
            response = httpx.post(f"{server.base_url}/hooks/acme/echo?n={n}", timeout=30)  # a new connection each
            return response.status_code, response.json()

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, range(100)))
        tree = psutil.Process(server.popen.pid).children(recursive=True)
        workers = [p for p in tree if _is_worker(p)]
        sandboxes = [p for p in tree if _is_zygote(p)]  # zygotes and the run children they fork (same cmdline)
        # A run child's parent is a zygote; a zygote's parent is not. A run child that has exited since is skipped.
        parents = {p.pid: parent for p in sandboxes if (parent := _ppid(p)) is not None}
        zygote_parents = [parent for parent in parents.values() if parent not in parents]
        server.stop()

    assert answers == [(200, {"n": str(n)}) for n in range(100)]
    assert len(workers) == WORKERS
    # Each worker started its own zygote at start-up; none is shared, none hangs under the supervising parent.
    assert sorted(zygote_parents) == sorted(w.pid for w in workers)
    # Stopping serve stops its workers and their zygotes too (a zygote notices its worker is gone and exits).
    _, alive = psutil.wait_procs([*workers, *sandboxes], timeout=15)
    assert alive == []

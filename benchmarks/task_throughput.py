"""Background-task throughput: tasks/s through the SQLite and the Redis queue, against direct runs as the baseline.

Every task runs ``return event`` in the production sandbox and goes through the whole path: the ``tasks`` row,
the Huey message, claim, sandbox run, run history, finish. The baseline calls ``Runtime.run`` in a loop (no queue)
with the same number of threads, so the difference is what the queue costs.

    python benchmarks/task_throughput.py [--tasks 400] [--workers 4] [--redis-url redis://...]

Without ``--redis-url`` a throw-away redis-server is started on loopback (when installed).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the Redis server helper lives in tests/

from zingyconn.runtime import Runtime  # noqa: E402
from zingyconn.schema import tasks  # noqa: E402
from zingyconn.tasks.queue import TaskQueue  # noqa: E402  # after the path set-up above

SNIPPET = "return event"


@contextlib.contextmanager
def _runtime(queue_url: str | None) -> Iterator[Runtime]:
    root = Path(tempfile.mkdtemp(prefix="zingyconn-bench-"))
    env = {"ZINGYCONN_DATA_DIR": str(root)} | ({"ZINGYCONN_QUEUE_URL": queue_url} if queue_url else {})
    try:
        with Runtime.from_env(env) as runtime:
            runtime.run("bench", SNIPPET)  # start the zygote outside the measurement
            yield runtime
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _succeeded(runtime: Runtime) -> int:
    query = sa.select(sa.func.count()).select_from(tasks).where(tasks.c.state == "succeeded")
    with runtime.engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def baseline(count: int, workers: int) -> float:
    """Return runs/s of ``Runtime.run`` called directly from *workers* threads (recorded in the history too)."""
    with _runtime(None) as runtime, concurrent.futures.ThreadPoolExecutor(workers) as pool:
        started = time.perf_counter()
        list(pool.map(lambda n: runtime.run("bench", SNIPPET, event={"n": n}, kind="task"), range(count)))
        return count / (time.perf_counter() - started)


def through_queue(count: int, workers: int, queue_url: str | None) -> float:
    """Return tasks/s from enqueue of *count* tasks to the last one succeeded, with *workers* consumer threads."""
    with _runtime(queue_url) as runtime:
        queue = TaskQueue.from_settings(runtime.settings, engine=runtime.engine, runner=runtime)
        queue.huey.flush()
        queue.catalog.put_script("bench", "echo", SNIPPET)
        started = time.perf_counter()
        for n in range(count):
            queue.enqueue("bench", "echo", {"n": n})
        queue.start(workers=workers)
        try:
            while _succeeded(runtime) < count:
                time.sleep(0.02)
            return count / (time.perf_counter() - started)
        finally:
            queue.stop()


def main() -> None:
    """Run the three measurements and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    print(f"{args.tasks} tasks, {args.workers} worker threads, snippet {SNIPPET!r}")
    print(f"baseline (Runtime.run, no queue): {baseline(args.tasks, args.workers):8.1f} runs/s")
    print(f"SQLite queue:                     {through_queue(args.tasks, args.workers, None):8.1f} tasks/s")
    with contextlib.ExitStack() as stack:
        url = args.redis_url
        if url is None and shutil.which("redis-server"):
            from tests.servers import redis_server  # only when no --redis-url is given

            url = stack.enter_context(redis_server())
        if url is None:
            print("Redis queue: skipped (no redis-server; pass --redis-url)")
            return
        print(f"Redis queue:                      {through_queue(args.tasks, args.workers, url):8.1f} tasks/s")


if __name__ == "__main__":
    main()

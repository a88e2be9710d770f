"""What a webhook request's store writes cost: CPU per request and the wait for the commit, SQLite and PostgreSQL.

Run from the repository root::

    python benchmarks/store_writes.py                          # both backends, with and without a token
    python benchmarks/store_writes.py --backends sqlite --seconds 3 --profile /tmp/prof

*concurrency* threads (the server's worker threads) each write what one webhook request writes, over and over,
through the same objects ``zingyconn serve`` uses (:class:`~zingyconn.history.RunHistory` and
:class:`~zingyconn.hosts.replay.ReplayStore` writing through one :class:`~zingyconn.group_commit.GroupWriter`):

- ``history``: the run's history row (a request without ``I-Twilio-Idempotency-Token``);
- ``token``: the idempotency claim (its own transaction, before the run), then the history row and the replay
  record in one transaction, as a request with a token (every request Twilio sends carries one).

No HTTP and no snippet: the figures are the writes alone, so they move less with the machine's other load than
``webhook_load.py``'s do. Printed per row: requests per second, this process's CPU per request (callers and writer
thread) and the writer thread's share of it, PostgreSQL's CPU per request, and the p50/p99 of the time a request
takes to write (claim included).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402, F401  # tests.servers reports a missing PostgreSQL as a pytest skip
from http_load import AUTO_REPLY, percentile, sms_form  # noqa: E402
from process_cpu import postgres_processes  # noqa: E402

from tests.servers import postgres_server  # noqa: E402  # after the path set-up above
from zingyconn.database import create_engine  # noqa: E402
from zingyconn.group_commit import GroupWriter  # noqa: E402
from zingyconn.history import OK, RunHistory, new_run_id  # noqa: E402
from zingyconn.hosts.replay import ReplayStore, StoredResponse  # noqa: E402

BACKENDS = ("sqlite", "postgres")
KINDS = ("history", "token")
REPLY = b'<?xml version="1.0" encoding="UTF-8"?><Response><Message>Thanks! You said: hi</Message></Response>'


def _event(tag: str) -> dict[str, Any]:
    """The event as the history stores a webhook's: request fields and the parsed form."""
    return {
        "hook": "reply",
        "method": "POST",
        "path": "/hooks/bench/reply",
        "query": {},
        "headers": {"host": "127.0.0.1:8000", "content-type": "application/x-www-form-urlencoded"},
        "form": sms_form(tag),
        "json": None,
    }


def _request(history: RunHistory, replay: ReplayStore, writer: GroupWriter, tag: str, *, token: bool) -> None:
    """Write what one webhook request writes."""
    run_id = new_run_id()
    fields: dict[str, Any] = {
        "run_id": run_id, "tenant": "bench", "kind": "webhook", "name": "reply", "status": OK,
        "started_at": time.time(), "duration_ms": 0.4, "event": _event(tag), "result": REPLY.decode(),
        "source": AUTO_REPLY, "version": 1,
    }  # fmt: skip
    if not token:
        history.record(**fields)
        return
    if not replay.claim("bench", "reply", tag):
        raise RuntimeError(f"token {tag} was claimed twice")
    with writer.together():
        history.record(**fields)
        replay.store("bench", "reply", tag, StoredResponse(200, "text/xml", REPLY, run_id))


def _measure(url: str, database_port: int | None, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    engine = create_engine(url)
    writer = GroupWriter(engine)
    history = RunHistory(engine, writer=writer)
    replay = ReplayStore(engine, writer=writer)
    latencies_ms: list[list[float]] = [[] for _ in range(args.concurrency)]
    stop = threading.Event()

    def caller(index: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.perf_counter()
            _request(history, replay, writer, f"{kind}-{index}-{n}", token=kind == "token")
            latencies_ms[index].append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(args.concurrency)]
    for thread in threads:
        thread.start()
    time.sleep(args.warmup_seconds)
    for each in latencies_ms:
        each.clear()
    # Started by the warm-up's first write.
    writer_thread = next(thread for thread in threading.enumerate() if thread.name == "zingyconn-group-commit")
    cpu_before, database_before, started = time.process_time(), _database_cpu(database_port), time.perf_counter()
    writer_before = _thread_cpu(writer_thread)
    with _profiled(args.profile, f"store-writes-{url.split(':')[0]}-{kind}", args.seconds):
        time.sleep(args.seconds)
    done = sum(len(each) for each in latencies_ms)
    cpu, database = time.process_time() - cpu_before, _database_cpu(database_port) - database_before
    writer_cpu = _thread_cpu(writer_thread) - writer_before
    elapsed = time.perf_counter() - started
    stop.set()
    for thread in threads:
        thread.join()
    writer.close()
    engine.dispose()
    ordered = sorted(latency for each in latencies_ms for latency in each)
    return {
        "req/s": done / elapsed,
        "cpu ms": 1000 * cpu / max(1, done),
        "writer ms": 1000 * writer_cpu / max(1, done),
        "db ms": 1000 * database / max(1, done),
        "p50 ms": percentile(ordered, 50),
        "p99 ms": percentile(ordered, 99),
    }


def _thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds *thread* has used (Linux: ``/proc/self/task/TID/stat``)."""
    fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, in clock ticks


def _database_cpu(port: int | None) -> float:
    if port is None:
        return 0.0
    total = 0.0
    for process in postgres_processes(port):
        with contextlib.suppress(Exception):
            times = process.cpu_times()
            total += times.user + times.system
    return total


@contextlib.contextmanager
def _profiled(directory: Path | None, name: str, seconds: float) -> Iterator[None]:
    """py-spy this process into *directory* for *seconds* (every thread that is not idle: the writer's share shows)."""
    if directory is None:
        yield
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    directory.mkdir(parents=True, exist_ok=True)
    output = directory / f"{name}.json"
    duration = str(max(1, round(seconds)))
    argv = [
        py_spy,
        "record",
        "-r",
        "200",
        "-f",
        "speedscope",
        "-o",
        str(output),
        "-d",
        duration,
        "-p",
        str(os.getpid()),
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        process.wait()
        print(f"profile: {output}")


@contextlib.contextmanager
def _backend(name: str, root: Path) -> Iterator[tuple[str, int | None]]:
    if name == "sqlite":
        yield f"sqlite:///{root / 'store.db'}", None
        return
    with postgres_server() as url:
        yield url, int(url.rsplit(":", 1)[1].split("/")[0])


def main() -> int:
    """Measure each backend and kind; print one row each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="Measured seconds per row.")
    parser.add_argument("--warmup-seconds", type=float, default=1.0, help="Writes before each row, discarded.")
    parser.add_argument("--concurrency", type=int, default=16, help="Writing threads at once.")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="sqlite,postgres")
    parser.add_argument("--kinds", default=",".join(KINDS), help="history,token")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR", help="py-spy each row into DIR.")
    args = parser.parse_args()
    print(f"{'backend':9} {'kind':8} {'req/s':>8} {'cpu ms':>7} {'writer':>7} {'db ms':>6} {'p50 ms':>7} {'p99 ms':>7}")
    for backend in args.backends.split(","):
        for kind in args.kinds.split(","):
            with tempfile.TemporaryDirectory() as root, _backend(backend, Path(root)) as (url, port):
                row = _measure(url, port, kind, args)
            print(
                f"{backend:9} {kind:8} {row['req/s']:8.1f} {row['cpu ms']:7.3f} {row['writer ms']:7.3f} "
                f"{row['db ms']:6.3f} {row['p50 ms']:7.2f} {row['p99 ms']:7.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Throughput of two ``zingyconn serve`` processes against one, on one PostgreSQL and one Redis, in the same run.

Usage::

    python benchmarks/scale_out.py [--seconds 10] [--rounds 3] [--concurrency 16] [--json]

Starts a throw-away PostgreSQL and Redis on 127.0.0.1 (as the tests do), stores a TwiML auto-reply hook, starts
three servers on them (A, B, and C = ``serve --workers 2``), then loads the hook at the given concurrency with
keep-alive HTTP/1.1 clients in this process: against A alone, against A and B with the clients split evenly (what a
load balancer with keep-alive does), and against C; the three layouts are measured in turn, ``--rounds`` times, and
the median round of each is reported. Every response is checked (200, ``text/xml``, this request's reply).

The load generator shares the machine with the servers, PostgreSQL and Redis: on a 2-core machine the second
server mostly competes for the same cores, so expect a modest ratio; on separate machines the servers share only
the database and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from http_load import AUTO_REPLY, HOOK_PATH, form_post, percentile, read_response  # noqa: E402
from process_cpu import postgres_processes  # noqa: E402

from tests.e2e.cluster import Process, running_cluster  # noqa: E402  # after the path set-up above
from tests.servers import postgres_server, redis_server  # noqa: E402


@dataclass
class Stats:
    """Latencies and errors of one load run."""

    name: str
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: CPU seconds spent during the run by the servers (with their sandboxes) and by PostgreSQL.
    server_cpu_seconds: float = 0.0
    postgres_cpu_seconds: float = 0.0

    def summary(self) -> dict[str, float | int | str]:
        """Return requests per second, p50/p99 latency and the error count."""
        ordered = sorted(self.latencies_ms) or [0.0]

        return {
            "name": self.name,
            "requests": len(self.latencies_ms),
            "req_per_s": round(len(self.latencies_ms) / self.seconds, 1),
            "p50_ms": percentile(ordered, 50),
            "p99_ms": percentile(ordered, 99),
            "errors": len(self.errors),
            "server_cpu_ms_per_request": round(self.server_cpu_seconds * 1000 / max(1, len(self.latencies_ms)), 2),
            "postgres_cpu_ms_per_request": round(self.postgres_cpu_seconds * 1000 / max(1, len(self.latencies_ms)), 2),
        }


async def _client(base_url: str, stats: Stats, deadline: float, worker: int) -> None:
    port = int(urlsplit(base_url).port or 80)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    try:
        while time.perf_counter() < deadline:
            n += 1
            tag = f"w{worker}n{n}"
            started = time.perf_counter()
            try:
                writer.write(form_post(port, HOOK_PATH, tag))
                status, headers, payload = await read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:  # counted, then a fresh connection
                stats.errors.append(f"{type(exc).__name__}: {exc}")
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            stats.latencies_ms.append((time.perf_counter() - started) * 1000)
            is_xml = headers.get("content-type", "").startswith("text/xml")
            if status != 200 or not is_xml or tag.encode() not in payload:
                stats.errors.append(f"{status} {payload[:200]!r}")
    finally:
        writer.close()


async def _load(name: str, base_urls: list[str], *, seconds: float, concurrency: int) -> Stats:
    """Run *concurrency* clients for *seconds*, client *i* on server ``i % len(base_urls)``."""
    stats = Stats(name, seconds)
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(_client(base_urls[i % len(base_urls)], stats, deadline, i) for i in range(concurrency)))
    return stats


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    """CPU time of *processes* and of the children they reaped (a zygote reaps the child of every run)."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def _measure(name: str, servers: list[Process], args: argparse.Namespace, *, db_port: int) -> Stats:
    base_urls = [str(server.base_url) for server in servers]
    asyncio.run(_load(name, base_urls, seconds=args.warmup_seconds, concurrency=args.concurrency))
    server_before, postgres_before = _cpu_seconds(_serving(servers)), _cpu_seconds(postgres_processes(db_port))
    stats = asyncio.run(_load(name, base_urls, seconds=args.seconds, concurrency=args.concurrency))
    # Listed again: a database backend or sandbox process started during the run counts with all its CPU.
    stats.server_cpu_seconds = _cpu_seconds(_serving(servers)) - server_before
    stats.postgres_cpu_seconds = _cpu_seconds(postgres_processes(db_port)) - postgres_before
    return stats


def _serving(servers: list[Process]) -> list[psutil.Process]:
    roots = [psutil.Process(server.popen.pid) for server in servers]
    return [process for root in roots for process in (root, *root.children(recursive=True))]


def _run(args: argparse.Namespace, root: Path) -> list[list[Stats]]:
    """Start all servers once, then measure the layouts in turn, *rounds* times (background noise hits each alike)."""
    from zingyconn.catalog import Catalog
    from zingyconn.database import create_engine

    rounds: list[list[Stats]] = []
    with postgres_server() as db_url, redis_server() as queue_url:
        env = {"ZINGYCONN_DB_URL": db_url, "ZINGYCONN_QUEUE_URL": queue_url, "ZINGYCONN_DATA_DIR": str(root)}
        engine = create_engine(db_url)
        Catalog(engine).put_hook("bench", "reply", AUTO_REPLY)
        engine.dispose()
        with running_cluster(env, root / "logs") as cluster:
            a, b = cluster.start_server("serve-a"), cluster.start_server("serve-b")
            c = cluster.start_server("serve-c-workers-2", "--workers", "2")
            cluster.wait_until_serving()
            layouts = [("1 server", [a]), ("2 servers", [a, b]), ("1 server --workers 2", [c])]
            for _ in range(args.rounds):
                port = int(urlsplit(db_url).port or 5432)
                rounds.append([_measure(name, servers, args, db_port=port) for name, servers in layouts])
    return rounds


def _median_row(stats: list[Stats]) -> dict[str, float | int | str]:
    """The round with the median throughput of one layout."""
    rows = sorted((s.summary() for s in stats), key=lambda row: float(row["req_per_s"]))
    return rows[len(rows) // 2]


def main() -> int:
    """Measure the three layouts and print the figures; exit 1 if any request failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3, help="Measure every layout this many times, in turn.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args()
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure: say how much
    with tempfile.TemporaryDirectory(prefix="zingyconn-scale-") as tmp:
        rounds = _run(args, Path(tmp))
    rows = [_median_row([round_[i] for round_ in rounds]) for i in range(len(rounds[0]))]
    one, two = (float(row["req_per_s"]) for row in rows[:2])
    ratio = round(two / one, 2) if one else 0.0
    report = {
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "load_average_1m_before": load_before,
        "rows": rows,
        "rounds": [[stats.summary() for stats in round_] for round_ in rounds],
        "two_to_one_server_ratio": ratio,
        "first_errors": [error for round_ in rounds for stats in round_ for error in stats.errors[:2]],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"TwiML hook, concurrency {args.concurrency}, {args.seconds:g} s each, {os.cpu_count()} CPUs, "
            f"load average {load_before} before the run; median of {args.rounds} rounds"
        )
        for row in rows:
            print(
                f"  {row['name']:<22} {row['req_per_s']:>8} req/s  p50 {row['p50_ms']:>6} ms"
                f"  p99 {row['p99_ms']:>6} ms  errors {row['errors']}  CPU per request: servers"
                f" {row['server_cpu_ms_per_request']} ms, PostgreSQL {row['postgres_cpu_ms_per_request']} ms"
            )
        print(f"  2 servers / 1 server throughput: {ratio}")
    return 1 if any(stats.errors for round_ in rounds for stats in round_) else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Delivery under faults: sent / expected / duplicated / lost, on SQLite and on PostgreSQL + Redis.

Runs the fault scenarios of ``tests/faults/delivery.py`` with more repetitions than the test suite: a worker
SIGKILLed at a random moment of a 50-message task (then restarted), Redis and PostgreSQL killed mid-burst and
restarted 3 s later, a proxy that drops the answers of creates it forwarded, and (SQLite, as root) the data
directory's disk full for 3 s (``tests/faults/full_disk.py``). Every message has its own body,
so the emulator's message list shows each loss and each duplicate.

    python benchmarks/delivery_faults.py [--kills 10] [--messages 50] [--seed 1] [--backend sqlite|postgres+redis]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the fault harness lives in tests/

from tests.faults.delivery import Tally, dropped_answers, outage, stack, worker_kills  # noqa: E402
from tests.faults.full_disk import run_scenario, unavailable_reason  # noqa: E402


def _line(backend: str, fault: str, tally: Tally, seconds: float) -> str:
    return (
        f"{backend:<15} {fault:<34} sent {tally.sent:>4} / expected {tally.expected:>4}   duplicated "
        f"{tally.duplicated:>2}   lost {tally.lost:>2}   tasks failed {tally.failed_tasks:>2}   ({seconds:.0f} s)"
    )


def main() -> None:
    """Run every fault scenario on each backend and print one line per scenario."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="worker SIGKILL runs per backend")
    parser.add_argument("--messages", type=int, default=50, help="messages per killed task")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgres+redis"])
    options = parser.parse_args()
    rand = random.Random(options.seed)
    for backend in options.backend or ["sqlite", "postgres+redis"]:
        started = time.monotonic()
        with stack(backend=backend) as running:
            kills = worker_kills(running, runs=options.kills, messages=options.messages, rand=rand)
        print(_line(backend, f"worker SIGKILL x{options.kills}", kills, time.monotonic() - started), flush=True)
        if backend == "postgres+redis":
            with stack(backend=backend) as running:
                assert running.redis is not None
                assert running.postgres is not None
                for name, server in (("Redis", running.redis), ("PostgreSQL", running.postgres)):
                    started = time.monotonic()
                    burst = outage(
                        running, name=name, tasks_count=20, messages=10, kill=server.kill, restart=server.start
                    )
                    print(_line(backend, f"{name} killed 3 s mid-burst", burst, time.monotonic() - started), flush=True)
        started = time.monotonic()
        with stack(backend=backend, through_proxy_drops=10) as running:
            dropped = dropped_answers(running, tasks_count=10, messages=10)
        print(_line(backend, "10 answers dropped after forwarding", dropped, time.monotonic() - started), flush=True)
        if backend == "sqlite":
            _full_disk()


def _full_disk() -> None:
    """The disk under the SQLite data directory fills for 3 s mid-burst (a tmpfs; needs root), then frees up."""
    reason = unavailable_reason()
    if reason is not None:
        print(f"{'sqlite':<15} {'disk full 3 s mid-burst':<34} skipped: {reason}", flush=True)
        return
    started = time.monotonic()
    burst = Tally(**run_scenario("delivery")["tally"])
    print(_line("sqlite", "disk full 3 s mid-burst", burst, time.monotonic() - started), flush=True)


if __name__ == "__main__":
    main()

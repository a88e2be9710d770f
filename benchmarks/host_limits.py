"""What the per-tenant host limits cost one run and one Twilio request: run admission and the write tables.

Run from the repository root::

    python benchmarks/host_limits.py              # a few seconds
    python benchmarks/host_limits.py --rounds 20000

Measures, in this process:

- ``admit``: :meth:`zingyconn.admission.TenantSlots.admit` and its release (the ``flock``ed slot files of a tenant
  with the default 16 slots, kept open between runs), with no other run of the tenant going, and with 15 going (the
  longest scan) in this process (counted from its memory) and in another (a second ``TenantSlots`` on the same
  directory opens the files separately, as another process does: each busy slot is a refused ``flock`` and a read);
- ``writes``: classifying one request with :data:`zingyconn.twilio.billing.TWILIO_WRITES` (the deny list, then the
  product), for a message create and for a path spelled with escapes and a lone ``/.json``.

Each figure is the p50 and p99 of single calls, in microseconds. Target: both well under the ~1 ms of a warm
``return 1`` run (``benchmarks/sandbox_latency.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from zingyconn.admission import MIB, TenantLimits, TenantSlots
from zingyconn.twilio.billing import TWILIO_WRITES

ACCOUNT = "/2010-04-01/Accounts/AC" + "a1" * 16


def _timed(call: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Return the p50 and p99 of *rounds* calls of *call*, in microseconds."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - started) / 1000)
    cuts = statistics.quantiles(samples, n=100)
    return statistics.median(samples), cuts[98]


def _admit_once(slots: TenantSlots) -> None:
    with slots.admit("acme", memory_bytes=256 * MIB, wait=False):
        pass


def _classify(method: str, host: str, path: str) -> None:
    TWILIO_WRITES.refuse(method, host, path)
    TWILIO_WRITES.product(method, host, path)


def main() -> None:
    """Print the figures described in the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    rounds = parser.parse_args().rounds
    rows: list[tuple[str, tuple[float, float]]] = []
    with tempfile.TemporaryDirectory() as directory:
        slots = TenantSlots(Path(directory), TenantLimits(max_runs=16, max_memory_bytes=16 * 256 * MIB))
        rows.append(("admit, no other run going", _timed(lambda: _admit_once(slots), rounds)))
        other = TenantSlots(Path(directory), slots.limits)
        for where, holder in (("this process", slots), ("another", other)):
            with contextlib.ExitStack() as held:
                for _ in range(15):
                    held.enter_context(holder.admit("acme", memory_bytes=256 * MIB, wait=False))
                rows.append((f"admit, 15 going ({where})", _timed(lambda: _admit_once(slots), rounds)))
    create = ("POST", "api.twilio.com", f"{ACCOUNT}/Messages.json")
    odd = ("POST", "api.twilio.com", f"{ACCOUNT}/%2E/Calls/.json")
    rows.append(("writes, message create", _timed(lambda: _classify(*create), rounds)))
    rows.append(("writes, escaped call create", _timed(lambda: _classify(*odd), rounds)))
    print(f"{'what':32} {'p50 us':>8} {'p99 us':>8}   ({rounds} calls each)")
    for name, (p50, p99) in rows:
        print(f"{name:32} {p50:8.1f} {p99:8.1f}")


if __name__ == "__main__":
    main()

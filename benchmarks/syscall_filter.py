"""What the zygote's seccomp filter costs: a system call and a fork, with and without it, in the same run.

Run from the repository root::

    python benchmarks/syscall_filter.py [--rounds 5] [--calls 20000] [--forks 200]

Each round starts two fresh ``python -I`` processes in turn, one plain and one that first installs the filter
exactly as the zygote does (``no_new_privs``, then :func:`sandbox.syscall_filter.install_syscall_filter`). Each times
batches of *--calls* ``getppid()`` calls (a system call that does nothing, so the filter's share shows) and *--forks*
fork + exit + wait cycles. Rounds alternate the two, so background noise hits both alike. The report gives p50/p99
over all batches and forks, the ratio filtered/plain and the difference per call, and the filter's cost for a run
that makes :data:`CALLS_PER_RUN` system calls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: System calls per ``return 1`` run, the zygote's and the child's together (``strace -f -c`` attached to the zygote
#: of a warm ``Sandbox`` over 100 runs: 5 107 calls, mostly ``prlimit64``, ``recvfrom``, ``close`` and ``wait4``).
CALLS_PER_RUN = 51

PROBE = """
import json, os, sys, time
calls, forks, filtered = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
# Both variants import and load the same (a bigger address space alone makes a fork dearer); only one installs.
from sandbox.hardening import set_no_new_privs
from sandbox.syscall_filter import _load_library, install_syscall_filter
set_no_new_privs()
_load_library()
if filtered:
    install_syscall_filter()
getppid, clock = os.getppid, time.perf_counter_ns
for _ in range(calls):  # warm the loop and the caches
    getppid()
batches = []
for _ in range(20):
    started = clock()
    for _ in range(calls):
        getppid()
    batches.append((clock() - started) / calls)
fork_us = []
for _ in range(forks):
    started = clock()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    fork_us.append((clock() - started) / 1000)
print(json.dumps({"call_ns": batches, "fork_us": fork_us}))
"""


def percentile(samples: list[float], fraction: float) -> float:
    """The *fraction* percentile of *samples* (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _measure(calls: int, forks: int, *, filtered: bool) -> dict[str, list[float]]:
    output = subprocess.run(
        [sys.executable, "-I", "-c", PROBE, str(calls), str(forks), "1" if filtered else "0"],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, list[float]] = json.loads(output)
    return result


def main() -> None:
    """Measure both variants in alternating rounds and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each measuring both variants")
    parser.add_argument("--calls", type=int, default=20000, help="getppid() calls per timed batch")
    parser.add_argument("--forks", type=int, default=200, help="fork + exit + wait cycles per round")
    args = parser.parse_args()

    samples: dict[bool, dict[str, list[float]]] = {f: {"call_ns": [], "fork_us": []} for f in (False, True)}
    for round_number in range(args.rounds):
        order = (False, True) if round_number % 2 == 0 else (True, False)
        for filtered in order:
            for key, values in _measure(args.calls, args.forks, filtered=filtered).items():
                samples[filtered][key].extend(values)

    print(f"seccomp filter cost on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.rounds} rounds")
    print(f"{'':34}{'p50':>10}{'p99':>10}")
    for key, label in (("call_ns", "getppid() (ns per call)"), ("fork_us", "fork + exit + wait (µs)")):
        for filtered in (False, True):
            values = samples[filtered][key]
            name = f"{label}, {'filtered' if filtered else 'plain'}"
            print(f"{name:34}{percentile(values, 0.5):>10.1f}{percentile(values, 0.99):>10.1f}")
    plain_ns, filtered_ns = (percentile(samples[f]["call_ns"], 0.5) for f in (False, True))
    plain_us, filtered_us = (percentile(samples[f]["fork_us"], 0.5) for f in (False, True))
    extra_ns = filtered_ns - plain_ns
    print(f"\nfiltered / plain, system call (p50):   {filtered_ns / plain_ns:.2f}x ({extra_ns:+.0f} ns per call)")
    print(f"filtered / plain, fork (p50):          {filtered_us / plain_us:.2f}x")
    print(f"filter cost of a run ({CALLS_PER_RUN} calls):     {CALLS_PER_RUN * extra_ns / 1000:+.1f} µs")


if __name__ == "__main__":
    main()

"""What the zygote's seccomp filter and Landlock ruleset cost: system calls, file opens and forks, in the same run.

Run from the repository root::

    python benchmarks/hardening_cost.py [--rounds 5] [--calls 20000] [--forks 200]

Each round starts three fresh ``python -I`` processes in turn: ``plain``; ``filter``, which first installs the seccomp
filter exactly as the zygote does (``no_new_privs``, then :func:`sandbox.syscall_filter.install_syscall_filter`);
and ``filter + landlock``, which also applies :func:`sandbox.file_access.restrict_file_access`. All three import and
load the same code (a bigger address space alone makes a fork dearer). Each times batches of *--calls* ``getppid()``
calls (a system call that does nothing, so the filter's share shows), batches of ``open()`` + ``close()`` of a
standard-library file (what Landlock checks: a lazy import opens a few), and *--forks* fork + exit + wait cycles.
The variants take turns in each round, so background noise hits all alike. The report gives p50/p99 over all
batches and forks, the ratio to ``plain``, and the hardening's cost for a run that makes :data:`CALLS_PER_RUN`
system calls and opens no file.
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

VARIANTS = ("plain", "filter", "filter + landlock")

PROBE = """
import json, os, sys, time
calls, forks, variant = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
from sandbox.hardening import set_no_new_privs
from sandbox.file_access import readable_paths, restrict_file_access
from sandbox.syscall_filter import load_libseccomp, install_syscall_filter
set_no_new_privs()
load_libseccomp()
paths = readable_paths()
if variant != "plain":
    install_syscall_filter()
if variant == "filter + landlock":
    restrict_file_access(paths)
getppid, clock, module_file = os.getppid, time.perf_counter_ns, os.__file__
for _ in range(calls):  # warm the loop and the caches
    getppid()
call_ns, open_ns, fork_us = [], [], []
for _ in range(20):
    started = clock()
    for _ in range(calls):
        getppid()
    call_ns.append((clock() - started) / calls)
    started = clock()
    for _ in range(calls // 20):
        os.close(os.open(module_file, os.O_RDONLY))
    open_ns.append((clock() - started) / (calls // 20))
for _ in range(forks):
    started = clock()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    fork_us.append((clock() - started) / 1000)
print(json.dumps({"call_ns": call_ns, "open_ns": open_ns, "fork_us": fork_us}))
"""

MEASURES = (
    ("call_ns", "getppid() (ns)"),
    ("open_ns", "open + close (ns)"),
    ("fork_us", "fork + exit + wait (µs)"),
)


def percentile(samples: list[float], fraction: float) -> float:
    """The *fraction* percentile of *samples* (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _measure(calls: int, forks: int, variant: str) -> dict[str, list[float]]:
    output = subprocess.run(
        [sys.executable, "-I", "-c", PROBE, str(calls), str(forks), variant],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, list[float]] = json.loads(output)
    return result


def main() -> None:
    """Measure the variants in rotating order, round after round, and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each measuring every variant")
    parser.add_argument("--calls", type=int, default=20000, help="getppid() calls per timed batch")
    parser.add_argument("--forks", type=int, default=200, help="fork + exit + wait cycles per round")
    args = parser.parse_args()

    samples: dict[str, dict[str, list[float]]] = {v: {key: [] for key, _ in MEASURES} for v in VARIANTS}
    for round_number in range(args.rounds):
        shift = round_number % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            for key, values in _measure(args.calls, args.forks, variant).items():
                samples[variant][key].extend(values)

    print(f"hardening cost on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.rounds} rounds")
    print(f"{'':44}{'p50':>9}{'p99':>9}{'/ plain':>9}")
    for key, label in MEASURES:
        plain = percentile(samples["plain"][key], 0.5)
        for variant in VARIANTS:
            values = samples[variant][key]
            p50 = percentile(values, 0.5)
            print(f"{label + ', ' + variant:44}{p50:>9.1f}{percentile(values, 0.99):>9.1f}{p50 / plain:>8.2f}x")
    extra_ns = percentile(samples["filter + landlock"]["call_ns"], 0.5) - percentile(samples["plain"]["call_ns"], 0.5)
    print(f"\nper system call, filter + landlock - plain (p50): {extra_ns:+.0f} ns")
    print(f"hardening cost of a run ({CALLS_PER_RUN} calls, no open): {CALLS_PER_RUN * extra_ns / 1000:+.1f} µs")


if __name__ == "__main__":
    main()

"""What one fresh process per run costs on this machine before the snippet does anything.

Run from the repository root::

    python benchmarks/fork_floor.py [--forks 300]

Each line forks *--forks* children from a parent in a given state and waits for each; it reports the CPU the parent
(the fork) and the child (its page faults and its exit) spent per fork, and the child's minor page faults:

- ``bare``: a ``python -I`` that imported nothing (the floor for any CPython fork server);
- ``zygote``: a parent that preloaded what the sandbox zygote preloads (``sandbox.zygote.preload`` with the twilio
  environment), child exits at once;
- ``zygote + warm-up``: the same, the child making the environment's warm-up runs before it exits (what a spare
  child does ahead of demand);

beside a page-fault probe that times first writes to copy-on-write pages in a child (µs per page). The sandbox's own
per-run CPU (``benchmarks/sandbox_latency.py``) is these costs plus the run itself and the host's side.
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import gc, json, os, resource, sys, time
forks, mode = int(sys.argv[1]), sys.argv[2]
factory = None
if mode != "bare":
    from sandbox import child, zygote
    factory = zygote.preload("zingyconn.twilio.snippet:environment")
gc.collect(); gc.freeze()
read_end, write_end = os.pipe()
before = os.times()
for _ in range(forks):
    pid = os.fork()
    if pid == 0:
        if mode == "warm":
            child.warm_up(factory)
        os.write(write_end, b"%d," % resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        os._exit(0)
    os.waitpid(pid, 0)
after = os.times()
faults = sorted(int(n) for n in os.read(read_end, 1 << 20).decode().strip(",").split(","))
anon_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssAnon"))
print(json.dumps({
    "parent_ms": (after.user - before.user + after.system - before.system) / forks * 1000,
    "child_ms": (after.children_user - before.children_user + after.children_system - before.children_system)
    / forks * 1000,
    "child_faults": faults[len(faults) // 2],
    "anon_mib": anon_kib / 1024,
}))
"""


def copy_on_write_us(pages: int = 2048) -> float:
    """Return the µs a child spends per first write to a page it shares copy-on-write with its parent."""
    region = mmap.mmap(-1, pages * mmap.PAGESIZE)
    for page in range(pages):
        region[page * mmap.PAGESIZE] = 1
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        started = time.perf_counter()
        for page in range(pages):
            region[page * mmap.PAGESIZE] = 2
        os.write(write_end, str((time.perf_counter() - started) / pages * 1e6).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    return float(os.read(read_end, 100))


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--forks", type=int, default=300)
    args = parser.parse_args()
    gc.collect()
    rows = {}
    for label, mode in (("bare", "bare"), ("zygote", "zygote"), ("zygote + warm-up", "warm")):
        output = subprocess.run(
            [sys.executable, "-I", "-c", PROBE, str(args.forks), mode],
            cwd=ROOT,
            env={},  # as the sandbox starts its zygote; -I ignores PYTHON* variables anyway
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows[label] = json.loads(output)
    print(f"fork floor on {os.cpu_count()} CPUs, {args.forks} forks each, load {os.getloadavg()[0]:.1f}")
    print(f"{'parent state':<18} {'anon MiB':>9} {'fork CPU ms':>12} {'child CPU ms':>13} {'child faults':>13}")
    for label, row in rows.items():
        print(
            f"{label:<18} {row['anon_mib']:9.1f} {row['parent_ms']:12.2f} {row['child_ms']:13.2f}"
            f" {row['child_faults']:13d}"
        )
    bare = rows["bare"]["parent_ms"] + rows["bare"]["child_ms"]
    zygote = rows["zygote"]["parent_ms"] + rows["zygote"]["child_ms"]
    warm = rows["zygote + warm-up"]["parent_ms"] + rows["zygote + warm-up"]["child_ms"]
    print(f"zygote / bare fork+exit CPU: {zygote / bare:.2f}x; with warm-up: {warm / bare:.2f}x ({warm:.2f} ms)")
    print(f"copy-on-write fault in a child: {copy_on_write_us():.2f} µs per page")
    cores = os.cpu_count() or 1
    print(f"CPU budget per run for 500 runs/s on {cores} cores: {cores / 500 * 1000:.1f} ms")


if __name__ == "__main__":
    main()

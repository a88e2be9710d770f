"""What one fresh process per run costs on this machine before the snippet does anything.

Run from the repository root::

    python benchmarks/fork_floor.py [--forks 300]

Each line forks *--forks* children from a parent in a given state and waits for each; it reports the CPU the parent
(the fork) and the child (its page faults and its exit) spent per fork, and the child's minor page faults:

- ``bare``: a ``python -I`` that imported nothing (the floor for any CPython fork server);
- ``zygote``: a parent that preloaded what the sandbox zygote preloads (``sandbox.zygote.preload`` with the twilio
  environment), its heap laid out and collapsed into huge pages as the zygote's (:mod:`sandbox.huge_pages`), child
  exits at once;
- ``zygote + warm-up``: the same, the child making the environment's warm-up runs before it exits (what a spare
  child does ahead of demand);

beside a page-fault probe that times first writes to copy-on-write pages in a child (µs per page).

It then runs an **ideal fork server** for *--seconds*: a process in the zygote's state that forks one child per
request from two caller threads (in another process), reaps it, and nothing else: no supervisor, no spare children,
no JSON control messages. Its child either answers one byte and exits (the floor of any fork-per-run design with
this preload), or makes a real ``return 1`` run with the sandbox's own child code (hardening, order, rlimits,
environment, restricted exec, reply). Runs per second and CPU per run (server, its children and the callers) are
printed beside the budget of ``benchmarks/sandbox_latency.py``'s target, so the sandbox's figure can be split into
what the fork costs, what the run costs in a fresh child, and what the sandbox's own machinery adds.
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
heap = []
if mode != "bare":
    from sandbox import child, huge_pages, zygote
    object_memory = huge_pages.reserve_object_memory()  # as the zygote lays out its heap
    factory = zygote.preload("zingyconn.snippet.environment:environment")
    heap = list(huge_pages.collapsible_ranges(open("/proc/self/maps").read()))
gc.collect(); gc.freeze()
if heap:
    huge_pages.collapse(heap)
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


TRIVIAL = "return 1"
TWIML = """from twilio.twiml.messaging_response import MessagingResponse
reply = MessagingResponse()
reply.message('Hi ' + event['name'] + ', you said: ' + event['body'].strip().upper())
return reply"""

SERVE = """
import base64, dataclasses, gc, json, os, select, socket, sys, threading, time
mode, seconds, source = sys.argv[1], float(sys.argv[2]), sys.argv[3]
callers = 2
control = [socket.socketpair() for _ in range(callers)]
runs = [socket.socketpair() for _ in range(callers)]
server = os.fork()
if server == 0:
    from sandbox import child, hardening, huge_pages, zygote
    object_memory = huge_pages.reserve_object_memory()  # as the zygote lays out its heap
    factory = zygote.preload("zingyconn.snippet.environment:environment")
    statm = child.open_statm()
    heap = list(huge_pages.collapsible_ranges(open("/proc/self/maps").read()))
    hardening.harden(enabled=True)
    server_pid = os.getpid()
    gc.collect(); gc.freeze()
    huge_pages.collapse(heap)
    requests = [server_end for _, server_end in control]
    for caller_end, _ in control:
        caller_end.close()  # so that the callers closing theirs ends this loop
    os.write(1, b"ready")
    while True:
        while True:  # reap: the children's CPU is then counted in this process's children times
            try:
                pid, _status, _usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        for ready in select.select(requests, [], [], 0.01)[0]:
            if not ready.recv(1):
                os._exit(0)
            sock = runs[requests.index(ready)][1]
            space = child.address_space_bytes(statm)
            if os.fork() == 0:
                hardening.enter_child_identity()
                hardening.die_with_parent()
                if os.getppid() != server_pid:  # the server ended before PR_SET_PDEATHSIG took effect
                    os._exit(0)
                if mode == "answer":
                    sock.send(b"k")
                    os._exit(0)
                if mode == "paced":  # a spare, as the sandbox keeps them: warmed up, then waiting for its order
                    child.warm_up(factory)
                sock.sendall(child.serve_order(sock, factory, address_space_bytes=space))
                os._exit(0)
from sandbox import compiler
from sandbox.channel import encode_frame, recv_frame
from sandbox.limits import Limits
for _, server_end in control:
    server_end.close()
compiled = base64.b64encode(compiler.compile_snippet(source).to_bytes()).decode()
order = encode_frame({"t": "run", "compiled": compiled, "event": {"name": "Ada", "body": " hello "}, "context": {},
                      "limits": dataclasses.asdict(Limits())})
time.sleep(0.5)
if mode == "paced":  # one caller, runs 20 ms apart, each served by a spare forked and warmed during the pause
    request, run = control[0][0], runs[0][0]
    request.send(b"r")
    samples = []
    for index in range(int(seconds / 0.02)):
        time.sleep(0.02 if index else 3.0)  # the first pause covers the server's imports
        started = time.perf_counter()
        run.sendall(order)
        result = recv_frame(run, max_bytes=1 << 20)
        samples.append((time.perf_counter() - started) * 1000)
        assert result["result"]["ok"], result
        request.send(b"r")
    samples = sorted(samples[10:])
    print(json.dumps({"p50_ms": samples[len(samples) // 2], "p99_ms": samples[int(len(samples) * 0.99)]}))
    for request, _ in control:
        request.close()
    os.waitpid(server, 0)
    sys.exit(0)

def cpu_seconds():
    fields = open(f"/proc/{server}/stat").read().rsplit(")", 1)[1].split()
    mine = os.times()
    return mine.user + mine.system + sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")

counts = [0] * callers
def caller(index, stop):
    request, run = control[index][0], runs[index][0]
    while time.monotonic() < stop:
        request.send(b"r")
        if mode == "answer":
            run.recv(1)
        else:
            run.sendall(order)
            recv_frame(run, max_bytes=1 << 20)
        counts[index] += 1

for phase in ("warm", "measure"):
    stop = time.monotonic() + (1.0 if phase == "warm" else seconds)
    counts[:] = [0] * callers
    before, started = cpu_seconds(), time.monotonic()
    threads = [threading.Thread(target=caller, args=(index, stop)) for index in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    time.sleep(0.3)  # the last children are reaped
    total = sum(counts)
print(json.dumps({"runs_per_second": total / elapsed, "cpu_ms": (cpu_seconds() - before) / total * 1000}))
for request, _ in control:
    request.close()
os.waitpid(server, 0)
"""


def serve(mode: str, seconds: float, source: str = TRIVIAL) -> dict[str, float]:
    """Run the ideal fork server in *mode* and return its figures.

    ``answer`` and ``run`` (two callers back to back) give runs per second and CPU per run; ``paced`` (one caller,
    runs of *source* 20 ms apart, each served by a warmed spare) gives the latency's p50 and p99.
    """
    process = subprocess.Popen(
        [sys.executable, "-I", "-c", SERVE, mode, str(seconds), source],
        cwd=ROOT,
        env={},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    output, _ = process.communicate(timeout=seconds + 120)
    if process.returncode:
        raise RuntimeError(f"the fork server probe failed with exit code {process.returncode}")
    result: dict[str, float] = json.loads(output.removeprefix("ready"))
    return result


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
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each fork-server measurement")
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
    print(f"ideal fork server, 2 callers, {args.seconds:g} s each (server, children and callers counted):")
    for label, mode in (("child answers and exits", "answer"), ("child makes a `return 1` run", "run")):
        row = serve(mode, args.seconds)
        print(f"  {label:<30} {row['runs_per_second']:6.0f} runs/s {row['cpu_ms']:8.2f} ms CPU per run")
    print("ideal fork server, one caller, runs 20 ms apart, each served by a warmed spare child (latency):")
    for label, source in (("`return 1`", TRIVIAL), ("TwiML reply", TWIML)):
        row = serve("paced", args.seconds, source)
        print(f"  {label:<30} p50 {row['p50_ms']:6.3f} ms   p99 {row['p99_ms']:6.3f} ms")


if __name__ == "__main__":
    main()

"""How fast is an isolated run? Warm-run latency, throughput, baselines, memory and limit precision.

Run from the repository root::

    python benchmarks/sandbox_latency.py            # about a minute
    python benchmarks/sandbox_latency.py --runs 2000

Measures, in one process on one machine:

- isolated warm runs (a spare child forked ahead of demand) of ``return 1`` and of a TwiML reply built from
  ``event``: p50/p99 paced (a short pause between runs, as requests arrive) and back to back;
- the same TwiML reply in a warm *instance* (``isolation=instance``: one process kept for the snippet and reused,
  fresh globals per run), against the fresh child measured in the same run: p50/p99 paced and back to back, and
  the ratio of each;
- throughput with 2 concurrent callers (fresh children, and instances);
- baselines: spawn-per-run (``python -I -c`` that imports twilio and runs the snippet) and in-process restricted exec;
- zygote RSS and per-child USS (unique memory of a warmed spare child);
- precision of the wall-clock limit: ``while True: pass`` with ``wall_seconds=1``.

Targets: p50 <= 1 ms, p99 <= 5 ms, >= 500 runs/s with 2 callers, >= 100x faster than spawn at p50, the
time limit reported within 1.2 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import psutil

from sandbox import Limits, Sandbox, compile_snippet
from sandbox.environment import load_environment_factory
from sandbox.executor import execute

ENVIRONMENT = "zingyconn.snippet.environment:environment"
TRIVIAL = "return 1"
TWIML = """
from twilio.twiml.messaging_response import MessagingResponse
reply = MessagingResponse()
reply.message(f"Hi {event['name']}, you said: {event['body'].strip().upper()}")
return reply
"""
EVENT = {"name": "Ada", "body": " hello "}
SPAWN_CODE = (
    "import sys, json; from sandbox import Limits, RunContext, compile_snippet; from sandbox.executor import execute; "
    "from sandbox.environment import load_environment_factory as load; "
    "env = load(sys.argv[3])(RunContext(host=None, context={})); "
    "r = execute(compile_snippet(sys.argv[1]), event=json.loads(sys.argv[2]), environment=env, limits=Limits()); "
    "assert r.ok, r.error"
)


def percentile(samples: list[float], fraction: float) -> float:
    """Return the *fraction* percentile of *samples* (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed(call: Callable[[], object], runs: int, *, pause: float = 0.0) -> list[float]:
    """Return the latency in ms of *runs* calls of *call*, sleeping *pause* seconds between them."""
    samples = []
    for _ in range(runs):
        if pause:
            time.sleep(pause)
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def isolated(sandbox: Sandbox, source: str, *, instance: bool = False) -> Callable[[], object]:
    """A call that runs *source* in the sandbox (in a fresh child, or in its warm instance) and checks it succeeded."""
    key = ("benchmark", source) if instance else None

    def call() -> object:
        result = sandbox.run(source, event=EVENT, instance_key=key)
        if not result.ok:
            raise RuntimeError(f"benchmark snippet failed: {result.error}")
        return result.value

    return call


def cpu_milliseconds(sandbox: Sandbox) -> float:
    """CPU time used so far by this process, the zygote and the zygote's children (reaped and live), in ms."""
    host, zygote = psutil.Process().cpu_times(), psutil.Process(sandbox.zygote_pid).cpu_times()
    parts = [host.user, host.system, zygote.user, zygote.system, zygote.children_user, zygote.children_system]
    for child in psutil.Process(sandbox.zygote_pid).children():  # live ones: warm instances, spares
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        parts.extend((times.user, times.system))
    return sum(parts) * 1000


def throughput(
    sandbox: Sandbox, source: str, *, callers: int, seconds: float, instance: bool = False
) -> tuple[float, float]:
    """Return (runs per second, CPU ms per run) with *callers* threads running *source* back to back."""
    counts = [0] * callers
    stop = time.monotonic() + seconds

    def caller(index: int) -> None:
        call = isolated(sandbox, source, instance=instance)
        while time.monotonic() < stop:
            call()
            counts[index] += 1

    threads = [threading.Thread(target=caller, args=(index,)) for index in range(callers)]
    cpu_before, started = cpu_milliseconds(sandbox), time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    time.sleep(0.2)  # let the zygote reap the last children, so their CPU is counted
    return sum(counts) / elapsed, (cpu_milliseconds(sandbox) - cpu_before) / max(1, sum(counts))


def spawn_per_run(source: str, runs: int) -> list[float]:
    """Latency of a fresh ``python -I -c`` per run that imports twilio and runs *source*."""
    import json

    argv = [sys.executable, "-I", "-c", SPAWN_CODE, source, json.dumps(EVENT), ENVIRONMENT]
    return timed(lambda: subprocess.run(argv, check=True), runs)


def in_process(source: str, runs: int) -> list[float]:
    """Latency of restricted exec in this process (compiled once; environment built per run)."""
    from sandbox.environment import RunContext

    factory = load_environment_factory(ENVIRONMENT)
    compiled = compile_snippet(source)

    class NoHost:
        def request(self, op: str, payload: object) -> object:
            raise RuntimeError("no host in this baseline")

    def call() -> object:
        environment = factory(RunContext(host=NoHost(), context={}))
        return execute(compiled, event=EVENT, environment=environment, limits=Limits())

    timed(call, 50)
    return timed(call, runs)


def memory(sandbox: Sandbox) -> tuple[float, float]:
    """Return (zygote RSS, mean USS of its warmed spare children) in MiB."""
    time.sleep(0.5)  # let the spares finish their warm-up runs
    zygote = psutil.Process(sandbox.zygote_pid)
    children = zygote.children()
    uss = [child.memory_full_info().uss for child in children] or [0]
    return zygote.memory_info().rss / 2**20, statistics.mean(uss) / 2**20


def limit_precision(sandbox: Sandbox, repeats: int) -> list[float]:
    """Seconds until ``while True: pass`` with wall_seconds=1 is reported as TimeLimitExceededError."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = sandbox.run("while True:\n    pass", limits=Limits(wall_seconds=1, cpu_seconds=5))
        samples.append(time.perf_counter() - started)
        if result.error is None or result.error.type != "TimeLimitExceededError":
            raise RuntimeError(f"expected TimeLimitExceededError, got {result.error}")
    return samples


def row(name: str, samples: list[float], target: str = "") -> str:
    """One table row: p50, p99, mean of *samples* (ms)."""
    p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
    return f"{name:<44} {p50:>9.3f} {p99:>9.3f} {statistics.mean(samples):>9.3f}  {target}"


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs per warm-latency measurement")
    parser.add_argument("--spawn-runs", type=int, default=20, help="runs of the spawn-per-run baseline")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the throughput measurement")
    parser.add_argument("--spares", type=int, default=2, help="spare children kept forked ahead of demand (as Sandbox)")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between paced runs (requests arriving)")
    args = parser.parse_args()

    cpus = psutil.cpu_count()
    print(f"sandbox latency on {cpus} CPUs, Python {sys.version.split()[0]}, load average {psutil.getloadavg()}")
    with Sandbox(environment=ENVIRONMENT, spare_children=args.spares) as sandbox:
        print(f"hardening: {dict(sandbox.hardening)}")
        for source in (TRIVIAL, TWIML):
            timed(isolated(sandbox, source), 100, pause=args.pause)
        paced_trivial = timed(isolated(sandbox, TRIVIAL), args.runs, pause=args.pause)
        paced_twiml = timed(isolated(sandbox, TWIML), args.runs, pause=args.pause)
        burst_trivial = timed(isolated(sandbox, TRIVIAL), args.runs)
        burst_twiml = timed(isolated(sandbox, TWIML), args.runs)
        timed(isolated(sandbox, TWIML, instance=True), 100, pause=args.pause)
        paced_warm = timed(isolated(sandbox, TWIML, instance=True), args.runs, pause=args.pause)
        paced_fresh = timed(isolated(sandbox, TWIML), args.runs, pause=args.pause)  # the baseline, measured alongside
        burst_warm = timed(isolated(sandbox, TWIML, instance=True), args.runs)
        rate_trivial, cpu_trivial = throughput(sandbox, TRIVIAL, callers=2, seconds=args.seconds)
        rate_twiml, cpu_twiml = throughput(sandbox, TWIML, callers=2, seconds=args.seconds)
        rate_warm, cpu_warm = throughput(sandbox, TWIML, callers=2, seconds=args.seconds, instance=True)
        zygote_rss, child_uss = memory(sandbox)
        precision = limit_precision(sandbox, 3)
    local_trivial, local_twiml = in_process(TRIVIAL, args.runs), in_process(TWIML, args.runs)
    spawn_twiml = spawn_per_run(TWIML, args.spawn_runs)

    print()
    print(f"{'latency (ms)':<44} {'p50':>9} {'p99':>9} {'mean':>9}  target")
    gap = f"{args.pause * 1000:g} ms apart"
    print(row(f"isolated warm, `return 1` ({gap})", paced_trivial, "p50 <= 1, p99 <= 5"))
    print(row(f"isolated warm, TwiML reply ({gap})", paced_twiml, "p50 <= 1, p99 <= 5"))
    print(row("isolated, `return 1` back to back", burst_trivial))
    print(row("isolated, TwiML reply back to back", burst_twiml))
    print(row(f"warm instance, TwiML reply ({gap})", paced_warm))
    print(row(f"fresh child, TwiML ({gap}, alongside)", paced_fresh))
    print(row("warm instance, TwiML reply back to back", burst_warm))
    print(row("in-process restricted exec, `return 1`", local_trivial))
    print(row("in-process restricted exec, TwiML reply", local_twiml))
    print(row("spawn per run (python -I -c), TwiML reply", spawn_twiml))
    print()
    spawn_ratio = percentile(spawn_twiml, 0.5) / percentile(paced_twiml, 0.5)
    local_ratio = percentile(paced_twiml, 0.5) / percentile(local_twiml, 0.5)
    print(f"spawn-per-run / isolated (TwiML, p50):     {spawn_ratio:8.0f}x   target >= 100x")
    print(f"isolated / in-process (TwiML, p50):        {local_ratio:8.1f}x")
    for name, fraction in (("p50", 0.5), ("p99", 0.99)):
        fresh, warm = percentile(paced_fresh, fraction), percentile(paced_warm, fraction)
        print(f"fresh child / warm instance (TwiML, {name}):  {fresh / warm:8.2f}x   ({fresh:.3f} ms / {warm:.3f} ms)")
    burst_ratio = percentile(burst_twiml, 0.5) / percentile(burst_warm, 0.5)
    print(f"fresh child / warm instance (back to back): {burst_ratio:7.2f}x   p50")
    print(f"throughput, 2 callers, `return 1`:         {rate_trivial:8.0f} runs/s   target >= 500")
    print(f"throughput, 2 callers, TwiML reply:        {rate_twiml:8.0f} runs/s")
    print(f"throughput, 2 callers, TwiML, instances:   {rate_warm:8.0f} runs/s   ({rate_warm / rate_twiml:.2f}x)")
    print(f"CPU per run (host + zygote + child):       {cpu_trivial:8.2f} ms `return 1`, {cpu_twiml:.2f} ms TwiML")
    print(f"CPU per run, TwiML in warm instances:      {cpu_warm:8.2f} ms")
    print(f"zygote RSS:                                {zygote_rss:8.1f} MiB")
    print(f"per-child USS (warmed spare):              {child_uss:8.1f} MiB")
    print(f"wall_seconds=1 busy loop reported after:   {max(precision):8.3f} s (worst of 3)   target <= 1.2 s")


if __name__ == "__main__":
    main()

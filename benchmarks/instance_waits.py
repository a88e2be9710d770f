"""Warm instances under a burst of runs that wait on the host: do they wait for each other?

Run from the repository root::

    python benchmarks/instance_waits.py [--runs 16] [--answer-ms 100] [--rounds 5] [--per-key N]

A warm instance key (one hook or script version) keeps at most ``max_per_key`` instances *computing* at once
(``--per-key``; the CPUs, at least 2: ``ZINGYCONN_INSTANCES_PER_VERSION``); an instance whose run waits for the host
to answer one of its requests (a Twilio send, an HTTP call) does not count. Each row sends *--runs* concurrent runs
of one key, *--rounds* times after one warm-up burst (which starts the key's instances), and reports the wall time of
a whole burst (p50, p99 over the rounds) and how many processes served it:

- **answered at once**: each run makes one request the host answers at once (the baseline: the channel and the
  runs' own CPU);
- **answered in N ms**: the same request, answered after *--answer-ms* (a run waiting on Twilio). If runs waiting on
  the host held their instance's place, a burst would take about ``runs / max_per_key`` answer times; not holding
  it, about one;
- **CPU-bound**: each run computes for a few milliseconds and makes no request; the key stays at ``max_per_key``
  processes, as more processes than CPUs would not run more at once.

Target: a burst answered in N ms takes at most twice N (it took ``runs / max_per_key`` times N when a waiting run
held its place). The exit status is 1 when it is missed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox import Limits, RunResult, Sandbox  # noqa: E402
from sandbox.instance import InstancePolicy, default_max_per_key  # noqa: E402

#: The tests' environment: ``echo(value)`` asks the host to echo *value*, ``pid()`` names the process.
ENVIRONMENT = "tests.sandbox.hooks:environment"
ASKS = "echo(1)\nreturn pid()"
COMPUTES = "total = 0\nfor i in range(20000):\n    total += i\nreturn pid()"
#: A burst answered after N ms may take at most this many times N.
MAX_BURST_OVER_ANSWER = 2.0


def _burst(
    box: Sandbox,
    pool: concurrent.futures.ThreadPoolExecutor,
    *,
    source: str,
    runs: int,
    on_request: Callable[[str, Any], Any],
) -> tuple[float, int]:
    """Run *runs* runs of one key at once; return the burst's wall seconds and the processes that served it."""
    limits = Limits(wall_seconds=30, cpu_seconds=5)
    started = time.perf_counter()
    futures = [
        pool.submit(box.run, source, instance_key="burst", limits=limits, on_request=on_request) for _ in range(runs)
    ]
    results: list[RunResult] = [future.result() for future in futures]
    wall_seconds = time.perf_counter() - started
    failed = [result.error for result in results if not result.ok]
    if failed:
        raise SystemExit(f"instance_waits: {len(failed)} run(s) failed, the first: {failed[0]}")
    return wall_seconds, len({result.value for result in results})


def measure(runs: int, answer_ms: float, rounds: int, *, per_key: int) -> dict[str, Any]:
    """Measure the three rows and return the report."""

    def at_once(op: str, payload: Any) -> Any:
        return payload

    def after_a_wait(op: str, payload: Any) -> Any:
        time.sleep(answer_ms / 1000)
        return payload

    rows: dict[str, dict[str, Any]] = {}
    cases = {
        "answered at once": (ASKS, at_once),
        f"answered in {answer_ms:g} ms": (ASKS, after_a_wait),
        "CPU-bound": (COMPUTES, at_once),
    }
    for title, (source, on_request) in cases.items():
        # A sandbox per row: each row's key starts from no instances, and the previous row's idle ones are gone.
        policy = InstancePolicy(max_per_key=per_key)
        with (
            Sandbox(environment=ENVIRONMENT, instances=policy) as box,
            concurrent.futures.ThreadPoolExecutor(runs) as pool,
        ):
            _burst(box, pool, source=source, runs=runs, on_request=on_request)  # warm-up: the key's instances
            measured = [_burst(box, pool, source=source, runs=runs, on_request=on_request) for _ in range(rounds)]
            walls_ms = sorted(wall * 1000 for wall, _ in measured)
            rows[title] = {
                "p50_ms": round(statistics.median(walls_ms), 1),
                "p99_ms": round(walls_ms[min(len(walls_ms) - 1, round(0.99 * (len(walls_ms) - 1)))], 1),
                "processes": max(processes for _, processes in measured),
            }
    waiting = rows[f"answered in {answer_ms:g} ms"]
    return {
        "runs": runs,
        "answer_ms": answer_ms,
        "rounds": rounds,
        "max_per_key": per_key,
        "rows": rows,
        "burst_over_answer": round(waiting["p50_ms"] / answer_ms, 2),
        "if_waits_held_places_ms": round(-(-runs // per_key) * answer_ms, 1),
    }


def render(report: dict[str, Any]) -> str:
    """The report as lines."""
    lines = [
        f"instance_waits: {report['runs']} concurrent runs of one warm key per burst, {report['rounds']} bursts after "
        f"a warm-up, max_per_key {report['max_per_key']}",
        f"{'row':<24}{'p50 ms':>9}{'p99 ms':>9}{'processes':>11}",
    ]
    for title, row in report["rows"].items():
        lines.append(f"{title:<24}{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}{row['processes']:>11}")
    met = report["burst_over_answer"] <= MAX_BURST_OVER_ANSWER
    lines.append(
        f"burst answered in {report['answer_ms']:g} ms / the answer's own time: {report['burst_over_answer']:.2f}x "
        f"(target <= {MAX_BURST_OVER_ANSWER:g}x: {'met' if met else 'MISSED'}); with waiting runs holding their "
        f"instance's place it would take about {report['if_waits_held_places_ms']:g} ms"
    )
    return "\n".join(lines)


def main() -> int:
    """Parse the options, measure, print; exit 1 when the target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16, help="Concurrent runs per burst.")
    parser.add_argument("--answer-ms", type=float, default=100.0, help="How long the host takes to answer.")
    parser.add_argument("--rounds", type=int, default=5, help="Measured bursts per row.")
    parser.add_argument(
        "--per-key", type=int, default=default_max_per_key(), help="Instances of the key computing at once."
    )
    args = parser.parse_args()
    report = measure(args.runs, args.answer_ms, args.rounds, per_key=args.per_key)
    print(render(report))
    return 0 if report["burst_over_answer"] <= MAX_BURST_OVER_ANSWER else 1


if __name__ == "__main__":
    sys.exit(main())

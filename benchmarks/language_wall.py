"""What the language wall costs: compile and run time of everyday snippets, against another checkout in the same run.

Run from the repository root::

    python benchmarks/language_wall.py --baseline PATH [--rounds 7] [--repeat 20]

*PATH* is another checkout of this repository (e.g. ``git worktree add /tmp/base <commit>``): the baseline. Each
round starts two fresh processes in turn, one importing ``sandbox`` from this checkout and one from *PATH*
(``PYTHONPATH`` puts it first), so background noise hits both alike. Each process times, for every snippet in
:data:`SNIPPETS` (code both versions accept: loops, dicts, string work, classes, a closure, a generator), *--repeat*
uncached compiles (``compile_snippet`` after clearing its cache) and *--repeat* in-process runs of the compiled
snippet (``sandbox.executor.execute``: fresh globals, guards, builtins and importer each time) and keeps the fastest
of each (on a shared machine the slower samples measure the neighbours and the garbage collector). The report
gives, per measure, the median over the rounds, summed over the snippets, and the ratio to the baseline. Without
``--baseline`` it reports this checkout alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Everyday snippets that every version of the policy accepts (so the two checkouts time the same work).
SNIPPETS: dict[str, str] = {
    "return-1": "return 1",
    "dict-loop": (
        "totals = {}\nfor item in event['items']:\n    key = item['sku']\n"
        "    totals[key] = totals.get(key, 0) + item['qty']\nreturn sorted(totals.items())"
    ),
    "string-work": (
        "words = event['body'].strip().lower().split()\n"
        "reply = ' '.join(w.capitalize() for w in words if len(w) > 2)\nreturn f'{len(words)}: {reply}'"
    ),
    "class": (
        "class Cart:\n    def __init__(self):\n        self.items = []\n        self.total = 0\n"
        "    def add(self, name, price):\n        self.items.append(name)\n        self.total += price\n"
        "        return self\ncart = Cart()\nfor i in range(20):\n    cart.add(f'item{i}', i * 1.5)\n"
        "return cart.total, len(cart.items)"
    ),
    "closure-generator": (
        "def counter():\n    n = 0\n    def inc():\n        nonlocal n\n        n += 1\n        return n\n"
        "    return inc\n"
        "def evens(limit):\n    for i in range(limit):\n        if i % 2 == 0:\n            yield i\n"
        "c = counter()\nreturn [c() for _ in range(10)], sum(evens(100))"
    ),
    "imports": (
        "import json\nimport re\nimport datetime\nd = datetime.date(2024, 1, 2)\n"
        "return json.dumps({'d': d.isoformat(), 'n': re.findall(r'\\d+', 'a1b22')})"
    ),
}

EVENT = {"items": [{"sku": f"s{i % 5}", "qty": i} for i in range(30)], "body": "  hello there general kenobi  "}


def measure(repeat: int) -> dict[str, dict[str, float]]:
    """Time *repeat* uncached compiles and in-process runs of each snippet; return the fastest, in microseconds."""
    from sandbox import compiler
    from sandbox.environment import Environment
    from sandbox.executor import execute
    from sandbox.limits import Limits

    results: dict[str, dict[str, float]] = {}
    for name, source in SNIPPETS.items():
        compile_times: list[float] = []
        for _ in range(repeat):
            compiler._cache.clear()  # uncached: the policy's transform and CPython's compile each time
            started = time.perf_counter()
            compiled = compiler.compile_snippet(source)
            compile_times.append((time.perf_counter() - started) * 1e6)
        run_times: list[float] = []
        for _ in range(repeat):
            started = time.perf_counter()
            result = execute(compiled, event=EVENT, environment=Environment(), limits=Limits())
            run_times.append((time.perf_counter() - started) * 1e6)
            if not result.ok:
                raise SystemExit(f"{name}: {result.error}")
        results[name] = {"compile": min(compile_times), "run": min(run_times)}
    return results


def run_worker(checkout: Path, repeat: int) -> dict[str, dict[str, float]]:
    """Measure in a fresh process that imports ``sandbox`` from *checkout*."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--repeat", str(repeat)]
    output = subprocess.run(command, env=env, cwd=checkout, capture_output=True, text=True, check=True).stdout
    return json.loads(output)  # type: ignore[no-any-return]  # our own worker's JSON


def report(label: str, rounds: list[dict[str, dict[str, float]]]) -> dict[str, float]:
    """Print and return the per-measure totals (sum over snippets of the median over rounds of the fastest time)."""
    totals: dict[str, float] = {}
    for what in ("compile", "run"):
        per_snippet = {name: statistics.median(r[name][what] for r in rounds) for name in SNIPPETS}
        totals[what] = sum(per_snippet.values())
        detail = ", ".join(f"{name} {value:.0f}" for name, value in per_snippet.items())
        print(f"{label:>9} {what:>7}: {totals[what]:8.0f} µs in all  ({detail})")
    return totals


def main() -> None:
    """Parse arguments, run the rounds and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="another checkout of this repository to compare against")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; each starts one process per checkout")
    parser.add_argument("--repeat", type=int, default=20, help="compiles and runs per snippet in each process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.repeat)))
        return
    checkouts = {"this": ROOT}
    if args.baseline is not None:
        if not (args.baseline / "sandbox" / "compiler.py").is_file():
            parser.error(f"--baseline {args.baseline} is not a checkout of this repository (no sandbox/compiler.py).")
        checkouts["baseline"] = args.baseline.resolve()
    rounds: dict[str, list[dict[str, dict[str, float]]]] = {label: [] for label in checkouts}
    for _ in range(args.rounds):
        for label, checkout in checkouts.items():
            rounds[label].append(run_worker(checkout, args.repeat))
    totals = {label: report(label, measured) for label, measured in rounds.items()}
    if "baseline" in totals:
        for what in ("compile", "run"):
            ratio = totals["this"][what] / totals["baseline"][what]
            print(f"{what} time, this / baseline: {ratio:.2f}")


if __name__ == "__main__":
    main()

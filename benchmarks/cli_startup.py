"""How fast does the command line start? Import time and wall time of ``zingyconn --help`` and ``zingyconn run``.

Run from the repository root::

    python benchmarks/cli_startup.py              # about half a minute
    python benchmarks/cli_startup.py --rounds 21

Measures, in the same run and interleaved (so a busy machine slows every case alike):

- the baseline: a bare ``python -c pass``;
- ``zingyconn --help`` and ``zingyconn run FILE`` (a ``return 1`` snippet in a temporary data directory; the
  first run creates the store, so it is done once before the rounds);
- ``import sqlalchemy`` alone: the floor under ``zingyconn run``, whose store is SQLAlchemy Core.

For each case: the wall time of the process (p50, p90 and the p50 ratio to bare Python), and the time spent importing
modules beyond what bare Python imports (``python -X importtime``: the sum of the top-level imports' cumulative
times, minus the baseline's median; p50 and p90). Target: at most 0.3 s of imports for both commands. Then, for
``zingyconn run``, the packages whose own import time (each module's self time, summed by top-level package) is
largest in the median round: what the remaining start-up is spent on.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Import time the commands may spend beyond bare Python.
TARGET_IMPORT_SECONDS = 0.3


#: Packages listed in the breakdown of ``zingyconn run``'s imports.
TOP_PACKAGES = 8


def _rows(stderr: str) -> list[list[str]]:
    return [line.split("|") for line in stderr.splitlines() if line.startswith("import time:") and "[us]" not in line]


def import_seconds(stderr: str) -> float:
    """Return the total import time of a ``-X importtime`` log: the sum of its top-level cumulative times."""
    rows = _rows(stderr)
    depths = [len(name) - len(name.lstrip()) for _, _, name in rows]
    top = min(depths, default=0)
    return sum(int(cumulative) for (_, cumulative, _), depth in zip(rows, depths, strict=True) if depth == top) / 1e6


def seconds_by_package(stderr: str) -> dict[str, float]:
    """Return each top-level package's import time in a ``-X importtime`` log: its modules' self times, summed."""
    totals: collections.defaultdict[str, float] = collections.defaultdict(float)
    for own, _, name in _rows(stderr):
        totals[name.strip().split(".")[0]] += int(own.split(":")[1]) / 1e6
    return dict(totals)


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run *argv* under ``-X importtime``; return (wall seconds, import seconds, the import log)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv!r} failed with exit code {done.returncode}:\n{done.stdout}\n{done.stderr[-2000:]}")
    return wall, import_seconds(done.stderr), done.stderr


def percentile(values: list[float], fraction: float) -> float:
    """Return the *fraction* quantile of *values* (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    """Measure every case for the given number of rounds and print medians, ratios and the import budget."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11, help="Measurements per case (interleaved).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        snippet = Path(scratch) / "one.py"
        snippet.write_text("return 1\n")
        env = {**os.environ, "ZINGYCONN_DATA_DIR": str(Path(scratch) / "data")}
        cases = {
            "python -c pass": ["-c", "pass"],
            "zingyconn --help": ["-m", "zingyconn", "--help"],
            "zingyconn run FILE": ["-m", "zingyconn", "run", str(snippet)],
            # What run cannot do without: the store is SQLAlchemy Core, whose import alone is most of the budget.
            "import sqlalchemy": ["-c", "import sqlalchemy"],
        }
        measure(cases["zingyconn run FILE"], env)  # creates the store and its key once
        samples: dict[str, list[tuple[float, float, str]]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, argv in cases.items():
                samples[name].append(measure(argv, env))
    base_wall = statistics.median(wall for wall, _, _ in samples["python -c pass"])
    base_imports = statistics.median(imports for _, imports, _ in samples["python -c pass"])
    print(f"CLI start-up, {args.rounds} interleaved rounds, load average {os.getloadavg()[0]:.2f}")
    for name, results in samples.items():
        walls = [wall for wall, _, _ in results]
        extras = [max(imports - base_imports, 0.0) for _, imports, _ in results]
        p50 = statistics.median(extras)
        judged = name.startswith("zingyconn")
        verdict = "" if not judged else ("  ok" if p50 <= TARGET_IMPORT_SECONDS else "  OVER TARGET")
        wall = statistics.median(walls)
        print(
            f"  {name:<20} wall p50 {wall * 1000:6.1f} ms p90 {percentile(walls, 0.9) * 1000:6.1f} ms"
            f" ({wall / base_wall:4.1f}x python)   imports beyond python"
            f" p50 {p50 * 1000:6.1f} ms p90 {percentile(extras, 0.9) * 1000:6.1f} ms{verdict}"
        )
    print(f"  target: at most {TARGET_IMPORT_SECONDS * 1000:.0f} ms of imports beyond bare python per command")
    runs = sorted(samples["zingyconn run FILE"], key=lambda sample: sample[1])
    packages = seconds_by_package(runs[len(runs) // 2][2])
    largest = sorted(packages.items(), key=lambda item: item[1], reverse=True)[:TOP_PACKAGES]
    print("  zingyconn run, median round, import time by package: " + ", ".join(
        f"{package} {seconds * 1000:.0f} ms" for package, seconds in largest
    ))  # fmt: skip


if __name__ == "__main__":
    main()

"""How fast does the command line start? Import time and wall time of ``zingyconn --help`` and ``zingyconn run``.

Run from the repository root::

    python benchmarks/cli_startup.py              # about half a minute
    python benchmarks/cli_startup.py --rounds 21

Measures, in the same run and interleaved (so a busy machine slows every case alike):

- the baseline: a bare ``python -c pass``;
- ``zingyconn --help`` and ``zingyconn run FILE`` (a ``return 1`` snippet in a temporary data directory; the
  first run creates the store, so it is done once before the rounds).

For each case: the median wall time of the process, and the median time spent importing modules beyond what bare
Python imports (``python -X importtime``: the sum of the top-level imports' cumulative times, minus the baseline's).
Target: at most 0.3 s of imports for both commands; the wall-time ratios to the baseline show what start-up costs
on top of the interpreter itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Import time the commands may spend beyond bare Python.
TARGET_IMPORT_SECONDS = 0.3


def import_seconds(stderr: str) -> float:
    """Return the total import time of a ``-X importtime`` log: the sum of its top-level cumulative times."""
    rows = [line.split("|") for line in stderr.splitlines() if line.startswith("import time:") and "[us]" not in line]
    depths = [len(name) - len(name.lstrip()) for _, _, name in rows]
    top = min(depths, default=0)
    return sum(int(cumulative) for (_, cumulative, _), depth in zip(rows, depths, strict=True) if depth == top) / 1e6


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run *argv* under ``-X importtime``; return (wall seconds, import seconds)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv!r} failed with exit code {done.returncode}:\n{done.stdout}\n{done.stderr[-2000:]}")
    return wall, import_seconds(done.stderr)


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
        }
        measure(cases["zingyconn run FILE"], env)  # creates the store and its key once
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, argv in cases.items():
                samples[name].append(measure(argv, env))
    base_wall = statistics.median(wall for wall, _ in samples["python -c pass"])
    base_imports = statistics.median(imports for _, imports in samples["python -c pass"])
    print(f"CLI start-up, median of {args.rounds} interleaved rounds, load average {os.getloadavg()[0]:.2f}")
    for name, results in samples.items():
        wall = statistics.median(w for w, _ in results)
        extra = statistics.median(i for _, i in results) - base_imports
        verdict = "" if name == "python -c pass" else ("  ok" if extra <= TARGET_IMPORT_SECONDS else "  OVER TARGET")
        print(
            f"  {name:<20} wall {wall * 1000:7.1f} ms ({wall / base_wall:4.1f}x python)   "
            f"imports beyond python {max(extra, 0.0) * 1000:7.1f} ms{verdict}"
        )
    print(f"  target: at most {TARGET_IMPORT_SECONDS * 1000:.0f} ms of imports beyond bare python per command")


if __name__ == "__main__":
    main()

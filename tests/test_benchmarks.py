"""The benchmarks still run: the webhook load benchmark in its quickest form, and its profile summariser.

These check that the scripts work and report what they claim (rows, errors, a CPU split), never a figure: the
figures are the benchmarks' own business (``docs/benchmarks.md``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from profile_summary import package_of, summarise  # noqa: E402  # after the path set-up above

#: A speedscope document as py-spy writes it: two threads, stacks listed outermost first, weights in seconds.
SPEEDSCOPE = {
    "shared": {
        "frames": [
            {"name": "run", "file": "/usr/lib/python3.11/asyncio/runners.py", "line": 118},
            {"name": "handle_hook", "file": "/repo/zingyconn/hosts/webhooks.py", "line": 91},
            {"name": "handle_hook", "file": "/repo/zingyconn/hosts/webhooks.py", "line": 98},
            {"name": "do_execute", "file": "/venv/lib/python3.11/site-packages/sqlalchemy/engine/default.py"},
        ]
    },
    "profiles": [
        {"type": "sampled", "samples": [[0, 1, 3], [0, 2], [0]], "weights": [0.5, 0.25, 0.25]},
        {"type": "sampled", "samples": [[3], []], "weights": [1.0, 1.0]},
    ],
}


def test_profile_summary_counts_own_and_total_time_per_function() -> None:
    """A function's lines count as one function; own time is the innermost frame's, total time any frame's."""
    summary = summarise(SPEEDSCOPE)

    assert summary.samples == 2.0  # the empty stack is no sample
    assert summary.top(2) == [
        {"frame": "do_execute (default.py)", "own_pct": 75.0, "total_pct": 75.0},
        {"frame": "handle_hook (webhooks.py)", "own_pct": 12.5, "total_pct": 37.5},
    ]
    assert summary.project(5) == [{"frame": "handle_hook (webhooks.py)", "own_pct": 12.5, "total_pct": 37.5}]
    assert summary.by_package(1) == [{"package": "sqlalchemy", "own_pct": 75.0}]


def test_profile_summary_names_where_code_lives() -> None:
    """Third-party code by distribution, the project's by subpackage, the standard library by module."""
    assert package_of("/venv/lib/python3.11/site-packages/uvicorn/protocols/http/h11_impl.py") == "uvicorn"
    assert package_of("/work/zingyconn/hosts/webhooks.py") == "zingyconn.hosts"
    assert package_of("/work/zingyconn/runtime.py") == "zingyconn"
    assert package_of("/root/.pyenv/versions/3.11.7/lib/python3.11/threading.py") == "threading"


@pytest.mark.slow
def test_webhook_load_quick_run_reports_rows_with_a_cpu_split(tmp_path: Path) -> None:
    """One quick SQLite run: bare Starlette, the host ceiling and default isolation, signed and with an idempotency
    token per request, all answered right."""
    argv = [sys.executable, str(ROOT / "benchmarks" / "webhook_load.py"), "--seconds", "0.5", "--warmup-seconds", "0.3"]
    argv += ["--backends", "sqlite", "--modes", "ceiling,run", "--signing", "signed", "--concurrency", "2", "--json"]
    argv += ["--tokens"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode in (0, 1), result.stderr[-2000:]  # 1: a target missed, as expected on a test machine

    report = json.loads(result.stdout)
    assert report["tokens"]
    rows = {(row["mode"], row["signed"]): row for row in report["rows"]}
    assert set(rows) == {("ceiling", True), ("run", True)}
    assert [row["when"] for row in report["bare"]] == ["start", "after sqlite"]
    for row in [*rows.values(), *report["bare"]]:
        assert row["requests"] > 0
        assert row["errors"] == 0, row["first_errors"]
        assert row["ratio"] > 0
    isolated = rows[("run", True)]["cpu_ms_per_request"]
    assert isolated["host"] > 0
    assert isolated["child"] > 0  # the children the zygote reaped
    assert rows[("ceiling", True)]["cpu_ms_per_request"]["child"] == 0  # nothing forked
    assert "missed" in rows[("run", True)]
    floor = rows[("run", True)]["p99_floor"]  # Little's law at concurrency 2 and a p99 of 60 ms: 33.3 req/s
    assert floor["req_per_s_with_no_spread"] == pytest.approx(2 * 1000 / 60, abs=0.1)
    assert floor["p99_over_mean"] >= 1
    assert floor["req_per_s_with_this_spread"] >= floor["req_per_s_with_no_spread"]
    assert "p99_floor" not in rows[("ceiling", True)]  # no p99 target


def test_instance_waits_quick_run_overlaps_runs_waiting_on_the_host() -> None:
    """One quick run, one instance computing per key: 4 runs whose request takes 200 ms overlap (well under the
    800 ms one at a time would take)."""
    argv = [sys.executable, str(ROOT / "benchmarks" / "instance_waits.py"), "--runs", "4", "--answer-ms", "200"]
    argv += ["--rounds", "1", "--per-key", "1"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]

    rows = {line[:24].strip(): line[24:].split() for line in result.stdout.splitlines()[2:5]}
    assert set(rows) == {"answered at once", "answered in 200 ms", "CPU-bound"}
    assert int(rows["answered in 200 ms"][2]) == 4  # a process per waiting run
    assert float(rows["answered in 200 ms"][0]) < 400


def test_runtime_host_quick_run_prints_every_row() -> None:
    """One quick run of the host's part of a run: the baseline and both runtime rows, these with a CPU figure."""
    argv = [sys.executable, str(ROOT / "benchmarks" / "runtime_host.py"), "--runs", "64", "--rounds", "1"]
    result = subprocess.run([*argv, "--threads", "4"], capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-2000:]

    rows = {line[:20].strip(): line[20:].split() for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {"sandbox alone", "run, not recorded", "run, recorded"}
    assert float(rows["run, not recorded"][0]) > 0
    assert float(rows["run, recorded"][0]) > 0


def test_store_writes_quick_run_prints_a_row_per_kind() -> None:
    """One quick SQLite run of a webhook's store writes: without and with a token, each with a CPU figure."""
    argv = [sys.executable, str(ROOT / "benchmarks" / "store_writes.py"), "--seconds", "1", "--warmup-seconds", "0.2"]
    result = subprocess.run([*argv, "--backends", "sqlite"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]

    rows = {tuple(line.split()[:2]): [float(x) for x in line.split()[2:]] for line in result.stdout.splitlines()[1:]}
    assert set(rows) == {("sqlite", "history"), ("sqlite", "token")}
    for requests_per_second, cpu_ms, writer_ms, *_ in rows.values():
        assert requests_per_second > 0
        assert cpu_ms >= writer_ms > 0

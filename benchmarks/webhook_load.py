"""Load-test the webhook host in one run: bare Starlette, the host ceiling, default isolation and warm instances.

Usage::

    python benchmarks/webhook_load.py [--seconds 10] [--concurrency 16] [--backends sqlite,postgres]
                                      [--modes ceiling,run,instance] [--signing unsigned,signed] [--workers 1]
                                      [--tokens]
                                      [--profile DIR [--profile-modes ceiling,run,instance]] [--json]

Every row loads the same snippet (the TwiML auto-reply of ``http_load.AUTO_REPLY``) with the same client: an
asyncio loop of keep-alive HTTP/1.1 connections (one per concurrent client) in this process. Every response is
checked (status 200, ``text/xml``, the reply for *this* request's body), so a fast wrong answer counts as an error.
The rows:

- **bare Starlette**: one uvicorn process answering the same request with the same TwiML, no zingyconn at all. It is
  the baseline of every ratio, measured at the start, after each backend and at the end, so drift shows.
- **host ceiling** (``ceiling``): the app ``zingyconn serve`` builds, with the snippet executed in the server process
  (``in_process_host.py``; unsafe, a gauge of the host layer alone).
- **default isolation** (``run``): ``zingyconn serve``, the hook saved with the default isolation, a fresh sandboxed
  child per run.
- **warm instances** (``instance``): ``zingyconn serve``, the hook saved with ``--isolation instance``.

Each of the zingyconn rows is measured unsigned and signed (``--verify-with``: every request carries a valid
``X-Twilio-Signature``), on SQLite and on a throw-away PostgreSQL started on 127.0.0.1 as the tests start theirs.
With ``--tokens`` every request also carries a new ``I-Twilio-Idempotency-Token``, as each of Twilio's does: the
host then claims it before the run and stores the response for replay. CPU per request is read from ``/proc``
around each row: the server processes (host), the sandbox's zygote, the runs' children (``process_cpu.py``),
PostgreSQL, and this process (the load client). The exit status is 1 when a measured row misses one of its targets.

For each row with a p99 target the report adds its floor by Little's law: the client keeps *concurrency* requests
in flight, so the mean latency is concurrency / req/s, and a p99 of T ms needs at least concurrency / T req/s even
if every request took the mean, and the row's own p99/mean times that with the spread it had; beside them, the
req/s the row's CPU per request (every process, the client's too) allows on this machine's CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402  # tests.servers reports a missing PostgreSQL as a pytest skip
from http_load import AUTO_REPLY, HOOK_PATH, form_post, percentile, read_response, sms_form  # noqa: E402
from process_cpu import CpuSplit, server_cpu  # noqa: E402
from profile_summary import load as load_profile  # noqa: E402
from profile_summary import render as render_profile  # noqa: E402

from tests.servers import free_port, postgres_server, wait_for_port  # noqa: E402  # after the path set-up above

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "0123456789abcdef" * 2
HOOK = "reply"
BENCHMARKS = Path(__file__).resolve().parent

BARE_APP = """
import sys
from urllib.parse import parse_qs
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from twilio.twiml.messaging_response import MessagingResponse

async def reply(request):
    form = parse_qs((await request.body()).decode(), keep_blank_values=True)
    twiml = MessagingResponse()
    twiml.message("Thanks! You said: " + form["Body"][0])
    return Response(str(twiml), media_type="text/xml")

app = Starlette(routes=[Route("/hooks/bench/reply", reply, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
            proxy_headers=False, server_header=False)
"""

MODES = ("ceiling", "run", "instance")
BACKENDS = ("sqlite", "postgres")
SIGNINGS = ("unsigned", "signed")
MODE_TITLES = {"bare": "bare Starlette", "ceiling": "host ceiling", "run": "default isolation", "instance": "warm"}
#: The tenant whose hook ``reply`` each (isolation, signed) row loads; the ceiling loads the default-isolation ones.
#: One tenant per row: a tenant's idle warm instances hold its memory allowance, which would stand in the way of
#: the next row's runs if they shared a tenant.
TENANTS = {
    ("run", False): "bench",
    ("run", True): "bench-signed",
    ("instance", False): "bench-warm",
    ("instance", True): "bench-warm-signed",
}


@dataclass(frozen=True)
class Target:
    """What a row must reach: a share of bare Starlette's req/s and, where set, a p99; always zero errors."""

    min_ratio: float
    max_p99_ms: float | None = None

    def misses(self, row: dict[str, Any]) -> list[str]:
        """The targets *row* misses, as short phrases (empty: all met)."""
        missed = []
        if row["ratio"] < self.min_ratio:
            missed.append(f"ratio < {self.min_ratio:.0%}")
        if self.max_p99_ms is not None and row["p99_ms"] > self.max_p99_ms:
            missed.append(f"p99 > {self.max_p99_ms:g} ms")
        if row["errors"]:
            missed.append("errors")
        return missed


TARGETS = {"ceiling": Target(0.15), "run": Target(0.04, 60.0), "instance": Target(0.15, 25.0)}


@dataclass
class Stats:
    """What one load run measured."""

    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    client_cpu_seconds: float = 0.0
    server: CpuSplit = field(default_factory=CpuSplit)

    def summary(self) -> dict[str, Any]:
        """Throughput, latency percentiles, errors and CPU per request (ms) of each part."""
        ordered = sorted(self.latencies_ms) or [0.0]
        requests = len(self.latencies_ms)
        return {
            "requests": requests,
            "req_per_s": round(requests / self.seconds, 1),
            "p50_ms": percentile(ordered, 50),
            "p99_ms": percentile(ordered, 99),
            "max_ms": round(ordered[-1], 2),
            "mean_ms": round(statistics.fmean(ordered), 2),
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
            "cpu_ms_per_request": {
                **self.server.per_request_ms(requests),
                "client": round(self.client_cpu_seconds * 1000 / max(1, requests), 2),
            },
        }


Signer = Callable[[str], str]
#: A response slower than this is an error (Twilio itself gives up after 15 s).
RESPONSE_TIMEOUT_SECONDS = 15.0
#: How long a server may take to start (its zygote and imports, on a busy machine).
START_TIMEOUT_SECONDS = 90.0


async def _client(
    port: int, path: str, stats: Stats, deadline: float, worker: int, signer: Signer | None, tokens: str | None
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    try:
        while time.perf_counter() < deadline:
            n += 1
            tag = f"w{worker}n{n}"
            started = time.perf_counter()
            signature = None if signer is None else signer(tag)
            writer.write(
                form_post(port, path, tag, signature=signature, token=None if tokens is None else tokens + tag)
            )
            try:
                status, headers, payload = await asyncio.wait_for(read_response(reader), RESPONSE_TIMEOUT_SECONDS)
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, TimeoutError) as exc:
                stats.errors.append(f"{type(exc).__name__}: {exc}")
                return  # the connection is unusable; this client stops
            stats.latencies_ms.append((time.perf_counter() - started) * 1000)
            expected = f"You said: {tag}</Message>".encode()
            if status != 200 or not headers.get("content-type", "").startswith("text/xml") or expected not in payload:
                stats.errors.append(f"{status} {payload[:200]!r}")
    finally:
        writer.close()


async def _load(
    port: int, path: str, *, seconds: float, concurrency: int, signer: Signer | None, tokens: bool = False
) -> Stats:
    stats = Stats(seconds)
    deadline = time.perf_counter() + seconds
    prefix = f"{uuid.uuid4().hex}-" if tokens else None  # a token of an earlier load would be replayed, not run
    await asyncio.gather(*(_client(port, path, stats, deadline, i, signer, prefix) for i in range(concurrency)))
    return stats


@dataclass(frozen=True)
class Server:
    """A server process under load: where it listens, its process id, and the PostgreSQL port it uses (if any)."""

    port: int
    pid: int
    database_port: int | None


@contextlib.contextmanager
def _process(argv: list[str], env: dict[str, str], port: int, database_port: int | None) -> Iterator[Server]:
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout_seconds=START_TIMEOUT_SECONDS)
        _wait_until_healthy(port)
        yield Server(port, process.pid, database_port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_healthy(port: int) -> None:
    """Wait until a worker answers HTTP (with ``--workers N`` the socket is open before the workers have started)."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                return
        except urllib.error.HTTPError:
            return  # any answer will do (bare Starlette has no /healthz)
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def _signer(port: int, path: str) -> Signer:
    from twilio.request_validator import RequestValidator

    url = f"http://127.0.0.1:{port}{path}"
    validator = RequestValidator(AUTH_TOKEN)

    def sign(tag: str) -> str:
        return str(validator.compute_signature(url, sms_form(tag)))

    return sign


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from zingyconn.hosts.cli import main; main()", *args]


def isolation_supported(env: dict[str, str]) -> bool:
    """Whether this build's ``zingyconn hooks add`` takes ``--isolation`` (warm instances)."""
    result = subprocess.run(_cli("hooks", "add", "--help"), env=env, capture_output=True, text=True, check=True)
    return "--isolation" in result.stdout


def _prepare(env: dict[str, str], *, signed: bool, warm: bool) -> None:
    """Store the connection that signs, and save the hooks the rows load (through the CLI, as a user would)."""
    from zingyconn.config import Settings
    from zingyconn.secrets.store import ConnectionStore
    from zingyconn.twilio.profile import TwilioProfile

    store = ConnectionStore.from_settings(Settings.from_env(env))
    with tempfile.NamedTemporaryFile("w", suffix=".py") as snippet:
        snippet.write(AUTO_REPLY)
        snippet.flush()
        for (isolation, is_signed), tenant in TENANTS.items():
            if (is_signed and not signed) or (isolation == "instance" and not warm):
                continue
            if is_signed:
                store.put(tenant, "main", TwilioProfile(ACCOUNT_SID, secret=AUTH_TOKEN))
            argv = ["hooks", "add", HOOK, "--tenant", tenant, "--file", snippet.name]
            argv += ["--verify-with", "main"] if is_signed else []
            argv += ["--isolation", "instance"] if isolation == "instance" else []
            subprocess.run(_cli(*argv), env=env, capture_output=True, check=True)
    store.engine.dispose()


@contextlib.contextmanager
def _backend(name: str, root: Path) -> Iterator[tuple[dict[str, str], int | None]]:
    """Yield the environment of a store on *name* (a data directory under *root*) and PostgreSQL's port."""
    data_dir = root / name
    data_dir.mkdir()
    env = {**os.environ, "ZINGYCONN_DATA_DIR": str(data_dir)}
    for variable in ("ZINGYCONN_DB_URL", "ZINGYCONN_QUEUE_URL", "ZINGYCONN_KEYS"):
        env.pop(variable, None)
    if name == "sqlite":
        yield env, None
        return
    with postgres_server() as db_url:
        yield {**env, "ZINGYCONN_DB_URL": db_url}, int(db_url.rsplit(":", 1)[1].split("/")[0])


def _measure(server: Server, path: str, args: argparse.Namespace, *, signed: bool) -> Stats:
    """Warm up, then load *path* for ``--seconds`` and read the CPU each part spent meanwhile."""
    signer = _signer(server.port, path) if signed else None
    # The warm-up is discarded: it fills caches, pools, spare children and instances.
    load = functools.partial(_load, server.port, path, concurrency=args.concurrency, signer=signer, tokens=args.tokens)
    asyncio.run(load(seconds=args.warmup_seconds))
    before, client_before = server_cpu(server.pid, database_port=server.database_port), time.process_time()
    stats = asyncio.run(load(seconds=args.seconds))
    stats.client_cpu_seconds = time.process_time() - client_before
    time.sleep(0.3)  # let the zygote reap the last children (their CPU is counted when reaped) and writers flush
    stats.server = server_cpu(server.pid, database_port=server.database_port) - before
    return stats


def _profile(server: Server, path: str, args: argparse.Namespace, *, signed: bool, output: Path) -> str:
    """Load *path* once more with py-spy recording the server; return the summary of where its time went.

    With one worker only the server process is recorded (not the zygote and the runs' processes); with
    ``--workers N`` py-spy follows the supervisor's subprocesses, and those include the zygotes.
    """
    command = [_py_spy(), "record", "--pid", str(server.pid), "--format", "speedscope"]
    command += ["--subprocesses"] if args.workers > 1 else []
    command += ["--output", str(output), "--duration", str(max(1, round(args.seconds))), "--rate", "200"]
    # Only the thread holding the GIL (the host's Python time; C code that releases the GIL, such as SQLite's
    # statements, is left out) and no pause per sample, so the load runs at nearly its own speed.
    command += ["--gil", "--nonblocking"]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # py-spy attaches
    signer = _signer(server.port, path) if signed else None
    load = _load(
        server.port, path, seconds=args.seconds, concurrency=args.concurrency, signer=signer, tokens=args.tokens
    )
    asyncio.run(load)
    _, stderr = recorder.communicate(timeout=60)
    if recorder.returncode != 0 or not output.exists():
        return f"py-spy failed ({recorder.returncode}): {stderr.decode(errors='replace').strip()[-300:]}"
    return render_profile(load_profile(output), top=args.profile_top)


def _py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("webhook_load: --profile needs py-spy; install it with `pip install py-spy`.")
    return found


def _row(backend: str, mode: str, signed: bool, stats: Stats | None, note: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {"backend": backend, "mode": mode, "title": MODE_TITLES[mode], "signed": signed}
    if stats is not None:
        row.update(stats.summary(), load_average=[round(x, 2) for x in os.getloadavg()])
    if note:
        row["note"] = note
    return row


def _bare(args: argparse.Namespace, env: dict[str, str], label: str) -> dict[str, Any]:
    port = free_port()
    with _process([sys.executable, "-c", BARE_APP, str(port)], env, port, None) as server:
        row = _row("-", "bare", False, _measure(server, HOOK_PATH, args, signed=False))
    row["when"] = label
    return row


def _zingyconn_rows(
    args: argparse.Namespace, backend: str, env: dict[str, str], database_port: int | None, *, has_instance: bool
) -> list[dict[str, Any]]:
    rows = []
    signings = [signing == "signed" for signing in args.signing]
    workers = str(args.workers)
    if "ceiling" in args.modes:
        port = free_port()
        argv = [sys.executable, str(BENCHMARKS / "in_process_host.py"), str(port), workers]
        with _process(argv, env, port, database_port) as server:
            for signed in signings:
                path = f"/hooks/{TENANTS[('run', signed)]}/{HOOK}"
                rows.append(_row(backend, "ceiling", signed, _measure(server, path, args, signed=signed)))
                _maybe_profile(rows[-1], server, path, args)
    isolated = [mode for mode in ("run", "instance") if mode in args.modes]
    if not isolated:
        return rows
    port = free_port()
    serve = _cli("serve", "--port", str(port), "--no-tasks", "--no-access-log", "--workers", workers)
    with _process(serve, env, port, database_port) as server:
        for mode in isolated:
            for signed in signings:
                if mode == "instance" and not has_instance:
                    rows.append(_row(backend, mode, signed, None, note="not available in this build"))
                    continue
                path = f"/hooks/{TENANTS[(mode, signed)]}/{HOOK}"
                rows.append(_row(backend, mode, signed, _measure(server, path, args, signed=signed)))
                _maybe_profile(rows[-1], server, path, args)
    return rows


def _maybe_profile(row: dict[str, Any], server: Server, path: str, args: argparse.Namespace) -> None:
    """Profile the server under *row*'s load when ``--profile`` asks for its mode."""
    if args.profile is None or row["mode"] not in args.profile_modes:
        return
    output = args.profile / f"{row['mode']}-{row['backend']}-{'signed' if row['signed'] else 'unsigned'}.json"
    row["profile"] = {"file": str(output), "summary": _profile(server, path, args, signed=row["signed"], output=output)}


def _judge(rows: list[dict[str, Any]], baseline_req_per_s: float, *, concurrency: int) -> None:
    """Add each measured row's ratio to the baseline, the targets it misses and, for a p99 target, its floor."""
    for row in rows:
        if "req_per_s" not in row:
            continue
        row["ratio"] = round(row["req_per_s"] / baseline_req_per_s, 4) if baseline_req_per_s else 0.0
        if row["mode"] in TARGETS:
            row["missed"] = TARGETS[row["mode"]].misses(row)
            row.update(_p99_floor(row, TARGETS[row["mode"]], concurrency=concurrency))


def _p99_floor(row: dict[str, Any], target: Target, *, concurrency: int) -> dict[str, Any]:
    """The req/s a row's p99 target needs, by Little's law (a closed loop's mean latency is concurrency / req/s).

    With no spread at all (every request as slow as the mean) a p99 of T ms needs ``concurrency / T`` req/s; with
    the row's own spread (its p99 over its mean latency) it needs that many times more. Both say whether a p99
    target is a latency target or, at this concurrency, a throughput target in disguise.
    """
    if target.max_p99_ms is None or not row["mean_ms"]:
        return {}
    spread = row["p99_ms"] / row["mean_ms"]
    no_spread = concurrency * 1000 / target.max_p99_ms
    cpu_ms = sum(row["cpu_ms_per_request"].values())  # every process the row ran, the load client's too
    return {
        "p99_floor": {
            "p99_over_mean": round(spread, 2),
            "req_per_s_with_no_spread": round(no_spread, 1),
            "req_per_s_with_this_spread": round(no_spread * spread, 1),
            "cpu_ms_per_request": round(cpu_ms, 2),
            "req_per_s_the_cpus_allow": round((os.cpu_count() or 1) * 1000 / cpu_ms, 1) if cpu_ms else None,
        }
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every row the options ask for and return the report."""
    started_load = [round(x, 2) for x in os.getloadavg()]
    bare: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="zingyconn-bench-") as tmp:
        root = Path(tmp)
        base_env = {**os.environ, "ZINGYCONN_DATA_DIR": str(root / "bare")}
        has_instance = isolation_supported(base_env)
        bare.append(_bare(args, base_env, "start"))
        for backend in args.backends:
            try:
                with _backend(backend, root) as (env, database_port):
                    _prepare(env, signed="signed" in args.signing, warm=has_instance and "instance" in args.modes)
                    rows += _zingyconn_rows(args, backend, env, database_port, has_instance=has_instance)
            except (pytest.skip.Exception, pytest.fail.Exception) as exc:  # PostgreSQL is not installed
                rows.append(_row(backend, "run", False, None, note=f"not measured: {exc}"))
            bare.append(_bare(args, base_env, f"after {backend}"))
    baseline = statistics.fmean(row["req_per_s"] for row in bare)
    _judge(bare + rows, baseline, concurrency=args.concurrency)
    judged = [row for row in rows if "missed" in row]
    return {
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "warmup_seconds": args.warmup_seconds,
        "workers": args.workers,
        "tokens": args.tokens,
        "cpus": os.cpu_count(),
        "load_average": {"start": started_load, "end": [round(x, 2) for x in os.getloadavg()]},
        "bare": bare,
        "baseline_req_per_s": round(baseline, 1),
        "bare_drift": round((max(r["req_per_s"] for r in bare) - min(r["req_per_s"] for r in bare)) / baseline, 3),
        "rows": rows,
        "targets_met": bool(judged) and not any(row["missed"] for row in judged),
    }


def render(report: dict[str, Any]) -> str:
    """The report as a table, one line per row."""
    lines = [
        f"webhook_load: concurrency {report['concurrency']}, {report['seconds']:g} s per row after a "
        f"{report['warmup_seconds']:g} s warm-up, {report['workers']} server worker(s), {report['cpus']} CPUs, "
        f"{'an idempotency token per request' if report.get('tokens') else 'no idempotency tokens'}; "
        f"load average {' '.join(map(str, report['load_average']['start']))} at the start, "
        f"{' '.join(map(str, report['load_average']['end']))} at the end",
        f"bare Starlette baseline {report['baseline_req_per_s']:g} req/s "
        f"(mean of {len(report['bare'])} runs, spread {report['bare_drift']:.0%}); CPU in ms per request",
        f"{'backend':<15}{'row':<18}{'signed':<7}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}{'ratio':>7}"
        f"{'host':>7}{'zygote':>7}{'child':>7}{'db':>7} | {'client':<7}targets",
    ]
    for row in report["bare"] + report["rows"]:
        where = row.get("when", row["backend"])  # bare Starlette's rows say when they ran instead
        head = f"{where:<15}{row['title']:<18}{'yes' if row['signed'] else 'no':<7}"
        if "req_per_s" not in row:
            lines.append(head + row.get("note", ""))
            continue
        cpu = row["cpu_ms_per_request"]
        split = "".join(f"{cpu[part]:>7.2f}" for part in ("host", "zygote", "child", "database"))
        split += f" | {cpu['client']:<7.2f}"
        verdict = "" if "missed" not in row else ("pass" if not row["missed"] else "MISS: " + ", ".join(row["missed"]))
        lines.append(
            head
            + f"{row['req_per_s']:>8.1f}{row['p50_ms']:>8.1f}{row['p99_ms']:>8.1f}{row['errors']:>7}"
            f"{row['ratio']:>7.1%}{split}{verdict}".rstrip()
        )
        lines += [f"    error: {error}" for error in row["first_errors"]]
    lines.append(
        "targets: host ceiling >= 15 % of bare; default isolation >= 4 % and p99 <= 60 ms; warm >= 15 % and "
        f"p99 <= 25 ms; zero errors. {'All met.' if report['targets_met'] else 'Not all met.'}"
    )
    for row in report["rows"]:
        if "p99_floor" in row:
            floor, signed = row["p99_floor"], "signed" if row["signed"] else "unsigned"
            lines.append(
                f"p99 floor ({row['title']}, {row['backend']}, {signed}): p99 <= {TARGETS[row['mode']].max_p99_ms:g} "
                f"ms at concurrency {report['concurrency']} needs >= {floor['req_per_s_with_no_spread']:g} req/s "
                f"with no spread, >= {floor['req_per_s_with_this_spread']:g} at this row's p99/mean of "
                f"{floor['p99_over_mean']:g}; it made {row['req_per_s']:g}, and its {floor['cpu_ms_per_request']:g} ms "
                f"of CPU per request allow at most {floor['req_per_s_the_cpus_allow']:g} on {report['cpus']} CPUs"
            )
    for row in report["rows"]:
        if "profile" in row:
            signed = "signed" if row["signed"] else "unsigned"
            where = f"{row['title']}, {row['backend']}, {signed}"
            lines += [f"profile of the server process ({where}): {row['profile']['file']}"]
            lines += [f"  {line}" for line in row["profile"]["summary"].splitlines()]
    return "\n".join(lines)


def _names(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(value: str) -> list[str]:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(choices)}")
        return names

    return parse


def main() -> int:
    """Run the rows, print the table (or JSON); exit 1 when a measured row misses a target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="Measured seconds per row.")
    parser.add_argument("--warmup-seconds", type=float, default=2.0, help="Load before each row, discarded.")
    parser.add_argument("--concurrency", type=int, default=16, help="Keep-alive clients at once.")
    parser.add_argument("--backends", type=_names(BACKENDS), default=list(BACKENDS), help="sqlite,postgres")
    parser.add_argument("--modes", type=_names(MODES), default=list(MODES), help="ceiling,run,instance")
    parser.add_argument("--signing", type=_names(SIGNINGS), default=list(SIGNINGS), help="unsigned,signed")
    parser.add_argument("--workers", type=int, default=1, help="Server processes (serve --workers N).")
    parser.add_argument(
        "--tokens",
        action="store_true",
        help="A new I-Twilio-Idempotency-Token on every request, as Twilio sends (a claim and a replay record each).",
    )
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR", help="py-spy the server into DIR.")
    parser.add_argument(
        "--profile-modes", type=_names(MODES), default=["ceiling"], help="The rows --profile records (ceiling)."
    )
    parser.add_argument("--profile-top", type=int, default=12, help="Frames and packages the profile summary lists.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args()
    if args.profile is not None:
        _py_spy()  # fail now, not after the first rows
        args.profile.mkdir(parents=True, exist_ok=True)
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if report["targets_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

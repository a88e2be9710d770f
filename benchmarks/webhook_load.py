"""Load-test ``zingyconn serve`` with a TwiML auto-reply hook, beside a bare Starlette endpoint (the ceiling).

Usage::

    python benchmarks/webhook_load.py [--seconds 20] [--concurrency 16] [--signed] [--json]

Both servers run as separate processes on 127.0.0.1 with the same uvicorn settings; the load generator is an
asyncio loop of keep-alive HTTP/1.1 connections (one per concurrent client) in this process. Every response is
checked (status 200, ``text/xml``, the reply for *this* request's body), so a fast wrong answer counts as an error.
Targets: >= 400 req/s, p99 <= 25 ms, zero errors for the hook, at concurrency 16 for 20 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from http_load import AUTO_REPLY, HOOK_PATH, form_post, percentile, read_response, sms_form  # noqa: E402

from tests.servers import free_port, wait_for_port  # noqa: E402  # after the path set-up above

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "0123456789abcdef" * 2

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


# The host with the snippet executed in-process instead of in a forked child: NOT safe (no process wall), only to
# show how fast the host layer itself is (routing, hook lookup, runtime bookkeeping, history) beside the sandbox.
IN_PROCESS_APP = """
import sys
import uvicorn
from sandbox import compile_snippet
from sandbox.environment import RunContext, load_environment_factory
from sandbox.executor import execute
from zingyconn.config import Settings
from zingyconn.hosts.server import create_app
from zingyconn.runtime import SNIPPET_ENVIRONMENT, Runtime

class Channel:
    def __init__(self, on_request):
        self.on_request = on_request
    def request(self, op, payload):
        return self.on_request(op, payload)

class InProcessSandbox:
    def __init__(self):
        self.factory = load_environment_factory(SNIPPET_ENVIRONMENT)
    def run(self, source, *, event=None, limits=None, context=None, on_request=None, on_started=None):
        if on_started is not None:
            on_started()
        environment = self.factory(RunContext(host=Channel(on_request), context=context or {}))
        return execute(compile_snippet(source), event=event, environment=environment, limits=limits)
    def close(self):
        pass

runtime = Runtime(Settings.from_env(), sandbox=InProcessSandbox())
uvicorn.run(create_app(runtime), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
            proxy_headers=False, server_header=False)
"""


@dataclass
class Stats:
    """What one load run measured."""

    name: str
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, float | int | str]:
        """Return throughput, latency percentiles and the error count."""
        ordered = sorted(self.latencies_ms) or [0.0]

        return {
            "name": self.name,
            "requests": len(self.latencies_ms),
            "req_per_s": round(len(self.latencies_ms) / self.seconds, 1),
            "p50_ms": percentile(ordered, 50),
            "p90_ms": percentile(ordered, 90),
            "p99_ms": percentile(ordered, 99),
            "max_ms": round(ordered[-1], 2),
            "mean_ms": round(statistics.fmean(ordered), 2),
            "errors": len(self.errors),
        }


Signer = Callable[[str], str]
#: A response slower than this is an error (Twilio itself gives up after 15 s).
RESPONSE_TIMEOUT_SECONDS = 15.0


async def _client(port: int, path: str, stats: Stats, deadline: float, worker: int, signer: Signer | None) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    try:
        while time.perf_counter() < deadline:
            n += 1
            tag = f"w{worker}n{n}"
            started = time.perf_counter()
            writer.write(form_post(port, path, tag, signature=None if signer is None else signer(tag)))
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


async def _load(name: str, port: int, *, seconds: float, concurrency: int, signer: Signer | None) -> Stats:
    stats = Stats(name, seconds)
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(_client(port, HOOK_PATH, stats, deadline, i, signer) for i in range(concurrency)))
    return stats


@contextmanager
def _process(argv: list[str], env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout_seconds=60)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _prepare(data_dir: Path, *, signed: bool) -> dict[str, str]:
    env = {**os.environ, "ZINGYCONN_DATA_DIR": str(data_dir)}
    env.pop("ZINGYCONN_DB_URL", None)
    from zingyconn.catalog import Catalog
    from zingyconn.config import Settings
    from zingyconn.database import create_engine
    from zingyconn.secrets.store import ConnectionStore
    from zingyconn.twilio.profile import TwilioProfile

    settings = Settings.from_env(env)
    verify_with = None
    if signed:
        ConnectionStore.from_settings(settings).put("bench", "main", TwilioProfile(ACCOUNT_SID, secret=AUTH_TOKEN))
        verify_with = "main"
    Catalog(create_engine(settings.db_url)).put_hook("bench", "reply", AUTO_REPLY, verify_with=verify_with)
    return env


def _signer(port: int) -> Signer:
    from twilio.request_validator import RequestValidator

    url = f"http://127.0.0.1:{port}{HOOK_PATH}"
    validator = RequestValidator(AUTH_TOKEN)

    def sign(tag: str) -> str:
        return str(validator.compute_signature(url, sms_form(tag)))

    return sign


def main() -> int:
    """Run both loads and print the figures; exit 1 when the hook misses a target."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--signed", action="store_true", help="Verify X-Twilio-Signature on every request.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    parser.add_argument(
        "--host-ceiling", action="store_true", help="Also run the host with an in-process executor (unsafe; a gauge)."
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="zingyconn-bench-") as tmp:
        env = _prepare(Path(tmp), signed=args.signed)
        hook_port, bare_port = free_port(), free_port()
        serve = [
            sys.executable,
            "-c",
            "from zingyconn.hosts.cli import main; main()",
            "serve",
            "--port",
            str(hook_port),
            "--no-tasks",
            "--no-access-log",
        ]
        signer = _signer(hook_port) if args.signed else None
        targets = [
            ("zingyconn hook", serve, hook_port),
            ("bare starlette", [sys.executable, "-c", BARE_APP], bare_port),
        ]
        if args.host_ceiling:
            targets.append(("host, in-process", [sys.executable, "-c", IN_PROCESS_APP], free_port()))
        results = []
        for name, argv, port in targets:
            command = argv if port == hook_port else [*argv, str(port)]
            signer = _signer(port) if args.signed else None
            with _process(command, env, port):
                for seconds in (args.warmup_seconds, args.seconds):  # the warm-up run is discarded
                    stats = asyncio.run(_load(name, port, seconds=seconds, concurrency=args.concurrency, signer=signer))
            results.append(stats)
    hook, bare_row, *extra = (s.summary() for s in results)
    ratio = round(float(hook["req_per_s"]) / float(bare_row["req_per_s"]), 3) if bare_row["req_per_s"] else 0.0
    passed = float(hook["req_per_s"]) >= 400 and float(hook["p99_ms"]) <= 25 and hook["errors"] == 0
    report = {
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "signed": args.signed,
        "hook": hook,
        "bare": bare_row,
        "extra": extra,
        "hook_to_bare_ratio": ratio,
        "targets_met": passed,
        "first_errors": results[0].errors[:3],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"concurrency {args.concurrency}, {args.seconds:g} s each, signed={args.signed}")
        for row in (hook, bare_row, *extra):
            print(
                f"  {row['name']:<16} {row['req_per_s']:>8} req/s  p50 {row['p50_ms']:>6} ms  p90 {row['p90_ms']:>6} ms"
                f"  p99 {row['p99_ms']:>6} ms  max {row['max_ms']:>7} ms  errors {row['errors']}"
            )
        print(f"  hook/bare throughput ratio: {ratio}")
        print(f"  targets (>= 400 req/s, p99 <= 25 ms, 0 errors): {'MET' if passed else 'MISSED'}")
        for error in results[0].errors[:3]:
            print(f"  error: {error}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

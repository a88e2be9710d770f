"""A webhook server killed (``kill -9``) mid-burst: every answered request's run is in the history once, and every
request retried with its idempotency token after a restart replays or runs once.

A real ``zingyconn serve`` process (and its sandbox, in its process group) is killed while 16 clients post
requests that each carry their own ``I-Twilio-Idempotency-Token``; a new server is started on the same store, and
each request that got no answer is sent again with the same token, as Twilio does.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.servers import free_port, wait_for_port
from zingyconn.catalog import Catalog
from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.schema import runs

pytestmark = pytest.mark.slow

REQUESTS = 240
CLIENTS = 16
#: Answers before the kill: well into the burst, with requests in flight on every client.
KILL_AFTER_ANSWERS = 80
TOKEN_HEADER = "I-Twilio-Idempotency-Token"
ECHO = "return {'body': event['form']['Body']}"


@pytest.fixture(params=["sqlite", "postgresql"])
def environ(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = {"ZINGYCONN_DATA_DIR": str(tmp_path)}
    if request.param == "postgresql":
        env["ZINGYCONN_DB_URL"] = request.getfixturevalue("postgres_url")
    Catalog(create_engine(Settings.from_env(env).db_url)).put_hook("acme", "echo", ECHO)
    return env


@contextlib.contextmanager
def _server(environ: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start ``zingyconn serve`` in its own process group; yield it and its base URL (killed with its group)."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZINGYCONN_")} | environ
    code = "from zingyconn.hosts.cli import main; main()"
    argv = [sys.executable, "-c", code, "serve", "--port", str(port), "--no-tasks", "--no-access-log"]
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_for_port(port, timeout_seconds=60)
        yield process, f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _post(client: httpx.Client, base_url: str, token: str) -> httpx.Response:
    return client.post(f"{base_url}/hooks/acme/echo", data={"Body": token}, headers={TOKEN_HEADER: token}, timeout=60)


def _burst(process: subprocess.Popen[bytes], base_url: str, tokens: list[str]) -> dict[str, httpx.Response]:
    """Post every token from CLIENTS clients; kill the server's process group once KILL_AFTER_ANSWERS answered."""
    answered: dict[str, httpx.Response] = {}
    lock = threading.Lock()
    killed = threading.Event()

    def client(share: list[str]) -> None:
        with httpx.Client() as http:
            for token in share:
                try:
                    response = _post(http, base_url, token)
                except httpx.TransportError:
                    continue  # no answer: retried after the restart
                with lock:
                    answered[token] = response
                    if len(answered) >= KILL_AFTER_ANSWERS and not killed.is_set():
                        killed.set()
                        os.killpg(process.pid, signal.SIGKILL)

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, [tokens[i::CLIENTS] for i in range(CLIENTS)]))
    assert killed.is_set()
    return answered


def _runs_by_token(environ: dict[str, str]) -> tuple[collections.Counter[str], set[str]]:
    engine = create_engine(Settings.from_env(environ).db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(runs.c.id, runs.c.event).where(runs.c.tenant == "acme")).all()
    engine.dispose()
    counts = collections.Counter(row.event["headers"][TOKEN_HEADER.lower()] for row in rows)
    return counts, {row.id for row in rows}


def test_a_server_killed_mid_burst_loses_no_answered_run_and_runs_no_token_twice(environ: dict[str, str]) -> None:
    """kill -9 mid-burst, restart, retry the unanswered: each token has exactly one run, and every answer's run."""
    tokens = [f"tok-{n:04d}" for n in range(REQUESTS)]
    with _server(environ) as (process, base_url):
        answered = _burst(process, base_url, tokens)
    lost = [token for token in tokens if token not in answered]
    assert KILL_AFTER_ANSWERS <= len(answered) < REQUESTS

    with _server(environ) as (_, base_url), httpx.Client() as http, ThreadPoolExecutor(CLIENTS) as pool:
        retried = dict(zip(lost, pool.map(lambda token: _post(http, base_url, token), lost), strict=True))

    counts, run_ids = _runs_by_token(environ)
    responses: dict[str, Any] = {**answered, **retried}
    assert {token: r.status_code for token, r in responses.items()} == dict.fromkeys(tokens, 200)
    assert {token: r.json() for token, r in responses.items()} == {token: {"body": token} for token in tokens}
    assert {r.headers["x-zingy-run-id"] for r in responses.values()} <= run_ids  # every answer's run is stored
    assert counts == dict.fromkeys(tokens, 1)  # and each token ran once, answered or retried

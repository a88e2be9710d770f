"""Start real PostgreSQL and Redis servers on 127.0.0.1 for the tests, and stop them afterwards; start task workers.

A test that needs one of these servers is skipped with a clear message when the server binaries are missing on a
developer machine, and fails in CI (``CI=true``), where ``.ci/run`` installs them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

POSTGRES_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout_seconds: float = 20.0) -> None:
    """Block until something accepts connections on 127.0.0.1:*port*."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"Nothing listened on 127.0.0.1:{port} after {timeout_seconds} s.")


def missing(what: str) -> None:
    """Skip (developer machine) or fail (CI) because *what* is not installed."""
    message = f"{what} is not installed; `bash .ci/run` installs it (apt-get)."
    if os.environ.get("CI"):
        pytest.fail(f"{message} CI must run these tests.")
    pytest.skip(message)


def _find_postgres_tool(name: str) -> str | None:
    for directory in POSTGRES_BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    return shutil.which(name)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Run a throw-away PostgreSQL cluster on a free loopback port; yield its SQLAlchemy URL."""
    initdb, pg_ctl = _find_postgres_tool("initdb"), _find_postgres_tool("pg_ctl")
    if initdb is None or pg_ctl is None:
        missing("PostgreSQL (initdb, pg_ctl)")
    assert initdb is not None
    assert pg_ctl is not None
    root = Path(tempfile.mkdtemp(prefix="zingyconn-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(root, user="postgres", group="postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    subprocess.run([*prefix, initdb, "-D", str(data), "-U", "zingy", "-A", "trust"], check=True, capture_output=True)
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200"
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://zingy@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Run a throw-away redis-server on a free loopback port; yield its ``redis://`` URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server")
    assert binary is not None
    port, root = free_port(), Path(tempfile.mkdtemp(prefix="zingyconn-redis-"))
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def uvicorn_in_thread(app: Any, *, name: str, **config: Any) -> Iterator[int]:
    """Serve the ASGI *app* with a real uvicorn on a free 127.0.0.1 port in a thread; yield the port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, name=f"{name}-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"The {name} did not start on 127.0.0.1:{port}.")
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def start_worker(env: dict[str, str], *, workers: int = 1) -> subprocess.Popen[bytes]:
    """Start ``zingyconn worker`` in its own process group (a kill takes its sandbox with it)."""
    code = "from zingyconn.hosts.cli.worker import worker; worker()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "--workers", str(workers)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

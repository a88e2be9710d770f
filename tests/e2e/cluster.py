"""Run ``zingyconn serve`` and ``zingyconn worker`` processes against one shared store and queue, as operators do.

Used by the scale-out test and by ``benchmarks/scale_out.py``. Every process runs in its own session (process
group), so stopping it also stops its sandbox processes; :func:`running_cluster` stops every process it started
when its block ends, whatever happened inside.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import httpx

from tests.servers import free_port

#: The ``zingyconn`` command as a subprocess argv (the console script may not be on PATH in a virtualenv).
ZINGYCONN: Final = (sys.executable, "-c", "from zingyconn.hosts.cli import main; main()")
#: How long a process gets to start answering, and to stop on SIGTERM before it is killed.
START_SECONDS: Final = 90.0
STOP_SECONDS: Final = 20.0


@dataclass
class Process:
    """One started process: its Popen, its log file, and (for servers) its base URL."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    base_url: str | None = None

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still there after :data:`STOP_SECONDS`."""
        for sig, wait_seconds in ((signal.SIGTERM, STOP_SECONDS), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout=wait_seconds)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # sandbox processes left in the group
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.log.close()

    def tail(self, lines: int = 30) -> str:
        """Return the end of this process's output, for failure messages."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return f"--- {self.name} ---\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class Cluster:
    """The processes of one running set-up."""

    env: dict[str, str]
    log_dir: Path
    processes: list[Process] = field(default_factory=list)

    @property
    def servers(self) -> list[Process]:
        """The ``serve`` processes, in start order."""
        return [p for p in self.processes if p.base_url is not None]

    def start(self, name: str, *args: str, port: int | None = None) -> Process:
        """Start ``zingyconn ARGS...`` with the cluster's environment; a server when *port* is given."""
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("wb")
        popen = subprocess.Popen(
            [*ZINGYCONN, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops its sandbox too
        )
        process = Process(name, popen, log_path, log, None if port is None else f"http://127.0.0.1:{port}")
        self.processes.append(process)
        return process

    def start_server(self, name: str, *extra: str) -> Process:
        """Start ``zingyconn serve`` on a free loopback port without the in-process task consumer."""
        port = free_port()
        return self.start(name, "serve", "--port", str(port), "--no-tasks", "--no-access-log", *extra, port=port)

    def start_worker(self, name: str, *, threads: int = 2) -> Process:
        """Start ``zingyconn worker`` with *threads* task threads."""
        return self.start(name, "worker", "--workers", str(threads))

    def wait_until_serving(self) -> None:
        """Block until every server answers ``/healthz`` (fail with its output if one dies first)."""
        deadline = time.monotonic() + START_SECONDS
        for server in self.servers:
            while True:
                if server.popen.poll() is not None:
                    raise RuntimeError(f"{server.name} exited with {server.popen.returncode}.\n{server.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{server.base_url}/healthz", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{server.name} did not answer /healthz.\n{server.tail()}")
                time.sleep(0.1)

    def check_alive(self) -> None:
        """Fail with the process's output when any process of the cluster has exited."""
        for process in self.processes:
            if process.popen.poll() is not None:
                raise RuntimeError(f"{process.name} exited with {process.popen.returncode}.\n{process.tail()}")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one ``zingyconn`` command to completion (``keys rotate`` ...) with the cluster's environment."""
        return subprocess.run(
            [*ZINGYCONN, *args], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )

    def stop(self) -> None:
        """Stop every process, servers first (so no request reaches a stopped worker's queue half-way)."""
        for process in reversed(self.processes):
            process.stop()


@contextlib.contextmanager
def running_cluster(env: Mapping[str, str], log_dir: Path) -> Iterator[Cluster]:
    """Yield an empty :class:`Cluster` whose processes are all stopped when the block ends, even on failure."""
    log_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(env={**os.environ, **env}, log_dir=log_dir)
    try:
        yield cluster
    finally:
        cluster.stop()

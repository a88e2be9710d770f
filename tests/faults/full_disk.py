"""Full-disk fault runs: a real file system that runs out of space under the data directory, then gets it back.

The data directory is a small tmpfs mounted in a private mount namespace (``unshare --mount``), so nothing outside
the run sees it and it vanishes with the run's process. A filler file takes the last free byte; deleting it gives
the space back. Each scenario runs as ``python -m tests.faults.full_disk SCENARIO`` under ``unshare`` and prints its
findings as one JSON object; :func:`run_scenario` starts it and returns them. Needs root (mounting), as in CI.

Scenarios: ``cli`` runs commands that write (``connections add``, ``scripts add``, ``tasks enqueue``, ``run``) on a
full disk, then checks the store after the space came back; ``delivery`` fills the disk while a worker sends a
burst of task messages through the emulator, frees it, and counts what the emulator received.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

#: The tmpfs's size: room for the store, the queue and their WAL files, small enough to fill at once.
DISK_BYTES: Final = 16 * 1024 * 1024
#: The repository root: the scenario's ``python -m`` runs from it.
ROOT: Final = Path(__file__).resolve().parents[2]
#: Twilio credentials the CLI scenario stores (the store never calls Twilio with them).
ACCOUNT_SID: Final = "AC" + "ab" * 16
AUTH_TOKEN: Final = "0123456789abcdef" * 2  # test credential


@functools.cache
def unavailable_reason() -> str | None:
    """Return why a full disk cannot be made here (not root, no ``unshare``, no tmpfs), or ``None`` when it can."""
    if os.geteuid() != 0:
        return "making a full disk needs root (a tmpfs mounted in a private mount namespace)"
    unshare = shutil.which("unshare")
    if unshare is None:
        return "making a full disk needs util-linux's unshare"
    with tempfile.TemporaryDirectory(prefix="zingyconn-disk-probe-") as probe:
        mount = f"mount -t tmpfs -o size=64k tmpfs {probe}"
        tried = subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c", mount], capture_output=True)
    if tried.returncode != 0:
        return f"cannot mount a tmpfs in a private mount namespace: {tried.stderr.decode(errors='replace').strip()}"
    return None


def run_scenario(name: str, *, timeout_seconds: float = 300) -> dict[str, Any]:
    """Run scenario *name* in a private mount namespace and return its findings (its stderr on failure)."""
    unshare = shutil.which("unshare") or "unshare"
    command = [unshare, "--mount", "--propagation", "private", sys.executable, "-m", "tests.faults.full_disk", name]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=timeout_seconds, check=False)
    if done.returncode != 0:
        raise AssertionError(f"Scenario {name} failed ({done.returncode}):\n{done.stderr.decode(errors='replace')}")
    findings: dict[str, Any] = json.loads(done.stdout.decode().splitlines()[-1])
    return findings


@contextlib.contextmanager
def small_disk() -> Iterator[Path]:
    """Mount a :data:`DISK_BYTES` tmpfs on a new directory; only in a mount namespace of this process's own."""
    if os.readlink("/proc/self/ns/mnt") == os.readlink(f"/proc/{os.getppid()}/ns/mnt"):
        raise RuntimeError("Run the full-disk scenarios under `unshare --mount` (run_scenario does).")
    mount_point = Path(tempfile.mkdtemp(prefix="zingyconn-full-disk-"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)
        mount_point.rmdir()


@contextlib.contextmanager
def full(disk: Path) -> Iterator[None]:
    """Take every free byte of *disk* with a filler file; delete it (the space comes back) on leaving."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out:
        block = b"\0" * 65536
        try:
            while True:
                out.write(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        try:  # the last partial block
            while True:
                out.write(b"\0" * 512)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    try:
        yield
    finally:
        filler.unlink()


def _cli(env: dict[str, str], *arguments: str, stdin: str = "") -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "zingyconn", *arguments],
        input=stdin.encode(),
        env={**os.environ, **env},
        capture_output=True,
        timeout=120,
        check=False,
    )
    return {"code": done.returncode, "stdout": done.stdout.decode(), "stderr": done.stderr.decode()}


def _integrity(database: Path) -> str:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def cli_scenario() -> dict[str, Any]:
    """Commands that write, on a full disk; then the store's state once the space is back, and the same commands."""
    with small_disk() as disk:
        data = disk / "data"
        env = {"ZINGYCONN_DATA_DIR": str(data)}
        snippet = disk / "snippet.py"
        snippet.write_text("return 1\n")
        sid = ("--account-sid", ACCOUNT_SID)
        setup = [
            _cli(env, "connections", "add", "first", "--tenant", "acme", *sid, stdin=AUTH_TOKEN + "\n"),
            _cli(env, "scripts", "add", "job", "--tenant", "acme", "--file", str(snippet)),
        ]
        writes = {
            "connections add": ("connections", "add", "second", "--tenant", "acme", *sid),
            "scripts add": ("scripts", "add", "other", "--tenant", "acme", "--file", str(snippet)),
            "tasks enqueue": ("tasks", "enqueue", "job", "--tenant", "acme"),
            "run": ("run", str(snippet), "--tenant", "acme"),
        }
        with full(disk):  # no process has the store open: opening it needs room for its WAL index
            closed = {name: _cli(env, *arguments, stdin=AUTH_TOKEN + "\n") for name, arguments in writes.items()}
        with contextlib.closing(sqlite3.connect(data / "zingyconn.db")) as holder:
            holder.execute(
                "SELECT count(*) FROM tasks"
            ).fetchone()  # its WAL files exist: the writes meet the full disk
            with full(disk):
                held_open = {name: _cli(env, *arguments, stdin=AUTH_TOKEN + "\n") for name, arguments in writes.items()}
        after = {
            "integrity": _integrity(data / "zingyconn.db"),
            "connections": _cli(env, "connections", "list", "--tenant", "acme", "--json"),
            "scripts": _cli(env, "scripts", "list", "--tenant", "acme", "--json"),
            "tasks": _cli(env, "tasks", "list", "--tenant", "acme", "--json"),
            "runs": _cli(env, "runs", "list", "--tenant", "acme", "--json"),
        }
        again = {name: _cli(env, *arguments, stdin=AUTH_TOKEN + "\n") for name, arguments in writes.items()}
    return {"setup": setup, "closed": closed, "held_open": held_open, "after": after, "again": again}


def delivery_scenario() -> dict[str, Any]:
    """Tasks sending a burst through a worker; the disk fills mid-burst for 3 s; what the emulator received."""
    from tests.faults.delivery import enqueue, sent_with, stack, stop_worker, tally, wait_finished
    from tests.servers import start_worker

    with small_disk() as disk, stack(backend="sqlite", data_dir=disk / "data") as running:
        prefixes = {f"disk{n}": 10 for n in range(6)}
        ids = [enqueue(running, prefix, count) for prefix, count in prefixes.items()]
        worker = start_worker(running.env, workers=2)
        try:
            deadline = time.monotonic() + 120
            while sent_with(running, "disk0") < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            with full(disk):
                sent_when_full = sum(sent_with(running, prefix) for prefix in prefixes)
                time.sleep(3.0)
            wait_finished(running, ids, timeout_seconds=240)
        finally:
            stop_worker(worker)
        counted = tally(running, prefixes, ids)
        integrity = _integrity(disk / "data" / "zingyconn.db")
    return {"tally": dataclasses.asdict(counted), "integrity": integrity, "sent_when_full": sent_when_full}


def main() -> None:
    """Run the scenario named on the command line and print its findings as one JSON line."""
    scenarios = {"cli": cli_scenario, "delivery": delivery_scenario}
    print(json.dumps(scenarios[sys.argv[1]]()))


if __name__ == "__main__":
    main()

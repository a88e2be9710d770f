"""CPU time of a server's process tree, split into the host, the sandbox's zygote and the runs' children.

A webhook server is a tree: the ``serve`` process (with ``--workers N``, a supervisor and N worker processes), each
with a zygote (``python -I -m sandbox.zygote``) that forks the child of every run. A child lives a few
milliseconds, so its CPU is read when its parent reaps it (``cutime``/``cstime`` in ``/proc/PID/stat``, psutil's
``children_user``/``children_system``), plus the CPU of the children alive at the time of the snapshot. Any other
sandbox process (one whose command line runs a ``sandbox.`` module, e.g. a kept instance) counts as a child too.
The difference of two snapshots taken around a load is the CPU that load cost each part.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import psutil

#: The zygote is started as ``python -I -m sandbox.zygote`` (sandbox.supervisor).
ZYGOTE_MODULE = "sandbox.zygote"
#: Any other process running a module of the sandbox package is a run's process.
SANDBOX_PACKAGE = "sandbox."


@dataclass(frozen=True)
class CpuSplit:
    """CPU seconds spent by each part of a server's tree (cumulative, or the difference of two snapshots)."""

    host_seconds: float = 0.0
    zygote_seconds: float = 0.0
    child_seconds: float = 0.0
    database_seconds: float = 0.0

    def __sub__(self, other: CpuSplit) -> CpuSplit:
        return CpuSplit(
            self.host_seconds - other.host_seconds,
            self.zygote_seconds - other.zygote_seconds,
            self.child_seconds - other.child_seconds,
            self.database_seconds - other.database_seconds,
        )

    def per_request_ms(self, requests: int) -> dict[str, float]:
        """Return each part in milliseconds per request (``host``, ``zygote``, ``child``, ``database``)."""
        scale = 1000 / max(1, requests)
        return {
            "host": round(self.host_seconds * scale, 2),
            "zygote": round(self.zygote_seconds * scale, 2),
            "child": round(self.child_seconds * scale, 2),
            "database": round(self.database_seconds * scale, 2),
        }


def _role(process: psutil.Process) -> str:
    """``"zygote"``, ``"sandbox"`` (any other process of the sandbox package) or ``"host"``."""
    try:
        arguments = process.cmdline()
    except psutil.Error:
        return "host"
    if ZYGOTE_MODULE in arguments:
        return "zygote"
    if any(argument.startswith(SANDBOX_PACKAGE) for argument in arguments):
        return "sandbox"
    return "host"


def _walk(process: psutil.Process, role: str, totals: dict[str, float]) -> None:
    """Add *process* (whose parent's role is *role*) and its descendants to *totals*."""
    own = _role(process)
    if role in ("zygote", "sandbox", "child"):
        own = "child"  # everything below the zygote is a run's process, whatever it runs
    with contextlib.suppress(psutil.Error):
        times = process.cpu_times()
        totals[own] += times.user + times.system
        # Reaped children: the zygote's are the runs' children; a host's are the sandbox processes it started and
        # waited for (a restarted zygote, a recycled instance).
        totals["child"] += times.children_user + times.children_system
        for child in process.children():
            _walk(child, own, totals)


def server_cpu(root_pid: int, *, database_port: int | None = None) -> CpuSplit:
    """Return the cumulative CPU of the tree rooted at *root_pid*, and of the PostgreSQL on *database_port*."""
    totals = {"host": 0.0, "zygote": 0.0, "child": 0.0, "sandbox": 0.0}
    with contextlib.suppress(psutil.Error):
        _walk(psutil.Process(root_pid), "host", totals)
    database = 0.0
    if database_port is not None:
        for process in postgres_processes(database_port):
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                database += times.user + times.system + times.children_user + times.children_system
    return CpuSplit(totals["host"], totals["zygote"], totals["child"] + totals["sandbox"], database)


def postgres_processes(port: int) -> list[psutil.Process]:
    """The postmaster listening on *port* and its backends (not other PostgreSQL servers on the machine)."""
    for process in psutil.process_iter(["name", "cmdline"]):
        arguments = " ".join(["", *(process.info["cmdline"] or ()), ""])
        if process.info["name"] == "postgres" and f" -p {port} " in arguments:
            return [process, *process.children(recursive=True)]
    return []

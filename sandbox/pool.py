"""The host's handle on a running zygote and on the spare children it forked ahead of demand.

:class:`ZygoteProcess` starts ``python -I -m sandbox.zygote`` with :mod:`subprocess` (the host never forks: it
holds keys), and a reader thread turns the zygote's control messages into ready :class:`ChildProcess` handles and
exit statuses. The control protocol itself is described in :mod:`sandbox.zygote`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

from sandbox.errors import WorkerCrashedError
from sandbox.hardening import report_once
from sandbox.protocol import CONTROL_BYTES, send_control

_LOGGER: Final = logging.getLogger(__name__)

#: How long the zygote may take to import everything and report ready.
START_SECONDS: Final = 120.0


@dataclass(eq=False)
class ChildProcess:
    """The host's handle on one forked child: its channel and, once the zygote reports it, how it ended."""

    pid: int
    sock: socket.socket
    zygote: ZygoteProcess
    exited: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    cpu_seconds: float = 0.0
    #: The child's phase byte at its death said it was running snippet code (see :mod:`sandbox.phase`).
    in_snippet: bool = False

    def kill(self) -> None:
        """Have the zygote SIGKILL this child (a no-op once it has been reaped, so never a reused pid)."""
        self.zygote.order({"t": "kill", "pid": self.pid})

    def finish(self) -> None:
        """End this child's run: make sure it is gone (even if an escape kept it from exiting), order a spare."""
        self.zygote.retire(self.pid)

    def wait_exit(self, timeout: float) -> tuple[int | None, float]:
        """Wait for the zygote's exit report; return ``(wait status, CPU seconds)``, status None if unknown."""
        self.exited.wait(timeout)
        return self.status, self.cpu_seconds


def kill_order(pid: int, forks: int, *, warm: bool) -> bytes:
    """Return the zygote order that SIGKILLs child *pid* and forks *forks* spares (see :mod:`sandbox.zygote`).

    Formatted, not ``json.dumps``'d: this order is sent on every run's way back to its caller, and after an idle gap
    (the CPU's caches cold) ``json.dumps`` costs about 80 µs against 25 µs for this format.
    """
    return b'{"t":"kill","pid":%d,"forks":%d,"warm":%s}' % (pid, forks, b"true" if warm else b"false")


class ZygoteProcess:
    """A running zygote as the host sees it: the process, its control socket, and the spare children.

    A reader thread turns the zygote's reports into spare children and exit statuses; :meth:`take` hands out a
    spare, and :meth:`retire` (when a run ends) orders replacements, so ``spare_children`` (plus one per
    waiting caller) stay forked ahead of demand.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        control: socket.socket,
        ready: dict[str, Any],
        *,
        spare_children: int,
    ) -> None:
        self.process = process
        self.control = control
        self.pid: int = ready["pid"]
        self.hardening: dict[str, str] = dict(ready["hardening"])
        self._spare_children = spare_children
        self._cond = threading.Condition()
        self._spares: collections.deque[ChildProcess] = collections.deque()
        self._children: dict[int, ChildProcess] = {}
        self._pending = 0
        self._waiters = 0
        # Runs in flight. A spare forked while one runs skips the warm-up runs: they spend CPU ahead of demand,
        # which only pays when the CPU would otherwise be idle; under load the runs need it, and each run
        # takes its own page faults instead (about the same number, without the warm-up runs' own work).
        self._running = 0
        self._alive = True
        self._reader = threading.Thread(target=self._read, name=f"sandbox-zygote-{self.pid}", daemon=True)
        self._reader.start()
        with self._cond:
            self._top_up()

    @classmethod
    def start(cls, *, environment: str | None, spare_children: int, hardening: bool) -> ZygoteProcess:
        """Start a zygote with :mod:`subprocess` and wait until it is ready.

        Raises:
            WorkerCrashedError: The zygote could not import the environment or did not report ready.
        """
        workdir = tempfile.mkdtemp(prefix="sandbox-zygote-")
        control, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with zygote_end, tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(
                [sys.executable, "-I", "-m", "sandbox.zygote", "--fd", str(zygote_end.fileno())],
                env={},  # threat: secrets in the host's environment (keys, tokens) must not reach the zygote
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                pass_fds=(zygote_end.fileno(),),
                close_fds=True,
                start_new_session=True,  # a Ctrl-C in the host's terminal is the host's to handle
            )
            zygote_end.close()
            # The host's import path (e.g. where the environment module lives) is appended, never prepended:
            # the zygote's own standard library and site-packages always win.
            path = [os.path.abspath(entry) for entry in sys.path if entry]
            try:
                send_control(control, {"environment": environment, "hardening": hardening, "path": path})
                control.settimeout(START_SECONDS)
                ready = json.loads(control.recv(CONTROL_BYTES) or b'{"t": "eof"}')
                control.settimeout(None)
            except (OSError, ValueError) as error:
                ready = {"t": "error", "message": str(error)}
            if ready.get("t") != "ready":
                process.kill()
                process.wait()
                control.close()
                os.rmdir(workdir)
                stderr.seek(0)
                output = stderr.read().decode(errors="replace").strip().splitlines()
                message = ready.get("message") or (output[-1] if output else f"exit code {process.returncode}")
                raise WorkerCrashedError(f"The sandbox zygote failed to start: {message}.")
        # The zygote keeps its (empty) working directory open; removing it now leaves nothing behind if the host
        # never calls close(), and nothing can be created in a deleted directory.
        os.rmdir(workdir)
        report_once(ready["hardening"])
        return cls(process, control, ready, spare_children=spare_children)

    @property
    def alive(self) -> bool:
        """False once the zygote died or was closed (checked on the process too, ahead of the reader thread)."""
        return self._alive and self.process.poll() is None

    @property
    def reported_alive(self) -> bool:
        """False once the reader thread saw the zygote's control socket close (no system call, unlike :attr:`alive`:
        for checks made on every run, whose children die with the zygote and fail their run anyway)."""
        return self._alive

    def order(self, message: dict[str, Any] | bytes) -> None:
        """Send one order (a message, or one already encoded); a dead zygote is noticed by the reader thread."""
        try:
            if isinstance(message, bytes):
                self.control.send(message)
            else:
                send_control(self.control, message)
        except OSError:
            self._alive = False

    def take(self, timeout: float) -> ChildProcess | None:
        """Return a spare child, or None if the zygote died or none came in time.

        The replacement is ordered when the run ends (:meth:`ChildProcess.finish`), not now: forking while the
        run executes would compete with it for the CPU. Only the last spare, or a caller that has to wait, orders a
        fork at once.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiters += 1
            while self._alive and time.monotonic() < deadline:
                while self._spares:
                    child = self._spares.popleft()
                    if not child.exited.is_set():
                        self._waiters -= 1
                        self._running += 1
                        if not self._spares:  # never leave the pool empty while this run executes
                            self._top_up()
                        return child
                    child.sock.close()
                self._top_up()
                self._cond.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            self._waiters -= 1
            return None

    def retire(self, pid: int) -> None:
        """SIGKILL child *pid* if it is still there and order the forks that top the spares up, in one message."""
        with self._cond:
            self._running -= 1
            forks = self._forks_needed()
            self._pending += forks
            self.order(kill_order(pid, forks, warm=self._idle()))

    def keep(self) -> None:
        """A run's child stays with the host as an instance (:mod:`sandbox.instance`): order its replacement spare.

        Its process is ended later with :meth:`ChildProcess.kill`, which orders no fork.
        """
        with self._cond:
            self._running -= 1
            self._top_up()

    def _top_up(self) -> None:
        forks = self._forks_needed()
        self._pending += forks
        for _ in range(forks):
            self.order({"t": "fork", "warm": self._idle()})

    def _idle(self) -> bool:
        """True when no run is in flight and no caller waits: a spare forked now may warm up ahead of demand."""
        return self._running == 0 and self._waiters == 0

    def _forks_needed(self) -> int:
        if not self._alive:
            return 0
        return max(0, self._spare_children + self._waiters - len(self._spares) - self._pending)

    def _read(self) -> None:
        while True:
            try:
                data, fds, _flags, _address = socket.recv_fds(self.control, CONTROL_BYTES, 4)
            except OSError:
                break
            if not data:
                break
            self._report(json.loads(data), fds)
        with self._cond:
            self._alive = False
            for child in self._children.values():
                child.exited.set()
            for child in self._spares:
                child.sock.close()
            self._spares.clear()
            self._cond.notify_all()

    def _report(self, report: dict[str, Any], fds: list[int]) -> None:
        with self._cond:
            if report["t"] == "child":
                child = ChildProcess(report["pid"], socket.socket(fileno=fds[0]), self)
                self._children[child.pid] = child
                self._spares.append(child)
                self._pending -= 1
                self._cond.notify()
            elif report["t"] == "exit":
                exited = self._children.pop(report["pid"], None)
                if exited is not None:
                    exited.status, exited.cpu_seconds = report["status"], report["cpu_seconds"]
                    exited.in_snippet = report.get("in_snippet") is True
                    exited.exited.set()
            elif report["t"] == "fork_failed":
                self._pending -= 1
                _LOGGER.warning("The sandbox zygote could not fork a child: %s", report["message"])

    def close(self) -> None:
        """Stop the zygote (EOF on its control socket); the kernel kills its children with it."""
        self._alive = False
        with contextlib.suppress(OSError):  # already closed by the zygote's death
            self.control.shutdown(socket.SHUT_RDWR)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)
        self.control.close()

"""The zygote: a clean, warm process that forks one child per run, and the host's handle on it.

Started by the host (never forked from it: the host holds keys) as ``python -I -m sandbox.zygote --fd N`` with an
empty environment, an empty temporary working directory and only the control socket *N* open. Its life:

1. read the init message (``environment``, ``hardening``, ``path``) from the control socket;
2. import RestrictedPython, the sandbox runtime, the allowed stdlib modules and the host's environment module, so
   that no child pays for an import;
3. harden itself (:mod:`sandbox.hardening`), point stdio at ``/dev/null``, ``gc.freeze()`` and report ``ready``;
4. serve orders: ``{"t": "fork"}`` forks a child and passes the host its end of a fresh socket pair
   (``SCM_RIGHTS``); ``{"t": "kill", "pid"}`` SIGKILLs a live child; every child's exit is reported as
   ``{"t": "exit", "pid", "status", "cpu_seconds"}``. EOF on the control socket ends the zygote, and the kernel
   then kills its children (``PR_SET_PDEATHSIG``).

The control socket is ``SOCK_SEQPACKET``: one JSON message per packet, descriptors attached to the packet. Both
ends of it live in this module: :class:`Zygote` runs in the zygote, :class:`ZygoteProcess` in the host.
"""

from __future__ import annotations

import argparse
import array
import collections
import contextlib
import gc
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

from sandbox.environment import EnvironmentFactory, load_environment_factory
from sandbox.errors import WorkerCrashedError
from sandbox.hardening import harden, report_once

#: Largest control message; orders and reports are a few hundred bytes.
CONTROL_BYTES: Final = 65536


def send(control: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    """Send one control message, with *fds* attached."""
    data = json.dumps(message).encode()
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    control.sendmsg([data], ancillary)


def preload(environment: str | None) -> EnvironmentFactory:
    """Import everything a run needs and return the environment factory named by the host."""
    importlib.import_module("RestrictedPython")
    for name in ("sandbox.compiler", "sandbox.executor", "sandbox.child"):
        importlib.import_module(name)
    importlib.import_module("sandbox.child").prepare_warm_up()
    importlib.import_module("sandbox.imports").stdlib_facades()  # imports the allowed stdlib, builds its façades
    return load_environment_factory(environment)


class Zygote:
    """The fork server's state: its control socket, live children and the SIGCHLD wake-up pipe."""

    def __init__(self, control: socket.socket, factory: EnvironmentFactory) -> None:
        self.control = control
        self.factory = factory
        self.live: set[int] = set()
        self.pid = os.getpid()
        self.wake_read, wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(wake_write, False)
        # SIGCHLD must have a Python handler for the C handler to write the wake-up byte.
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def serve(self) -> NoReturn:
        """Answer orders until the host closes the control socket."""
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ)
        selector.register(self.wake_read, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj is self.control:
                    self.obey()
                else:
                    self.reap()

    def obey(self) -> None:
        """Carry out one order from the host."""
        data = self.control.recv(CONTROL_BYTES)
        if not data:
            os._exit(0)
        order = json.loads(data)
        if order["t"] == "fork":
            self.fork()
        elif order["t"] == "kill" and order["pid"] in self.live:
            os.kill(order["pid"], signal.SIGKILL)

    def fork(self) -> None:
        """Fork a child that waits on its socket for a run order, and hand the host the other end."""
        host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = os.fork()
        except OSError as error:
            send(self.control, {"t": "fork_failed", "message": str(error)})
            host_end.close()
            child_end.close()
            return
        if pid == 0:
            self.become_child(child_end)
        child_end.close()
        self.live.add(pid)
        send(self.control, {"t": "child", "pid": pid}, [host_end.fileno()])
        host_end.close()

    def become_child(self, child_end: socket.socket) -> NoReturn:
        """In the forked child: drop everything of the zygote's, then serve exactly one run."""
        from sandbox import child  # imported in the zygote by preload(); this is a dictionary lookup

        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        fd = child_end.detach()
        self.control.detach()
        if fd != child.CHANNEL_FD:
            os.dup2(fd, child.CHANNEL_FD)
        # Threat: a child reaching the control socket could order forks or kills as if it were the host.
        os.closerange(child.CHANNEL_FD + 1, 1 << 20)
        child.serve(socket.socket(fileno=child.CHANNEL_FD), self.factory, zygote_pid=self.pid)

    def reap(self) -> None:
        """Report every child that exited since the last call."""
        try:
            while os.read(self.wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        while self.live:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.live.discard(pid)
            cpu = usage.ru_utime + usage.ru_stime
            send(self.control, {"t": "exit", "pid": pid, "status": status, "cpu_seconds": cpu})


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the zygote on the control socket passed by the host."""
    parser = argparse.ArgumentParser(prog="python -I -m sandbox.zygote")
    parser.add_argument("--fd", type=int, required=True, help="control socket inherited from the host")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.fd)
    init = json.loads(control.recv(CONTROL_BYTES))
    sys.dont_write_bytecode = True  # children have RLIMIT_FSIZE=0; a .pyc write must not be attempted
    sys.path.extend(entry for entry in init["path"] if entry not in sys.path)
    try:
        factory = preload(init.get("environment"))
        report = harden(enabled=bool(init.get("hardening", True)))
    except BaseException as error:  # noqa: BLE001 - reported to the host, which raises it there
        send(control, {"t": "error", "message": f"{type(error).__name__}: {error}"})
        os._exit(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.collect()
    gc.freeze()  # keep the pre-imported heap out of later collections so children share its pages (no COW)
    zygote = Zygote(control, factory)
    send(control, {"t": "ready", "pid": os.getpid(), "hardening": report})
    zygote.serve()


# -- the host's side ------------------------------------------------------------------------------------------------
_logger = logging.getLogger("sandbox.zygote")

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

    def kill(self) -> None:
        """Have the zygote SIGKILL this child (a no-op once it has been reaped, so never a reused pid)."""
        self.zygote.order({"t": "kill", "pid": self.pid})

    def finish(self) -> None:
        """Make sure the child is gone after its answer, even if an escape kept it from exiting."""
        self.kill()

    def wait_exit(self, timeout: float) -> tuple[int | None, float]:
        """Wait for the zygote's exit report; return ``(wait status, CPU seconds)``, status None if unknown."""
        self.exited.wait(timeout)
        return self.status, self.cpu_seconds


class ZygoteProcess:
    """A running zygote as the host sees it: the process, its control socket, and the spare children.

    A reader thread turns the zygote's reports into spare children and exit statuses; :meth:`take` hands out a
    spare and orders its replacement, so ``spare_children`` (plus one per waiting caller) stay forked ahead.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        control: socket.socket,
        ready: dict[str, Any],
        *,
        spare_children: int,
        workdir: str,
    ) -> None:
        self.process = process
        self.control = control
        self.pid: int = ready["pid"]
        self.hardening: dict[str, str] = dict(ready["hardening"])
        self._spare_children = spare_children
        self._workdir = workdir
        self._cond = threading.Condition()
        self._spares: collections.deque[ChildProcess] = collections.deque()
        self._children: dict[int, ChildProcess] = {}
        self._pending = 0
        self._waiters = 0
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
                send(control, {"environment": environment, "hardening": hardening, "path": path})
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
        report_once(ready["hardening"])
        return cls(process, control, ready, spare_children=spare_children, workdir=workdir)

    @property
    def alive(self) -> bool:
        """False once the zygote's control socket closed (it died or was closed)."""
        return self._alive

    def order(self, message: dict[str, Any]) -> None:
        """Send one order; a dead zygote is noticed by the reader thread."""
        try:
            send(self.control, message)
        except OSError:
            self._alive = False

    def take(self, timeout: float) -> ChildProcess | None:
        """Return a spare child (ordering its replacement), or None if the zygote died or none came in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiters += 1
            while self._alive and time.monotonic() < deadline:
                while self._spares:
                    child = self._spares.popleft()
                    if not child.exited.is_set():
                        self._waiters -= 1
                        self._top_up()
                        return child
                    child.sock.close()
                self._top_up()
                self._cond.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            self._waiters -= 1
            return None

    def _top_up(self) -> None:
        while self._alive and len(self._spares) + self._pending < self._spare_children + self._waiters:
            self._pending += 1
            self.order({"t": "fork"})

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
                    exited.exited.set()
            elif report["t"] == "fork_failed":
                self._pending -= 1
                _logger.warning("The sandbox zygote could not fork a child: %s", report["message"])

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
        if os.path.isdir(self._workdir):
            os.rmdir(self._workdir)


if __name__ == "__main__":
    main()

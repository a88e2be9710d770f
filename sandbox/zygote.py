"""The zygote: a clean, warm process that forks one child per run.

Started by the host (never forked from it: the host holds keys) as ``python -I -m sandbox.zygote --fd N`` with an
empty environment, an empty temporary working directory and only the control socket *N* open. Its life:

1. read the init message (``environment``, ``hardening``, ``path``) from the control socket;
2. import RestrictedPython, the sandbox runtime, the allowed stdlib modules and the host's environment module, so
   that no child pays for an import;
3. open its own ``/proc/self/statm`` (read before each fork: a child's ``RLIMIT_AS`` counts above the zygote's size;
   Landlock closes ``/proc`` after the next step) and read its memory map, harden itself (:mod:`sandbox.hardening`),
   point stdio at ``/dev/null``, ``gc.freeze()``, collapse its heap into huge pages (:mod:`sandbox.huge_pages`; the
   arenas it fills were reserved in one mapping before step 2) and report ``ready``;
4. serve orders: ``{"t": "fork", "warm"}`` forks a child (that makes the warm-up runs if ``warm``) and passes the
   host its end of a fresh socket pair (``SCM_RIGHTS``); ``{"t": "kill", "pid", "forks", "warm"}`` SIGKILLs a live
   child (a finished run's), then forks ``forks`` replacements (one message instead of 1 + n); every child's exit is
   reported as
   ``{"t": "exit", "pid", "status", "cpu_seconds", "in_snippet"}`` (``in_snippet``: the child's phase byte said
   it was running snippet code, see :mod:`sandbox.phase`). EOF on the control socket ends the zygote, and the kernel
   then kills its children (``PR_SET_PDEATHSIG``).

The control socket is ``SOCK_SEQPACKET``: one JSON message per packet, descriptors attached to the packet. The
host's end is :class:`sandbox.pool.ZygoteProcess`.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Final, NoReturn

from sandbox import huge_pages
from sandbox.environment import EnvironmentFactory, load_environment_factory, load_warm_up_runs
from sandbox.hardening import harden
from sandbox.phase import PhaseMarker
from sandbox.protocol import CONTROL_BYTES, send_control

#: The two reports the zygote sends per run, formatted rather than ``json.dumps``'d (see :meth:`Zygote.serve`); the
#: host reads them as JSON (a float's ``%r`` is JSON for the finite CPU time).
_CHILD_REPORT: Final = b'{"t":"child","pid":%d}'
_EXIT_REPORT: Final = b'{"t":"exit","pid":%d,"status":%d,"cpu_seconds":%r,"in_snippet":%s}'


#: The objects that keep the arenas reserved before the imports mapped (see :mod:`sandbox.huge_pages`).
_reserved_objects: list[bytes] = []


def preload(environment: str | None) -> EnvironmentFactory:
    """Import everything a run needs and return the environment factory named by the host."""
    importlib.import_module("RestrictedPython")
    for name in ("sandbox.compiler", "sandbox.executor", "sandbox.child"):
        importlib.import_module(name)
    importlib.import_module("sandbox.imports").stdlib_facades()  # imports the allowed stdlib, builds its façades
    factory = load_environment_factory(environment)
    importlib.import_module("sandbox.child").prepare_warm_up(load_warm_up_runs(environment))
    # The warm-up runs made here fill lazily built caches (functools, re, twilio's, the environment's own) before
    # the fork, so children share them instead of each building and copying them.
    importlib.import_module("sandbox.child").warm_up(factory)
    return factory


class Zygote:
    """The fork server's state: its control socket, live children and the SIGCHLD wake-up pipe."""

    def __init__(self, control: socket.socket, factory: EnvironmentFactory, *, statm_fd: int) -> None:
        self.control = control
        self.factory = factory
        self.statm_fd = statm_fd  # opened before the hardening: Landlock leaves /proc unreadable after it
        self.live: dict[int, PhaseMarker] = {}  # each live child's phase byte (see sandbox.phase)
        # Imported by preload(); held here so that a fork runs no import statement (the import system's lock and
        # lookups are writes, copied while children share the zygote's pages).
        from sandbox import child

        self.address_space_bytes = child.address_space_bytes
        self.serve_child = child.serve
        self.channel_fd = child.CHANNEL_FD
        self.pid = os.getpid()
        self.wake_read, wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(wake_write, False)
        # SIGCHLD must have a Python handler for the C handler to write the wake-up byte.
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)

    def serve(self) -> NoReturn:
        """Answer orders until the host closes the control socket."""
        # epoll itself, not the selectors module: the loop runs once per order and per exit, and while children
        # share the zygote's pages every page its code writes (reference counts, objects it makes) is copied.
        poller = select.epoll()
        control = self.control.fileno()
        poller.register(control, select.EPOLLIN)
        poller.register(self.wake_read, select.EPOLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == control:
                    self.obey()
                else:
                    self.reap()

    def obey(self) -> None:
        """Carry out one order from the host."""
        data = self.control.recv(CONTROL_BYTES)
        if not data:
            os._exit(0)
        order = json.loads(data)
        warm = bool(order.get("warm", True))
        if order["t"] == "fork":
            self.fork(warm=warm)
        elif order["t"] == "kill":
            if order["pid"] in self.live:
                os.kill(order["pid"], signal.SIGKILL)
            for _ in range(order.get("forks", 0)):  # the spares that replace it, ordered in the same message
                self.fork(warm=warm)

    def fork(self, *, warm: bool = True) -> None:
        """Fork a child that waits on its socket for a run order, and hand the host the other end.

        With *warm*, the child makes the warm-up runs while it waits (see :func:`sandbox.child.warm_up`).
        """
        host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        phase = PhaseMarker()
        address_space = self.address_space_bytes(self.statm_fd)  # the child's own, at the fork
        try:
            pid = os.fork()
        except OSError as error:
            send_control(self.control, {"t": "fork_failed", "message": str(error)})
            host_end.close()
            child_end.close()
            phase.close()
            return
        if pid == 0:
            self.become_child(child_end, warm=warm, address_space_bytes=address_space, phase=phase)
        child_end.close()
        phase.forked()  # Threat: a later child reaching this child's phase byte (see sandbox.phase)
        self.live[pid] = phase
        send_control(self.control, _CHILD_REPORT % pid, [host_end.fileno()])
        host_end.close()

    def become_child(
        self, child_end: socket.socket, *, warm: bool, address_space_bytes: int, phase: PhaseMarker
    ) -> NoReturn:
        """In the forked child: drop everything of the zygote's, then serve exactly one run."""
        # The siblings' phase pages were never copied into this process (PhaseMarker.forked): nothing to unmap, and
        # their objects are left alone (freeing them would write to the zygote's pages and unmap nothing).
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        fd = child_end.detach()
        self.control.detach()
        if fd != self.channel_fd:
            os.dup2(fd, self.channel_fd)
        # Threat: a child reaching the control socket could order forks or kills as if it were the host.
        os.closerange(self.channel_fd + 1, 1 << 20)
        self.serve_child(
            socket.socket(fileno=self.channel_fd),
            self.factory,
            zygote_pid=self.pid,
            address_space_bytes=address_space_bytes,
            warm=warm,
            phase=phase,
        )

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
            phase = self.live.pop(pid, None)
            in_snippet = phase is not None and phase.in_snippet
            if phase is not None:
                phase.close()
            cpu = usage.ru_utime + usage.ru_stime
            send_control(self.control, _EXIT_REPORT % (pid, status, cpu, b"true" if in_snippet else b"false"))


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the zygote on the control socket passed by the host."""
    parser = argparse.ArgumentParser(prog="python -I -m sandbox.zygote")
    parser.add_argument("--fd", type=int, required=True, help="control socket inherited from the host")
    args = parser.parse_args(argv)
    _reserved_objects.extend(huge_pages.reserve_object_memory())  # before the imports, which fill the arenas
    control = socket.socket(fileno=args.fd)
    init = json.loads(control.recv(CONTROL_BYTES))
    sys.dont_write_bytecode = True  # children have RLIMIT_FSIZE=0; a .pyc write must not be attempted
    sys.path.extend(entry for entry in init["path"] if entry not in sys.path)
    try:
        factory = preload(init.get("environment"))
        statm_fd = importlib.import_module("sandbox.child").open_statm()
        with open("/proc/self/maps") as maps:  # read before the hardening: Landlock leaves /proc unreadable after it
            heap = list(huge_pages.collapsible_ranges(maps.read()))
        report = harden(enabled=bool(init.get("hardening", True)))
    except BaseException as error:  # noqa: BLE001 - reported to the host, which raises it there
        send_control(control, {"t": "error", "message": f"{type(error).__name__}: {error}"})
        os._exit(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.collect()
    gc.freeze()  # keep the pre-imported heap out of later collections so children share its pages (no COW)
    huge_pages.collapse(heap)  # after the collection: it frees memory that would otherwise be collapsed for nothing
    zygote = Zygote(control, factory, statm_fd=statm_fd)
    send_control(control, {"t": "ready", "pid": os.getpid(), "hardening": report})
    zygote.serve()


if __name__ == "__main__":
    main()

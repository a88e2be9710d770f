"""Test-only environments for the isolated sandbox: each is host-chosen, so it may reach past the language wall.

They stand in for what a real host environment does (e.g. ``zingyconn.snippet.environment:environment`` making
requests to the host) and give tests a way to prove what the process wall does on its own: a segfault, a thread,
the child's view of its network, files and identity.
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import os
import signal
import socket
import threading
import time
from typing import Any

from sandbox.channel import encode_frame, recv_frame
from sandbox.environment import Environment, RunContext
from sandbox.syscall_filter import load_libseccomp


def echo_environment(run: RunContext) -> Environment:
    """``echo(value)`` asks the host to echo *value* back over the channel."""
    return Environment(names={"echo": lambda value: run.host.request("echo", {"value": value})})


def raw_request_environment(run: RunContext) -> Environment:
    """``raw_requests(n)`` writes *n* request frames straight to the channel, bypassing the child-side cap."""
    del run

    def raw_requests(count: int) -> list[Any]:
        channel = socket.socket(fileno=os.dup(3))
        answers = []
        for _ in range(count):
            channel.sendall(encode_frame({"t": "request", "op": "echo", "payload": {"value": 1}}))
            answers.append(recv_frame(channel, max_bytes=1 << 20))
        return answers

    return Environment(names={"raw_requests": raw_requests})


def crash_environment(run: RunContext) -> Environment:
    """``crash()`` reads address 0 (SIGSEGV); ``hard_exit(code)`` calls ``os._exit``."""
    del run
    return Environment(names={"crash": lambda: ctypes.string_at(0), "hard_exit": os._exit})


def _spin() -> None:
    while True:
        time.sleep(0.01)


def thread_environment(run: RunContext) -> Environment:
    """``start_thread()`` starts a thread that never ends and returns the child's pid and the thread's id."""
    del run

    def start_thread() -> dict[str, int]:
        thread = threading.Thread(target=_spin, daemon=False)
        thread.start()
        return {"pid": os.getpid(), "thread": thread.native_id or 0}

    return Environment(names={"start_thread": start_thread})


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def probe_environment(run: RunContext) -> Environment:
    """``probe(port, path)`` reports what the child process itself can see and reach (identity, env, fds, network)."""
    del run

    def probe(port: int, path: str = "/tmp/sandbox-probe-write") -> dict[str, Any]:
        try:  # the system call filter refuses the socket itself; without it, the network namespace has no route
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as connection:
                connection.settimeout(1)
                connection.connect(("127.0.0.1", port))
            network = "connected"
        except OSError as error:
            network = type(error).__name__
        try:
            with open(path, "w") as file:
                file.write("x")
            written = "written"
        except OSError as error:
            written = type(error).__name__
        try:
            cwd: list[str] | str = os.listdir(".")
        except OSError as error:
            cwd = type(error).__name__
        return {
            "cwd": cwd,
            "pid": os.getpid(),
            "uid": os.getuid(),
            "environ": dict(os.environ),
            "fds": [fd for fd in range(1024) if _is_open(fd)],  # not /proc/self/fd: Landlock leaves /proc closed
            "network": network,
            "write": written,
        }

    return Environment(names={"probe": probe})


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall_number(name: str) -> int:
    """The running architecture's number for system call *name* (libseccomp knows every architecture's table)."""
    number: int = load_libseccomp().resolve(name.encode())
    assert number >= 0, name
    return number


#: System calls the filter refuses, each with arguments that succeed or fail with another errno when unfiltered, so
#: that a missing rule shows as a result other than EPERM (ENOSYS for clone3).
_DENIED_CALLS: dict[str, tuple[int, ...]] = {
    "unshare": (0x10000000,),  # CLONE_NEWUSER
    "clone": (0x10000000 | 17, 0, 0, 0, 0),  # CLONE_NEWUSER | SIGCHLD
    "clone3": (0, 0),  # EINVAL unfiltered
    "io_uring_setup": (1, 0),  # EFAULT unfiltered
    "perf_event_open": (0, 0, -1, -1, 0),  # EFAULT unfiltered
    "userfaultfd": (1,),  # UFFD_USER_MODE_ONLY: allowed unprivileged on Linux 5.11+
    "keyctl": (0, -3, 0),  # KEYCTL_GET_KEYRING_ID of the session keyring: allowed unprivileged
    "bpf": (0, 0, 0),
    "ptrace": (0x4206, os.getpid(), 0, 0),  # PTRACE_SEIZE of the zygote (this module is imported there)
    "mount": (0, 0, 0, 0, 0),
    "socket": (socket.AF_INET, socket.SOCK_STREAM, 0),
}
_SYSCALL_NUMBERS = {name: _syscall_number(name) for name in _DENIED_CALLS}  # looked up in the zygote, before its filter


def syscall_environment(run: RunContext) -> Environment:
    """``denied_calls()`` makes each call of :data:`_DENIED_CALLS` and returns its errno name (or ``"ok"``);
    ``exec_true()`` replaces the child with ``/bin/true``; ``x32_getpid()`` calls ``getpid`` through the x32 ABI;
    ``open_socket(family)`` creates a socket of *family*; ``socket_pair(type)`` makes a Unix pair of *type*;
    ``reach_socket_file(path)`` tries every way to a Unix socket file: connect a new socket, ``sendto`` from a
    datagram pair, and ``connect`` on the channel's own descriptor."""
    del run

    def denied_calls() -> dict[str, str]:
        answers = {}
        for name, arguments in _DENIED_CALLS.items():
            result = _libc.syscall(ctypes.c_long(_SYSCALL_NUMBERS[name]), *(ctypes.c_long(a) for a in arguments))
            answers[name] = "ok" if result >= 0 else errno.errorcode[ctypes.get_errno()]
        return answers

    def open_socket(family: int) -> str:
        try:
            socket.socket(family, socket.SOCK_RAW if family == socket.AF_NETLINK else socket.SOCK_STREAM).close()
        except OSError as error:
            return errno.errorcode.get(error.errno or 0, str(error))
        return "ok"

    def socket_pair(kind: int) -> str:
        try:
            for end in socket.socketpair(socket.AF_UNIX, kind):
                end.close()
        except OSError as error:
            return errno.errorcode.get(error.errno or 0, str(error))
        return "ok"

    def reach_socket_file(path: str) -> dict[str, str]:
        def attempt(action: Any) -> str:
            try:
                action()
            except OSError as error:
                return errno.errorcode.get(error.errno or 0, str(error))
            return "ok"

        def connect_new() -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.connect(path)

        def send_from_datagram_pair() -> None:
            first, second = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            with first, second:
                first.sendto(b"x", path)

        def connect_channel() -> None:  # the channel is connected already: EISCONN, unless connect itself is refused
            channel = socket.socket(fileno=os.dup(3))
            with channel:
                channel.connect(path)

        return {
            "connect": attempt(connect_new),
            "sendto": attempt(send_from_datagram_pair),
            "connect_channel": attempt(connect_channel),
        }

    return Environment(
        names={
            "denied_calls": denied_calls,
            "socket_pair": socket_pair,
            "reach_socket_file": reach_socket_file,
            "exec_true": lambda: os.execv("/bin/true", ["true"]),
            "x32_getpid": lambda: _libc.syscall(ctypes.c_long(0x40000000 | 39)),  # __X32_SYSCALL_BIT | getpid
            "open_socket": open_socket,
        }
    )


def file_environment(run: RunContext) -> Environment:
    """``read_file(path)`` opens and reads *path* and returns ``"ok"`` or the errno's name; ``import_module(name)``
    imports *name* (a lazy import in the child) and returns its file."""
    del run

    def read_file(path: str) -> str:
        try:
            with open(path, "rb") as file:
                file.read(1)
        except OSError as error:
            return errno.errorcode.get(error.errno or 0, str(error))
        return "ok"

    def import_module(name: str) -> str:
        return str(importlib.import_module(name).__file__)

    return Environment(names={"read_file": read_file, "import_module": import_module})


def context_environment(run: RunContext) -> Environment:
    """``context()`` returns the run's context, read when the snippet calls it (the factory runs before the order)."""
    return Environment(names={"context": lambda: dict(run.context)})


def eager_context_environment(run: RunContext) -> Environment:
    """``context`` is the run's context, read by the factory itself: the factory then waits for the order."""
    return Environment(names={"context": dict(run.context)})


def early_request_environment(run: RunContext) -> Environment:
    """A factory that asks the host for something while it builds: refused (the run's cap is not set yet)."""
    try:
        answer = run.host.request("echo", {"value": "early"})
    except Exception as error:  # noqa: BLE001 - the refusal is what the test looks at
        answer = f"{type(error).__name__}: {error}"
    return Environment(names={"early": answer})


def setup_crash_environment(run: RunContext) -> Environment:
    """A factory that segfaults while it builds the environment when the run's context says ``crash_in_setup``.

    Reading the context waits for the order, so the crash comes after the order, in platform code.
    """
    if run.context.get("crash_in_setup"):
        ctypes.string_at(0)
    return Environment()


def instance_environment(run: RunContext) -> Environment:
    """For warm instances: ``pid()``; ``box``, a dict built afresh for each run; and what an escaped snippet could
    leave behind in its process: ``ignore_signal(name)``, ``keep_file()`` (an open descriptor), ``hog(mib)``
    (resident memory kept in this module), ``stash(value)`` and ``stashed()`` (data kept in this module).
    """
    del run

    def ignore_signal(name: str) -> None:
        signal.signal(getattr(signal, name), signal.SIG_IGN)

    def keep_file() -> int:
        return os.dup(0)  # a new descriptor (Landlock and the child's own uid leave little to open)

    def hog(mib: int) -> None:
        _HOARD.append(bytearray(b"x" * (mib << 20)))

    return Environment(
        names={
            "pid": os.getpid,
            "box": {},
            "ignore_signal": ignore_signal,
            "keep_file": keep_file,
            "hog": hog,
            "stash": _STASH.append,
            "stashed": lambda: list(_STASH),
        }
    )


#: Memory ``hog()`` keeps for the life of its process (an escape that survives the run's globals).
_HOARD: list[bytearray] = []
#: What ``stash()`` keeps for the life of its process.
_STASH: list[object] = []


def environment(run: RunContext) -> Environment:
    """Every hook above in one environment (one zygote serves a whole test module)."""
    names: dict[str, object] = {}
    for factory in (
        context_environment,
        echo_environment,
        raw_request_environment,
        crash_environment,
        thread_environment,
        probe_environment,
        syscall_environment,
        file_environment,
        instance_environment,
    ):
        names.update(factory(run).names)
    return Environment(names=names)


#: The dotted name the tests pass to ``Sandbox(environment=...)``.
ENVIRONMENT = "tests.sandbox.hooks:environment"

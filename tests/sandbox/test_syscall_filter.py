"""The zygote's seccomp filter, seen from a run: refused calls fail with their errno, and the next run still works.

Each call is made through a test-only environment (native code, as a language escape would have) with arguments
that succeed, or fail with another errno, when the filter is missing; so these tests fail if a rule is dropped.
"""

from __future__ import annotations

import ctypes
import os
import platform
import socket
import tempfile
from collections.abc import Iterator

import pytest

from sandbox import Limits, Sandbox
from sandbox.syscall_filter import install_syscall_filter
from tests.sandbox.hooks import ENVIRONMENT
from tests.sandbox.test_bombs import assert_still_works

LIMITS = Limits(wall_seconds=5, cpu_seconds=5)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One warm sandbox with the test hooks for the module."""
    with Sandbox(environment=ENVIRONMENT) as sandbox:
        yield sandbox


def test_filter_is_reported_active(sandbox: Sandbox) -> None:
    """The step is in the zygote's hardening report (libseccomp is installed here and in CI)."""
    assert sandbox.hardening["syscall_filter"] == "active"


def test_denied_calls_fail_with_eperm_and_clone3_with_enosys(sandbox: Sandbox) -> None:
    """Namespaces, io_uring, perf, userfaultfd, keyrings, bpf, ptrace, mount and inet sockets are refused."""
    result = sandbox.run("return denied_calls()", limits=LIMITS)

    assert result.ok, result.error
    expected = dict.fromkeys(result.value, "EPERM") | {"clone3": "ENOSYS"}  # ENOSYS: glibc falls back to clone
    assert result.value == expected
    assert_still_works(sandbox)


def test_starting_a_program_is_refused(sandbox: Sandbox) -> None:
    """execve fails with PermissionError (unfiltered, the child would become /bin/true and never reply)."""
    result = sandbox.run("exec_true()", limits=LIMITS)

    assert result.error is not None
    assert (result.error.type, result.error.exception) == ("SnippetError", "PermissionError")
    assert_still_works(sandbox)


@pytest.mark.parametrize(
    "family", [socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK, socket.AF_PACKET, socket.AF_UNIX]
)
def test_no_socket_can_be_created(sandbox: Sandbox, family: int) -> None:
    """No family, not even Unix: kernel socket code is out of reach, with or without a route."""
    result = sandbox.run(f"return open_socket({int(family)})", limits=LIMITS)

    assert (result.ok, result.value) == (True, "EPERM"), result.error


@pytest.mark.parametrize(
    ("kind", "answer"),
    [(socket.SOCK_STREAM, "ok"), (socket.SOCK_DGRAM, "EPERM"), (socket.SOCK_SEQPACKET, "EPERM")],
)
def test_only_unix_stream_pairs_can_be_made(sandbox: Sandbox, kind: int, answer: str) -> None:
    """The zygote's channels are stream pairs; a datagram pair could send to any socket file by its path."""
    result = sandbox.run(f"return socket_pair({int(kind)})", limits=LIMITS)

    assert (result.ok, result.value) == (True, answer), result.error


def test_a_unix_socket_file_anyone_may_use_is_out_of_reach(sandbox: Sandbox) -> None:
    """A stream and a datagram socket in /tmp with mode 0777 (a database's or syslog's, say) cannot be reached."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="zingyconn-sockets-") as directory:
        os.chmod(directory, 0o755)
        stream_path, datagram_path = os.path.join(directory, "stream"), os.path.join(directory, "datagram")
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stream,
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as datagram,
        ):
            stream.bind(stream_path)
            stream.listen()
            datagram.bind(datagram_path)
            for path in (stream_path, datagram_path):
                os.chmod(path, 0o777)
            source = "return [reach_socket_file(path) for path in event['paths']]"
            result = sandbox.run(source, event={"paths": [stream_path, datagram_path]}, limits=LIMITS)

    assert result.ok, result.error
    refused = {"connect": "EPERM", "sendto": "EPERM", "connect_channel": "EPERM"}
    assert result.value == [refused, refused]
    assert_still_works(sandbox)


def test_a_call_through_another_abi_kills_the_child(sandbox: Sandbox) -> None:
    """An x32 system call (a way around a filter written for x86-64) kills the child; the next run works."""
    if platform.machine() != "x86_64":
        pytest.skip("the x32 ABI exists on x86-64 only")
    result = sandbox.run("return x32_getpid()", limits=LIMITS)

    assert result.error is not None
    assert result.error.type == "WorkerCrashedError"
    assert_still_works(sandbox)


def test_a_name_libseccomp_does_not_know_fails_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo in the deny list would refuse nothing: the install fails instead (before loading any filter)."""
    monkeypatch.setattr("sandbox.syscall_filter.DENIED_SYSCALLS", ("execve", "exceve"))
    with pytest.raises(OSError, match="libseccomp knows no system call named 'exceve'"):
        install_syscall_filter()


def test_missing_libseccomp_is_an_os_error_that_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without libseccomp, install raises (the zygote reports the step unavailable) before touching the process."""

    def no_library(name: str) -> ctypes.CDLL:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr("sandbox.syscall_filter.ctypes.CDLL", no_library)
    with pytest.raises(OSError, match=r"libseccomp 2 is not installed .*apt-get install libseccomp2"):
        install_syscall_filter()

"""The zygote's seccomp filter, seen from a run: refused calls fail with their errno, and the next run still works.

Each call is made through a test-only environment (native code, as a language escape would have) with arguments
that succeed, or fail with another errno, when the filter is missing; so these tests fail if a rule is dropped.
"""

from __future__ import annotations

import ctypes
import platform
import socket
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
    ("family", "answer"),
    [
        (socket.AF_INET, "EPERM"),
        (socket.AF_INET6, "EPERM"),
        (socket.AF_NETLINK, "EPERM"),
        (socket.AF_PACKET, "EPERM"),
        (socket.AF_UNIX, "ok"),
    ],
)
def test_only_unix_sockets_can_be_created(sandbox: Sandbox, family: int, answer: str) -> None:
    """Kernel socket families are out of reach even without a route; the channel's own family stays usable."""
    result = sandbox.run(f"return open_socket({int(family)})", limits=LIMITS)

    assert result.ok, result.error
    assert result.value == answer


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

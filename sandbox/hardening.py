"""OS hardening of the zygote (and so of every child it forks), each step detected and reported.

Steps, in the order the zygote applies them after its imports:

- ``network_namespace``: ``unshare(CLONE_NEWNET)``; the zygote and its children get a namespace with only a
  loopback device that is down, so a language escape cannot open any network connection (egress goes through the
  host). Needs root, or falls back to a user namespace where the kernel allows unprivileged ones.
- ``unprivileged_uid``: when started as root, every child switches, right after the fork, to a uid and gid of its
  own (:data:`CHILD_ID_BASE` + its pid) with no supplementary groups, so an escape cannot read the host's files
  (keys, databases), nor signal the host, the zygote (which stays root: it never runs snippet code) or a sibling
  run of another tenant. Without root, the zygote and its children keep the caller's uid.
- ``no_new_privs``: ``PR_SET_NO_NEW_PRIVS``, so nothing can gain privileges through a setuid binary.
- ``non_dumpable``: ``PR_SET_DUMPABLE=0``, so no other process of the same uid can ptrace the zygote or a child
  or read its ``/proc/<pid>/mem`` (each child sets it again after its uid switch).
- ``file_access``: a Landlock ruleset (:mod:`sandbox.file_access`): files can be opened only beneath the Python
  installation's directories, the shared libraries and the time zone database, and only for reading; no TCP, no
  signals out of the sandbox, no abstract Unix sockets. Needs ``no_new_privs``.
- ``syscall_filter``: a seccomp filter (:mod:`sandbox.syscall_filter`) refusing the system calls no run needs and
  kernel exploits use: ``execve``, namespaces, mounts, ``ptrace``, ``bpf``, ``io_uring``, keyrings, new sockets
  and connections. Last, because it needs ``no_new_privs`` and would refuse the ``unshare`` above.

A step that is unavailable is reported as ``"unavailable: <why>"``, never silently skipped; the host logs each
unavailable step once per process (:func:`report_once`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
from collections.abc import Mapping
from typing import Any, Final

from sandbox.file_access import restrict_file_access
from sandbox.syscall_filter import install_syscall_filter

_CLONE_NEWNET: Final = 0x40000000
_CLONE_NEWUSER: Final = 0x10000000
_PR_SET_PDEATHSIG: Final = 1
_PR_SET_DUMPABLE: Final = 4
_PR_SET_NO_NEW_PRIVS: Final = 38

#: First uid/gid of the per-child identities: the child with pid P runs as CHILD_ID_BASE + P, an id that owns no
#: file and that no other process has. Threat: with one shared uid (``nobody``) an escaped child could SIGSTOP the
#: zygote (every tenant's runs then hang) or SIGKILL a concurrent run of another tenant.
CHILD_ID_BASE: Final = 1 << 30

#: Set by :func:`harden` in the zygote when its children must switch identity (inherited by every fork).
_per_child_ids = False

ACTIVE: Final = "active"

_LOGGER: Final = logging.getLogger(__name__)
_reported: set[tuple[str, str]] = set()

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - every Linux libc loads; other systems get "unavailable" reports
    _libc = None


def _call(function: str, *args: int) -> None:
    if _libc is None:
        raise OSError(f"libc has no {function}() on this system")
    if getattr(_libc, function)(*(ctypes.c_ulong(arg) for arg in args)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _bind_prctl() -> Any:
    if _libc is None:
        return None
    function = _libc.prctl
    function.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    function.restype = ctypes.c_int
    return function


# Bound once, with its argument types, in the zygote: every child calls it twice, and a ctypes call that builds its
# argument objects afresh writes to about 30 more copy-on-write pages in a freshly forked child (60 µs here).
_prctl = _bind_prctl()


def prctl(option: int, value: int) -> None:
    """Call ``prctl(option, value, 0, 0, 0)``, raising OSError on failure."""
    if _prctl is None:
        raise OSError("libc has no prctl() on this system")
    if _prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent (the zygote) dies."""
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def set_non_dumpable() -> None:
    """Make this process non-dumpable: same-uid processes can no longer ptrace it or read its /proc files."""
    prctl(_PR_SET_DUMPABLE, 0)


def set_no_new_privs() -> None:
    """Set ``PR_SET_NO_NEW_PRIVS``: no setuid/file-capability gain for this process and its descendants."""
    prctl(_PR_SET_NO_NEW_PRIVS, 1)


def _unshare_network() -> str:
    try:
        _call("unshare", _CLONE_NEWNET)
    except OSError as root_error:
        if os.geteuid() == 0:
            return f"unavailable: unshare(CLONE_NEWNET) failed: {root_error}"
        try:
            _call("unshare", _CLONE_NEWUSER | _CLONE_NEWNET)
        except OSError as user_error:
            return f"unavailable: no network namespace without root and no user namespaces ({user_error})"
    return ACTIVE


def _drop_privileges() -> str:
    global _per_child_ids  # one flag per zygote process, inherited by its forks
    if os.geteuid() != 0:
        return f"{ACTIVE} (already unprivileged, uid {os.geteuid()})"
    _per_child_ids = True  # each child switches in enter_child_identity()
    return ACTIVE


def enter_child_identity() -> None:
    """In a freshly forked child of a root zygote: switch to this child's own uid and gid, for good.

    Raises:
        OSError: The switch failed; the child must not run a snippet then.
    """
    if not _per_child_ids:
        return
    identity = CHILD_ID_BASE + os.getpid()
    os.setgroups([])
    os.setresgid(identity, identity, identity)
    os.setresuid(identity, identity, identity)
    set_non_dumpable()  # a uid change resets the dumpable flag (and the parent-death signal: set it after this)


def _step(action: object) -> str:
    try:
        action()  # type: ignore[operator]  # only called with the zero-argument functions above
    except OSError as error:
        return f"unavailable: {error}"
    return ACTIVE


def harden(*, enabled: bool) -> dict[str, str]:
    """Apply every step to the calling process (the zygote) and return ``step -> "active" | "unavailable: why"``.

    The network namespace comes first (it may need root), the uid drop after it; ``no_new_privs`` and
    non-dumpable then, since dropping the uid resets the dumpable flag; Landlock and the system call filter last
    (both need ``no_new_privs``; the filter refuses ``unshare``).
    """
    if not enabled:
        reason = "unavailable: disabled by the host (hardening=False)"
        steps = (
            "network_namespace",
            "unprivileged_uid",
            "no_new_privs",
            "non_dumpable",
            "file_access",
            "syscall_filter",
        )
        report = dict.fromkeys(steps, reason)
    else:
        report = {"network_namespace": _unshare_network(), "unprivileged_uid": _drop_privileges()}
        report["no_new_privs"] = _step(set_no_new_privs)
        report["non_dumpable"] = _step(set_non_dumpable)
        report["file_access"] = _step(restrict_file_access)
        report["syscall_filter"] = _step(install_syscall_filter)
    report["rlimit_nproc"] = (
        "unavailable: the sandbox child runs as root, which ignores RLIMIT_NPROC"
        if os.geteuid() == 0 and not _per_child_ids
        else ACTIVE
    )
    return report


def report_once(report: Mapping[str, str]) -> None:
    """Log a warning for each unavailable step, once per process (restarts of the zygote do not repeat it)."""
    for step, state in report.items():
        if not state.startswith(ACTIVE) and (step, state) not in _reported:
            _reported.add((step, state))
            _LOGGER.warning("Sandbox hardening step %r is %s.", step, state)

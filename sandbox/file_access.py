"""The zygote's Landlock ruleset: read-only access to the Python installation, nothing else of the file system.

A child already runs as a uid of its own, so it cannot read what only root or the host's user may read (the key
file, the database). What is left is everything *world*-readable: ``/proc/<pid>/cmdline`` of the host and of other
processes (a database URL with its password, passed on a command line), ``/etc``, home directories with default
modes, other tenants' temporary files. A language escape that reaches native code could read those and hand them out
through its result. Landlock (Linux 5.13+) closes that: after :func:`restrict_file_access`, the zygote and every child
it forks can open files only beneath the paths of :func:`readable_paths` (the directories on ``sys.path``, the shared
libraries, the time zone database and a few device files), and only for reading. It also refuses TCP ``bind`` and
``connect`` where the kernel's Landlock can (ABI 4), and, from ABI 6, signals to processes outside the sandbox and
connections to abstract Unix sockets.

Landlock only looks at ``open``: descriptors opened before the ruleset (the zygote's ``/proc/self/statm``, the
children's channels) keep working, and ``stat`` or ``listdir`` of a parent directory needs no rule.

The ruleset is built with the kernel's three system calls (``landlock_create_ruleset``, ``landlock_add_rule``,
``landlock_restrict_self``, numbered alike on every architecture) through :mod:`ctypes`, as :mod:`sandbox.hardening`
calls ``prctl``: the interface is small and versioned by the kernel itself, which is not worth a dependency.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Iterable
from typing import Final

#: Directories of shared libraries: an extension module imported lazily in a run (``_ssl``, ``_decimal``) loads its
#: libraries from here. Read-only and world-readable on any distribution; nothing secret lives there.
LIBRARY_DIRECTORIES: Final = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache")

#: Files a run may open besides modules: the null device (its stdio), randomness, the local time zone.
DEVICE_AND_TIME_FILES: Final = ("/dev/null", "/dev/urandom", "/dev/random", "/etc/localtime")

_SYS_LANDLOCK_CREATE_RULESET: Final = 444  # the same number on every architecture (added after the unified table)
_SYS_LANDLOCK_ADD_RULE: Final = 445
_SYS_LANDLOCK_RESTRICT_SELF: Final = 446
_CREATE_RULESET_VERSION: Final = 1
_RULE_PATH_BENEATH: Final = 1

# File system rights (linux/landlock.h). Every right the kernel knows is handled, so each is refused unless a rule
# grants it: v1's thirteen (execute, write, read, read a directory, remove, make any kind of node), then REFER
# (v2), TRUNCATE (v3) and IOCTL_DEV (v5).
_WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 1, 1 << 2, 1 << 3
_FS_RIGHTS_BY_ABI: Final = {1: (1 << 13) - 1, 2: 1 << 13, 3: 1 << 14, 5: 1 << 15}
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6


class _RulesetAttributes(ctypes.Structure):
    """``struct landlock_ruleset_attr`` (its size tells the kernel which fields the caller knows)."""

    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttributes(ctypes.Structure):
    """``struct landlock_path_beneath_attr``, packed as in the kernel's header."""

    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _call(number: int, *args: object, attempted: str) -> int:
    result = int(_syscall(ctypes.c_long(number), *args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"Landlock could not {attempted}: {os.strerror(code)}")
    return result


def landlock_abi() -> int:
    """Return the kernel's Landlock ABI version.

    Raises:
        OSError: The kernel has no Landlock, or it is not enabled at boot (``lsm=``).
    """
    try:
        return _call(
            _SYS_LANDLOCK_CREATE_RULESET,
            None,
            ctypes.c_size_t(0),
            ctypes.c_uint32(_CREATE_RULESET_VERSION),
            attempted="report its ABI version",
        )
    except OSError as error:
        if error.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(error.errno, "this kernel has no Landlock (Linux 5.13+, enabled in lsm=)") from error
        raise


def readable_paths() -> list[str]:
    """Return the paths a run may read beneath: ``sys.path``, the time zone database, libraries and device files.

    Only paths that exist are returned (a rule needs an open descriptor); the current directory (``""`` on
    ``sys.path``) is left out, since the zygote's is an empty temporary directory.
    """
    import zoneinfo

    candidates: Iterable[str] = (
        *(entry for entry in sys.path if entry),
        *zoneinfo.TZPATH,
        *LIBRARY_DIRECTORIES,
        *DEVICE_AND_TIME_FILES,
    )
    seen: dict[str, None] = {}
    for path in candidates:
        if os.path.exists(path):
            seen.setdefault(os.path.realpath(path), None)
    return list(seen)


def restrict_file_access(paths: Iterable[str] | None = None) -> int:
    """Restrict the calling process, and every process it forks later, to reading beneath *paths*; return the ABI.

    *paths* defaults to :func:`readable_paths`. ``/dev/null`` may also be written. Needs ``no_new_privs`` (set before
    it by :func:`sandbox.hardening.harden`) unless the caller has ``CAP_SYS_ADMIN``.

    Raises:
        OSError: The kernel has no Landlock, or refused the ruleset.
    """
    abi = landlock_abi()
    handled_fs = sum(rights for version, rights in _FS_RIGHTS_BY_ABI.items() if version <= abi)
    attributes = _RulesetAttributes(
        handled_access_fs=handled_fs,
        handled_access_net=_NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
        scoped=_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0,
    )
    # Older kernels refuse a struct larger than the one they know: pass only the fields of this ABI.
    size = 8 if abi < 4 else 16 if abi < 6 else ctypes.sizeof(attributes)
    ruleset = _call(
        _SYS_LANDLOCK_CREATE_RULESET,
        ctypes.byref(attributes),
        ctypes.c_size_t(size),
        ctypes.c_uint32(0),
        attempted="create a ruleset",
    )
    try:
        for path in readable_paths() if paths is None else paths:
            _allow(ruleset, path)
        _call(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0), attempted="restrict the process")
    finally:
        os.close(ruleset)
    return abi


def _allow(ruleset: int, path: str) -> None:
    descriptor = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rights = _READ_FILE | _READ_DIR if os.path.isdir(path) else _READ_FILE  # a file's rule takes file rights only
        if path == os.devnull:
            rights |= _WRITE_FILE
        rule = _PathBeneathAttributes(allowed_access=rights, parent_fd=descriptor)
        _call(
            _SYS_LANDLOCK_ADD_RULE,
            ctypes.c_int(ruleset),
            ctypes.c_int(_RULE_PATH_BENEATH),
            ctypes.byref(rule),
            ctypes.c_uint32(0),
            attempted=f"allow reading beneath {path}",
        )
    finally:
        os.close(descriptor)

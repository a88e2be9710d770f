"""The zygote's seccomp filter: system calls no run needs and a kernel exploit would, refused with an errno.

The filter is a deny list on top of the other walls (:mod:`sandbox.hardening`): a child already has no network, an
unprivileged uid of its own, ``no_new_privs`` and rlimits. What the filter adds is a smaller kernel. A language escape
that gets native code running still cannot start a program, make a namespace (the usual way an unprivileged process
reaches kernel code meant for root), open or connect a socket (its channel to the host is the only one it has), or
touch the interfaces most kernel exploits of the last years went through (``io_uring``, ``bpf``, ``userfaultfd``,
keyrings, ``AF_PACKET``/netlink sockets, ``perf_event_open``).

It is installed once, in the zygote, after its imports and its other hardening steps; every child inherits it at the
fork, so a run pays nothing for it but the filter's few instructions per system call. Refused calls fail with
``EPERM`` (``clone3`` with ``ENOSYS``, so that glibc falls back to ``clone``, whose flags the filter can read), never
by killing the process: a snippet that trips one gets an ordinary ``PermissionError`` in its traceback.

The filter is built by libseccomp (loaded with :mod:`ctypes`; Debian's ``libseccomp2``, which ``apt`` itself depends
on), which also refuses system calls made through another ABI (x32, i386 ``int 0x80``) by killing the caller: an old
way around a filter written for one architecture.
"""

from __future__ import annotations

import ctypes
import errno
import socket
from typing import Final

#: Refused outright. Each line names what it would give a language escape that reached native code.
DENIED_SYSCALLS: Final[tuple[str, ...]] = (
    # Starting another program: a shell, or any binary that is not under the interpreter's own limits.
    "execve",
    "execveat",
    # Reading or writing another process's memory or descriptors (the zygote, a sibling run of another tenant).
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    # New namespaces: an unprivileged user namespace is how most local kernel exploits reach root-only code paths.
    "unshare",
    "setns",
    # Mounts and the file system's root: leaving the directory tree the host chose.
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    # Opening files by handle bypasses directory permissions (the "shocker" container escape).
    "name_to_handle_at",
    "open_by_handle_at",
    # New sockets and connections. A child's only socket is its channel, made by the zygote with socketpair(); with
    # these, an escape could reach a Unix socket on the file system that lets anyone connect (a database's, a
    # container runtime's, syslog's), which neither the network namespace nor Landlock (up to ABI 7) stops.
    "socket",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    # Interfaces behind many kernel exploits, which no snippet needs.
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "add_key",
    "request_key",
    "keyctl",
    "fanotify_init",
    "lookup_dcookie",
    # The machine itself: modules, kexec, clocks, swap, accounting, I/O ports, the kernel log.
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "iopl",
    "ioperm",
    "syslog",
    "vhangup",
)

#: ``clone`` flags that make a namespace; ``clone`` with any of them is refused (threads and ``fork`` still work).
#: Threat: ``clone(CLONE_NEWUSER)`` is ``unshare`` by another name.
NAMESPACE_CLONE_FLAGS: Final[tuple[int, ...]] = (
    0x00000080,  # CLONE_NEWTIME
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)

#: The only socket pair the zygote makes after start-up: a Unix stream pair per child, its channel. Threat: another
#: family (``AF_PACKET``, ``AF_NETLINK``, ``AF_ALG``, ``AF_VSOCK``...) is kernel code reachable without any route,
#: each with its exploits; a Unix *datagram* pair could ``sendto`` any socket file by its path (``/dev/log``).
ALLOWED_SOCKET_PAIR: Final = (socket.AF_UNIX, socket.SOCK_STREAM)
_SOCKET_TYPE_MASK: Final = 0xF  # the type's low bits; SOCK_CLOEXEC and SOCK_NONBLOCK sit above them

# libseccomp's constants (seccomp.h), stable across its 2.x releases.
_SCMP_ACT_ALLOW: Final = 0x7FFF0000
_SCMP_ACT_KILL_PROCESS: Final = 0x80000000
_SCMP_FLTATR_ACT_BADARCH: Final = 2
_SCMP_FLTATR_CTL_OPTIMIZE: Final = 8  # 2: a binary tree over syscall numbers instead of a linear list
_SCMP_CMP_NE: Final = 1
_SCMP_CMP_MASKED_EQ: Final = 7
_UNKNOWN_SYSCALL: Final = -1  # __NR_SCMP_ERROR; other negative numbers are calls of other architectures


def _errno_action(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)  # SCMP_ACT_ERRNO(number)


class _ArgumentComparison(ctypes.Structure):
    """``struct scmp_arg_cmp``: compare system call argument *arg* with *op* against *datum_a* (and *datum_b*)."""

    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


class Libseccomp:
    """The few libseccomp functions the filter needs, with their argument types."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self.init = library.seccomp_init
        self.init.argtypes, self.init.restype = (ctypes.c_uint32,), ctypes.c_void_p
        self.attr_set = library.seccomp_attr_set
        self.attr_set.argtypes, self.attr_set.restype = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32), ctypes.c_int
        self.resolve = library.seccomp_syscall_resolve_name
        self.resolve.argtypes, self.resolve.restype = (ctypes.c_char_p,), ctypes.c_int
        self.rule_add = library.seccomp_rule_add_array
        self.rule_add.argtypes = (
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(_ArgumentComparison),
        )
        self.rule_add.restype = ctypes.c_int
        self.load = library.seccomp_load
        self.load.argtypes, self.load.restype = (ctypes.c_void_p,), ctypes.c_int
        self.release = library.seccomp_release
        self.release.argtypes, self.release.restype = (ctypes.c_void_p,), None


def load_libseccomp() -> Libseccomp:
    """Load libseccomp 2 and bind the functions the filter needs.

    Raises:
        OSError: libseccomp 2 is not installed (the message says which package to install).
    """
    try:
        return Libseccomp(ctypes.CDLL("libseccomp.so.2"))
    except (OSError, AttributeError) as error:
        raise OSError(f"libseccomp 2 is not installed ({error}); on Debian: apt-get install libseccomp2") from error


def _check(result: int, attempted: str) -> None:
    if result < 0:  # libseccomp returns -errno
        raise OSError(-result, f"libseccomp could not {attempted}: {errno.errorcode.get(-result, -result)}")


def install_syscall_filter() -> int:
    """Install the filter on the calling process (and so on every process it forks later); return the rule count.

    Needs ``no_new_privs`` (set before it by :func:`sandbox.hardening.harden`) unless the caller has
    ``CAP_SYS_ADMIN``. A call the running architecture does not have (``iopl`` on arm64) is skipped.

    Raises:
        OSError: libseccomp is missing or knows a name of :data:`DENIED_SYSCALLS` under no architecture, or the
            kernel refused the filter (no seccomp support).
    """
    library = load_libseccomp()
    context = library.init(_SCMP_ACT_ALLOW)
    if not context:
        raise OSError("libseccomp could not create a filter (seccomp_init failed)")
    try:
        _check(library.attr_set(context, _SCMP_FLTATR_ACT_BADARCH, _SCMP_ACT_KILL_PROCESS), "set the bad-ABI action")
        library.attr_set(context, _SCMP_FLTATR_CTL_OPTIMIZE, 2)  # libseccomp 2.5+; older ones build a list: fine
        rules = 0
        refuse = _errno_action(errno.EPERM)

        def add(name: str, action: int, *comparisons: _ArgumentComparison) -> None:
            nonlocal rules
            number = library.resolve(name.encode())
            if number == _UNKNOWN_SYSCALL:  # a typo would refuse nothing: fail, and the step is reported unavailable
                raise OSError(f"libseccomp knows no system call named {name!r}")
            if number < 0:
                return  # a call of another architecture (libseccomp's pseudo number): nothing to refuse here
            array = (_ArgumentComparison * len(comparisons))(*comparisons) if comparisons else None
            _check(library.rule_add(context, action, number, len(comparisons), array), f"add a rule for {name}")
            rules += 1

        for name in DENIED_SYSCALLS:
            add(name, refuse)
        add("clone3", _errno_action(errno.ENOSYS))  # its flags sit behind a pointer the filter cannot read
        for flag in NAMESPACE_CLONE_FLAGS:  # clone's flags are its first argument on x86-64 and arm64
            add("clone", refuse, _ArgumentComparison(0, _SCMP_CMP_MASKED_EQ, flag, flag))
        family, kind = ALLOWED_SOCKET_PAIR
        add("socketpair", refuse, _ArgumentComparison(0, _SCMP_CMP_NE, family, 0))
        for other in range(_SOCKET_TYPE_MASK + 1):  # libseccomp has no masked not-equal: one rule per other type
            if other != kind:
                add("socketpair", refuse, _ArgumentComparison(1, _SCMP_CMP_MASKED_EQ, _SOCKET_TYPE_MASK, other))
        _check(library.load(context), "load the filter into the kernel")
        return rules
    finally:
        library.release(context)

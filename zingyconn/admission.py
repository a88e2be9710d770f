"""Aggregate limits per tenant: how many runs one tenant may have at once, and how much memory they may hold together.

Every run (webhook, task, console, command) is admitted by :class:`TenantSlots` before it starts and holds a *slot*
until it ends. A slot is a file in the data directory locked with ``flock``: the lock belongs to the open file, so it
is shared by every thread and process on the machine using the same data directory, and the kernel drops it when
the holder dies (``kill -9`` frees its slots at once; nothing is leased, nothing needs reaping). Each held slot
records the memory limit of its run; a short per-tenant lock around admission makes "count the busy slots, add
their memory, take a free one" one step.

Admission is on every run's path, so each process keeps the slot files of the tenants it admitted last open between
runs (:data:`CACHED_TENANTS`): a run costs a ``flock`` per slot in use, not an ``open`` and a ``close``. Because a
lock belongs to the open file, two threads locking one kept descriptor would both "get" it: a process-local lock per
tenant comes first, and the slots the process holds itself are counted from its own memory, without a ``flock`` or a
read. A forked child closes what it inherited and forgets the parent's slots (releasing one would unlock the
parent's open file).

Slots are taken lowest first, and the tenant's mutex file keeps a header (:func:`_header`, written under the mutex):
a *bound* below which every held slot lies, and how many memory hold files exist. Every taker raises the bound to
cover the slot it takes and lowers it to just above the highest slot it found held, both under the mutex, and a
release only frees a slot, so the bound never leaves a held slot out: admission looks at the slots below it (a
``flock`` each) and at most one above, not at every slot, and opens no hold file that does not exist. A header that
is missing or unreadable (a new file, a write cut by ``kill -9``) makes the next taker look at every slot and every
hold file, as without one. Slots beyond a process's own ``max_runs`` (taken by a process configured with more runs
at once) are looked at too, up to the bound: they count towards the tenant's memory everywhere, though only their
own kind of process takes them.

A warm instance (a sandbox process kept for one hook's or script's next runs) holds its memory between runs too:
it takes a *memory hold* (:meth:`TenantSlots.hold_memory`) for its life, a slot file of its own that counts
towards the tenant's memory but not towards its runs at once; its runs are then admitted with no memory of their
own.

Threat: one tenant's flood of webhooks, tasks and console runs holding every sandbox child, and gigabytes of memory,
so that other tenants' runs wait or the machine swaps. Limit: the count is per machine (per data directory); with
several machines on one database, each enforces its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from zingyconn.config import Settings
from zingyconn.errors import ConfigurationError, TenantBusyError, ValidationError

MIB: Final = 1024 * 1024
#: Width of the memory stamp in a slot file (decimal digits, zero-padded).
STAMP_BYTES: Final = 20
#: Memory holds one tenant may have at once. The tenant's memory limit bounds them first (each holds a run's memory
#: limit); this only bounds the slot files scanned.
MAX_MEMORY_HOLDS: Final = 256
#: Run slot files a process opens beyond its own ``max_runs`` (those of processes configured with more runs at once,
#: whose held slots count towards the tenant's memory here too). Threat: a garbled header's bound opening files
#: without end.
MAX_SLOT_FILES: Final = 1024
#: Tenants whose slot files one process keeps open between runs (the most recently admitted). Each costs
#: ``max_runs`` + 1 descriptors plus its memory holds; 8 at the default 16 runs is 136, well inside the soft
#: ``RLIMIT_NOFILE`` of 1024 that the server's sockets share.
CACHED_TENANTS: Final = 8
#: How often a waiting caller looks for room (each look opens the tenant's slot files once).
POLL_SECONDS: Final = 0.02
#: Width of each of the two numbers of the mutex file's header (decimal digits, zero-padded, a space after each).
HEADER_DIGITS: Final = 7
HEADER_BYTES: Final = 2 * (HEADER_DIGITS + 1)


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """The aggregate limits of every tenant.

    Attributes:
        max_runs: ``ZINGYCONN_TENANT_MAX_RUNS``: runs at once.
        max_memory_bytes: ``ZINGYCONN_TENANT_MAX_MEMORY_MB`` in bytes: memory limits of the runs at once, added up.
        wait_seconds: ``ZINGYCONN_TENANT_WAIT_SECONDS``: how long a caller that may wait polls for room.
    """

    max_runs: int
    max_memory_bytes: int
    wait_seconds: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> TenantLimits:
        """Return the limits configured in *settings* (16 runs and 4096 MiB by default: the
        webhook server's own per-process request cap, at the default 256 MiB a run)."""
        return cls(
            max_runs=settings.tenant_max_runs,
            max_memory_bytes=settings.tenant_max_memory_mb * MIB,
            wait_seconds=settings.tenant_wait_seconds,
        )


class _TenantFiles:
    """One tenant's slot files as this process keeps them open between runs, and which of them it holds.

    Every field but ``users`` is guarded by ``lock``, taken before the tenant's ``flock``ed mutex: a ``flock``
    belongs to the open file, so two threads locking one kept descriptor would both "get" it. ``users`` (admissions
    under way, slots and holds held) is guarded by the cache lock of the :class:`TenantSlots`; the files of a tenant
    with users are never closed.
    """

    def __init__(self, tenant: str, stem: Path) -> None:
        self.tenant = tenant
        self.stem = str(stem)  # file names are this plus a suffix (joined as text: no Path per run)
        self.lock = threading.Lock()
        self.mutex: int | None = None
        #: Descriptors of the slot files ``.0``, ``.1``, ... and of the memory holds ``.hold0``, ... opened so far.
        self.runs: list[int] = []
        self.holds: list[int] = []
        #: What this process holds (index: descriptor and memory): scanned without a ``flock`` or a read.
        self.taken: dict[int, tuple[int, int]] = {}
        self.held: dict[int, tuple[int, int]] = {}
        self.users = 0

    def kept(self) -> list[int]:
        """Return the descriptors kept open (not those of slots held, once dropped from the cache)."""
        return [fd for fd in (self.mutex, *self.runs, *self.holds) if fd is not None]

    def drop(self) -> None:
        """Close the kept descriptors that hold nothing (a held slot keeps its own until it is released)."""
        holding = {fd for fd, _ in (*self.taken.values(), *self.held.values())}
        for fd in self.kept():
            if fd not in holding:
                os.close(fd)
        self.mutex, self.runs, self.holds = None, [], []


class TenantSlots:
    """Admit runs under each tenant's :class:`TenantLimits`, with ``flock`` slot files in *directory*.

    Each process keeps the slot files of its :data:`CACHED_TENANTS` most recently admitted tenants open between
    runs: an admission costs a ``flock`` per slot and no ``open``.
    """

    def __init__(self, directory: Path, limits: TenantLimits) -> None:
        self.directory = directory
        self.limits = limits
        self._cache_lock = threading.Lock()
        self._keep_tenants = CACHED_TENANTS
        self._cache: dict[str, _TenantFiles] = {}  # least recently admitted first
        _LIVE.add(self)
        # Descriptors are plain ints: without this, dropping a TenantSlots unclosed would leak them.
        self._finalizer = weakref.finalize(self, _drop_all, self._cache)

    def close(self) -> None:
        """Close the slot files kept open, and keep none from now on (a tenant admitting or holding a slot right now
        keeps its files until it is done)."""
        with self._cache_lock:
            self._keep_tenants = 0
            self._evict()

    @contextlib.contextmanager
    def admit(self, tenant: str, *, memory_bytes: int, wait: bool = True) -> Iterator[None]:
        """Hold one of *tenant*'s run slots, reserving *memory_bytes*, for the duration of the block.

        With *wait*, a busy tenant is polled for room for up to ``limits.wait_seconds`` (a short burst of webhooks
        is queued, not refused); without, it is refused at once (a task worker puts the task back instead).

        Raises:
            TenantBusyError: The tenant already has ``max_runs`` runs, or this one's memory would take its runs
                over ``max_memory_bytes`` (try again in ``retry_after_seconds``).
            ValidationError: *memory_bytes* alone is over the tenant's total (it could never run).
            ConfigurationError: The data directory cannot hold the slot files.
        """
        release = self.hold_run(tenant, memory_bytes=memory_bytes, wait=wait)
        try:
            yield
        finally:
            release()

    def hold_run(self, tenant: str, *, memory_bytes: int, wait: bool = True) -> Callable[[], None]:
        """Hold one of *tenant*'s run slots, reserving *memory_bytes*, until the returned function is called.

        :meth:`admit` without the block (the runtime's path: no context manager per run). Waits and raises as
        :meth:`admit` does.
        """
        return self._hold(tenant, memory_bytes, wait=wait, hold=False)

    def _check_fits(self, tenant: str, memory_bytes: int) -> None:
        limits = self.limits
        if memory_bytes > limits.max_memory_bytes:
            raise ValidationError(
                f"A run with a memory limit of {memory_bytes // MIB} MiB can never start: all of tenant {tenant!r}'s "
                f"runs together may hold {limits.max_memory_bytes // MIB} MiB. Lower memory_bytes, or raise "
                "ZINGYCONN_TENANT_MAX_MEMORY_MB.",
                field="memory_bytes",
            )

    def hold_memory(self, tenant: str, *, memory_bytes: int, wait: bool = True) -> Callable[[], None]:
        """Hold *memory_bytes* of *tenant*'s memory until the returned function is called (a warm instance's life).

        A hold counts towards the tenant's memory like a run's, but not towards its runs at once. Waits and raises
        as :meth:`admit` does (TenantBusyError when the tenant's memory, or :data:`MAX_MEMORY_HOLDS`, is taken).
        """
        return self._hold(tenant, memory_bytes, wait=wait, hold=True)

    def _hold(self, tenant: str, memory_bytes: int, *, wait: bool, hold: bool) -> Callable[[], None]:
        """Take a run slot (a memory hold with *hold*) of *tenant*; return the function that gives it back."""
        self._check_fits(tenant, memory_bytes)
        files = self._files(tenant)
        try:
            index = self._poll(functools.partial(self._take, files, memory_bytes, hold=hold), wait=wait)
        except BaseException:
            self._done(files)
            raise
        table = files.held if hold else files.taken
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            with files.lock:
                taken = table.pop(index, None)
                if taken is None:
                    return  # forgotten in a forked child: the lock is the parent's to release
                fd, _ = taken
                fcntl.flock(fd, fcntl.LOCK_UN)
                if fd not in files.runs and fd not in files.holds:
                    os.close(fd)  # its file left the cache while it was held
            self._done(files)

        return release

    def _files(self, tenant: str) -> _TenantFiles:
        """Return *tenant*'s kept files, counted as in use until :meth:`_done`."""
        with self._cache_lock:
            files = self._cache.pop(tenant, None) or _TenantFiles(tenant, self._stem(tenant))
            self._cache[tenant] = files  # most recently admitted last
            files.users += 1
            self._evict()
        return files

    def _done(self, files: _TenantFiles) -> None:
        with self._cache_lock:
            files.users -= 1
            self._evict()

    def _evict(self) -> None:
        """Close the files of the least recently admitted tenants beyond :data:`CACHED_TENANTS` that are not in use."""
        excess = len(self._cache) - self._keep_tenants
        if excess <= 0:
            return  # the common case, on every admission and release: no copy of the cache's items
        for tenant, files in list(self._cache.items()):
            if excess <= 0:
                return
            if files.users == 0:
                del self._cache[tenant]
                files.drop()
                excess -= 1

    def _forget(self) -> None:
        """In a forked child: close the inherited descriptors and forget the parent's slots (they stay its own)."""
        for files in self._cache.values():
            for fd in {*files.kept(), *(fd for fd, _ in (*files.taken.values(), *files.held.values()))}:
                with contextlib.suppress(OSError):
                    os.close(fd)
            files.mutex, files.runs, files.holds = None, [], []
            files.taken.clear()
            files.held.clear()
            files.lock = threading.Lock()  # a parent thread may have held it at the fork
        self._cache.clear()  # in place: the finalizer holds this dict
        self._cache_lock = threading.Lock()

    def _poll(self, take: Callable[[], int], *, wait: bool) -> int:
        """Return what *take* returns, retrying a TenantBusyError for up to ``limits.wait_seconds`` if *wait*."""
        give_up = time.monotonic() + (self.limits.wait_seconds if wait else 0.0)
        while True:
            try:
                return take()
            except TenantBusyError:
                if time.monotonic() + POLL_SECONDS > give_up:
                    raise
                # Jitter (not security): waiters do not poll in step.
                time.sleep(POLL_SECONDS * random.uniform(0.5, 1.5))  # noqa: S311

    def _take(self, files: _TenantFiles, memory_bytes: int, *, hold: bool) -> int:
        """Return the index of a free slot (a memory hold's with *hold*) of the tenant of *files*, now locked,
        stamped with *memory_bytes* and recorded as this process's."""
        with files.lock:
            mutex = self._opened(files)
            fcntl.flock(mutex, fcntl.LOCK_EX)  # held for microseconds; dropped by the kernel if we die holding it
            try:
                return self._take_locked(files, mutex, memory_bytes, hold=hold)
            finally:
                fcntl.flock(mutex, fcntl.LOCK_UN)

    def _take_locked(self, files: _TenantFiles, mutex: int, memory_bytes: int, *, hold: bool) -> int:
        bound, hold_files = _read_header(mutex)
        self._open_holds(files, hold_files)  # under the mutex: a hold file another process adds is added under it too
        # Slots beyond this process's max_runs (a process configured with more runs at once took them) count
        # towards the tenant's memory too, though this process never takes one: open those below the bound (all
        # there are, without a header) so the scan sees them.
        self._open_wider_runs(files, bound)
        known = len(files.runs) if bound is None else min(bound, len(files.runs))
        runs, held_bytes, free_run, top = _scan(
            files.runs, files.taken, take=not hold, known=known, takeable=self.limits.max_runs
        )
        holds, hold_bytes, free, _ = _scan(files.holds, files.held, take=hold)
        held_bytes += hold_bytes
        if hold:
            fds, busy = files.holds, holds
        else:
            fds, busy, free = files.runs, runs, free_run
        try:
            if hold and free is None and len(fds) < MAX_MEMORY_HOLDS:
                # Every hold file is held: add one (they are taken lowest first and never removed).
                fds.append(self._open(f"{files.stem}.hold{len(fds)}"))
                if _scan(fds[-1:], {}, take=True)[2] is not None:
                    free = len(fds) - 1
            if free is None or held_bytes + memory_bytes > self.limits.max_memory_bytes:
                raise TenantBusyError(self._refusal(files.tenant, busy, held_bytes, memory_bytes, hold=hold))
            if not hold:
                top = max(top, free + 1)
            if bound is not None and bound > known:
                top = max(top, bound)  # slots the bound covers whose files are gone were not looked at: keep them in
            if (top, len(files.holds)) != (bound, hold_files):
                # Like the stamp, a write that fails (a full disk) is the caller's OSError: the edge names the cause.
                os.pwrite(mutex, _header(top, len(files.holds)), 0)
            # Fixed width, written in place: truncating first cost 1.6 ms a run on ext4 (freeing the block).
            os.pwrite(fds[free], b"%0*d" % (STAMP_BYTES, memory_bytes), 0)
        except BaseException:
            # The slot found free is locked, and its file stays open in the cache: unlock it, or it stays held.
            if free is not None:
                fcntl.flock(fds[free], fcntl.LOCK_UN)
            raise
        (files.held if hold else files.taken)[free] = (fds[free], memory_bytes)
        return free

    def _opened(self, files: _TenantFiles) -> int:
        """Return the tenant's mutex, with its run slot files open (again, if they were deleted since)."""
        if files.mutex is not None and os.fstat(files.mutex).st_nlink == 0:
            # The data directory was emptied under us: other processes lock the new files, so must we.
            files.drop()
        if files.mutex is None:
            files.mutex = self._open(f"{files.stem}.lock")
        # Every file is opened before any is locked: a file that cannot be opened (EMFILE, a full or read-only disk)
        # leaves no slot locked.
        while len(files.runs) < self.limits.max_runs:
            files.runs.append(self._open(f"{files.stem}.{len(files.runs)}"))
        return files.mutex

    def _open_wider_runs(self, files: _TenantFiles, bound: int | None) -> None:
        """Open the run slot files beyond this process's ``max_runs`` that lie below *bound* (``None``: every one
        there is); files only a process configured with more runs at once created, never created here."""
        wanted = MAX_SLOT_FILES if bound is None else min(bound, MAX_SLOT_FILES)
        while len(files.runs) < wanted:
            try:
                fd = os.open(f"{files.stem}.{len(files.runs)}", os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                return  # slot files are created from .0 up: none beyond
            except OSError as exc:
                raise self._unusable(exc) from None
            files.runs.append(fd)

    def _open_holds(self, files: _TenantFiles, count: int | None) -> None:
        """Open the tenant's memory hold files not open yet: the header's *count* of them, or (``None``: no header)
        every one there is.

        Hold files are taken lowest first and never removed, so a look stops at the first missing one.
        """
        wanted = MAX_MEMORY_HOLDS if count is None else min(count, MAX_MEMORY_HOLDS)
        while len(files.holds) < wanted:
            try:
                fd = os.open(f"{files.stem}.hold{len(files.holds)}", os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise self._unusable(exc) from None
            files.holds.append(fd)

    def _refusal(self, tenant: str, busy: int, held_bytes: int, memory_bytes: int, *, hold: bool = False) -> str:
        limits = self.limits
        over = f"over its limit (ZINGYCONN_TENANT_MAX_MEMORY_MB={limits.max_memory_bytes // MIB})"
        if hold and busy >= MAX_MEMORY_HOLDS:
            why = f"it already keeps {busy} warm sandbox processes, the most one tenant may keep"
        elif hold:
            why = (
                f"its runs and warm sandbox processes hold {held_bytes // MIB} MiB and a new warm process for this "
                f"one needs {memory_bytes // MIB} MiB more, {over}"
            )
        elif busy >= limits.max_runs:
            why = f"it already has {busy} runs going, its limit (ZINGYCONN_TENANT_MAX_RUNS={limits.max_runs})"
        else:
            why = (
                f"its {busy} runs going (and warm sandbox processes) hold {held_bytes // MIB} MiB and this one needs "
                f"{memory_bytes // MIB} MiB more, {over}"
            )
        return (
            f"Tenant {tenant!r} cannot start another run now: {why}. Retry in a moment, or ask the platform admin "
            "to raise the limit."
        )

    def _stem(self, tenant: str) -> Path:
        # Hashed: a file name that is the same for every spelling the file system might fold (case, Unicode).
        return self.directory / hashlib.sha256(tenant.encode()).hexdigest()[:32]

    def _open(self, path: str) -> int:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            self._make_directory()
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._unusable(exc) from None

    def _make_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unusable(exc) from None

    def _unusable(self, exc: OSError) -> ConfigurationError:
        return ConfigurationError(
            f"Cannot keep run slots in {self.directory} ({exc.strerror or exc}); make ZINGYCONN_DATA_DIR a writable "
            "directory."
        )


def _scan(
    fds: list[int],
    mine: dict[int, tuple[int, int]],
    *,
    take: bool,
    known: int | None = None,
    takeable: int | None = None,
) -> tuple[int, int, int | None, int]:
    """Return how many of the slots *fds* are held, their memory, (with *take*) the index of a free one, locked, and
    one more than the index of the highest held.

    The slots this process holds (*mine*) are counted from memory: no ``flock``, no read. Only the first *known*
    (all by default) are all looked at: the bound of the header says none after them is held, so after them a
    taker looks only until it finds a free one (normally the first), and a caller that takes none not at all. Only
    the first *takeable* (all by default) may be taken: the slots beyond are other processes' (with more runs).
    """
    busy, held_bytes, free, top = 0, 0, None, 0
    end = len(fds) if known is None else known
    limit = len(fds) if takeable is None else takeable
    for index, fd in enumerate(fds):
        if index >= end and (free is not None or not take or index >= limit):
            break
        if index in mine:
            busy += 1
            held_bytes += mine[index][1]
            top = index + 1
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy += 1
            held_bytes += _stamped_bytes(fd)
            top = index + 1
            continue
        if free is None and take and index < limit:
            free = index
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
    return busy, held_bytes, free, top


def _header(bound: int, hold_files: int) -> bytes:
    """Return the mutex file's header: the bound of the held run slots and the count of memory hold files."""
    return b"%0*d %0*d\n" % (HEADER_DIGITS, bound, HEADER_DIGITS, hold_files)


def _read_header(mutex: int) -> tuple[int | None, int | None]:
    """Return the bound and hold file count of the mutex file's header, or ``(None, None)`` without a readable one."""
    try:
        data = os.pread(mutex, HEADER_BYTES, 0)
        if len(data) == HEADER_BYTES:
            return int(data[:HEADER_DIGITS]), int(data[HEADER_DIGITS + 1 : 2 * HEADER_DIGITS + 1])
    except (OSError, ValueError):
        pass
    return None, None


def _drop_all(cache: dict[str, _TenantFiles]) -> None:
    """Close the kept files of every tenant in *cache* and empty it (held slots are closed on release)."""
    for files in cache.values():
        files.drop()
    cache.clear()


def _forget_in_child() -> None:
    for slots in list(_LIVE):
        slots._forget()


_LIVE: weakref.WeakSet[TenantSlots] = weakref.WeakSet()
os.register_at_fork(after_in_child=_forget_in_child)


def _stamped_bytes(slot: int) -> int:
    """Return the memory a busy slot's holder stamped on it (0 when it is being written or unreadable)."""
    try:
        return int(os.pread(slot, STAMP_BYTES, 0) or b"0")
    except (OSError, ValueError):
        return 0

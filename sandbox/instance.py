"""Warm instances: a child kept alive for one host-chosen key and reused for that key's next runs.

A fresh child per run (the default) costs a fork and an exit per run. An *instance* is a spare child of the zygote
that, once given an order marked as an instance's, serves further orders on the same channel (see
:mod:`sandbox.child`). The host picks the key (an opaque hashable: zingyconn passes tenant, script and source
version); :class:`InstancePool` never hands an instance to another key, and the key includes the run's
:class:`~sandbox.limits.Limits`, whose rlimits the first order set for the process's life.

What holds per run: fresh globals and a freshly built environment (nothing the last run's snippet built is
reachable from the next one's names), the run's own CPU budget (the ``RLIMIT_CPU`` soft limit moved before each
run), wall-clock deadline (the host SIGKILLs the instance) and output caps. What the host checks after each run,
from ``/proc`` (never from what the untrusted child says): its threads, its signal dispositions and its open
descriptors must be those it had before its first run, and its resident memory must not have grown past
:attr:`InstancePolicy.memory_high_water_bytes`. An instance is recycled (killed) when any check fails, after any
failure that was not the snippet's own exception, after ``max_runs`` runs, after ``idle_seconds`` without a run,
or when the pool needs room for another key (least recently used first). A key has at most ``max_per_key``
instances computing: its further concurrent runs wait, in line, for one of them. An instance whose run waits for
the host to answer one of its requests (a send to an API, say) is not computing: while it waits, the key's first
waiting run may start another instance, so runs that spend their time waiting on the host are not held to one per
CPU. The instances such a burst started serve the key's later runs until the idle reaper or the LRU ends them.

Threat bound: a snippet that escaped the language wall inside an instance can leave state in that process for
the same key's later runs (the same tenant's same script and version) until the instance is recycled; it never
reaches another key's runs, and secrets never enter the process (the host answers its requests).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Final

from sandbox.limits import MIB, Limits
from sandbox.pool import ChildProcess

_LOGGER: Final = logging.getLogger(__name__)

#: What the pool keys instances by: the host's key and the limits the instance's first order set for its life.
PoolKey = tuple[Hashable, Limits]

#: How long an instance's run must have waited for the host's answer to a request before the instance stops counting
#: against ``max_per_key`` (:meth:`InstancePool.waiting_on_host`): longer than setting up an instance takes, and than
#: a request the host answers from memory, shorter than a call over the network. Threat: a snippet (or a burst of a
#: tenant's runs) making requests the host answers at once, each of which would otherwise give the key's next waiting
#: run a place of its own, until every concurrent run of the key computes in an instance of its own.
HOST_WAIT_GRACE_SECONDS: Final = 0.01

#: A host's hold on what a process serving a key keeps (e.g. its tenant's memory): called when the process starts,
#: it returns the function that releases the hold, called when the process ends.
Hold = Callable[[], Callable[[], object]]


def default_max_per_key() -> int:
    """Return the default :attr:`InstancePolicy.max_per_key`: the CPUs this process may use, at least 2.

    More instances of one key than CPUs cannot compute at once; each only holds memory (and its owner's allowance)
    while the runs it would serve wait for a CPU anyway (an instance whose run waits on the host does not count,
    see :meth:`InstancePool.waiting_on_host`). Two keep one run's pause that the pool does not see (a sleep, an
    instance being set up) from holding up the key's next run.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        cpus = os.cpu_count() or 1
    return max(2, cpus)


@dataclass(frozen=True, slots=True)
class InstancePolicy:
    """When instances are recycled, and how many may live at once.

    Attributes:
        max_runs: Runs one instance serves before it is recycled.
        idle_seconds: An instance without a run for this long is recycled.
        max_instances: Instances alive at once, over every key; the least recently used idle one makes room for a
            new one, and a run that finds every instance busy runs in a fresh child instead.
        memory_high_water_bytes: Growth of an instance's resident memory, over what it had before its first run,
            that recycles it. With ``max_instances``, this bounds what the instances hold between runs.
        max_per_key: Instances of one key computing at once: alive, less those whose run waits for the host to
            answer a request (:meth:`InstancePool.waiting_on_host`). A run of a key at its cap whose instances are
            all running waits for one (within its wall-clock limit) instead of starting another: concurrent runs
            of one key then share a few processes instead of holding one each, while runs waiting on the host do
            not hold up the others (default: :func:`default_max_per_key`).
    """

    max_runs: int = 1000
    idle_seconds: float = 60.0
    max_instances: int = 16
    memory_high_water_bytes: int = 64 * MIB
    max_per_key: int = field(default_factory=default_max_per_key)

    def __post_init__(self) -> None:
        for name in ("max_runs", "idle_seconds", "max_instances", "memory_high_water_bytes", "max_per_key"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"Instance policy {name!r} must be a positive number, got {value!r}.")


@dataclass(frozen=True, slots=True)
class ProcessState:
    """What the host reads of an instance in ``/proc`` before its first run and after each one."""

    threads: int
    resident_bytes: int
    signals: tuple[bytes, bytes, bytes]  # SigBlk, SigIgn, SigCgt: a handler or an ignored signal would outlive the run
    descriptors: int | None  # None when /proc/<pid>/fd is not readable (a non-root host, a non-dumpable child)


class StateReader:
    """Reads one process's :class:`ProcessState` through descriptors of its ``/proc`` files, opened once.

    Read on every run of an instance, on its caller's latency: a ``pread`` of the kept ``status`` descriptor and an
    ``fstat`` of the kept ``fd`` directory are two system calls where opening, reading and listing both by path took
    a dozen, each releasing the GIL to the server's other threads and waiting to get it back. A kept descriptor also
    names the process itself, never a later one given its pid: once it has exited every read fails.
    """

    def __init__(self, pid: int) -> None:
        """Open *pid*'s ``/proc`` files (raises OSError when it is gone or ``/proc`` cannot be read)."""
        self._status = os.open(b"/proc/%d/status" % pid, os.O_RDONLY | os.O_CLOEXEC)
        self._fds: int | None = None
        self._sized_listing = False
        try:
            fds = os.open(b"/proc/%d/fd" % pid, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:  # not readable: a non-root host, a non-dumpable child
            return
        try:
            listed, size = len(os.listdir(fds)), os.fstat(fds).st_size
        except OSError:
            os.close(fds)
            return
        self._fds = fds
        # Linux 6.2 and later give the count as the directory's size (older kernels 0): compared at the baseline,
        # when the child waits for the host and its descriptors stay as they are.
        self._sized_listing = listed > 0 and size == listed

    def read(self) -> ProcessState | None:
        """Return the process's state now, or None when it is gone or its state cannot be read."""
        try:
            status = os.pread(self._status, 16384, 0)

            def field(name: bytes) -> bytes:
                start = status.index(name) + len(name)
                return status[start : status.index(b"\n", start)].strip()

            threads = int(field(b"\nThreads:"))
            resident_bytes = int(field(b"\nVmRSS:").split()[0]) * 1024
            signals = (field(b"\nSigBlk:"), field(b"\nSigIgn:"), field(b"\nSigCgt:"))
        except (OSError, ValueError, IndexError):
            return None
        descriptors: int | None = None
        if self._fds is not None:
            try:
                descriptors = self._count_descriptors(self._fds)
            except OSError:
                return None  # readable before its first run: an unreadable listing now is a changed process
        return ProcessState(threads, resident_bytes, signals, descriptors)

    def _count_descriptors(self, fds: int) -> int:
        # One fstat() where it gives the count, instead of a listing whose every readdir() releases the GIL.
        if self._sized_listing:
            return os.fstat(fds).st_size
        return len(os.listdir(fds))

    def close(self) -> None:
        """Close the kept descriptors."""
        for fd in (self._status, self._fds):
            if fd is not None:
                os.close(fd)
        self._fds = None


def read_state(pid: int) -> tuple[StateReader, ProcessState] | None:
    """Open a :class:`StateReader` of *pid* and read its state; None when it is gone or ``/proc`` cannot be read."""
    try:
        reader = StateReader(pid)
    except OSError:
        return None
    state = reader.read()
    if state is None:
        reader.close()
        return None
    return reader, state


def changed_since(before: ProcessState, after: ProcessState | None, policy: InstancePolicy) -> str | None:
    """Return why an instance in state *after* must not serve another run (None when it may)."""
    if after is None:
        return "its state cannot be read"
    if after.threads != before.threads:
        return f"it has {after.threads} threads, {before.threads} before its first run"
    if after.signals != before.signals:
        return "its signal mask, ignored signals or handlers changed"
    if after.descriptors is not None and before.descriptors is not None and after.descriptors > before.descriptors:
        return f"it holds {after.descriptors} open descriptors, {before.descriptors} before its first run"
    if after.resident_bytes - before.resident_bytes > policy.memory_high_water_bytes:
        grown = (after.resident_bytes - before.resident_bytes) // MIB
        return f"its resident memory grew by {grown} MiB, over the high-water mark"
    return None


@dataclass(eq=False)
class Instance:
    """One live instance: its child process, its key, and what it looked like before its first run."""

    key: PoolKey
    child: ChildProcess
    baseline: ProcessState | None = None  # read when it reports ready, before its first snippet code runs
    reader: StateReader | None = None  # reads its state after each run (opened with the baseline's read)
    release: Callable[[], object] | None = None  # ends the host's hold for it (see Hold)
    hold: Hold | None = None  # takes the host's hold for a replacement started ahead of its recycling
    runs: int = 0
    last_used: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        """Process id of the instance's child."""
        return self.child.pid

    def read_baseline(self) -> None:
        """Read the state the instance must keep (when it reports ready, before any snippet code ran in it)."""
        found = read_state(self.pid)
        if found is not None:
            self.reader, self.baseline = found

    def close_reader(self) -> None:
        """Close the descriptors that read its state (when it ends, or is not kept after its first run)."""
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.close()

    @property
    def usable(self) -> bool:
        """False once the child exited or its zygote died (it then cannot serve another run)."""
        # Checked on every run, under the pool's lock: no system call (which would release the GIL while holding it).
        return not self.child.exited.is_set() and self.child.zygote.reported_alive

    def close(self) -> None:
        """Kill the instance's process (through its zygote) and release the host's hold for it."""
        self.child.sock.close()
        self.child.kill()
        self.close_reader()
        release, self.release = self.release, None
        if release is not None:
            try:
                release()
            except Exception:
                _LOGGER.exception("Releasing the host's hold of sandbox instance %d failed.", self.pid)


class Placement(enum.Enum):
    """What :meth:`InstancePool.acquire` tells a run that gets no idle instance."""

    #: A place for a new instance of the key is counted: start one (or give the place back with
    #: :meth:`InstancePool.unreserve`).
    START = "start"
    #: Every instance of the pool is running and it is full: run in a fresh child instead.
    FRESH = "fresh"
    #: The key's instances stayed busy until the caller's deadline.
    TIMED_OUT = "timed out"


#: What a waiting run leaves for the run that hands it an instance: a call that starts the waiting run on that
#: instance at once (sends its order), returning False when it could not (the instance is then recycled).
Starter = Callable[[Instance], bool]


class _Waiter:
    """A run waiting for an instance of its key: the pool hands it one (or a place to start one) directly."""

    __slots__ = ("grant", "start", "wake")

    def __init__(self, start: Starter | None) -> None:
        self.grant: Instance | Placement | None = None
        self.start = start
        self.wake = threading.Lock()
        self.wake.acquire()  # released by whoever grants; the waiter blocks acquiring it again


class _HostWait:
    """One run's wait for the host's answer (:meth:`InstancePool.waiting_on_host`)."""

    __slots__ = ("since", "spent")

    def __init__(self, since: float) -> None:
        self.since = since  # time.monotonic() when it began
        self.spent = False  # its place went to a fresh child, which no count of the pool holds


class InstancePool:
    """The live instances, idle ones by key, with a cap per key, LRU eviction and an idle reaper thread.

    Thread-safe. A run :meth:`acquire`\\ s an idle instance of its key, a place to start one, or waits (in line
    with the key's other waiting runs) while the key has ``max_per_key`` instances computing; it hands an instance
    back with :meth:`put_back` (to the first waiting run, if any) or ends it with :meth:`discard`. While a run
    waits for the host to answer a request it is :meth:`waiting_on_host`, and its instance does not count.
    """

    def __init__(self, policy: InstancePolicy) -> None:
        self.policy = policy
        self._lock = threading.Condition()
        self._idle: collections.OrderedDict[Instance, None] = collections.OrderedDict()  # least recently used first
        self._live = 0
        self._per_key: dict[PoolKey, int] = {}  # live instances (idle, running or starting) of each key
        self._on_host: dict[PoolKey, list[_HostWait]] = {}  # each key's instances waiting for the host's answer
        self._waiters: dict[PoolKey, collections.deque[_Waiter]] = {}
        self._closed = False
        self._reaper: threading.Thread | None = None

    @property
    def live(self) -> int:
        """Instances alive now (idle or running)."""
        with self._lock:
            return self._live

    def live_of(self, key: PoolKey) -> int:
        """Instances of *key* alive now, idle, running or starting (for monitoring and tests)."""
        with self._lock:
            return self._per_key.get(key, 0)

    def waiting_of(self, key: PoolKey) -> int:
        """Runs of *key* waiting in line for an instance now (for monitoring and tests)."""
        with self._lock:
            return len(self._waiters.get(key, ()))

    def idle_pids(self, key: PoolKey) -> list[int]:
        """Process ids of *key*'s idle instances (for monitoring and tests)."""
        with self._lock:
            return [instance.pid for instance in self._idle if instance.key == key]

    def take(self, key: PoolKey) -> Instance | None:
        """Return the most recently used idle instance of *key*, or None when it has none (never waits)."""
        with self._lock:
            found, doomed = self._take_idle(key)
        for instance in doomed:
            instance.close()
        return found

    def acquire(self, key: PoolKey, *, deadline: float, start: Starter | None = None) -> Instance | Placement:
        """Return an idle instance of *key*, or the :class:`Placement` that says what the run does instead.

        A key with ``max_per_key`` instances computing, all running, makes the run wait until one is handed back,
        ended or :meth:`waiting_on_host` (either gives the waiting run a place), first come first served, until
        *deadline* (``time.monotonic()``).
        An instance handed back to a waiting run is first given to *start*, in the thread that hands it back: the
        instance then works on the waiting run while its thread wakes up (which can take a while on a busy host),
        and the instance this returns has started the run.
        """
        evicted: Instance | None = None
        waiter: _Waiter | None = None
        with self._lock:
            found, doomed = self._take_idle(key)
            if found is not None or self._closed:
                grant: Instance | Placement = found if found is not None else Placement.FRESH
            elif self._computing(key) < self.policy.max_per_key:
                grant, evicted = self._reserve(key)
            else:
                waiter = _Waiter(start)
                self._waiters.setdefault(key, collections.deque()).append(waiter)
                if key in self._on_host:
                    self._lock.notify_all()  # the reaper gives this run a place when a wait's grace ends
        for instance in [*doomed, *([evicted] if evicted is not None else [])]:
            instance.close()
        if waiter is None:
            return grant
        if not waiter.wake.acquire(timeout=max(0.0, deadline - time.monotonic())):
            with self._lock:
                line = self._waiters.get(key)
                if line is not None and waiter in line:  # never granted: leave the line
                    line.remove(waiter)
                    if not line:
                        del self._waiters[key]
                    return Placement.TIMED_OUT
            waiter.wake.acquire()  # taken from the line by a run handing an instance back: its grant comes at once
        assert waiter.grant is not None  # set before wake was released
        return waiter.grant

    def reserve_replacement(self, key: PoolKey) -> bool:
        """Count a new instance of *key* beyond ``max_per_key``, to replace one that is about to be recycled while
        runs of the key wait: set up ahead, it takes their next run without a gap. At most one at a time per key;
        returns False (nothing counted) when the key has one coming, no run waits, or the pool is full of running
        instances. The count returns under the cap when the old instance is recycled. (The count is the key's
        instances computing, as for every check against ``max_per_key``.)
        """
        evicted: Instance | None = None
        with self._lock:
            if self._closed or not self._waiters.get(key) or self._computing(key) > self.policy.max_per_key:
                return False
            placement, evicted = self._reserve(key)
        if evicted is not None:
            evicted.close()
        return placement is Placement.START

    @contextlib.contextmanager
    def waiting_on_host(self, key: PoolKey) -> Iterator[None]:
        """Within this block, a run of an instance of *key* waits for the host to answer its request: once it has
        waited :data:`HOST_WAIT_GRACE_SECONDS`, the instance does not count against ``max_per_key``, and the key's
        first waiting run gets a place to start another (as from :meth:`acquire`: subject to ``max_instances``, a
        fresh child when every instance is running). The reaper thread gives that place.

        When the block ends the instance counts again, the key perhaps over its cap for a while: no run of the key
        gets a place to start an instance until it is back under it.
        """
        wait = _HostWait(time.monotonic())
        with self._lock:
            self._on_host.setdefault(key, []).append(wait)
            if self._waiters.get(key):
                self._lock.notify_all()  # the reaper's next wake-up is this wait's end of grace
        try:
            yield
        finally:
            with self._lock:
                waits = self._on_host[key]
                waits.remove(wait)  # by identity: _HostWait has no __eq__
                if not waits:
                    del self._on_host[key]

    def unreserve(self, key: PoolKey) -> None:
        """Give back a :data:`Placement.START` that did not become an instance (to the first waiting run, if any)."""
        with self._lock:
            self._free_place(key)

    def put_back(self, instance: Instance) -> None:
        """Make *instance* ready for its key's next run: the first waiting run gets it (started), or it goes idle."""
        instance.last_used = time.monotonic()
        with self._lock:
            if self._closed:
                self._forget(instance.key, 1)
                waiter = None
            else:
                waiter = self._next_waiter(instance.key)
                if waiter is None:
                    self._idle[instance] = None
                    return
        if waiter is None:
            instance.close()
            return
        # Outside the lock: starting the waiting run is a system call.
        if waiter.start is None or waiter.start(instance):
            waiter.grant = instance
        else:  # it did not take the order: recycled, and its place goes to the waiting run
            _LOGGER.debug("Sandbox instance %d recycled: it did not take a run's order.", instance.pid)
            instance.close()
            waiter.grant = Placement.START
        waiter.wake.release()

    def discard(self, instance: Instance, why: str) -> None:
        """Recycle *instance*: kill its process and free its place (the first waiting run of its key gets it)."""
        _LOGGER.debug("Sandbox instance %d recycled after %d runs: %s.", instance.pid, instance.runs, why)
        with self._lock:
            self._free_place(instance.key)
        instance.close()

    def end_idle(self, match: Callable[[Hashable], bool]) -> int:
        """Recycle the idle instances whose host key *match* accepts (a host reclaiming what they hold); return how
        many."""
        with self._lock:
            doomed = [instance for instance in self._idle if match(instance.key[0])]
            self._drop_idle(doomed)
        for instance in doomed:
            instance.close()
        return len(doomed)

    def close(self) -> None:
        """Recycle every idle instance and stop the reaper; running ones are recycled when their run ends, and
        waiting runs run in fresh children."""
        with self._lock:
            self._closed = True
            idle = list(self._idle)
            self._drop_idle(idle)
            for line in self._waiters.values():
                for waiter in line:
                    waiter.grant = Placement.FRESH
                    waiter.wake.release()
            self._waiters.clear()
            self._lock.notify_all()
        for instance in idle:
            instance.close()

    # -- under self._lock ---------------------------------------------------------------------------------------
    def _take_idle(self, key: PoolKey) -> tuple[Instance | None, list[Instance]]:
        """Pop the most recently used usable idle instance of *key*; also return the unusable ones met (to close)."""
        doomed: list[Instance] = []
        for instance in reversed(self._idle):
            if instance.key == key:
                del self._idle[instance]
                if instance.usable:
                    return instance, doomed
                self._forget(key, 1)
                doomed.append(instance)
        return None, doomed

    def _reserve(self, key: PoolKey) -> tuple[Placement, Instance | None]:
        """Count a new instance of *key*, evicting the least recently used idle one if the pool is full."""
        evicted: Instance | None = None
        if self._live >= self.policy.max_instances:
            if not self._idle:
                return Placement.FRESH, None
            evicted, _ = self._idle.popitem(last=False)
            self._forget(evicted.key, 1)
        self._live += 1
        self._per_key[key] = self._per_key.get(key, 0) + 1
        self._start_reaper()
        return Placement.START, evicted

    def _computing(self, key: PoolKey) -> int:
        """The instances of *key* that count against ``max_per_key``: live ones, less those that have waited on the
        host for :data:`HOST_WAIT_GRACE_SECONDS`."""
        return self._per_key.get(key, 0) - len(self._freeing(key))

    def _freeing(self, key: PoolKey) -> list[_HostWait]:
        """The waits on the host of *key* past their grace whose place no fresh child took: each frees a place."""
        waits = self._on_host.get(key)
        if not waits:
            return []
        graced = time.monotonic() - HOST_WAIT_GRACE_SECONDS
        return [wait for wait in waits if wait.since <= graced and not wait.spent]

    def _grant_to_waiting(self) -> list[Instance]:
        """Give a place to the first waiting runs of each key while its instances waiting on the host past their
        grace leave it under ``max_per_key``; return the idle instances evicted for them (to close)."""
        evicted: list[Instance] = []
        for key in [key for key in self._on_host if self._waiters.get(key)]:
            while not self._closed and self._computing(key) < self.policy.max_per_key:
                waiter = self._next_waiter(key)
                if waiter is None:
                    break
                waiter.grant, dropped = self._reserve(key)
                waiter.wake.release()
                if dropped is not None:
                    evicted.append(dropped)
                if waiter.grant is Placement.FRESH and not self._spend(key):
                    break
        return evicted

    def _spend(self, key: PoolKey) -> bool:
        """Mark a wait of *key* past its grace as the one whose place a fresh child (counted nowhere) took; return
        False when there is none."""
        freeing = self._freeing(key)
        if freeing:
            freeing[0].spent = True
        return bool(freeing)

    def _until_grace_ends(self, longest: float) -> float:
        """Seconds until the grace of a wait on the host ends for a key with waiting runs (at most *longest*)."""
        now = time.monotonic()
        ends = [
            wait.since + HOST_WAIT_GRACE_SECONDS - now
            for key, waits in self._on_host.items()
            if self._waiters.get(key)
            for wait in waits
            if wait.since + HOST_WAIT_GRACE_SECONDS > now
        ]
        return min([longest, *ends])

    def _next_waiter(self, key: PoolKey) -> _Waiter | None:
        line = self._waiters.get(key)
        if not line:
            return None
        waiter = line.popleft()
        if not line:
            del self._waiters[key]
        return waiter

    def _free_place(self, key: PoolKey) -> None:
        """A place of *key* came free: the first waiting run starts an instance in it, or it is forgotten (always,
        when it was a place beyond the cap: a replacement set up ahead took over)."""
        within_cap = self._computing(key) <= self.policy.max_per_key
        waiter = None if self._closed or not within_cap else self._next_waiter(key)
        if waiter is not None:
            waiter.grant = Placement.START  # the place (counted in _live and _per_key) passes to the waiter
            waiter.wake.release()
        else:
            self._forget(key, 1)

    def _forget(self, key: PoolKey, count: int) -> None:
        self._live -= count
        left = self._per_key.get(key, 0) - count
        if left > 0:
            self._per_key[key] = left
        else:
            self._per_key.pop(key, None)

    def _drop_idle(self, doomed: list[Instance]) -> None:
        for instance in doomed:
            del self._idle[instance]
            self._forget(instance.key, 1)

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="sandbox-instance-reaper", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        """Recycle instances idle for longer than ``idle_seconds`` (checked a few times per idle period), and give
        waiting runs the places of instances whose wait on the host outlasted its grace."""
        period = min(1.0, self.policy.idle_seconds / 4)
        while True:
            with self._lock:
                if self._closed:
                    self._reaper = None
                    return
                evicted = self._grant_to_waiting()
                if not evicted:
                    self._lock.wait(self._until_grace_ends(period))
                    evicted = self._grant_to_waiting()
                oldest = time.monotonic() - self.policy.idle_seconds
                stale = [instance for instance in self._idle if instance.last_used < oldest or not instance.usable]
                self._drop_idle(stale)
            for instance in [*evicted, *stale]:
                instance.close()

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
or when the pool needs room for another key (least recently used first).

Threat bound: a snippet that escaped the language wall inside an instance can leave state in that process for
the same key's later runs (the same tenant's same script and version) until the instance is recycled; it never
reaches another key's runs, and secrets never enter the process (the host answers its requests).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Final

from sandbox.limits import MIB, Limits
from sandbox.pool import ChildProcess

_LOGGER: Final = logging.getLogger(__name__)

#: What the pool keys instances by: the host's key and the limits the instance's first order set for its life.
PoolKey = tuple[Hashable, Limits]

#: A host's hold on what a process serving a key keeps (e.g. its tenant's memory): called when the process starts,
#: it returns the function that releases the hold, called when the process ends.
Hold = Callable[[], Callable[[], object]]


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
    """

    max_runs: int = 1000
    idle_seconds: float = 60.0
    max_instances: int = 16
    memory_high_water_bytes: int = 64 * MIB

    def __post_init__(self) -> None:
        for name in ("max_runs", "idle_seconds", "max_instances", "memory_high_water_bytes"):
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


def read_state(pid: int) -> ProcessState | None:
    """Return *pid*'s :class:`ProcessState`, or None when it is gone or ``/proc`` cannot be read.

    Read on every run of an instance, on its caller's latency: raw ``os`` calls and byte searches take about 30 µs
    where a file object and a dict of every line take 70.
    """
    try:
        fd = os.open(b"/proc/%d/status" % pid, os.O_RDONLY | os.O_CLOEXEC)
        try:
            status = os.read(fd, 16384)
        finally:
            os.close(fd)

        def field(name: bytes) -> bytes:
            start = status.index(name) + len(name)
            return status[start : status.index(b"\n", start)].strip()

        threads = int(field(b"\nThreads:"))
        resident_bytes = int(field(b"\nVmRSS:").split()[0]) * 1024
        signals = (field(b"\nSigBlk:"), field(b"\nSigIgn:"), field(b"\nSigCgt:"))
    except (OSError, ValueError, IndexError):
        return None
    try:
        descriptors: int | None = len(os.listdir(b"/proc/%d/fd" % pid))
    except OSError:
        descriptors = None
    return ProcessState(threads, resident_bytes, signals, descriptors)


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
    release: Callable[[], object] | None = None  # ends the host's hold for it (see Hold)
    runs: int = 0
    last_used: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        """Process id of the instance's child."""
        return self.child.pid

    @property
    def usable(self) -> bool:
        """False once the child exited or its zygote died (it then cannot serve another run)."""
        return not self.child.exited.is_set() and self.child.zygote.alive

    def close(self) -> None:
        """Kill the instance's process (through its zygote) and release the host's hold for it."""
        self.child.sock.close()
        self.child.kill()
        release, self.release = self.release, None
        if release is not None:
            try:
                release()
            except Exception:
                _LOGGER.exception("Releasing the host's hold of sandbox instance %d failed.", self.pid)


class InstancePool:
    """The live instances, idle ones by key, with LRU eviction and an idle reaper thread.

    Thread-safe. A run :meth:`take`\\ s an idle instance of its key (or learns it must start one, after
    :meth:`reserve` made room), and hands it back with :meth:`put_back` or ends it with :meth:`discard`.
    """

    def __init__(self, policy: InstancePolicy) -> None:
        self.policy = policy
        self._lock = threading.Condition()
        self._idle: collections.OrderedDict[Instance, None] = collections.OrderedDict()  # least recently used first
        self._live = 0
        self._closed = False
        self._reaper: threading.Thread | None = None

    @property
    def live(self) -> int:
        """Instances alive now (idle or running)."""
        with self._lock:
            return self._live

    def idle_pids(self, key: PoolKey) -> list[int]:
        """Process ids of *key*'s idle instances (for monitoring and tests)."""
        with self._lock:
            return [instance.pid for instance in self._idle if instance.key == key]

    def take(self, key: PoolKey) -> Instance | None:
        """Return the most recently used idle instance of *key*, or None when it has none."""
        doomed: list[Instance] = []
        found: Instance | None = None
        with self._lock:
            for instance in reversed(self._idle):
                if instance.key == key:
                    del self._idle[instance]
                    if instance.usable:
                        found = instance
                        break
                    self._live -= 1
                    doomed.append(instance)
        for instance in doomed:
            instance.close()
        return found

    def reserve(self) -> bool:
        """Count one more live instance, evicting the least recently used idle one if the pool is full.

        Returns False (nothing counted) when every instance is running: the caller then runs in a fresh child.
        """
        evicted: Instance | None = None
        with self._lock:
            if self._closed:
                return False
            if self._live >= self.policy.max_instances:
                if not self._idle:
                    return False
                evicted, _ = self._idle.popitem(last=False)
                self._live -= 1
            self._live += 1
            self._start_reaper()
        if evicted is not None:
            evicted.close()
        return True

    def unreserve(self) -> None:
        """Give back a :meth:`reserve` that did not become an instance."""
        with self._lock:
            self._live -= 1

    def put_back(self, instance: Instance) -> None:
        """Make *instance* idle again, ready for its key's next run."""
        instance.last_used = time.monotonic()
        with self._lock:
            if not self._closed:
                self._idle[instance] = None
                return
            self._live -= 1
        instance.close()

    def discard(self, instance: Instance, why: str) -> None:
        """Recycle *instance*: kill its process and free its place."""
        _LOGGER.debug("Sandbox instance %d recycled after %d runs: %s.", instance.pid, instance.runs, why)
        with self._lock:
            self._live -= 1
        instance.close()

    def end_idle(self, match: Callable[[Hashable], bool]) -> int:
        """Recycle the idle instances whose host key *match* accepts (a host reclaiming what they hold); return how
        many."""
        with self._lock:
            doomed = [instance for instance in self._idle if match(instance.key[0])]
            for instance in doomed:
                del self._idle[instance]
            self._live -= len(doomed)
        for instance in doomed:
            instance.close()
        return len(doomed)

    def close(self) -> None:
        """Recycle every idle instance and stop the reaper; running ones are recycled when their run ends."""
        with self._lock:
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
            self._live -= len(idle)
            self._lock.notify_all()
        for instance in idle:
            instance.close()

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="sandbox-instance-reaper", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        """Recycle instances idle for longer than ``idle_seconds`` (checked a few times per idle period)."""
        period = min(1.0, self.policy.idle_seconds / 4)
        while True:
            with self._lock:
                if self._closed:
                    self._reaper = None
                    return
                self._lock.wait(period)
                oldest = time.monotonic() - self.policy.idle_seconds
                stale = [instance for instance in self._idle if instance.last_used < oldest or not instance.usable]
                for instance in stale:
                    del self._idle[instance]
                self._live -= len(stale)
            for instance in stale:
                instance.close()

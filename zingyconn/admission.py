"""Aggregate limits per tenant: how many runs one tenant may have at once, and how much memory they may hold together.

Every run (webhook, task, console, command) is admitted by :class:`TenantSlots` before it starts and holds a *slot*
until it ends. A slot is a file in the data directory locked with ``flock``: the lock belongs to the open file, so it
is shared by every thread and process on the machine using the same data directory, and the kernel drops it when
the holder dies (``kill -9`` frees its slots at once; nothing is leased, nothing needs reaping). Each held slot
records the memory limit of its run; a short per-tenant lock around admission makes "count the busy slots, add
their memory, take a free one" one step.

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
import time
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
#: How often a waiting caller looks for room (each look opens the tenant's slot files once).
POLL_SECONDS: Final = 0.02


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


class TenantSlots:
    """Admit runs under each tenant's :class:`TenantLimits`, with ``flock`` slot files in *directory*."""

    def __init__(self, directory: Path, limits: TenantLimits) -> None:
        self.directory = directory
        self.limits = limits

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
        self._check_fits(tenant, memory_bytes)
        slot = self._poll(functools.partial(self._take, tenant, memory_bytes), wait=wait)
        try:
            yield
        finally:
            os.close(slot)  # closing the file drops its lock

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
        self._check_fits(tenant, memory_bytes)
        slot = self._poll(functools.partial(self._take, tenant, memory_bytes, hold=True), wait=wait)
        return functools.partial(os.close, slot)  # closing the file drops its lock

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

    def _take(self, tenant: str, memory_bytes: int, *, hold: bool = False) -> int:
        """Return the descriptor of a free slot of *tenant* (a memory hold's with *hold*), locked and stamped with
        *memory_bytes*."""
        stem = self._stem(tenant)
        mutex = self._open(stem.with_suffix(".lock"))
        try:
            fcntl.flock(mutex, fcntl.LOCK_EX)  # held for microseconds; dropped by the kernel if we die holding it
            free: int | None = None
            try:
                busy, held_bytes = 0, 0
                for index in range(self.limits.max_runs):
                    slot = self._open(stem.with_suffix(f".{index}"))
                    try:
                        fcntl.flock(slot, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        busy += 1
                        held_bytes += _stamped_bytes(slot)
                        os.close(slot)
                        continue
                    if free is None and not hold:
                        free = slot
                    else:
                        os.close(slot)
                holds, hold_bytes, free_hold = self._held(stem, create=hold)
                held_bytes += hold_bytes
                if hold:
                    free, busy = free_hold, holds
                elif free_hold is not None:
                    os.close(free_hold)
                if free is None or held_bytes + memory_bytes > self.limits.max_memory_bytes:
                    raise TenantBusyError(self._refusal(tenant, busy, held_bytes, memory_bytes, hold=hold))
                # Fixed width, written in place: truncating first cost 1.6 ms a run on ext4 (freeing the block).
                os.pwrite(free, b"%0*d" % (STAMP_BYTES, memory_bytes), 0)
            except BaseException:
                # The slot found free stays locked while its descriptor is open: a later slot file that cannot be
                # opened (EMFILE, a full or read-only disk) must not leave it held for the life of the process.
                if free is not None:
                    os.close(free)
                raise
            return free
        finally:
            os.close(mutex)

    def _held(self, stem: Path, *, create: bool) -> tuple[int, int, int | None]:
        """Return the memory holds of the tenant at *stem*: how many are held, their bytes, and a free one, locked.

        Hold files are taken lowest first and never removed, so the scan stops at the first missing one unless
        *create* (a new hold is being taken): a tenant without warm instances costs one failed ``open``.
        """
        held, held_bytes, free = 0, 0, None
        for index in range(MAX_MEMORY_HOLDS):
            path = stem.with_suffix(f".hold{index}")
            if create:
                slot = self._open(path)
            else:
                try:
                    slot = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                except FileNotFoundError:
                    break
                except OSError as exc:
                    raise self._unusable(exc) from None
            try:
                fcntl.flock(slot, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held += 1
                held_bytes += _stamped_bytes(slot)
                os.close(slot)
                continue
            if free is None and create:
                free = slot
            else:
                os.close(slot)
        return held, held_bytes, free

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

    def _open(self, path: Path) -> int:
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


def _stamped_bytes(slot: int) -> int:
    """Return the memory a busy slot's holder stamped on it (0 when it is being written or unreadable)."""
    try:
        return int(os.pread(slot, STAMP_BYTES, 0) or b"0")
    except (OSError, ValueError):
        return 0

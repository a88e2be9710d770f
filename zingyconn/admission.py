"""Aggregate limits per tenant: how many runs one tenant may have at once, and how much memory they may hold together.

Every run (webhook, task, console, command) is admitted by :class:`TenantSlots` before it starts and holds a *slot*
until it ends. A slot is a file in the data directory locked with ``flock``: the lock belongs to the open file, so it
is shared by every thread and process on the machine using the same data directory, and the kernel drops it when
the holder dies (``kill -9`` frees its slots at once; nothing is leased, nothing needs reaping). Each held slot
records the memory limit of its run; a short per-tenant lock around admission makes "count the busy slots, add
their memory, take a free one" one step.

Threat: one tenant's flood of webhooks, tasks and console runs holding every sandbox child, and gigabytes of memory,
so that other tenants' runs wait or the machine swaps. Limit: the count is per machine (per data directory); with
several machines on one database, each enforces its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from zingyconn.config import Settings
from zingyconn.errors import ConfigurationError, TenantBusyError, ValidationError

MIB: Final = 1024 * 1024
#: Width of the memory stamp in a slot file (decimal digits, zero-padded).
STAMP_BYTES: Final = 20
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
        limits = self.limits
        if memory_bytes > limits.max_memory_bytes:
            raise ValidationError(
                f"A run with a memory limit of {memory_bytes // MIB} MiB can never start: all of tenant {tenant!r}'s "
                f"runs together may hold {limits.max_memory_bytes // MIB} MiB. Lower memory_bytes, or raise "
                "ZINGYCONN_TENANT_MAX_MEMORY_MB.",
                field="memory_bytes",
            )
        give_up = time.monotonic() + (limits.wait_seconds if wait else 0.0)
        while True:
            try:
                slot = self._take(tenant, memory_bytes)
                break
            except TenantBusyError:
                if time.monotonic() + POLL_SECONDS > give_up:
                    raise
                # Jitter (not security): waiters do not poll in step.
                time.sleep(POLL_SECONDS * random.uniform(0.5, 1.5))  # noqa: S311
        try:
            yield
        finally:
            os.close(slot)  # closing the file drops its lock

    def _take(self, tenant: str, memory_bytes: int) -> int:
        """Return the descriptor of a free slot of *tenant*, locked and stamped with *memory_bytes*."""
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
                    if free is None:
                        free = slot
                    else:
                        os.close(slot)
                if free is None or held_bytes + memory_bytes > self.limits.max_memory_bytes:
                    raise TenantBusyError(self._refusal(tenant, busy, held_bytes, memory_bytes))
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

    def _refusal(self, tenant: str, busy: int, held_bytes: int, memory_bytes: int) -> str:
        limits = self.limits
        if busy >= limits.max_runs:
            why = f"it already has {busy} runs going, its limit (ZINGYCONN_TENANT_MAX_RUNS={limits.max_runs})"
        else:
            why = (
                f"its {busy} runs going hold {held_bytes // MIB} MiB and this one needs {memory_bytes // MIB} MiB "
                f"more, over its limit (ZINGYCONN_TENANT_MAX_MEMORY_MB={limits.max_memory_bytes // MIB})"
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

"""Run slots under faults and contention: no slot leaks on an error, the cap holds across threads and processes,
and the kernel frees a killed process's slots even when it kept its slot files open between runs.

Real ``flock``ed files in a temporary data directory. Two :class:`TenantSlots` on one directory open the files
separately, as two processes do; the faults are a directory standing where a slot file belongs (``os.open`` fails
on it as it would on ``EMFILE`` or a read-only disk), ``SIGKILL`` of a process holding a slot, the data directory
emptied under a running process, and a ``fork`` while a slot is held.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from zingyconn.admission import CACHED_TENANTS, MIB, TenantLimits, TenantSlots
from zingyconn.errors import ConfigurationError, TenantBusyError

ONE_RUN = TenantLimits(max_runs=1, max_memory_bytes=MIB)


def test_a_slot_file_that_cannot_be_opened_leaks_no_slot(tmp_path: Path) -> None:
    """Admission failing on the third slot file leaves none locked: all three runs fit afterwards, for anyone."""
    limits = TenantLimits(max_runs=3, max_memory_bytes=3 * MIB)
    with TenantSlots(tmp_path, limits).admit("acme", memory_bytes=MIB, wait=False):
        pass
    (last,) = tmp_path.glob("*.2")
    last.unlink()
    last.mkdir()  # os.open(O_RDWR) fails on a directory, as on EMFILE or a read-only file system

    slots = TenantSlots(tmp_path, limits)  # a process that has not opened the files yet
    with pytest.raises(ConfigurationError, match="Cannot keep run slots"), slots.admit("acme", memory_bytes=MIB):
        pass

    last.rmdir()
    other = TenantSlots(tmp_path, limits)  # another process: a slot left locked above would be busy for it
    with contextlib.ExitStack() as held:
        for _ in range(3):
            held.enter_context(other.admit("acme", memory_bytes=MIB, wait=False))


def test_a_refused_run_leaves_the_slot_it_found_free_unlocked(tmp_path: Path) -> None:
    """A run refused for memory after finding a free slot leaves that slot free for another process."""
    slots = TenantSlots(tmp_path, TenantLimits(max_runs=2, max_memory_bytes=3 * MIB))
    with slots.admit("acme", memory_bytes=2 * MIB, wait=False):
        with pytest.raises(TenantBusyError), slots.admit("acme", memory_bytes=2 * MIB, wait=False):
            pass
        other = TenantSlots(tmp_path, TenantLimits(max_runs=2, max_memory_bytes=3 * MIB))
        with other.admit("acme", memory_bytes=MIB, wait=False):
            pass


def test_threads_of_two_processes_never_exceed_the_cap(tmp_path: Path) -> None:
    """24 threads on two views of one directory (as two processes) run acme at most 3 at once, and all run."""
    limits = TenantLimits(max_runs=3, max_memory_bytes=3 * MIB, wait_seconds=30)
    views = [TenantSlots(tmp_path, limits), TenantSlots(tmp_path, limits)]
    guard = threading.Lock()
    going, most, ran = 0, 0, 0

    def run(slots: TenantSlots) -> None:
        nonlocal going, most, ran
        for _ in range(10):
            with slots.admit("acme", memory_bytes=MIB):
                with guard:
                    going += 1
                    most = max(most, going)
                time.sleep(0.001)
                with guard:
                    going -= 1
                    ran += 1

    threads = [threading.Thread(target=run, args=(views[index % 2],)) for index in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert (most, ran) == (3, 240)


HOLDER = """
import sys, time
from pathlib import Path
from zingyconn.admission import CACHED_TENANTS, MIB, TenantLimits, TenantSlots
slots = TenantSlots(Path(sys.argv[1]), TenantLimits(max_runs=1, max_memory_bytes=MIB))
with slots.admit("acme", memory_bytes=MIB, wait=False):
    pass
with slots.admit("acme", memory_bytes=MIB, wait=False):  # the slot files kept open from the first run
    print("held", flush=True)
    time.sleep(60)
"""


def test_kill_9_of_a_process_with_kept_slot_files_frees_its_slot_at_once(tmp_path: Path) -> None:
    """A process holding acme's only slot on a kept descriptor is refused to others; SIGKILL frees it at once."""
    slots = TenantSlots(tmp_path, ONE_RUN)
    with slots.admit("acme", memory_bytes=MIB, wait=False):  # this process keeps its files open too
        pass
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(TenantBusyError), slots.admit("acme", memory_bytes=MIB, wait=False):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)

    with slots.admit("acme", memory_bytes=MIB, wait=False):
        pass


def test_a_process_follows_the_slot_files_when_the_data_directory_is_emptied(tmp_path: Path) -> None:
    """After the slot files are deleted and another process takes the new ones, a process with the old ones open
    is refused: it does not lock files nobody else sees."""
    first = TenantSlots(tmp_path / "slots", ONE_RUN)
    with first.admit("acme", memory_bytes=MIB, wait=False):
        pass
    shutil.rmtree(tmp_path / "slots")

    second = TenantSlots(tmp_path / "slots", ONE_RUN)
    with (
        second.admit("acme", memory_bytes=MIB, wait=False),
        pytest.raises(TenantBusyError),
        first.admit("acme", memory_bytes=MIB, wait=False),
    ):
        pass


def test_a_forked_child_releasing_an_inherited_slot_leaves_it_held(tmp_path: Path) -> None:
    """A child forked while acme's only slot is held leaves the block (and exits): the slot stays the parent's."""
    slots = TenantSlots(tmp_path, ONE_RUN)
    with contextlib.ExitStack() as held:
        held.enter_context(slots.admit("acme", memory_bytes=MIB, wait=False))
        child = os.fork()
        if child == 0:  # pragma: no cover (the child's coverage is not collected)
            held.close()
            os._exit(0)
        os.waitpid(child, 0)
        with pytest.raises(TenantBusyError), TenantSlots(tmp_path, ONE_RUN).admit("acme", memory_bytes=MIB):
            pass


def test_memory_holds_count_in_a_process_that_kept_its_files_open_before_they_existed(tmp_path: Path) -> None:
    """Holds another process takes after this one kept acme's slot files open count towards acme's memory here."""
    limits = TenantLimits(max_runs=2, max_memory_bytes=3 * MIB)
    here, there = TenantSlots(tmp_path, limits), TenantSlots(tmp_path, limits)
    with here.admit("acme", memory_bytes=MIB, wait=False):  # kept open: the run slots, and no hold file yet
        pass

    release = there.hold_memory("acme", memory_bytes=2 * MIB, wait=False)
    with pytest.raises(TenantBusyError, match="hold 2 MiB"), here.admit("acme", memory_bytes=2 * MIB, wait=False):
        pass
    release()
    mine = here.hold_memory("acme", memory_bytes=MIB, wait=False)  # the hold file there added, free again
    theirs = there.hold_memory("acme", memory_bytes=MIB, wait=False)  # all held: a second hold file
    with pytest.raises(TenantBusyError, match="hold 2 MiB"), here.admit("acme", memory_bytes=2 * MIB, wait=False):
        pass
    with here.admit("acme", memory_bytes=MIB, wait=False):
        pass
    mine()
    theirs()
    with here.admit("acme", memory_bytes=3 * MIB, wait=False):
        pass


def test_a_slot_held_above_released_ones_still_counts_for_every_process(tmp_path: Path) -> None:
    """Another process holds acme's slots 0-2 and releases 0 and 1: runs taken and ended here since (each moving the
    slots' bound) still count the memory of slot 2 until it is released too."""
    limits = TenantLimits(max_runs=4, max_memory_bytes=4 * MIB)
    here, there = TenantSlots(tmp_path, limits), TenantSlots(tmp_path, limits)
    releases = [there.hold_run("acme", memory_bytes=MIB, wait=False) for _ in range(3)]
    releases[0]()
    releases[1]()
    for _ in range(2):
        with here.admit("acme", memory_bytes=MIB, wait=False):
            pass
    with pytest.raises(TenantBusyError, match="hold 1 MiB"), here.admit("acme", memory_bytes=4 * MIB, wait=False):
        pass
    releases[2]()
    with here.admit("acme", memory_bytes=4 * MIB, wait=False):
        pass


def _slot_3_held_by_a_wide_process(tmp_path: Path) -> tuple[Callable[[], None], TenantSlots, TenantSlots]:
    """A process configured with 4 runs at once holds acme's slots 0-3 and releases 0-2: return the release of
    slot 3, a process configured with 2 and another with 4."""
    wide = TenantLimits(max_runs=4, max_memory_bytes=5 * MIB)
    holder, narrow, third = (
        TenantSlots(tmp_path, wide),
        TenantSlots(tmp_path, TenantLimits(max_runs=2, max_memory_bytes=5 * MIB)),
        TenantSlots(tmp_path, wide),
    )
    releases = [holder.hold_run("acme", memory_bytes=MIB, wait=False) for _ in range(4)]
    for release in releases[:3]:
        release()
    return releases[3], narrow, third


def _slot_3_still_counts(release: Callable[[], None], narrow: TenantSlots, third: TenantSlots) -> None:
    with narrow.admit("acme", memory_bytes=MIB, wait=False):
        pass
    with pytest.raises(TenantBusyError, match="hold 1 MiB"), third.admit("acme", memory_bytes=5 * MIB, wait=False):
        pass
    release()
    with third.admit("acme", memory_bytes=5 * MIB, wait=False):
        pass


def test_a_process_with_fewer_slots_keeps_the_others_held_slots_counted(tmp_path: Path) -> None:
    """A process configured with 2 runs at once admits while one with 4 holds slot 3: a third process with 4 still
    counts slot 3 (the first did not look beyond its own two slots, so it cannot know slot 3 is free)."""
    _slot_3_still_counts(*_slot_3_held_by_a_wide_process(tmp_path))


def test_a_garbled_header_read_by_a_process_with_fewer_slots_keeps_the_others_held_slots_counted(
    tmp_path: Path,
) -> None:
    """The slots' header is garbled while a process with 4 runs at once holds slot 3: a process with 2 (which looks
    at every slot it has, finding none held) must not write a bound that leaves slot 3 out for the others."""
    held = _slot_3_held_by_a_wide_process(tmp_path)
    (mutex,) = tmp_path.glob("*.lock")
    mutex.write_bytes(b"garbled by a crash of the file system")
    _slot_3_still_counts(*held)


def test_a_process_with_fewer_slots_counts_the_memory_of_the_others_slots_beyond_its_own(tmp_path: Path) -> None:
    """A process configured with 4 runs at once holds slot 3 (1 MiB): one configured with 2 counts it towards the
    tenant's memory, though it never takes slot 3 itself."""
    release, narrow, _ = _slot_3_held_by_a_wide_process(tmp_path)
    with pytest.raises(TenantBusyError, match="hold 1 MiB"), narrow.admit("acme", memory_bytes=5 * MIB, wait=False):
        pass
    with pytest.raises(TenantBusyError, match="hold 1 MiB"):
        narrow.hold_memory("acme", memory_bytes=5 * MIB, wait=False)
    release()
    with narrow.admit("acme", memory_bytes=5 * MIB, wait=False):
        pass


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_the_files_kept_open_are_bounded_and_closed_with_the_slots(tmp_path: Path) -> None:
    """Runs of many tenants keep the files of the last CACHED_TENANTS open, not more; close() closes them all."""
    slots = TenantSlots(tmp_path, TenantLimits(max_runs=4, max_memory_bytes=4 * MIB))
    before = _open_descriptors()
    for index in range(3 * CACHED_TENANTS):
        with slots.admit(f"tenant-{index}", memory_bytes=MIB, wait=False):
            pass
    kept = _open_descriptors() - before

    with slots.admit("held", memory_bytes=MIB, wait=False):
        slots.close()
        assert 0 < _open_descriptors() - before <= 5  # the held tenant's files, until it is done
    after = _open_descriptors() - before

    assert kept == CACHED_TENANTS * (4 + 1)  # four slot files and the mutex per tenant
    assert after == 0

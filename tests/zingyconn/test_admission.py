"""Run slots under faults: a slot file that cannot be opened mid-admission must not leave a slot held.

Real ``flock``ed files in a temporary data directory; the fault is a directory standing where a slot file belongs
(``os.open`` fails on it as it would on ``EMFILE`` or a read-only disk).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from zingyconn.admission import MIB, TenantLimits, TenantSlots
from zingyconn.errors import ConfigurationError


def test_a_slot_file_that_cannot_be_opened_leaks_no_slot(tmp_path: Path) -> None:
    """Admission failing on the third slot file frees the first one it had locked: all three runs fit afterwards."""
    slots = TenantSlots(tmp_path, TenantLimits(max_runs=3, max_memory_bytes=3 * MIB))
    with slots.admit("acme", memory_bytes=MIB, wait=False):
        pass
    (last,) = tmp_path.glob("*.2")
    last.unlink()
    last.mkdir()  # os.open(O_RDWR) fails on a directory, as on EMFILE or a read-only file system

    with pytest.raises(ConfigurationError, match="Cannot keep run slots"), slots.admit("acme", memory_bytes=MIB):
        pass

    last.rmdir()
    with contextlib.ExitStack() as held:
        for _ in range(3):  # a slot leaked above would make the third refused with TenantBusyError
            held.enter_context(slots.admit("acme", memory_bytes=MIB, wait=False))

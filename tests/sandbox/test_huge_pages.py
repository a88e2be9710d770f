"""The zygote's heap in huge pages: which mappings qualify, arenas reserved in one mapping, a started zygote's heap."""

from __future__ import annotations

import ctypes
import mmap
from pathlib import Path

import pytest

from sandbox import Sandbox, huge_pages
from sandbox.huge_pages import HUGE_PAGE_BYTES

MAPS = """\
55dab7860000-55dab8156000 rw-p 00000000 00:00 0                          [heap]
7fe722a1c000-7fe72301c000 rw-p 00000000 00:00 0
7fe72306a000-7fe72326a000 rw-p 00000000 00:00 0
7fe723e00000-7fe724200000 r--p 00000000 fe:00 339406                     /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7fe725044000-7fe725178000 rw-p 00443000 fe:00 26933                      /usr/lib/libpython3.11.so.1.0
7fe725400000-7fe725800000 r--p 00000000 00:00 0
7ffd06000000-7ffd06400000 rw-p 00000000 00:00 0                          [stack]
"""


def _mappings() -> list[tuple[int, int, str]]:
    rows = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        low, high = (int(bound, 16) for bound in fields[0].split("-"))
        rows.append((low, high, fields[1]))
    return rows


def _kernel_collapses() -> bool:
    """True when madvise(MADV_COLLAPSE) works here (Linux 6.1+ with transparent huge pages built in)."""
    region = mmap.mmap(-1, 2 * HUGE_PAGE_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        address = ctypes.addressof(ctypes.c_char.from_buffer(region))
        start = -(-address // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES
        region[start - address] = 1
        return huge_pages.collapse([(start, start + HUGE_PAGE_BYTES)]) == HUGE_PAGE_BYTES
    finally:
        region.close()


def test_only_whole_huge_pages_of_private_anonymous_memory_are_collapsible() -> None:
    """The C heap and unnamed rw-p mappings qualify, cut to 2 MiB boundaries; files, the stack, read-only do not."""
    ranges = list(huge_pages.collapsible_ranges(MAPS))

    assert ranges == [
        (0x55DAB7A00000, 0x55DAB8000000),  # [heap], rounded in at both ends
        (0x7FE722C00000, 0x7FE723000000),  # unnamed: CPython's arenas
    ]  # the unaligned 2 MiB mapping holds no whole huge page; libpython's data is a file mapping


def test_reserved_object_memory_is_one_mapping() -> None:
    """The arenas mapped for the reservation lie in one mapping, so that its aligned part can form huge pages."""
    kept = huge_pages.reserve_object_memory(8 << 20)

    owners = {next(row for row in _mappings() if row[0] <= id(obj) < row[1]) for obj in kept}
    # The first objects may fill free room in arenas mapped earlier; the new arenas are all next to each other.
    low, high, permissions = max(owners, key=lambda row: row[1] - row[0])
    assert permissions == "rw-p"
    assert high - low >= 6 << 20


def test_started_zygote_heap_is_in_huge_pages() -> None:
    """A started zygote holds its Python heap in huge pages (a fork copies one entry per 2 MiB of them)."""
    if not _kernel_collapses():
        pytest.skip("this kernel has no MADV_COLLAPSE (Linux 6.1+ with transparent huge pages)")
    with Sandbox(environment="zingyconn.snippet.environment:environment", spare_children=1) as sandbox:
        try:
            rollup = Path(f"/proc/{sandbox.zygote_pid}/smaps_rollup").read_text()
        except PermissionError:
            pytest.skip("the zygote's memory map is not readable by this user (it is not dumpable)")
        fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:]}

    # KiB. About 22 MiB are collapsed; each of the zygote's own writes since (it forked a spare and reported) splits
    # the huge page it lands in back into 4 KiB entries, so only a floor of one huge page is certain.
    assert fields["AnonHugePages"] >= 2 * 1024


def test_a_huge_page_the_kernel_refuses_is_skipped_and_the_next_still_collapsed() -> None:
    """The fallback of a kernel without MADV_COLLAPSE, or without a free huge page, forced with a page it always
    refuses (an unmapped one, first): no error, the page stays as it is, and the next one is still collapsed."""
    region = mmap.mmap(-1, 3 * HUGE_PAGE_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        address = ctypes.addressof(ctypes.c_char.from_buffer(region))
        start = -(-address // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES
        region[start - address] = 1
        refused = (0, HUGE_PAGE_BYTES)  # address 0 is never mapped in a user process

        collapsed = huge_pages.collapse([refused, (start, start + HUGE_PAGE_BYTES)])

        assert collapsed == (HUGE_PAGE_BYTES if _kernel_collapses() else 0)
    finally:
        region.close()

"""The zygote's heap in transparent huge pages, so that each fork and each child's exit handle fewer page entries.

A fork copies one page-table entry per 4 KiB page the zygote has mapped and takes a reference on each page; the
child's exit drops them again. For a zygote of about 30 MiB of Python heap that is some 7 500 entries each way, the
largest part of a fresh child's fixed cost. A 2 MiB huge page is one entry instead of 512, so the zygote asks the
kernel (``madvise(MADV_COLLAPSE)``, Linux 6.1+) to gather its heap into huge pages once its imports are done. A
child's first write to a huge page still copies only the 4 KiB page it writes (the kernel splits the child's entry
first), so a run takes no more copy-on-write work than before.

Huge pages need whole 2 MiB-aligned runs of one mapping. CPython's small-object allocator maps its 1 MiB arenas one
at a time as objects are made, and while the zygote imports, the shared libraries the imports load land between
them: left alone, only a third of the heap forms whole huge pages. So the zygote first has the allocator map
:data:`OBJECT_MEMORY_BYTES` of arenas in one go (:func:`reserve_object_memory`), which its imports then fill.

Only ranges that are already private anonymous memory of the zygote's (CPython's object arenas and the C heap)
are collapsed; nothing is flagged ``MADV_HUGEPAGE``, so a child's own new memory stays in 4 KiB pages (a flagged
heap would give each child 2 MiB pages to clear on its first allocations). Where the kernel has no
``MADV_COLLAPSE``, or no huge page is free, the heap simply stays in 4 KiB pages: nothing depends on it but speed.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from typing import Any, Final

#: Size of a transparent huge page on x86-64 and arm64 (4 KiB base pages).
HUGE_PAGE_BYTES: Final = 2 << 20

#: ``madvise`` advice that collapses a range into huge pages now, whatever the system's THP setting (Linux 6.1).
MADV_COLLAPSE: Final = 25

#: Arenas mapped in one go before the zygote's imports (:func:`reserve_object_memory`). The imports of the zingyconn
#: environment fill about 13 MiB of them; what they leave over stays resident in the zygote (shared by its
#: children, never copied), and what they need beyond it comes in arenas mapped as usual.
OBJECT_MEMORY_BYTES: Final = 16 << 20

#: Bytes of one object made to fill the arenas: with its header, 433 bytes, in pymalloc's size class of 448 (the
#: largest classes fill an arena with the fewest objects).
_FILLER_BYTES: Final = 400

#: One filler object is kept per this many bytes of address space, so that every arena keeps one in use.
_KEPT_EVERY_BYTES: Final = 256 << 10

#: Mappings whose pages may be collapsed: the C heap, and the unnamed ones (CPython's arenas, large allocations).
_ANONYMOUS_NAMES: Final = frozenset({"", "[heap]"})


def collapsible_ranges(maps: str) -> Iterator[tuple[int, int]]:
    """Yield ``(start, end)`` of each run of whole huge pages inside a private anonymous writable mapping.

    *maps* is the text of ``/proc/self/maps``. The stack is left out (it is one thread's, and grows downward).
    """
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 5 or fields[1] != "rw-p" or fields[4] != "0":
            continue
        if (fields[5].strip() if len(fields) == 6 else "") not in _ANONYMOUS_NAMES:
            continue
        low, high = (int(bound, 16) for bound in fields[0].split("-"))
        start = -(-low // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES
        end = high // HUGE_PAGE_BYTES * HUGE_PAGE_BYTES
        if end > start:
            yield start, end


def reserve_object_memory(size_bytes: int = OBJECT_MEMORY_BYTES) -> list[bytes]:
    """Have CPython's small-object allocator map *size_bytes* of arenas next to each other; return what keeps them.

    The arenas are filled with objects made back to back (nothing else is mapped meanwhile, so the arenas form one
    mapping), then all but one object per :data:`_KEPT_EVERY_BYTES` of address space are freed: the allocator
    returns an arena to the system only once all of it is free, so the arenas stay, and their freed pools serve
    the objects made next. The caller keeps the returned objects alive for as long as the process lives.
    """
    count = size_bytes // (_FILLER_BYTES + 48)
    fillers: list[bytes | None] = [None] * count  # sized first: growing it would map its storage between arenas
    for index in range(count):
        fillers[index] = bytes(_FILLER_BYTES)
    kept: dict[int, bytes] = {}
    for filler in fillers:
        if filler is not None:
            kept.setdefault(id(filler) // _KEPT_EVERY_BYTES, filler)
    return list(kept.values())


def _bind_madvise() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):  # pragma: no cover - every Linux libc has madvise
        return None
    function.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    function.restype = ctypes.c_int
    return function


def collapse(ranges: list[tuple[int, int]]) -> int:
    """Collapse each huge page of *ranges* into a transparent huge page; return how many bytes were collapsed.

    Each huge page is asked for on its own, so that one the kernel refuses (memory freed since *ranges* was read,
    no free huge page, a kernel without ``MADV_COLLAPSE``) leaves the others collapsed.
    """
    madvise = _bind_madvise()
    if madvise is None:  # pragma: no cover - see _bind_madvise
        return 0
    collapsed = 0
    for start, end in ranges:
        for page in range(start, end, HUGE_PAGE_BYTES):
            if madvise(page, HUGE_PAGE_BYTES, MADV_COLLAPSE) == 0:
                collapsed += HUGE_PAGE_BYTES
    return collapsed

"""Whose code a run's child is executing, kept where its zygote can still read it after the child died.

A child that dies of a fault signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) leaves no reply, only a wait
status. Snippet code alone can cause such a death: CPython does not count the C recursion of ``hash()``, ``==`` or
``repr()`` on a tuple nested a million deep, which overflows the C stack. Blaming that on the platform
(``WorkerCrashedError``) makes tasks retry it and webhook replays run it again; blaming every crash on the snippet
hides platform bugs. The rule: a fault signal while the child was executing snippet code (the snippet's body, the
library code it called, the conversion of its return value) is the snippet's (``SnippetCrashedError``); one
anywhere else (fork, environment set-up, reading the order, talking to the host, encoding the reply) is the
platform's.

The child writes the phase into a one-byte anonymous shared mapping that the zygote created before the fork; the
zygote reads it after reaping the child and reports it with the exit status. A mapping costs no system call per
phase change (a memory write), and the kernel keeps the page alive for the zygote whatever the child did.
Threat bound: a child whose language wall fell could write its own byte, turning its own crash into a platform one
(its task is then retried within the retry budget) or the reverse; it cannot reach another child's byte: once a
child is forked, the zygote marks its page ``MADV_DONTFORK`` (:meth:`PhaseMarker.forked`), so no later child has it
mapped at all, and nothing needs unmapping after a fork.
"""

from __future__ import annotations

import mmap
import signal
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Final

_PLATFORM: Final = 0
_SNIPPET: Final = 1

#: Signals a process dies of when its own code faults (as opposed to being killed from outside: SIGKILL, SIGTERM).
FAULT_SIGNALS: Final = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT})


class PhaseMarker:
    """One child's phase byte, shared between the zygote (reader) and the child it forks next (writer)."""

    __slots__ = ("_page",)

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, 1)  # anonymous, MAP_SHARED: the forked child writes the zygote's page

    def snippet(self) -> AbstractContextManager[None]:
        """Mark the block as snippet code (nestable: a host call inside marks itself with :meth:`platform`)."""
        return self._marked(_SNIPPET)

    def platform(self) -> AbstractContextManager[None]:
        """Mark the block as platform code even when snippet code called it (a request to the host)."""
        return self._marked(_PLATFORM)

    @contextmanager
    def _marked(self, phase: int) -> Iterator[None]:
        previous = self._page[0]
        self._page[0] = phase
        try:
            yield
        finally:
            self._page[0] = previous

    def forked(self) -> None:
        """In the zygote, once this marker's child is forked: keep the page out of every later fork.

        Threat: a child writing a sibling's byte. A page the kernel does not copy into a fork is one no other child
        can reach, with no unmapping to do in each child (a system call per sibling, on every run's path).
        """
        self._page.madvise(mmap.MADV_DONTFORK)

    @property
    def in_snippet(self) -> bool:
        """True when the last mark (or the child's last write before it died) was snippet code."""
        return self._page[0] == _SNIPPET

    def close(self) -> None:
        """Unmap the page (in the zygote, once its child is reaped)."""
        self._page.close()

"""Compile console snippets in a separate process, so a large source never stalls the server's event loop.

Threat: a tenant admin pasting large, distinct snippets into the runner. ``compile()`` of a 250 KB source holds
the GIL for seconds; in a worker thread it stalls the event loop (and every webhook) just the same. The pool's
process compiles, the server only unmarshals the result into the sandbox's compile cache, so the run or save that
follows finds the snippet compiled. The runner also takes a per-tenant rate (see ``runner``), so one tenant cannot
keep the pool busy for the others.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Final

from starlette.concurrency import run_in_threadpool

from sandbox.compiler import adopt_compiled, compile_to_bytes

#: Sources shorter than this compile in about a millisecond: not worth a round trip to the pool.
POOL_THRESHOLD_CHARS: Final = 4096


class CompilePool:
    """A one-process pool, started on first use (``spawn``: the child shares no lock or thread with the server)."""

    def __init__(self) -> None:
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    async def precompile(self, source: str) -> None:
        """Compile *source* in the pool and cache the outcome (snippet or errors) in this process."""
        if len(source) < POOL_THRESHOLD_CHARS:
            return
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(self._pool(), compile_to_bytes, source)
        except BrokenProcessPool:
            self.close()  # the next call starts a fresh process
            outcome = ("Line 1: The compiler process failed on this snippet; make it smaller or simpler.",)
        await run_in_threadpool(adopt_compiled, source, outcome)

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            return self._executor

    def close(self) -> None:
        """Stop the pool's process (a later call starts a new one)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

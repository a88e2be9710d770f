"""What the HTTP handlers share: the runtime, the stores built on its database, and the server's settings."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from starlette.requests import Request

from zingyconn.catalog import Catalog
from zingyconn.hosts.audit import AuditTrail
from zingyconn.hosts.middleware import DEFAULT_MAX_BODY_BYTES, TenantLimiter
from zingyconn.hosts.replay import ReplayStore
from zingyconn.hosts.signature import PublicUrl
from zingyconn.secrets.tokens import TokenStore

if TYPE_CHECKING:
    from zingyconn.runtime import Runtime

T = TypeVar("T")

#: Worker threads that run snippets (each waits on one sandbox child). A separate pool from Starlette's, so a
#: flood of hanging hooks cannot starve the threads that serve other routes; the per-tenant cap keeps one tenant
#: from taking them all.
DEFAULT_RUN_THREADS: Final = 64
#: Worker threads that parse request bodies and check signatures: few, so that a flood of large hostile bodies
#: queues for them instead of taking CPU (and the GIL) from the event loop and from running snippets.
DEFAULT_PARSE_THREADS: Final = 4


@dataclass(slots=True)
class HostState:
    """Shared by every request of one server process.

    Attributes:
        runtime: Sandbox, store, broker and run history.
        catalog: Hooks and scripts.
        replay: Webhook idempotency records.
        tokens: Tenant API tokens.
        audit: The audit trail the admin API records its changes in.
        public_url: How to rebuild the URL Twilio signed.
        limiter: Per-tenant cap on requests in flight (per process).
        admin_token: Token of the admin API, or ``None`` to disable it.
        max_body_bytes: Request body cap.
        run_threads: The threads that run snippets and store calls (at most :data:`DEFAULT_RUN_THREADS`).
        parse_threads: The threads that parse bodies and check signatures (:data:`DEFAULT_PARSE_THREADS`).
        parse_slots: The same cap, taken inside a worker thread that does more than parse (a webhook's one call).
    """

    runtime: Runtime
    catalog: Catalog
    replay: ReplayStore
    tokens: TokenStore
    audit: AuditTrail
    public_url: PublicUrl = field(default_factory=PublicUrl)
    limiter: TenantLimiter = field(default_factory=TenantLimiter)
    admin_token: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    run_threads: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(DEFAULT_RUN_THREADS, thread_name_prefix="zingyconn-run")
    )
    parse_threads: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(DEFAULT_PARSE_THREADS, thread_name_prefix="zingyconn-parse")
    )
    parse_slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(DEFAULT_PARSE_THREADS)
    )

    async def in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """Call a blocking *function* (database, sandbox) in a worker thread, keeping the event loop free."""
        return await _in_pool(self.run_threads, function, *args)

    async def parse_in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """Call *function* (body parsing, signature checks) in one of the few parsing threads."""
        return await _in_pool(self.parse_threads, function, *args)


async def _in_pool(pool: ThreadPoolExecutor, function: Callable[..., T], *args: Any) -> T:
    """Call *function* in one of *pool*'s threads; a caller cancelled meanwhile still waits for a call under way.

    A plain executor rather than ``anyio.to_thread``: the same hop costs about half the CPU and a fraction of the
    context switches (an idle pool thread takes the next call from one shared queue; anyio wakes one thread per call
    and adds event-loop turns for its cancel scope and limiter). The wait on cancellation keeps anyio's guarantee
    that what the caller holds (a tenant's slot) stays held until the thread is done with the work.
    """
    future = pool.submit(function, *args)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        if not future.cancel():  # it had started: a thread cannot be stopped, so wait for it to finish
            await asyncio.wait([asyncio.wrap_future(future)])
        raise


def host_state(request: Request) -> HostState:
    """Return the :class:`HostState` of the app serving *request*."""
    state: HostState = request.app.state.host
    return state

"""The live tail of a tenant's runs: a page that shows runs as they are recorded, fed by server-sent events.

``GET /t/{tenant}/runs/live/events`` answers ``text/event-stream``: one ``run`` event per run recorded since the
stream opened (id, kind, name, status, duration, version), found by polling the run history. It is authenticated
by the console session like every page (checked again every :data:`RECHECK_SECONDS`, so signing out or revoking
the token ends the stream), and bounded: it closes after :data:`IDLE_SECONDS` without a run or
:data:`MAX_STREAM_SECONDS` in all (the browser's ``EventSource`` reconnects on its own), sends at most
:data:`MAX_EVENTS_PER_POLL` runs a poll, and remembers only the ids of runs inside its look-back window.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from zingyconn.history import RunRecord
from zingyconn.hosts.console import auth
from zingyconn.hosts.console.view import page, render, state_of, when

#: How often the stream looks for new runs.
POLL_SECONDS: Final = 1.0
#: A stream with no new run for this long closes (the browser reconnects if the page is still open).
IDLE_SECONDS: Final = 300.0
#: Longest a stream stays open. Threat: a forgotten tab holding a server connection and a poll loop for days.
MAX_STREAM_SECONDS: Final = 900.0
#: How often the session is checked again (sign-out, token revoked, timeouts end the stream).
RECHECK_SECONDS: Final = 15.0
#: Most runs sent per poll. Threat: a burst of thousands of webhook runs turned into one huge write.
MAX_EVENTS_PER_POLL: Final = 50
#: How far back each poll looks: runs are recorded when they *finish*, with their start time, so a run that
#: started before the newest one seen may still arrive (a task runs up to 300 s).
LOOK_BACK_SECONDS: Final = 330.0
#: Sent as a comment this often when idle, so proxies keep the connection open.
KEEPALIVE_SECONDS: Final = 15.0


def _event(record: RunRecord, url: str) -> str:
    data = {
        "id": record.id,
        "kind": record.kind,
        "name": record.name,
        "status": record.status,
        "started": when(record.started_at),
        "duration_ms": record.duration_ms,
        "version": record.version,
        "url": url,
    }
    return f"event: run\nid: {record.id}\ndata: {json.dumps(data)}\n\n"


@page(nav="runs")
async def live(request: Request, tenant: str, form: FormData) -> Response:
    """The page that shows runs as they arrive (needs JavaScript; the run history works without)."""
    return render(request, "live.html", {"tenant": tenant, "nav": "runs"})


@page(nav="runs")
async def events(request: Request, tenant: str, form: FormData) -> Response:
    """Stream the tenant's new runs as server-sent events (see the module docstring for the bounds)."""
    state = state_of(request)
    history = state.runtime.history
    run_url = str(request.url_for("console_run", tenant=tenant, run_id="RUN_ID"))

    seen: dict[str, float] = {}  # run id -> started_at, inside the look-back window only

    async def poll() -> list[RunRecord]:
        """The runs in the look-back window not sent yet, oldest first; forgets ids that left the window."""
        window = time.time() - LOOK_BACK_SECONDS
        records = await run_in_threadpool(history.list, tenant, since=window, limit=MAX_EVENTS_PER_POLL * 4)
        for run_id in [run_id for run_id, started in seen.items() if started < window]:
            del seen[run_id]
        return [record for record in reversed(records) if record.id not in seen]

    # Before the answer starts (the browser's "open"): the runs already stored are noted, not sent; the tail shows
    # the runs recorded from now on.
    for record in await poll():
        seen[record.id] = record.started_at

    async def stream() -> AsyncIterator[str]:
        opened = last_run = last_check = last_sent = time.monotonic()
        yield "retry: 3000\n\n"
        while True:
            now = time.monotonic()
            if now - opened > MAX_STREAM_SECONDS or now - last_run > IDLE_SECONDS or await request.is_disconnected():
                return
            if now - last_check > RECHECK_SECONDS:
                last_check = now
                if await auth.resume(request, state.sessions) is None:
                    yield "event: end\ndata: signed out\n\n"
                    return
            fresh = (await poll())[:MAX_EVENTS_PER_POLL]
            for record in fresh:
                seen[record.id] = record.started_at
                yield _event(record, run_url.replace("RUN_ID", record.id))
            if fresh:
                last_run = last_sent = now
            elif now - last_sent > KEEPALIVE_SECONDS:
                last_sent = now
                yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_SECONDS)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

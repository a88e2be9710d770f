"""What every HTTP request goes through: one JSON error shape, a body cap, a per-tenant cap, an access log.

The error shape, pinned by the tests, is ``{"ok": false, "error": {"type": ..., "message": ..., ...}}``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.errors import CompileError, EgressDeniedError, QuotaExceededError, SandboxError
from zingyconn.errors import TenantBusyError, ZingyConnError
from zingyconn.hosts.content import HOOK_HEADERS

#: Default cap on a request body. Twilio's webhook bodies are a few KiB (a 1,600-character SMS plus metadata); the
#: cap keeps one client from making the server buffer arbitrarily large uploads in memory.
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024

access_log: Final = logging.getLogger("zingyconn.access")


class PayloadTooLargeError(ZingyConnError):
    """Raised when a request body is larger than the server's cap (HTTP 413)."""

    http_status = 413


class TooManyRequestsError(ZingyConnError):
    """Raised when a tenant already has as many requests in flight as it may (HTTP 429)."""

    http_status = 429


def error_response(
    error_type: str, message: str, *, status: int, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """Return the one JSON error shape: ``{"ok": false, "error": {"type", "message", ...}}``."""
    return JSONResponse(
        {"ok": False, "error": {"type": error_type, "message": message, **extra}}, status_code=status, headers=headers
    )


#: HTTP status of the sandbox errors a host-side call (a connection command) can raise; others are 500.
SANDBOX_HTTP_STATUS: Final[Mapping[type[SandboxError], int]] = {
    # The call to Twilio could not be made (policy refusal, connection refused, time-out): a gateway failure.
    EgressDeniedError: 502,
    QuotaExceededError: 429,  # a rate limit or request cap: the same call may pass later
}


def exception_response(exc: Exception) -> JSONResponse:
    """Map one of our errors to the JSON error shape and its HTTP status (500 for other sandbox failures).

    The error object is the error's own ``to_json()``; a :class:`~zingyconn.errors.TwilioError` keeps Twilio's
    ``status``, ``code`` and ``more_info`` inside it while the response itself is 502 (Twilio, not us, refused).
    """
    if isinstance(exc, TenantBusyError):
        headers = {"Retry-After": str(math.ceil(exc.retry_after_seconds))}
        return JSONResponse({"ok": False, "error": exc.to_json()}, status_code=exc.http_status, headers=headers)
    if isinstance(exc, ZingyConnError):
        return JSONResponse({"ok": False, "error": exc.to_json()}, status_code=exc.http_status)
    if isinstance(exc, CompileError):
        return error_response(
            CompileError.__name__, "The snippet does not compile.", status=400, errors=list(exc.errors)
        )
    if isinstance(exc, SandboxError):
        status = next((code for cls, code in SANDBOX_HTTP_STATUS.items() if isinstance(exc, cls)), 500)
        return error_response(type(exc).__name__, str(exc), status=status)
    raise exc


async def read_body(request: Request, *, max_bytes: int) -> bytes:
    """Read the request body, refusing (413) as soon as it grows past *max_bytes*, even without Content-Length."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLargeError(f"The request body is larger than {max_bytes} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


class TenantLimiter:
    """Caps the requests one tenant has in flight in this process, so one tenant cannot take every worker thread.

    Up to ``running`` requests of a tenant run at once and up to ``waiting`` more queue for a slot; beyond that the
    request is refused at once with 429. The counts are **per process**: with ``--workers N`` a tenant may have up
    to N times as many in flight on one machine.
    """

    def __init__(self, *, running: int = 16, waiting: int = 256) -> None:
        self.running = running
        self.waiting = waiting
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._queued: dict[str, int] = {}

    def slot(self, tenant: str) -> _Slot:
        """Hold one of *tenant*'s slots for the duration of an ``async with`` block; 429 when its queue is full."""
        semaphore = self._slots.get(tenant)
        if semaphore is None:
            semaphore = self._slots[tenant] = asyncio.Semaphore(self.running)
        return _Slot(self, tenant, semaphore)

    async def _acquire(self, tenant: str, semaphore: asyncio.Semaphore) -> None:
        if not semaphore.locked():
            await semaphore.acquire()  # a free slot is taken without waiting: nobody queues
            return
        if self._queued.get(tenant, 0) >= self.waiting:
            raise TooManyRequestsError(
                f"Tenant {tenant!r} has too many requests in flight ({self.running} running, {self.waiting} waiting)."
            )
        self._queued[tenant] = self._queued.get(tenant, 0) + 1
        try:
            await semaphore.acquire()
        finally:
            self._queued[tenant] -= 1


class _Slot:
    """One request's hold on a tenant's slot (a class, not a generator: it is entered on every request)."""

    __slots__ = ("_limiter", "_semaphore", "_tenant")

    def __init__(self, limiter: TenantLimiter, tenant: str, semaphore: asyncio.Semaphore) -> None:
        self._limiter, self._tenant, self._semaphore = limiter, tenant, semaphore

    async def __aenter__(self) -> None:
        await self._limiter._acquire(self._tenant, self._semaphore)

    async def __aexit__(self, *_: object) -> None:
        self._semaphore.release()


class EdgeMiddleware:
    """Pure ASGI middleware: refuses declared oversized bodies, turns stray errors into the JSON shape, logs access.

    Every response gets ``X-Content-Type-Options: nosniff`` and, unless the route sent its own policy (the console
    does), the hook origin's ``Content-Security-Policy: sandbox; default-src 'none'`` (see
    :mod:`zingyconn.hosts.content`): a route that forgets them still serves nothing a browser would run.

    The access log is one JSON line per request on the ``zingyconn.access`` logger: method, path, status, duration,
    client, and the ``tenant``, ``hook``, ``run_id`` and ``replayed`` values that handlers put in ``scope["state"]``.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500
        state: dict[str, Any] = scope.setdefault("state", {})
        response_started = logged = False

        def log_once() -> None:
            nonlocal logged
            if not logged:
                logged = True
                _log_access(scope, state, status=status, started=started)

        async def send_and_watch(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                message = {**message, "headers": _with_default_headers(message.get("headers", []))}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                log_once()  # before the last bytes leave: whoever got the response can already read the line
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body_bytes:
                message = f"The request body is larger than {self.max_body_bytes} bytes."
                await error_response("PayloadTooLargeError", message, status=413)(scope, receive, send_and_watch)
            else:
                await self.app(scope, receive, send_and_watch)
        except Exception:  # noqa: BLE001  # last resort: the client gets the JSON shape, the log the traceback
            access_log.exception("Unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not response_started:
                message = "The server failed to handle the request; the error was logged."
                await error_response("InternalError", message, status=500)(scope, receive, send_and_watch)
        finally:
            log_once()


class OriginSplitMiddleware:
    """With the console on its own port, answer console paths only on that port and every other path elsewhere.

    ``scope["server"]`` is the listening socket a connection arrived on (not a header a client chose), so a hook's
    URL cannot be opened on the console's origin, nor the console on the hooks' origin. ``/healthz`` answers on both.
    """

    def __init__(self, app: ASGIApp, *, console_port: int, console_prefix: str = "/console") -> None:
        self.app = app
        self.console_port = console_port
        self.console_prefix = console_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._is_served_here(scope):
            message = f"Not found: {scope.get('path')} is not served on this port."
            await error_response("NotFoundError", message, status=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _is_served_here(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        if path == "/healthz":
            return True
        on_console_port = (scope.get("server") or (None, None))[1] == self.console_port
        is_console_path = path == self.console_prefix or path.startswith(self.console_prefix + "/")
        return on_console_port == is_console_path


#: HOOK_HEADERS as ASGI sends them, encoded once.
_DEFAULT_HEADERS: Final = tuple((name.lower().encode(), value.encode()) for name, value in HOOK_HEADERS.items())


def _with_default_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    present = {name.lower() for name, _ in headers}
    missing = [header for header in _DEFAULT_HEADERS if header[0] not in present]
    return [*headers, *missing] if missing else headers


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _log_access(scope: Scope, state: Mapping[str, Any], *, status: int, started: float) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    client = scope.get("client")
    fields = {
        "method": scope.get("method"),
        "path": scope.get("path"),
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "client": client[0] if client else None,
        **{key: state[key] for key in ("tenant", "hook", "run_id", "replayed") if key in state},
    }
    # The fields travel on the record: the log stream's formatter writes them as JSON, or readably on a terminal.
    access_log.info("%s %s %s", fields["method"], fields["path"], status, extra={"fields": fields})

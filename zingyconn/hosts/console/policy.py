"""The console's browser policy: the headers that keep other origins' content and frames away from its pages.

The console holds a session that can change every tenant's hooks and connections, so it trusts nothing but its
own files: scripts and styles only from ``/console/static`` (no inline code, so an injected ``<script>`` or
``onclick`` does not run), forms only to itself, no framing (clickjacking), nothing cached, no referrer leaving.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Threat: script injected into a console page (a tenant's name, a run's output) running with the session.
CONSOLE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: Every console response carries these (CSP above; the rest stop framing, sniffing, caching and referrer leaks).
CONSOLE_HEADERS: Final = {
    "Content-Security-Policy": CONSOLE_CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_RAW_HEADERS: Final = [(name.lower().encode(), value.encode()) for name, value in CONSOLE_HEADERS.items()]


class ConsolePolicyMiddleware:
    """Pure ASGI middleware that puts :data:`CONSOLE_HEADERS` on every console response, replacing any others."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in _RAW_HEADERS}
                kept = [(name, value) for name, value in message.get("headers", []) if name.lower() not in names]
                message = {**message, "headers": [*kept, *_RAW_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_policy)

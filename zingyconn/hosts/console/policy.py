"""The console's browser policy: the headers that keep other origins' content and frames away from its pages.

The console holds a session that can change every tenant's hooks and connections, so it trusts nothing but its
own files: scripts and styles only from ``/console/static`` (no inline code, so an injected ``<script>`` or
``onclick`` does not run), forms only to itself, no framing (clickjacking), nothing cached, no referrer leaving.

One exception, for styles only: the code editor (CodeMirror) builds its theme as ``<style>`` elements at run time.
Each response gets a fresh random nonce that only those elements carry (the editor reads it from its own
``<script nonce>``), so ``style-src`` still refuses any style a page did not create itself, which ``'unsafe-inline'``
would not.
"""

from __future__ import annotations

import secrets
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Threat: script injected into a console page (a tenant's name, a run's output) running with the session; and
#: injected ``<style>`` markup restyling a page to mislead (``{nonce}`` is the response's, see the module docstring).
CONSOLE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: Bytes of randomness in a response's style nonce (CSP asks for at least 128 bits).
NONCE_BYTES: Final = 18
#: Where the request's nonce is kept for templates (``request.state.csp_nonce``).
NONCE_STATE_KEY: Final = "csp_nonce"
#: Every console response carries these besides the CSP (they stop framing, sniffing, caching and referrer leaks).
CONSOLE_HEADERS: Final = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_RAW_HEADERS: Final = [(name.lower().encode(), value.encode()) for name, value in CONSOLE_HEADERS.items()]
_REPLACED: Final = {name for name, _ in _RAW_HEADERS} | {b"content-security-policy"}
#: The console's own static files (scripts, styles, the editor's ~470 KB bundle) hold nothing private: a browser may
#: keep them but asks each time whether they changed (ETag, 304), instead of fetching the bundle with every page.
STATIC_PREFIX: Final = "/static/"
_STATIC_HEADERS: Final = [(name, b"no-cache" if name == b"cache-control" else value) for name, value in _RAW_HEADERS]


class ConsolePolicyMiddleware:
    """Pure ASGI middleware that puts the CSP (with a fresh nonce) and :data:`CONSOLE_HEADERS` on every console
    response, replacing any others; the nonce is in ``request.state.csp_nonce`` for the pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        nonce = secrets.token_urlsafe(NONCE_BYTES)
        scope.setdefault("state", {})[NONCE_STATE_KEY] = nonce
        policy = (b"content-security-policy", CONSOLE_CSP.format(nonce=nonce).encode())
        path: str = scope.get("path", "")
        is_static = path[len(scope.get("root_path", "")) :].startswith(STATIC_PREFIX)
        headers = _STATIC_HEADERS if is_static else _RAW_HEADERS

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(name, value) for name, value in message.get("headers", []) if name.lower() not in _REPLACED]
                message = {**message, "headers": [*kept, policy, *headers]}
            await send(message)

        await self.app(scope, receive, send_with_policy)

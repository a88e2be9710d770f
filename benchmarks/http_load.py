"""What the HTTP load benchmarks share: the auto-reply hook, its request, a minimal HTTP/1.1 response reader and
latency percentiles.

The load generators speak raw HTTP/1.1 over asyncio streams instead of using httpx: on 2 cores a client library's
own CPU cost would be measured as server latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import urlencode

#: The hook both webhook benchmarks load: a TwiML auto-reply that quotes the request's Body.
AUTO_REPLY = """\
from twilio.twiml.messaging_response import MessagingResponse

reply = MessagingResponse()
reply.message("Thanks! You said: " + event["form"]["Body"])
return reply
"""
#: Where ``zingyconn serve`` answers the AUTO_REPLY hook saved as tenant ``bench``, hook ``reply``.
HOOK_PATH = "/hooks/bench/reply"


def sms_form(body: str) -> dict[str, str]:
    """Return the form Twilio posts for an inbound SMS with *body* (the fields the signature covers)."""
    return {"From": "+15551234567", "To": "+15005550006", "Body": body}


def form_post(port: int, path: str, body: str, *, signature: str | None = None, token: str | None = None) -> bytes:
    """Return an HTTP/1.1 POST of :func:`sms_form` with *body* to *path*, optionally signed and with an idempotency
    token (``I-Twilio-Idempotency-Token``, which Twilio sends with every webhook)."""
    form = urlencode(sms_form(body)).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(form)}\r\n"
    )
    if signature is not None:
        head += f"X-Twilio-Signature: {signature}\r\n"
    if token is not None:
        head += f"I-Twilio-Idempotency-Token: {token}\r\n"
    return head.encode() + b"\r\n" + form


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (status, lower-cased headers, body by Content-Length)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("the server closed the connection")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, await reader.readexactly(int(headers.get("content-length", "0")))


def percentile(ordered: Sequence[float], p: float) -> float:
    """Return the *p*-th percentile (0-100) of already sorted *ordered*, rounded to 0.01."""
    if not ordered:
        return 0.0
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2)
